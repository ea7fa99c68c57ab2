"""A pcap file with a size limit and rotation, as ``tcpdump -C SIZE -W COUNT`` keeps them.

The format is written by dpkt's pcap writer; this adds the link type per device (raw IP
for a TUN, Ethernet for a TAP), file permissions fit for what a capture holds (0600: a
vnet-wg capture is the tunnel's traffic in clear), and rotation: when the next packet
would take FILE past ``max_bytes``, FILE becomes FILE.1 (FILE.1 becomes FILE.2, ...; the
oldest beyond ``files`` is removed) and a new FILE begins. A write that fails (a full
disk) ends the capture with one log line; the packets it would have held are counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import BinaryIO

import dpkt  # type: ignore[import-untyped]

from vnet.errors import ConfigError

log = logging.getLogger("vnet.capture")

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # an IPv4 or IPv6 packet, no link header: what a TUN carries
SNAPLEN = 262144  # tcpdump's: whole TSO super-packets fit
FILE_HEADER = 24
PACKET_HEADER = 16


def _open(path: str) -> BinaryIO:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise ConfigError(f"cannot write the capture {path}: {e.strerror}") from None
    os.fchmod(fd, 0o600)  # an older file of that name may have been readable
    return os.fdopen(fd, "wb")


class PcapWriter:
    def __init__(
        self, path: str, linktype: int, *, max_bytes: int = 0, files: int = 5
    ) -> None:
        if max_bytes and max_bytes < FILE_HEADER + PACKET_HEADER + 64:
            raise ConfigError(f"a capture size limit of {max_bytes} bytes holds no packet")
        if files < 1:
            raise ConfigError("a capture keeps at least one file")
        self.path = path
        self.linktype = linktype
        self.max_bytes = max_bytes
        self.files = files
        self.packets = 0
        self.lost = 0  # after a failed write
        self.rotations = 0
        self._file: BinaryIO | None = None
        self._start()

    def _start(self) -> None:
        self._file = _open(self.path)
        self._writer = dpkt.pcap.Writer(self._file, snaplen=SNAPLEN, linktype=self.linktype)
        self._size = FILE_HEADER

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        for n in range(self.files - 1, 0, -1):  # FILE.n-1 -> FILE.n, ..., FILE -> FILE.1
            source = self.path if n == 1 else f"{self.path}.{n - 1}"
            if os.path.exists(source):
                os.replace(source, f"{self.path}.{n}")
        self.rotations += 1
        self._start()  # with one file kept, FILE starts over

    def write(self, packet: bytes | bytearray | memoryview, ts: float | None = None) -> None:
        if self._file is None:
            self.lost += 1
            return
        data = bytes(packet[:SNAPLEN])
        record = PACKET_HEADER + len(data)
        try:
            if self.max_bytes and self._size + record > self.max_bytes and self._size > FILE_HEADER:
                self._rotate()
            self._writer.writepkt_time(data, time.time() if ts is None else ts)
        except OSError as e:
            log.warning("capture %s stopped: %s", self.path, e.strerror)
            self.close()
            self.lost += 1
            return
        self._size += record
        self.packets += 1

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
