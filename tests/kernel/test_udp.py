"""UDP GSO and GRO across a real veth pair, and the run-splitting rule."""

from __future__ import annotations

import errno
import socket
from typing import Any

from tests.conftest import unique
from vnet.kernel import netns, udp
from vnet.kernel.netlink import Netlink


def test_runs_follow_the_gso_rule() -> None:
    d = [b"a" * 10] * 3 + [b"b" * 4] + [b"c" * 10] * 2 + [b"d" * 12]
    assert [len(r) for r in udp.runs(d)] == [4, 2, 1]  # a shorter one ends a run
    many = [b"x" * 100] * 150
    assert [len(r) for r in udp.runs(many)] == [64, 64, 22]  # UDP_MAX_SEGMENTS
    big = [b"x" * 1400] * 60
    assert all(sum(map(len, r)) <= udp.MAX_GSO_BYTES for r in udp.runs(big))
    assert udp.runs([]) == []


class RefusingSocket:
    """Refuses every GSO send as a device without UDP segmentation does (EIO)."""

    family = socket.AF_INET

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def setsockopt(self, *args: Any) -> None:
        pass

    def sendmsg(self, *args: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    def sendto(self, data: bytes, address: Any) -> int:
        self.sent.append(bytes(data))
        return len(data)


def test_refused_gso_falls_back_losing_nothing() -> None:
    fake = RefusingSocket()
    sock = udp.UdpSocket(fake)  # type: ignore[arg-type]
    assert sock.gso
    datagrams = [bytes([i]) * 100 for i in range(10)]
    sock.send_datagrams(datagrams, ("198.18.0.2", 51820))
    assert not sock.gso
    assert fake.sent == datagrams
    sock.send_datagrams(datagrams[:2], ("198.18.0.2", 51820))
    assert fake.sent[-2:] == datagrams[:2]


def test_gso_send_is_read_back_with_gro(ns: str, ns2: str) -> None:
    a, b = unique("ga")[:15], unique("gb")[:15]
    with Netlink(ns) as nl:
        nl.add_veth(a, b, peer_netns=ns2)
        nl.add_address(a, "198.18.0.1/24")
        nl.set_up(a)
    with Netlink(ns2) as nl:
        nl.add_address(b, "198.18.0.2/24")
        nl.set_up(b)
    with netns.entered(ns2):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with netns.entered(ns):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rx, tx:
        rx.bind(("198.18.0.2", 40000))
        rx.settimeout(3)
        assert udp.enable_gro(rx) and udp.gso_supported(tx)
        datagrams = [bytes([i]) * 1400 for i in range(40)] + [b"tail"]
        udp.UdpSocket(tx).send_datagrams(datagrams, ("198.18.0.2", 40000))
        got: list[bytes] = []
        calls = 0
        buf = bytearray(65536)
        while len(got) < len(datagrams) and calls < 100:
            n, size, _ = udp.recv_into(rx, buf)
            step = size or n
            got += [bytes(buf[i : min(i + step, n)]) for i in range(0, n, step)]
            calls += 1
        assert got == datagrams
        assert calls < len(datagrams)  # GRO merged some: fewer receives than datagrams
