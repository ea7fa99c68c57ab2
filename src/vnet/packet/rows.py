"""Packets laid out in rows of one buffer: the batch form of the offload data paths.

Packet ``i`` starts at ``i * stride``; ``lengths[i]`` is its length (0: no packet
in that row). A TSO split writes its segments here, the cipher seals each row
straight into a send buffer, a GRO receive run is decrypted into rows, and
coalescing reads the headers of all rows at once as numpy columns.

Invariant: every byte of a row past its packet is zero. A one's-complement sum
over a whole row is then the packet's sum, and rows can be encrypted with their
WireGuard padding (zeros up to a multiple of 16) in place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(slots=True)
class PacketRows:
    buf: bytearray
    stride: int
    lengths: list[int]

    @classmethod
    def empty(cls, count: int, stride: int) -> PacketRows:
        """``count`` zeroed rows; the stride is rounded up to whole 32-bit words (row-wise
        checksum sums read words)."""
        stride = -(-stride // 4) * 4
        return cls(bytearray(count * stride), stride, [0] * count)

    @classmethod
    def from_packets(
        cls, packets: Sequence[bytes | bytearray | memoryview], min_stride: int = 0
    ) -> PacketRows:
        stride = max([min_stride, *(len(p) for p in packets)])
        rows = cls.empty(len(packets), stride)
        view = memoryview(rows.buf)
        for i, packet in enumerate(packets):
            start = i * rows.stride
            view[start : start + len(packet)] = packet
            rows.lengths[i] = len(packet)
        return rows

    def __len__(self) -> int:
        return len(self.lengths)

    def grid(self) -> npt.NDArray[np.uint8]:
        """The rows as a writable (count, stride) uint8 array sharing this buffer."""
        return np.frombuffer(self.buf, dtype=np.uint8).reshape(len(self.lengths), self.stride)

    def row(self, i: int) -> memoryview:
        start = i * self.stride
        return memoryview(self.buf)[start : start + self.lengths[i]]

    def packets(self) -> list[bytes]:
        """The non-empty rows as separate packets, in order."""
        view = memoryview(self.buf)
        stride = self.stride
        return [
            bytes(view[i * stride : i * stride + n]) for i, n in enumerate(self.lengths) if n
        ]

    def truncate(self, i: int, length: int) -> None:
        """Shorten packet ``i`` (0 drops it), zeroing what it no longer covers."""
        start = i * self.stride
        self.buf[start + length : start + self.lengths[i]] = bytes(self.lengths[i] - length)
        self.lengths[i] = length


def column16(grid: npt.NDArray[np.uint8], col: int) -> npt.NDArray[np.int64]:
    """The big-endian 16-bit field at byte ``col`` of every row (a header read as a column)."""
    return grid[:, col : col + 2].view(">u2")[:, 0].astype(np.int64)
