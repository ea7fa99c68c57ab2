"""The vnet switch daemon loop on fake TAPs and a loopback VXLAN socket (no root):
flooding, learning, VXLAN out and in, and the control socket's answers."""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path

from tests.runtime.fakes import FakeTun, running
from vnet.kernel import unixsock
from vnet.packet import vxlan
from vnet.packet.ethernet import BROADCAST, Ethernet
from vnet.runtime.switch import SwitchDaemon
from vnet.switch.config import SwitchSpec

A, B = bytes([2, 0, 0, 0, 0, 0xA]), bytes([2, 0, 0, 0, 0, 0xB])


def frame(dst: bytes, src: bytes) -> bytes:
    return Ethernet(dst, src, 0x0800).encode(bytes(46))


def test_flood_learn_vxlan_and_control(tmp_path: Path) -> None:
    remote = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # a VTEP on loopback
    remote.bind(("127.0.0.1", 0))
    remote.settimeout(10)
    port = remote.getsockname()[1]
    spec = SwitchSpec.model_validate(
        {"name": "swloop", "vxlan_port": port, "local": "127.0.0.2", "offload": False,
         "segments": [{"vni": 100, "vlan": 1, "remotes": ["127.0.0.1"]}]}
    )
    daemon = SwitchDaemon(spec, control_path=str(tmp_path / "sw.sock"))
    taps = {"pa": FakeTun(), "pb": FakeTun()}
    for name, tap in taps.items():
        daemon.switch.add_port(name)
        daemon.add_tap(name, tap)
    daemon.switch.add_segment(100, 1, [("127.0.0.1", port)])
    daemon._open_vxlan()
    daemon.control.listen()
    with running(daemon):
        hello = frame(BROADCAST, A)
        taps["pa"].kernel.send(hello)  # flooded to pb and to the remote VTEP
        assert taps["pb"].kernel.recv(65536) == hello
        datagram, source = remote.recvfrom(65536)
        assert source == ("127.0.0.2", port)
        assert vxlan.decode(datagram)[1] == hello
        # the remote answers over VXLAN: learned behind its VTEP, delivered to pa only
        reply = frame(A, B)
        remote.sendto(vxlan.encode(100) + reply, ("127.0.0.2", port))
        assert taps["pa"].kernel.recv(65536) == reply
        fdb = json.loads(unixsock.request(str(tmp_path / "sw.sock"), b"fdb\n", b"\n"))
        entries = {e["mac"]: e for e in fdb["fdb"]}
        assert entries["02:00:00:00:00:0a"]["port"] == "pa"
        assert entries["02:00:00:00:00:0b"]["remote"] == f"127.0.0.1:{port}"
        stats = json.loads(unixsock.request(str(tmp_path / "sw.sock"), b"stats\n", b"\n"))
        assert stats["ports"]["pa"]["rx_frames"] == 1
        bad = json.loads(unixsock.request(str(tmp_path / "sw.sock"), b"nonsense\n", b"\n"))
        assert bad == {"error": "unknown request 'nonsense'"}
    remote.close()


def test_a_storming_port_is_limited_and_its_unicast_still_passes(tmp_path: Path) -> None:
    spec = SwitchSpec.model_validate({"name": "swstorm", "offload": False})
    daemon = SwitchDaemon(spec, control_path=str(tmp_path / "sw.sock"))
    taps = {"pa": FakeTun(), "pb": FakeTun()}
    daemon.switch.add_port("pa", storm_limit=100)  # bursts of 10
    daemon.switch.add_port("pb")
    for name, tap in taps.items():
        daemon.add_tap(name, tap)
    daemon.control.listen()
    with running(daemon):
        taps["pb"].kernel.send(frame(BROADCAST, B))  # B known, on pb
        assert taps["pa"].kernel.recv(65536) == frame(BROADCAST, B)
        start = time.monotonic()
        storm = frame(BROADCAST, A)
        for _ in range(150):  # bounded; the fake TAP's queue holds it all
            taps["pa"].kernel.send(storm)
        unicast = frame(B, A)
        taps["pa"].kernel.send(unicast)
        pb = taps["pb"].kernel
        got = []
        while (data := pb.recv(65536)) != unicast:  # the unicast arrives after the storm
            got.append(data)
        elapsed = time.monotonic() - start
        assert got and all(d == storm for d in got)
        assert len(got) <= 10 + 100 * elapsed + 1  # the burst and the rate, no more
        stats = json.loads(unixsock.request(str(tmp_path / "sw.sock"), b"stats\n", b"\n"))
        assert stats["ports"]["pa"]["drops"]["storm-control"] == 150 - len(got)
    for tap in taps.values():
        tap.close()


def test_a_static_vtep_has_a_socket_of_its_own(tmp_path: Path) -> None:
    remote = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    remote.bind(("127.0.0.1", 0))
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.3", 0))
    port = remote.getsockname()[1]
    spec = SwitchSpec.model_validate(
        {"name": "swvtep", "vxlan_port": port, "local": "127.0.0.2", "offload": False,
         "segments": [{"vni": 100, "vlan": 1, "remotes": ["127.0.0.1"]}]}
    )
    daemon = SwitchDaemon(spec, control_path=str(tmp_path / "sw.sock"))
    tap = FakeTun()
    daemon.switch.add_port("pa")
    daemon.add_tap("pa", tap)
    daemon.switch.add_segment(100, 1, [("127.0.0.1", port)])
    daemon._open_vxlan()
    try:
        assert [t.sock.getsockname() for t in daemon.vtep_sockets] == [("127.0.0.2", port)]
        twin = daemon.vtep_sockets[0].sock
        assert daemon.vxlan is not None
        wildcard = daemon.vxlan.sock
        twin.setblocking(True)
        wildcard.setblocking(True)
        twin.settimeout(5)
        wildcard.settimeout(5)
        # from the VTEP, whatever its source port: the VTEP's socket; else the wildcard
        other_port = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other_port.bind(("127.0.0.1", 0))
        remote.sendto(b"vtep 1", ("127.0.0.2", port))
        other_port.sendto(b"vtep 2", ("127.0.0.2", port))
        stranger.sendto(b"stranger", ("127.0.0.2", port))
        assert [twin.recv(100), twin.recv(100)] == [b"vtep 1", b"vtep 2"]
        assert wildcard.recv(100) == b"stranger"
        other_port.close()
    finally:
        daemon.close()
        tap.close()
        remote.close()
        stranger.close()


def test_captures_of_all_ports_and_of_one(tmp_path: Path) -> None:
    from vnet.capture.writer import LINKTYPE_ETHERNET, PcapWriter

    everything, own = tmp_path / "all.pcap", tmp_path / "pb.pcap"
    spec = SwitchSpec.model_validate({"name": "swcap", "offload": False})
    spec.ports = []
    daemon = SwitchDaemon(spec, control_path=str(tmp_path / "sw.sock"),
                          capture=PcapWriter(str(everything), LINKTYPE_ETHERNET))
    taps = {"pa": FakeTun(), "pb": FakeTun()}
    for name, tap in taps.items():
        daemon.switch.add_port(name)
        daemon.add_tap(name, tap)
        daemon._open_captures(name, str(own) if name == "pb" else None)
    with running(daemon):
        hello = frame(BROADCAST, A)
        taps["pa"].kernel.send(hello)
        assert taps["pb"].kernel.recv(65536) == hello
        reply = frame(A, B)
        taps["pb"].kernel.send(reply)
        assert taps["pa"].kernel.recv(65536) == reply
    for tap in taps.values():
        tap.close()
    import dpkt  # type: ignore[import-untyped]

    def frames(path: Path) -> list[bytes]:
        with open(path, "rb") as f:
            reader = dpkt.pcap.Reader(f)
            assert reader.datalink() == LINKTYPE_ETHERNET
            return [bytes(data) for _, data in reader]

    # every port's rx and tx: each frame in and out; pb's own file: what pb sent and got
    assert frames(everything) == [hello, hello, reply, reply]
    assert frames(own) == [hello, reply]


def _one_vtep_switch(tmp_path: Path, name: str, offload: bool) -> tuple[
        SwitchDaemon, FakeTun, socket.socket, list[int]]:
    """A switch with one TAP port (vnet_hdr when ``offload``) and one remote VTEP on
    loopback; the list records the size of each group of single datagrams sent."""
    remote = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    remote.bind(("127.0.0.1", 0))
    remote.settimeout(10)
    port = remote.getsockname()[1]
    spec = SwitchSpec.model_validate(
        {"name": name, "vxlan_port": port, "local": "127.0.0.2", "offload": offload,
         "segments": [{"vni": 100, "vlan": 1, "remotes": ["127.0.0.1"]}]}
    )
    daemon = SwitchDaemon(spec, control_path=str(tmp_path / "sw.sock"))
    tap = FakeTun()
    daemon.switch.add_port("pa")
    daemon.add_tap("pa", tap, vnet_hdr=offload)
    daemon.switch.add_segment(100, 1, [("127.0.0.1", port)])
    daemon._open_vxlan()
    groups: list[int] = []
    send = daemon._send_vxlan

    def recorded(datagrams: list[bytes], address: tuple[str, int]) -> None:
        groups.append(len(datagrams))
        send(datagrams, address)

    daemon._send_vxlan = recorded  # type: ignore[method-assign]
    return daemon, tap, remote, groups


def test_the_single_datagrams_of_a_tap_wake_leave_together(tmp_path: Path) -> None:
    """The first frame of a wake leaves at once (an idle ping waits for nothing); the
    rest for the same VTEP are held until the TAP is empty and leave in one go (a
    stream's ACKs: one GSO send out, one GRO run in), in order."""
    daemon, tap, remote, groups = _one_vtep_switch(tmp_path, "swheld", offload=False)
    try:
        frames = [Ethernet(BROADCAST, A, 0x0800).encode(bytes([i]) * 46) for i in range(5)]
        for f in frames:
            tap.kernel.send(f)
        daemon._read_tap("pa", select.EPOLLIN)
        assert groups == [1, 4]
        assert [vxlan.decode(remote.recv(65536))[1] for _ in frames] == frames
        assert daemon._held is None  # nothing held between wakes
        tap.kernel.send(frames[0])
        daemon._read_tap("pa", select.EPOLLIN)
        assert groups == [1, 4, 1]
    finally:
        daemon.close()
        tap.close()
        remote.close()


def test_held_datagrams_leave_before_a_super_frame_after_them(tmp_path: Path) -> None:
    from tests.switch.test_offload import super_frame
    from vnet.packet.virtio import VirtioNetHdr

    daemon, tap, remote, groups = _one_vtep_switch(tmp_path, "swheldtso", offload=True)
    try:
        plain = VirtioNetHdr(0, 0, 0, 0, 0, 0).encode()
        singles = [Ethernet(BROADCAST, A, 0x0800).encode(bytes([i]) * 46) for i in range(3)]
        hdr, big, packets = super_frame(BROADCAST + A + b"\x08\x00")
        for data in (plain + singles[0], plain + singles[1], hdr.encode() + big,
                     plain + singles[2]):
            tap.kernel.send(data)
        daemon._read_tap("pa", select.EPOLLIN)
        assert groups == [1, 1, 1]  # the held one went before the super-frame
        got = [vxlan.decode(remote.recv(65536))[1] for _ in range(3 + len(packets))]
        link = BROADCAST + A + b"\x08\x00"
        assert got == [*singles[:2], *(link + p for p in packets), singles[2]]
    finally:
        daemon.close()
        tap.close()
        remote.close()


class _FakeRaw:
    """A netdev port's packet socket: hands out the queued frames, as received ones."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = list(frames)

    def recvfrom_into(self, buffer: memoryview) -> tuple[int, tuple[str, int, int, int, bytes]]:
        if not self.frames:
            raise BlockingIOError
        frame = self.frames.pop(0)
        buffer[: len(frame)] = frame
        return len(frame), ("eth0", 0x0003, 0, 1, bytes(6))  # PACKET_HOST

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self.frames = []


def test_a_netdev_port_wakes_single_datagrams_leave_together_too(tmp_path: Path) -> None:
    daemon, tap, remote, groups = _one_vtep_switch(tmp_path, "swheldnd", offload=False)
    try:
        daemon.switch.add_port("pn")
        frames = [Ethernet(BROADCAST, B, 0x0800).encode(bytes([i]) * 46) for i in range(4)]
        daemon.raw["pn"] = _FakeRaw(frames)  # type: ignore[assignment]
        daemon._read_netdev("pn", select.EPOLLIN)
        assert groups == [1, 3]
        assert daemon._held is None
        got = [vxlan.decode(remote.recv(65536))[1] for _ in frames]
        assert got == frames
        assert tap.kernel.recv(65536) == frames[0]  # flooded to the TAP port as well
    finally:
        daemon.close()
        tap.close()
        remote.close()
