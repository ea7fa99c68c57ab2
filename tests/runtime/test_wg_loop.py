"""The vnet-wg daemon loop on fake TUNs and loopback UDP (no root): two daemons
configured through their UAPI sockets handshake and carry packets both ways, and a UAPI
client that never reads does not stall them."""

from __future__ import annotations

import contextlib
import errno
import random
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.runtime.fakes import FakeTun, running
from tests.wireguard.harness import keypair, packet
from vnet.errors import KernelError
from vnet.kernel import unixsock
from vnet.runtime.wg import RECEIVE_BUDGET, UdpBind, WgDaemon

A_INNER, B_INNER = "198.18.10.1", "198.18.10.2"


def make(tmp_path: Path, name: str) -> tuple[WgDaemon, FakeTun]:
    daemon = WgDaemon(name, offload=False, socket_dir=str(tmp_path))
    tun = FakeTun()
    daemon.attach(tun, UdpBind(0))
    daemon.uapi.listen()
    return daemon, tun


def uapi(daemon: WgDaemon, request: str) -> str:
    return unixsock.request(daemon.uapi_path, request.encode(), b"\n\n").decode()


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[WgDaemon, FakeTun, WgDaemon, FakeTun]]:
    rng = random.Random(7)
    (a_priv, a_pub), (b_priv, b_pub) = keypair(rng), keypair(rng)
    a, tun_a = make(tmp_path, "wgloopa")
    b, tun_b = make(tmp_path, "wgloopb")
    with ExitStack() as stack:
        stack.enter_context(running(a))
        stack.enter_context(running(b))
        assert b.bind is not None and a.bind is not None
        for me, priv, pub, port, inner in (
            (a, a_priv, b_pub, b.bind.port, B_INNER),
            (b, b_priv, a_pub, a.bind.port, A_INNER),
        ):
            reply = uapi(
                me,
                f"set=1\nprivate_key={priv.hex()}\npublic_key={pub.hex()}\n"
                f"endpoint=127.0.0.1:{port}\nallowed_ip={inner}/32\n\n",
            )
            assert reply == "errno=0\n\n"
        yield a, tun_a, b, tun_b
    tun_a.close()
    tun_b.close()


def test_packets_cross_both_ways(pair: tuple[WgDaemon, FakeTun, WgDaemon, FakeTun]) -> None:
    a, tun_a, _, tun_b = pair
    ping = packet(A_INNER, B_INNER, seq=1)
    tun_a.kernel.send(ping)  # staged until the handshake completes, then sent
    assert tun_b.kernel.recv(65536) == ping
    pong = packet(B_INNER, A_INNER, seq=2)
    tun_b.kernel.send(pong)
    assert tun_a.kernel.recv(65536) == pong
    dump = uapi(a, "get=1\n\n")
    assert "last_handshake_time_sec=" in dump and "rx_bytes=" in dump


def test_idle_pings_take_the_latency_path(
    pair: tuple[WgDaemon, FakeTun, WgDaemon, FakeTun],
) -> None:
    """A packet alone after a quiet spell is sealed and sent, or opened and written, by
    the latency path (Device.send_one, receive_one) on both daemons; a burst mostly not."""
    a, tun_a, b, tun_b = pair
    tun_a.kernel.send(packet(A_INNER, B_INNER, seq=1))  # the handshake
    assert tun_b.kernel.recv(65536)
    calls: list[str] = []
    for daemon in (a, b):
        for name in ("send_one", "receive_one"):
            method = getattr(daemon.device, name)

            def spy(*args: object, _m: Callable[..., object] = method, _n: str = name) -> object:
                result = _m(*args)
                calls.append(_n if result else _n + " declined")
                return result

            setattr(daemon.device, name, spy)
    for seq in range(2, 5):
        time.sleep(0.01)  # quiet: more than QUIET since the last read
        ping = packet(A_INNER, B_INNER, seq=seq)
        tun_a.kernel.send(ping)
        assert tun_b.kernel.recv(65536) == ping
        time.sleep(0.01)
        pong = packet(B_INNER, A_INNER, seq=seq)
        tun_b.kernel.send(pong)
        assert tun_a.kernel.recv(65536) == pong
    assert calls.count("send_one") >= 4 and calls.count("receive_one") >= 4, calls
    assert all(r.endpoint is not None for r in (a.device.peers | b.device.peers).values())
    burst = [packet(A_INNER, B_INNER, seq=100 + i) for i in range(50)]
    before = len(calls)
    for p in burst:
        tun_a.kernel.send(p)
    assert [tun_b.kernel.recv(65536) for _ in burst] == burst
    # only the first packet of a wake after a quiet spell: the burst goes the batch way
    assert len(calls) - before <= len(burst) // 2


def test_uapi_errors_and_a_stalled_client(
    pair: tuple[WgDaemon, FakeTun, WgDaemon, FakeTun],
) -> None:
    a, tun_a, _, tun_b = pair
    assert uapi(a, "set=1\nlisten_port=banana\n\n") == "errno=22\n\n"
    assert uapi(a, "bogus=1\n\n") == "errno=22\n\n"
    # a client that asks for many dumps and reads none of them
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(a.uapi_path)
    stalled.sendall(b"get=1\n\n" * 3000)
    for seq in range(5):
        ping = packet(A_INNER, B_INNER, seq=seq)
        tun_a.kernel.send(ping)
        assert tun_b.kernel.recv(65536) == ping
    assert uapi(a, "get=1\n\n").startswith("private_key=")
    stalled.close()


def test_a_failing_set_is_answered_and_the_daemon_goes_on(
    pair: tuple[WgDaemon, FakeTun, WgDaemon, FakeTun], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, tun_a, _, tun_b = pair

    def broken(*args: object) -> None:
        raise RuntimeError("a bug in applying a request")

    monkeypatch.setattr(a, "_apply", broken)
    assert uapi(a, "set=1\nlisten_port=0\n\n") == "errno=5\n\n"
    ping = packet(A_INNER, B_INNER, seq=1)
    tun_a.kernel.send(ping)
    assert tun_b.kernel.recv(65536) == ping  # still forwarding
    assert uapi(a, "get=1\n\n").startswith("private_key=")


def test_a_listen_port_in_use_changes_nothing(
    pair: tuple[WgDaemon, FakeTun, WgDaemon, FakeTun],
) -> None:
    a, _, b, _ = pair
    assert a.bind is not None and b.bind is not None
    port = a.bind.port
    before = uapi(a, "get=1\n\n")
    reply = uapi(a, f"set=1\nlisten_port={b.bind.port}\nfwmark=0\n\n")
    assert reply == "errno=98\n\n"  # EADDRINUSE
    assert a.bind.port == port
    assert uapi(a, "get=1\n\n") == before


def _wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_peer_with_a_session_gets_a_socket_of_its_own(
    pair: tuple[WgDaemon, FakeTun, WgDaemon, FakeTun],
) -> None:
    a, tun_a, b, tun_b = pair
    assert a.bind is not None and b.bind is not None
    tun_a.kernel.send(packet(A_INNER, B_INNER, seq=1))
    assert tun_b.kernel.recv(65536)  # a session now
    assert _wait_for(lambda: ("127.0.0.1", b.bind.port) in a._pinned)  # type: ignore[union-attr]
    pinned = a._pinned["127.0.0.1", b.bind.port]
    assert pinned.sock.getpeername()[1] == b.bind.port
    # garbage from another port of the peer's host fills the wildcard socket's queue,
    # not the peer's: every packet of the peer still arrives
    flood = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    flood.setblocking(False)
    sent = 0
    for _ in range(20_000):
        try:
            flood.sendto(bytes(200), ("127.0.0.1", a.bind.port))
            sent += 1
        except BlockingIOError:
            pass
    flood.close()
    assert sent > 0
    for seq in range(2, 50):
        pong = packet(B_INNER, A_INNER, seq=seq)
        tun_b.kernel.send(pong)
        assert tun_a.kernel.recv(65536) == pong
    # a new listen port: the peer's socket was bound to the old one and goes with it;
    # once the peer writes to the new port, it has one there
    probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    probe.bind(("::", 0))
    port = probe.getsockname()[1]
    probe.close()
    assert uapi(a, f"set=1\nlisten_port={port}\n\n") == "errno=0\n\n"
    assert a.bind.port == port
    tun_a.kernel.send(packet(A_INNER, B_INNER, seq=50))  # b learns a's new port
    assert tun_b.kernel.recv(65536)
    tun_b.kernel.send(packet(B_INNER, A_INNER, seq=51))
    assert tun_a.kernel.recv(65536)
    assert _wait_for(
        lambda: [p.sock.getsockname()[1] for p in list(a._pinned.values())] == [port]
    )


def test_a_wake_reads_a_bounded_number_of_receives(tmp_path: Path) -> None:
    """The loop turns to the TUN after RECEIVE_BUDGET receives: what the TUN writes caused
    (the inner TCP's ACKs) leaves before the next receives are read."""
    daemon, tun = make(tmp_path, "wgbudget")
    try:
        assert daemon.bind is not None
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(RECEIVE_BUDGET + 4):
            sender.sendto(b"\x09 not wireguard", ("127.0.0.1", daemon.bind.port))
        time.sleep(0.1)  # all queued on loopback
        daemon._read_udp(0)
        assert daemon.device.stats.rx_malformed == RECEIVE_BUDGET
        left = 0
        with contextlib.suppress(BlockingIOError):
            while daemon.bind.sock.recv(2048):
                left += 1
        assert left == 4
        sender.close()
    finally:
        daemon.close()
        tun.close()


class _RemovedTun(FakeTun):
    """A TUN whose interface was deleted: reads fail as the kernel fails them."""

    def readinto(self, buffer: bytearray | memoryview) -> int:
        raise KernelError("read: File descriptor in bad state", errno.EBADFD)


class _BrokenTun(FakeTun):
    def readinto(self, buffer: bytearray | memoryview) -> int:
        raise KernelError("read: Operation not permitted", errno.EPERM)


@pytest.mark.parametrize("lone", [True, False])
def test_a_removed_interface_stops_the_loop_and_other_errors_surface(
    tmp_path: Path, lone: bool
) -> None:
    """Both read paths (a lone packet after a quiet spell, and a burst) end the loop when
    the interface is gone, and let any other kernel error through."""
    for tun, stops in ((_RemovedTun(), True), (_BrokenTun(), False)):
        daemon = WgDaemon("wgremoved", offload=False, socket_dir=str(tmp_path))
        daemon.attach(tun, UdpBind(0))
        try:
            daemon.running = True
            daemon.lone_event = lone
            if stops:
                daemon._read_tun(0)
                assert not daemon.running
            else:
                with pytest.raises(KernelError, match="not permitted"):
                    daemon._read_tun(0)
        finally:
            daemon.close()
            tun.close()
