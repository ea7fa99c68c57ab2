"""The GSO fallback: a refused GSO send switches to one datagram per call, losing nothing."""

from __future__ import annotations

import errno
from typing import Any

from vnet.runtime.wg import UdpBind, send_datagrams


class FakeSocket:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendmsg(self, *args: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    def sendto(self, data: bytes, address: Any) -> int:
        self.sent.append(data)
        return len(data)


def test_refused_gso_falls_back() -> None:
    bind = UdpBind.__new__(UdpBind)
    bind.sock = FakeSocket()  # type: ignore[assignment]
    bind.gso = True
    datagrams = [bytes([i]) * 100 for i in range(10)]
    send_datagrams(bind, datagrams, ("198.18.0.2", 51820))
    assert not bind.gso
    assert bind.sock.sent == datagrams  # type: ignore[attr-defined]
    send_datagrams(bind, datagrams[:2], ("198.18.0.2", 51820))
    assert bind.sock.sent[-2:] == datagrams[:2]  # type: ignore[attr-defined]
