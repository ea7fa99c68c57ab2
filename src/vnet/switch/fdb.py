"""The forwarding database: (VLAN, MAC) -> port, learned from source addresses.

Entries age out after ``ageing`` seconds without traffic (802.1D's default
is 300 s). The table is capped: when full, the entry heard from longest ago
is evicted and counted, so a MAC flood cannot grow memory without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

DEFAULT_AGEING = 300.0
DEFAULT_CAPACITY = 8192


@dataclass
class Entry:
    port: str
    last_seen: float
    remote: tuple[str, int] | None = None  # the VTEP, for MACs behind a VXLAN port


class Fdb:
    def __init__(self, ageing: float = DEFAULT_AGEING, capacity: int = DEFAULT_CAPACITY) -> None:
        self.ageing = ageing
        self.capacity = capacity
        self._entries: OrderedDict[tuple[int, bytes], Entry] = OrderedDict()
        self.evicted = 0
        self.moved = 0

    def __len__(self) -> int:
        return len(self._entries)

    def learn(
        self, vlan: int, mac: bytes, port: str, now: float, remote: tuple[str, int] | None = None
    ) -> None:
        key = (vlan, mac)
        entry = self._entries.get(key)
        if entry is not None:
            if entry.port != port or entry.remote != remote:
                self.moved += 1
                entry.port, entry.remote = port, remote
            entry.last_seen = now
            self._entries.move_to_end(key)
            return
        if len(self._entries) >= self.capacity:
            self._entries.popitem(last=False)  # the least recently heard
            self.evicted += 1
        self._entries[key] = Entry(port, now, remote)

    def lookup(self, vlan: int, mac: bytes, now: float) -> Entry | None:
        entry = self._entries.get((vlan, mac))
        if entry is None:
            return None
        if now - entry.last_seen > self.ageing:
            del self._entries[(vlan, mac)]
            return None
        return entry

    def expire(self, now: float) -> int:
        stale = [k for k, e in self._entries.items() if now - e.last_seen > self.ageing]
        for key in stale:
            del self._entries[key]
        return len(stale)

    def flush_port(self, port: str) -> None:
        for key in [k for k, e in self._entries.items() if e.port == port]:
            del self._entries[key]

    def entries(self) -> list[tuple[int, bytes, Entry]]:
        return [(vlan, mac, e) for (vlan, mac), e in self._entries.items()]
