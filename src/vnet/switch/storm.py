"""Storm control: a limit on the frames one ingress may have flooded, per second.

A switch copies broadcast, multicast and unknown-unicast frames to every other port of
the VLAN (and every remote VTEP of its VNI), so one port in a broadcast storm or a MAC
flood multiplies its load by the number of ports. As hardware switches' storm control
does, each ingress gets a token bucket of flooded frames: ``rate`` a second, with bursts
of up to a tenth of a second's worth; what is over it is dropped (and counted) instead of
copied. Frames to known MACs are never limited.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BURST_SECONDS = 0.1
HOLD_SECONDS = 0.5  # a port counts as storming this long after its last dropped frame


@dataclass
class StormControl:
    rate: float  # flooded frames a second
    tokens: float = field(init=False)
    last: float = 0.0
    last_drop: float = float("-inf")

    def __post_init__(self) -> None:
        self.tokens = self.burst

    @property
    def burst(self) -> float:
        return max(1.0, self.rate * BURST_SECONDS)

    def allow(self, now: float) -> bool:
        """May one more frame be flooded at ``now``? Takes its token if so."""
        elapsed = now - self.last
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.last_drop = now
        return False

    def storming(self, now: float) -> bool:
        """Was a frame dropped in the last HOLD_SECONDS? (The runtime then reads the port
        sparingly: a storm goes on long after the bucket lets its next frame through.)"""
        return now - self.last_drop < HOLD_SECONDS
