"""vnet-wg against real peers (wireguard-go) and the real `wg`/`wg-quick`, in namespaces."""

from __future__ import annotations

import functools
import os
import random
import socket
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IS_ROOT
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink

from .wg_env import (
    VNET_WG,
    Site,
    configure,
    iperf,
    keygen,
    make_underlay,
    new_site,
    require_tools,
    start,
    stop,
    uapi,
    wait_for,
)

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces, TUN, real peers")


def pair(ns: str, ns2: str, tmp_path: Path, kind_a: str, kind_b: str,
         v6: bool = False, extra_b: tuple[str, ...] = (),
         extra_a: tuple[str, ...] = ()) -> Iterator[tuple[Site, Site]]:
    require_tools()
    make_underlay(ns, ns2)
    a = new_site(ns, kind_a, 1, tmp_path)
    b = new_site(ns2, kind_b, 2, tmp_path)
    try:
        start(a, *extra_a)
        start(b, *extra_b)
        configure(a, b, v6_endpoint=v6)
        configure(b, a, v6_endpoint=v6)
        yield a, b
    finally:
        stop(a)
        stop(b)


@pytest.fixture
def vnet_go(ns: str, ns2: str, tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    yield from pair(ns, ns2, tmp_path, "vnet", "go")


@pytest.fixture
def vnet_vnet(ns: str, ns2: str, tmp_path: Path) -> Iterator[tuple[Site, Site]]:
    yield from pair(ns, ns2, tmp_path, "vnet", "vnet")


def test_with_wireguard_go(vnet_go: tuple[Site, Site]) -> None:
    a, b = vnet_go
    assert a.ping(b.inner) and a.ping(b.inner6)
    assert b.ping(a.inner) and b.ping(a.inner6)
    peer = a.dump()[1]  # public-key psk endpoint allowed-ips handshake rx tx keepalive
    assert peer[0] == b.public and peer[2] == f"{b.underlay}:51820"
    assert int(peer[4]) > 0 and int(peer[5]) > 0 and int(peer[6]) > 0
    assert b.dump()[1][0] == a.public and int(b.dump()[1][4]) > 0
    assert iperf(a, b) > 1_000_000  # vnet-wg sends, wireguard-go receives
    assert iperf(b, a) > 1_000_000  # and the other way


def test_allowed_ips_changes(vnet_go: tuple[Site, Site]) -> None:
    a, b = vnet_go
    assert a.ping(b.inner)
    a.wg("set", a.ifname, "peer", b.public, "allowed-ips", f"{b.inner6}/128")
    assert not a.ping(b.inner, count=1, deadline=2)  # no route through the tunnel
    assert a.ping(b.inner6)
    assert a.wg("show", a.ifname, "allowed-ips").stdout.split() == [b.public, f"{b.inner6}/128"]
    a.wg("set", a.ifname, "peer", b.public, "allowed-ips", f"{b.inner}/32,{b.inner6}/128")
    assert a.ping(b.inner)


def test_outer_ipv6(ns: str, ns2: str, tmp_path: Path) -> None:
    for a, b in pair(ns, ns2, tmp_path, "vnet", "go", v6=True):
        assert a.ping(b.inner) and b.ping(a.inner6)
        assert a.dump()[1][2] == f"[{b.underlay6}]:51820"
        assert iperf(a, b) > 1_000_000 and iperf(b, a) > 1_000_000  # the batch paths


def test_jumbo_inner_mtu_with_wireguard_go(vnet_go: tuple[Site, Site]) -> None:
    """An inner MTU of 34,000 bytes over a 65,000-byte underlay: big packets cross whole,
    both ways, one at a time and as a TCP stream."""
    a, b = vnet_go
    for site in (a, b):
        with Netlink(site.ns) as nl:
            underlay = next(x.link for x in nl.addresses() if x.address.startswith("198.18."))
            nl.set_mtu(underlay, 65000)
            nl.set_mtu(site.ifname, 34000)
    for x, y in ((a, b), (b, a)):
        done = x.run("ping", "-c", "2", "-W", "2", "-M", "do", "-s", "33900", y.inner,
                     check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    assert iperf(a, b) > 1_000_000 and iperf(b, a) > 1_000_000


def _swap_address(site: Site, old: str, new: str) -> None:
    with Netlink(site.ns) as nl:
        dev = next(a.link for a in nl.addresses() if a.address == f"{old}/24")
        nl.del_address(dev, f"{old}/24")
        nl.add_address(dev, f"{new}/24")


def test_roaming_both_ways(vnet_go: tuple[Site, Site]) -> None:
    a, b = vnet_go
    assert a.ping(b.inner)
    _swap_address(a, a.underlay, "198.18.0.11")  # vnet-wg moves: wireguard-go follows
    assert a.ping(b.inner)
    assert b.dump()[1][2] == "198.18.0.11:51820"
    _swap_address(b, b.underlay, "198.18.0.12")  # wireguard-go moves: vnet-wg follows
    # wireguard-go keeps sending from its old ("sticky") source address until its own
    # retry timer clears it (KEEPALIVE + REKEY_TIMEOUT, ~15 s): give it that long
    assert b.ping(a.inner, count=1, deadline=30)
    assert a.dump()[1][2] == "198.18.0.12:51820"
    assert a.ping(b.inner)


def _underlay_link(site: Site) -> str:
    with Netlink(site.ns) as nl:
        return next(x.link for x in nl.addresses() if x.address.startswith("198.18."))


@pytest.mark.parametrize("written", ["primary", "second"])
@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_replies_leave_from_the_address_the_peer_wrote_to(
    ns: str, ns2: str, tmp_path: Path, v6: bool, written: str
) -> None:
    """Two addresses on vnet-wg's link, and wireguard-go writing to one of them: every
    reply and vnet-wg's own traffic leave from that address (wireguard-go's endpoint
    stays) whichever the kernel would pick; when the address goes, the kernel's choice,
    and wireguard-go follows."""
    for a, b in pair(ns, ns2, tmp_path, "vnet", "go", v6=v6):
        primary, second, prefix = (
            (a.underlay6, "fd00:18::3", 64) if v6 else (a.underlay, "198.18.0.3", 24)
        )
        target = primary if written == "primary" else second
        shown = f"[{target}]:51820" if v6 else f"{target}:51820"
        link = _underlay_link(a)
        with Netlink(a.ns) as nl:
            nl.add_address(link, f"{second}/{prefix}", nodad=True)
        b.wg("set", b.ifname, "peer", a.public, "endpoint", shown)
        assert b.ping(a.inner)  # wireguard-go starts: its handshake goes to the target
        assert b.dump()[1][2] == shown
        assert a.ping(b.inner6) and b.dump()[1][2] == shown  # vnet-wg's own sends too
        if target == second:
            with Netlink(a.ns) as nl:
                nl.del_address(link, f"{second}/{prefix}")
            assert a.ping(b.inner, count=1, deadline=10)
            assert b.dump()[1][2] == (f"[{primary}]:51820" if v6 else f"{primary}:51820")


def test_a_full_routing_table_and_ten_thousand_peers(ns: str, tmp_path: Path) -> None:
    """`wg setconf` with one peer owning 130,560 allowed-ips (~3.4 MB of UAPI text), then
    with 10,000 peers: both taken whole and shown back (their times: make stress)."""
    require_tools()
    site = new_site(ns, "vnet", 1, tmp_path)
    start(site)
    try:
        table = ",".join(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}/32" for i in range(130_560))
        conf = tmp_path / "table.conf"
        conf.write_text(f"[Interface]\nPrivateKey = {site.private}\n"
                        f"[Peer]\nPublicKey = {keygen()[1]}\nAllowedIPs = {table}\n")
        site.wg("setconf", site.ifname, str(conf))
        shown = site.wg("show", site.ifname, "allowed-ips").stdout.split()
        assert len(shown) == 1 + 130_560 and shown[-1] == "10.1.253.255/32"
        peers = [keygen()[1] for _ in range(10_000)]
        conf.write_text(f"[Interface]\nPrivateKey = {site.private}\n"
                        + "".join(f"[Peer]\nPublicKey = {p}\n" for p in peers))
        site.wg("setconf", site.ifname, str(conf))
        assert set(site.wg("show", site.ifname, "peers").stdout.split()) == set(peers)
    finally:
        stop(site)


def _gone(path: str) -> bool:
    return not os.path.exists(path)


def _connected_udp(ns: str, port: int) -> list[tuple[str, int]]:
    """(remote address in /proc's hex, owner uid) of the connected UDP sockets on ``port``."""
    out = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        lines = netns.run(ns, ["cat", table], capture_output=True, text=True, timeout=10)
        for line in lines.stdout.splitlines()[1:]:
            fields = line.split()
            local, remote, uid = fields[1], fields[2], int(fields[7])
            if int(local.rsplit(":", 1)[1], 16) == port and int(remote.rsplit(":", 1)[1], 16):
                out.append((remote, uid))
    return out


def _pinned_after_ping(a: Site, b: Site) -> bool:
    return a.ping(b.inner) and bool(_connected_udp(a.ns, 51820))


def _status(pid: int, field: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split(":", 1)[1].split() for line in f if line.startswith(field))[0]


@pytest.mark.parametrize("keep", [False, True], ids=["no-caps", "keep-caps"])
def test_running_as_an_unprivileged_user(
    ns: str, ns2: str, tmp_path: Path, keep: bool
) -> None:
    """--user nobody: the devices are opened as root, then the daemon runs as nobody with
    no capability (or only the two it may need); handshakes, roaming and `wg set` go on,
    and at the end a root helper removes the UAPI socket."""
    # the port is bound by root, from the config file, before the drop: the peer's own
    # socket on it (opened as nobody) needs the port handed over
    config = tmp_path / "port.conf"
    config.write_text("[Interface]\nListenPort = 51820\n")
    config.chmod(0o600)
    extra = ("--config", str(config), "--user", "nobody", *(("--keep-caps",) if keep else ()))
    for a, b in pair(ns, ns2, tmp_path, "vnet", "go", extra_a=extra):
        assert a.proc is not None
        pid = a.proc.pid
        assert _status(pid, "Uid:") == "65534" and _status(pid, "Gid:") == "65534"
        assert int(_status(pid, "CapEff:"), 16) == (0x1400 if keep else 0)
        assert a.ping(b.inner) and b.ping(a.inner6)  # the first handshake came after the drop
        # the peer got a socket of its own, opened by nobody on the port root bound
        wait_for(functools.partial(_pinned_after_ping, a, b), 10, "a peer socket")
        assert [uid for _, uid in _connected_udp(ns, 51820)] == [65534]
        _swap_address(a, a.underlay, "198.18.0.11")  # roaming
        assert a.ping(b.inner) and b.dump()[1][2] == "198.18.0.11:51820"
        a.wg("set", a.ifname, "listen-port", "51830")  # a new bind, as nobody
        b.wg("set", b.ifname, "peer", a.public, "endpoint", "198.18.0.11:51830")
        assert b.ping(a.inner)
        fwmark = a.wg("set", a.ifname, "fwmark", "0x42", check=False)
        assert (fwmark.returncode == 0) == keep  # SO_MARK needs CAP_NET_ADMIN
        a.proc.terminate()
        a.proc.wait(10)
        wait_for(functools.partial(_gone, a.socket), 5, "the socket's removal")
    done = netns.run(ns, [VNET_WG, "--user", "no-such-user-x", "wgbad1"], capture_output=True,
                     text=True, timeout=30)
    assert done.returncode == 1 and done.stderr.strip() == (
        "vnet-wg: error: no such user 'no-such-user-x'")


def test_vnet_to_vnet(vnet_vnet: tuple[Site, Site]) -> None:
    a, b = vnet_vnet
    assert a.ping(b.inner) and b.ping(a.inner6)
    assert iperf(a, b) > 1_000_000
    assert iperf(b, a) > 1_000_000


def test_offload_and_plain_data_paths_interwork(ns: str, ns2: str, tmp_path: Path) -> None:
    """One side with TUN TSO + UDP GSO/GRO, the other with none: correct both ways."""
    for a, b in pair(ns, ns2, tmp_path, "vnet", "vnet", extra_b=("--no-offload",)):
        assert a.log is not None and b.log is not None
        assert "offloads: tun vnet_hdr on, tun tso on, udp gso on, udp gro on" in a.log.read_text()
        assert "offloads: tun vnet_hdr off, tun tso off, udp gso off" in b.log.read_text()
        assert a.ping(b.inner) and b.ping(a.inner6)
        assert iperf(a, b) > 1_000_000
        assert iperf(b, a) > 1_000_000


def test_wg_showconf_setconf_syncconf(vnet_go: tuple[Site, Site], tmp_path: Path) -> None:
    a, b = vnet_go
    conf = a.wg("showconf", a.ifname).stdout
    assert f"PublicKey = {b.public}" in conf and f"PrivateKey = {a.private}" in conf
    path = tmp_path / "a.conf"
    path.write_text(conf.replace(f"AllowedIPs = {b.inner}/32, {b.inner6}/128",
                                 f"AllowedIPs = {b.inner}/32"))
    a.wg("syncconf", a.ifname, str(path))
    assert a.wg("show", a.ifname, "allowed-ips").stdout.split() == [b.public, f"{b.inner}/32"]
    assert a.ping(b.inner)
    path.write_text(conf)
    a.wg("setconf", a.ifname, str(path))
    assert a.wg("showconf", a.ifname).stdout == conf


def test_wg_quick_up_down(ns: str, ns2: str, tmp_path: Path) -> None:
    require_tools()
    make_underlay(ns, ns2)
    a = new_site(ns, "vnet", 1, tmp_path)
    b = new_site(ns2, "go", 2, tmp_path)
    start(b)
    try:
        conf = tmp_path / f"{a.ifname}.conf"
        conf.write_text(
            f"[Interface]\nPrivateKey = {a.private}\nListenPort = 51820\n"
            f"Address = {a.inner}/24\n\n"
            f"[Peer]\nPublicKey = {b.public}\nEndpoint = {b.underlay}:51820\n"
            f"AllowedIPs = {b.inner}/32\n")
        conf.chmod(0o600)
        configure(b, a)
        env = {**os.environ, "WG_QUICK_USERSPACE_IMPLEMENTATION": VNET_WG}
        up = subprocess.run(["ip", "netns", "exec", ns, "wg-quick", "up", str(conf)],
                            capture_output=True, text=True, timeout=60, env=env, check=False)
        assert up.returncode == 0, up.stderr
        daemon = [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).endswith(
            f"vnet-wg {a.ifname}")]
        a.extra_pids = daemon
        assert daemon and a.ping(b.inner)
        down = subprocess.run(["ip", "netns", "exec", ns, "wg-quick", "down", str(conf)],
                              capture_output=True, text=True, timeout=60, env=env, check=False)
        assert down.returncode == 0, down.stderr
        wait_for(lambda: not os.path.exists(a.socket), 10, "vnet-wg to exit")
        wait_for(lambda: not any(os.path.exists(f"/proc/{p}") for p in daemon), 10,
                 "vnet-wg process to end")
    finally:
        stop(a)
        stop(b)


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return " ".join(f.read().decode(errors="replace").split("\0")).strip()
    except OSError:
        return ""


def test_uapi_socket_and_errors(vnet_go: tuple[Site, Site]) -> None:
    a, _ = vnet_go
    mode = os.stat(a.socket).st_mode
    assert stat.S_IMODE(mode) == 0o600 and stat.S_ISSOCK(mode)
    assert stat.S_IMODE(os.stat(os.path.dirname(a.socket)).st_mode) == 0o755
    before = uapi(a, "get=1\n\n")
    assert before.endswith("errno=0\n\n")
    for bad in ("set=1\nlisten_port=99999\n\n",
                "set=1\nlisten_port=51999\npublic_key=zz\n\n",
                "set=1\nprivate_key=00\n\n",
                "nonsense=1\n\n"):
        assert uapi(a, bad) == "errno=22\n\n"

    def strip_counters(text: str) -> list[str]:
        return [line for line in text.splitlines()
                if not line.startswith(("tx_bytes", "rx_bytes", "last_handshake"))]

    assert strip_counters(uapi(a, "get=1\n\n")) == strip_counters(before)  # nothing applied
    # a port in use: refused with EADDRINUSE, the old port kept
    with netns.entered(a.ns), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind(("::", 51777))
        assert uapi(a, "set=1\nlisten_port=51777\n\n") == "errno=98\n\n"
    assert "listen_port=51820" in uapi(a, "get=1\n\n")


def test_garbage_udp_is_dropped_silently(ns: str, ns2: str, tmp_path: Path) -> None:
    require_tools()
    make_underlay(ns, ns2)
    a = new_site(ns, "vnet", 1, tmp_path)
    b = new_site(ns2, "go", 2, tmp_path)
    try:
        start(a, "--metrics", "127.0.0.1:9586")
        start(b)
        configure(a, b)
        configure(b, a)
        rng = random.Random(5)
        with netns.entered(b.ns), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            for n in range(300):
                kind = rng.choice([1, 2, 3, 4, 9])
                size = {1: 148, 2: 92, 3: 64}.get(kind, rng.randrange(0, 200))
                s.sendto(bytes([kind, 0, 0, 0]) + rng.randbytes(max(0, size - 4)),
                         (a.underlay, 51820))
                if n % 100 == 0:
                    assert a.proc is not None and a.proc.poll() is None
            with pytest.raises(TimeoutError):
                s.recvfrom(2048)  # never a reply to garbage
        assert a.proc is not None and a.proc.poll() is None
        assert a.ping(b.inner)  # still serving the real peer
        with netns.entered(a.ns):
            metrics = urllib.request.urlopen("http://127.0.0.1:9586/metrics", timeout=5).read()
        text = metrics.decode()
        dropped = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("vnet_wg_events_total{") and any(
                          f'event="{e}"' in line for e in ("rx_malformed", "rx_bad_mac",
                                                            "rx_unknown_index")))
        assert dropped >= 300
        assert f'vnet_wg_peer_receive_bytes_total{{interface="{a.ifname}"' in text
    finally:
        stop(a)
        stop(b)


def test_daemon_lifecycle_and_bad_input(ns: str, tmp_path: Path) -> None:
    require_tools()
    site = new_site(ns, "vnet", 1, tmp_path)
    start(site, "--log-level", "debug")
    try:
        again = netns.run(ns, [VNET_WG, site.ifname], capture_output=True, text=True, timeout=30)
        assert again.returncode == 1 and again.stderr.count("\n") == 1
        assert "in use" in again.stderr and "Traceback" not in again.stderr
        site.wg("set", site.ifname, "private-key", site.key_file)
        with Netlink(ns) as nl:
            assert nl.link(site.ifname).mtu == 1420
    finally:
        stop(site)
    assert not os.path.exists(site.socket)
    with Netlink(ns) as nl:
        assert not nl.exists(site.ifname)  # SIGTERM removed the device
    assert site.log is not None
    log = site.log.read_text()
    raw = __import__("base64").b64decode(site.private)
    assert site.private not in log and raw.hex() not in log  # keys never logged
    bad = tmp_path / "bad.conf"
    bad.write_text("[Interface]\nPrivateKey = " + site.private + "\nListenPort = 70000\n")
    bad.chmod(0o600)
    done = netns.run(ns, [VNET_WG, "--config", str(bad), "wgbad0"], capture_output=True,
                     text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"vnet-wg: error: {bad}:3: ListenPort 70000 is out of range "
                                   "0..65535")
    bad.chmod(0o644)  # a key file others can read: warned about, as wg-quick does
    done = netns.run(ns, [VNET_WG, "--config", str(bad), "wgbad0"], capture_output=True,
                     text=True, timeout=30)
    assert done.stderr.splitlines()[0] == (
        f"vnet-wg: warning: {bad} is readable by group or others (mode 644); it holds a "
        "private key: chmod 600 it")
    assert site.private not in done.stderr
    long_name = netns.run(ns, [VNET_WG, "x" * 16], capture_output=True, text=True, timeout=30)
    assert long_name.returncode == 1 and "at most 15" in long_name.stderr
    with Netlink(ns) as nl:
        assert [link.name for link in nl.links()] == ["lo"]  # nothing half-created


@pytest.mark.slow
def test_real_rekey_with_wireguard_go(vnet_go: tuple[Site, Site]) -> None:
    """REKEY_AFTER_TIME for real: 2 minutes of light traffic, a second handshake, no outage."""
    a, b = vnet_go
    assert a.ping(b.inner)
    first = int(a.dump()[1][4])
    lost = 0
    deadline = time.monotonic() + 150
    rekeyed = False
    while time.monotonic() < deadline:
        if not a.ping(b.inner, count=1, deadline=2):
            lost += 1
        if int(a.dump()[1][4]) > first and int(b.dump()[1][4]) > first:
            rekeyed = True
            if a.ping(b.inner, count=3):
                break
        time.sleep(1)
    assert rekeyed, "no second handshake within 150 s"
    assert lost <= 2


@pytest.mark.parametrize("offload", [True, False], ids=["offload", "no-offload"])
def test_a_capture_of_the_inner_packets(ns: str, ns2: str, tmp_path: Path, offload: bool) -> None:
    """--pcap: the decrypted packets both ways, in a file tcpdump reads as raw IP;
    --pcap-outer: the encrypted datagrams, with their IP and UDP headers put back."""
    capture, outer = tmp_path / "inner.pcap", tmp_path / "outer.pcap"
    extra = ("--pcap", str(capture), "--pcap-outer", str(outer),
             *(() if offload else ("--no-offload",)))
    for a, b in pair(ns, ns2, tmp_path, "vnet", "go", extra_a=extra):
        assert a.ping(b.inner, count=3)
        assert a.proc is not None
        a.proc.terminate()
        a.proc.wait(10)
    done = subprocess.run(["tcpdump", "-n", "-r", str(capture), "icmp"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0 and "reading from file" in done.stderr
    assert "LINUX_SLL" not in done.stderr and "RAW" in done.stderr  # raw IP, no link header
    requests = [line for line in done.stdout.splitlines() if "ICMP echo request" in line]
    replies = [line for line in done.stdout.splitlines() if "ICMP echo reply" in line]
    assert len(requests) >= 3 and len(replies) >= 3
    assert all("198.19.0.1 > 198.19.0.2" in line for line in requests)
    assert stat.S_IMODE(capture.stat().st_mode) == 0o600
    done = subprocess.run(["tcpdump", "-n", "-vv", "-r", str(outer), "udp"], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0 and "RAW" in done.stderr
    text = done.stdout
    # handshake (148 and 92 bytes), then transport data both ways; checksums that hold
    assert "198.18.0.2.51820 > 198.18.0.1.51820: [udp sum ok] UDP, length 92" in text, text
    assert text.count(".51820 > 198.18.0.2.51820: [udp sum ok] UDP, length 128") >= 3, text
    assert text.count("198.18.0.2.51820 > 198.18.0.1.51820: [udp sum ok] UDP, length 128") >= 3
