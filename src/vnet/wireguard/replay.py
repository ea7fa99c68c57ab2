"""The anti-replay window for transport counters (RFC 6479's bitmap ring).

128 blocks of 64 bits; one block is always being recycled, so the window
that can be checked is (128 - 1) * 64 = 8128 counters behind the newest.
"""

from __future__ import annotations

BLOCK_BITS = 64
RING_BLOCKS = 128
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS  # 8128
_BLOCK_SHIFT = 6
_RING_MASK = RING_BLOCKS - 1
_BIT_MASK = BLOCK_BITS - 1


class ReplayFilter:
    __slots__ = ("last", "ring")

    def __init__(self) -> None:
        self.last = 0
        self.ring = [0] * RING_BLOCKS

    def reset(self) -> None:
        self.last = 0
        self.ring = [0] * RING_BLOCKS

    def check(self, counter: int, limit: int) -> bool:
        """True (and remembered) if ``counter`` is below ``limit`` and not seen before."""
        if counter >= limit:
            return False
        block = counter >> _BLOCK_SHIFT
        if counter > self.last:
            current = self.last >> _BLOCK_SHIFT
            ring = self.ring
            for _ in range(min(block - current, RING_BLOCKS)):
                current = (current + 1) & _RING_MASK
                ring[current] = 0
            self.last = counter
        elif self.last - counter > WINDOW_SIZE:
            return False
        index = block & _RING_MASK
        bit = 1 << (counter & _BIT_MASK)
        old = self.ring[index]
        if old & bit:
            return False
        self.ring[index] = old | bit
        return True

    def check_run(self, first: int, count: int, limit: int) -> bool:
        """Accept the consecutive counters first .. first + count - 1 at once when all are
        ahead of the newest seen and below ``limit``; False (nothing changed) otherwise,
        and the caller checks them one by one."""
        newest = first + count - 1
        if count <= 0 or first <= self.last or newest >= limit:
            return False
        ring = self.ring
        current = self.last >> _BLOCK_SHIFT
        for _ in range(min((newest >> _BLOCK_SHIFT) - current, RING_BLOCKS)):
            current = (current + 1) & _RING_MASK
            ring[current] = 0
        self.last = newest
        counter = first
        while counter <= newest:  # the bits of each 64-counter block in one go
            top = min(newest, counter | _BIT_MASK)
            ring[(counter >> _BLOCK_SHIFT) & _RING_MASK] |= ((1 << (top - counter + 1)) - 1) << (
                counter & _BIT_MASK
            )
            counter = top + 1
        return True
