"""UDP GSO and GRO across a real veth pair, and the run-splitting rule."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import time
from typing import Any

import pytest

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
            n, size, _, _ = udp.recv_into(rx, buf)
            step = size or n
            got += [bytes(buf[i : min(i + step, n)]) for i in range(0, n, step)]
            calls += 1
        assert got == datagrams
        assert calls < len(datagrams)  # GRO merged some: fewer receives than datagrams


class SourceRefusingSocket:
    """A dual-stack socket whose sticky source address went away: any send naming it
    fails as Linux 6's IPv4 routing does (ENETUNREACH); plain sends go out."""

    family = socket.AF_INET6

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bool]] = []  # (datagrams, GSO)

    def setsockopt(self, *args: Any) -> None:
        pass

    def sendmsg(self, buffers: list[bytes], control: list[Any], flags: int, address: Any) -> int:
        if any(level == socket.IPPROTO_IPV6 for level, _, _ in control):
            raise OSError(errno.ENETUNREACH, "Network is unreachable")
        self.sent.append((bytes(buffers[0]), True))
        return len(buffers[0])

    def sendto(self, data: bytes, address: Any) -> int:
        self.sent.append((bytes(data), False))
        return len(data)


def test_a_refused_source_falls_back_to_the_kernels_choice() -> None:
    fake = SourceRefusingSocket()
    sock = udp.UdpSocket(fake)  # type: ignore[arg-type]
    control = udp.source_control(socket.AF_INET6, "198.18.0.3", 2)
    address = ("::ffff:198.18.0.2", 51820)
    assert not sock.send_segments(b"x" * 300, 100, address, control)  # a GSO run
    assert not sock.send_segments(b"y" * 50, 100, address, control)  # one datagram
    assert fake.sent == [(b"x" * 300, True), (b"y" * 50, False)]
    assert sock.gso  # the refusal was the source's, not GSO's
    assert sock.send_segments(b"z" * 50, 100, address)  # nothing named: nothing refused


def test_source_control_names_the_address_for_either_family() -> None:
    (level, kind, data), = udp.source_control(socket.AF_INET6, "198.18.0.3", 7)
    assert (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)
    assert data == socket.inet_pton(socket.AF_INET6, "::ffff:198.18.0.3") + bytes(4)
    (_, _, data), = udp.source_control(socket.AF_INET6, "fe80::1", 7)
    assert data[16:] == (7).to_bytes(4, "little")  # link-local: its interface too
    (level, kind, data), = udp.source_control(socket.AF_INET, "198.18.0.3", 7)
    assert (level, kind) == (socket.IPPROTO_IP, udp.IP_PKTINFO)
    assert data == bytes(4) + socket.inet_aton("198.18.0.3") + bytes(4)


def test_receives_report_the_address_they_arrived_at(ns: str) -> None:
    with Netlink(ns) as nl:
        nl.set_up("lo")
        nl.add_address("lo", "198.18.0.3/32")
        nl.add_address("lo", "fd00:18::3/128", nodad=True)
    with netns.entered(ns):
        rx = udp.open_socket(0, dual_stack=True)
        tx4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with rx, tx4, tx6:
        assert udp.enable_pktinfo(rx)
        port = rx.getsockname()[1]
        buf = bytearray(2048)
        for tx, to in ((tx4, "198.18.0.3"), (tx6, "fd00:18::3"), (tx4, "127.0.0.1")):
            local = None
            for _ in range(100):  # sent again until one arrives (5 s at most)
                tx.sendto(b"ping", (to, port))
                time.sleep(0.05)
                with contextlib.suppress(BlockingIOError):
                    _, _, _, local = udp.recv_into(rx, buf)
                    break
            assert local is not None, f"nothing arrived at {to}"
            assert local[0] == to and local[1] > 0
            with contextlib.suppress(BlockingIOError):  # what a resend left behind
                while True:
                    udp.recv_into(rx, buf)


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    with contextlib.suppress(BlockingIOError):
        while True:
            out.append(sock.recv(2048))
    return out


def test_a_connected_twin_takes_its_peers_datagrams(ns: str) -> None:
    with Netlink(ns) as nl:
        nl.set_up("lo")
    with netns.entered(ns):
        wildcard = udp.open_socket(0, dual_stack=True)
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other_program = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with wildcard, peer, stranger, other_program:
        udp.share_port(wildcard)
        port = wildcard.getsockname()[1]
        # the port stays ours: another program's bind is refused as before
        with pytest.raises(OSError) as refused:
            other_program.bind(("::", port))
        assert refused.value.errno == errno.EADDRINUSE
        peer.bind(("127.0.0.1", 0))
        with netns.entered(ns):  # a socket belongs to the namespace it was made in
            twin = udp.open_connected(wildcard, ("::ffff:127.0.0.1", peer.getsockname()[1]))
        with twin:
            for i in range(5):
                peer.sendto(b"peer %d" % i, ("127.0.0.1", port))
                stranger.sendto(b"stranger %d" % i, ("127.0.0.1", port))
            time.sleep(0.1)
            assert _drain(twin) == [b"peer %d" % i for i in range(5)]
            assert _drain(wildcard) == [b"stranger %d" % i for i in range(5)]


def test_only_the_ports_owner_adds_twins(ns: str) -> None:
    """A process that became another user can add twins once the port is handed over to
    that user (os.fchown on the socket, as WgDaemon.hand_over does), and not before."""
    nobody = 65534
    with Netlink(ns) as nl:
        nl.set_up("lo")
    with netns.entered(ns):
        wildcard = udp.open_socket(0, dual_stack=True)
    with wildcard:
        udp.share_port(wildcard)
        results = []
        for hand_over in (False, True):
            if hand_over:
                os.fchown(wildcard.fileno(), nobody, -1)
            with netns.entered(ns):  # the child makes its socket in the namespace
                pid = os.fork()
                if pid == 0:  # the child: become nobody, then try
                    code = 2
                    try:
                        os.setresgid(nobody, nobody, nobody)
                        os.setresuid(nobody, nobody, nobody)
                        udp.open_connected(wildcard, ("::1", 9)).close()
                        code = 0
                    except OSError as e:
                        code = 1 if e.errno == errno.EADDRINUSE else 3
                    finally:
                        os._exit(code)
            results.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        assert results == [1, 0]
