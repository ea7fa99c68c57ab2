"""`make stress`: vnet-wg under load and faults, bounded (about 10 minutes); writes the
table of docs/reliability.md between its markers.

Each scenario builds two namespaces over a veth underlay (tests/runtime/wg_env: vnet-wg on
both ends, configured with `wg`), applies one load and one fault, and reports what was
kept and what was lost. Addresses: underlay 198.18.0.1/2, tunnel 198.19.0.1/2. Every
process started here is stopped by PID; the namespaces are deleted after each scenario.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.runtime import wg_env  # noqa: E402
from tests.runtime.wg_env import Site  # noqa: E402

from vnet.kernel import netns  # noqa: E402
from vnet.kernel.netlink import Netlink  # noqa: E402

FLOOD = str(ROOT / "bench" / "flood.py")
DOC = ROOT / "docs" / "reliability.md"
BEGIN, END = "<!-- stress:begin -->", "<!-- stress:end -->"
HZ = os.sysconf("SC_CLK_TCK")
DATAGRAM = 1300  # iperf3 UDP payload bytes: one datagram fits the tunnel MTU
BENCH_NET = int(IPv4Address("198.18.0.0"))  # 198.18.0.0/15: 131,072 addresses
IDLE_PEERS_NET = int(IPv4Address("198.19.128.0"))


@dataclass
class Row:
    test: str
    load: str
    fault: str
    kept: str
    lost: str


# --- helpers --------------------------------------------------------------------------------


@contextlib.contextmanager
def pair(tmp: Path, kind: str = "vnet") -> Iterator[tuple[Site, Site]]:
    tag = f"{os.getpid() % 10000}-{int(time.monotonic() * 1000) % 100000}"
    ns_a, ns_b = f"stress-a-{tag}", f"stress-b-{tag}"
    sites: list[Site] = []
    try:
        for ns in (ns_a, ns_b):
            netns.create(ns)
        wg_env.make_underlay(ns_a, ns_b)
        a = wg_env.new_site(ns_a, kind, 1, tmp)
        b = wg_env.new_site(ns_b, kind, 2, tmp)
        sites += [a, b]
        for site in (a, b):
            wg_env.start(site)
        wg_env.configure(a, b)
        wg_env.configure(b, a)
        if not a.ping(b.inner):
            raise RuntimeError("the tunnel does not carry a ping")
        yield a, b
    finally:
        for site in sites:
            wg_env.stop(site)
        for ns in (ns_a, ns_b):
            if netns.exists(ns):
                netns.delete(ns)


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def pid_of(site: Site) -> int:
    assert site.proc is not None
    return site.proc.pid


IPERF_PORT = "5299"


@contextlib.contextmanager
def iperf_server(ns: str, address: str) -> Iterator[None]:
    """One iperf3 server (for one test) on ``address`` in ``ns`` for the block."""
    server = netns.popen(ns, ["iperf3", "-s", "-1", "-B", address, "-p", IPERF_PORT],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wg_env.wait_for(lambda: bool(netns.run(ns, ["ss", "-Htln", f"sport = :{IPERF_PORT}"],
                                               capture_output=True, text=True).stdout.strip()),
                        10, "iperf3 server")
        yield
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def iperf(ns: str, address: str, seconds: int, *extra: str) -> dict[str, Any]:
    """One iperf3 client run from ``ns`` to a server ``iperf_server`` started: its report."""
    argv = ["iperf3", "-c", address, "-p", IPERF_PORT, "-t", str(seconds), "-J", *extra]
    done = netns.run(ns, argv, capture_output=True, text=True, timeout=seconds + 30)
    if done.returncode != 0:
        raise RuntimeError(f"iperf3 {' '.join(extra)}: {done.stdout}{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _average(report: dict[str, Any], seconds: int) -> float:
    return float(report["end"]["sum_received"]["bytes"]) * 8 / seconds / 1e9


def tcp_gbps(client: str, server: str, address: str, seconds: int) -> float:
    """A TCP transfer from ``client`` to ``address`` in ``server``: Gb/s received."""
    with iperf_server(server, address):
        return _average(iperf(client, address, seconds), seconds)


def gbps(client: Site, server: Site, seconds: int) -> float:
    return tcp_gbps(client.ns, server.ns, server.inner, seconds)


def log_lines(site: Site) -> int:
    assert site.log is not None
    return len(site.log.read_text(errors="replace").splitlines())


def flood(site: Site, kind: str, host: str, port: int, key: str, rate: float,
          seconds: float) -> subprocess.Popen[str]:
    return netns.popen(site.ns, [sys.executable, FLOOD, kind, host, str(port), key, str(rate),
                                 str(seconds)], stdout=subprocess.PIPE, text=True)


def flood_result(proc: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = proc.communicate(timeout=60)
    result: dict[str, float] = json.loads(out)
    return result


# --- scenarios ------------------------------------------------------------------------------


def big_configs(tmp: Path) -> list[Row]:
    """130,560 allowed-ips on one peer, then 10,000 peers, each into a fresh daemon:
    `wg setconf` and `wg show`."""
    cases = [
        ("130,560 allowed-ips, one peer", "allowed-ips",
         f"[Peer]\nPublicKey = {wg_env.keygen()[1]}\nAllowedIPs = "
         + ",".join(f"{IPv4Address(BENCH_NET + i)}/32" for i in range(130_560))
         + "\n", 130_560),
        ("10,000 peers", "peers", idle_peers_conf(10_000), 10_000),
    ]
    rows = []
    for name, show, peers, expected in cases:
        ns = f"stress-c-{os.getpid() % 10000}"
        netns.create(ns)
        site = wg_env.new_site(ns, "vnet", 1, tmp)
        try:
            wg_env.start(site)
            pid = pid_of(site)
            conf = tmp / "big.conf"
            conf.write_text(f"[Interface]\nPrivateKey = {site.private}\n{peers}")
            conf.chmod(0o600)
            before = rss_mib(pid)
            start = time.monotonic()
            site.wg("setconf", site.ifname, str(conf))
            set_s = time.monotonic() - start
            start = time.monotonic()
            words = site.wg("show", site.ifname, show).stdout.split()
            show_s = time.monotonic() - start
            count = len(words) - 1 if show == "allowed-ips" else len(words)
            rows.append(Row(
                f"big config: {name}", f"`wg setconf` of {conf.stat().st_size / 1e6:.1f} MB",
                "-", f"set in {set_s:.2f} s, `wg show {show}` in {show_s:.2f} s, {count:,} "
                f"shown; RSS {before:.0f} -> {rss_mib(pid):.0f} MiB",
                "none" if count == expected else f"{expected - count} missing"))
        finally:
            wg_env.stop(site)
            netns.delete(ns)
    return rows


def idle_peers_conf(count: int) -> str:
    """``count`` peers without endpoints, each owning one /32 from 198.19.128.0 on (clear
    of the tunnels' inner addresses, 198.19.0.x)."""
    return "".join(
        f"[Peer]\nPublicKey = {wg_env.keygen()[1]}\nAllowedIPs = "
        f"{IPv4Address(IDLE_PEERS_NET + i)}/32\n"
        for i in range(count)
    )


def idle_peers(tmp: Path, seconds: int) -> Row:
    """A tunnel's throughput and idle RTT, then the same with 10,000 more peers configured
    on both sides (no endpoints, no traffic): what a big configuration costs the loop."""
    conf = tmp / "idle-peers.conf"
    conf.write_text(idle_peers_conf(10_000))
    conf.chmod(0o600)
    with pair(tmp) as (a, b):
        base, base_rtt = gbps(a, b, seconds), idle_rtt(a, b)
        for site in (a, b):
            site.wg("addconf", site.ifname, str(conf))
        peers = len(a.wg("show", a.ifname, "peers").stdout.split())
        during, rtt = gbps(a, b, seconds), idle_rtt(a, b)
    return Row(
        "10,000 idle peers", f"iperf3 TCP {seconds} s and 20 pings 50 ms apart; {peers:,} "
        "peers on each side, one with traffic",
        "-", f"{during:.2f} of {base:.2f} Gb/s ({100 * during / base:.0f}%); idle RTT "
        f"{rtt:.3f} ms (without them {base_rtt:.3f})",
        "none" if during >= 0.8 * base else f"{100 - 100 * during / base:.0f}% of the rate")


def idle_rtt(a: Site, b: Site) -> float:
    """The average of 20 pings 50 ms apart through the tunnel, in ms."""
    done = a.run("ping", "-c", "20", "-i", "0.05", "-q", b.inner)
    return float(done.stdout.split("=")[-1].split("/")[1])


def handshake_flood(tmp: Path, seconds: int) -> Row:
    """Initiations with a valid mac1 at 10,000/s into a tunnel that carries iperf3."""
    with pair(tmp) as (a, b):
        base = gbps(a, b, seconds)
        pid = pid_of(b)
        lines, rss0, cpu0 = log_lines(b), rss_mib(pid), cpu_ticks(pid)
        proc = flood(a, "initiation", b.underlay, 51820, b.public, 10_000, seconds + 2)
        during = gbps(a, b, seconds)
        sent = flood_result(proc)
        cpu = (cpu_ticks(pid) - cpu0) / HZ / sent["seconds"]
        logged = log_lines(b) - lines
        rss1 = rss_mib(pid)
        still = a.ping(b.inner)
    return Row(
        "handshake flood", f"iperf3 TCP {seconds} s; {sent['sent'] / sent['seconds']:,.0f} "
        "initiations/s with valid mac1 from the peer's address",
        "flood", f"{during:.2f} of {base:.2f} Gb/s ({100 * during / base:.0f}%); "
        f"{sent['replies']:,.0f} cookie replies; daemon CPU {100 * cpu:.0f}%, RSS "
        f"{rss0:.0f} -> {rss1:.0f} MiB, {logged} log lines",
        "none" if still else "the tunnel stopped carrying pings")


def garbage_flood(tmp: Path, seconds: int) -> Row:
    """Random datagrams as fast as one core sends them: at the listen port, and for
    comparison at a closed port (the same CPU taken, none of it the daemon's work)."""
    with pair(tmp) as (a, b):
        base = gbps(a, b, seconds)
        results = {}
        for port in (51999, 51820):
            proc = flood(a, "garbage", b.underlay, port, "-", 0, seconds + 2)
            results[port] = (gbps(a, b, seconds), flood_result(proc))
        still = a.ping(b.inner)
    control, _ = results[51999]
    during, sent = results[51820]
    return Row(
        "garbage flood", f"iperf3 TCP {seconds} s; random 200-byte datagrams from one "
        f"core, {sent['sent'] / sent['seconds']:,.0f}/s",
        "flood", f"{during:.2f} Gb/s: {100 * during / control:.0f}% of the same flood at a "
        f"closed port ({control:.2f}), {100 * during / base:.0f}% of no flood ({base:.2f})",
        f"{100 - 100 * during / control:.0f}% of the rate"
        + ("" if still else "; the tunnel stopped carrying pings"))


@contextlib.contextmanager
def transfer(a: Site, b: Site, seconds: int) -> Iterator[dict[str, Any]]:
    """An iperf3 TCP transfer from a to b in the background for the body of the block; the
    dict holds its JSON report once the block has ended."""
    report: dict[str, Any] = {}
    with iperf_server(b.ns, b.inner):
        client = netns.popen(a.ns, ["iperf3", "-c", b.inner, "-p", IPERF_PORT, "-t",
                                    str(seconds), "-J"], stdout=subprocess.PIPE, text=True)
        try:
            yield report
            out, _ = client.communicate(timeout=seconds + 30)
            report.update(json.loads(out))
        finally:
            if client.poll() is None:
                client.kill()
                client.wait()


def _time_to_ping(client: Site, target: str, limit: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < limit:
        done = client.run("ping", "-c", "1", "-W", "0.2", target, check=False)
        if done.returncode == 0:
            return time.monotonic() - start
    return None


def peer_restart(tmp: Path) -> Row:
    """The receiving peer SIGKILLed mid-transfer and started again with its config."""
    with pair(tmp) as (a, b), transfer(a, b, 30) as report:
        time.sleep(3)
        assert b.proc is not None
        b.proc.send_signal(signal.SIGKILL)
        b.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(b.socket)
        wg_env.start(b)
        wg_env.configure(b, a)
        resumed = _time_to_ping(a, b.inner, 25)
    finished = "error" not in report
    return Row(
        "peer restart", "iperf3 TCP 30 s", "the receiving vnet-wg SIGKILLed at 3 s, started "
        "again with the same config",
        f"pings again {resumed:.2f} s after the restart (target REKEY_TIMEOUT + 1 = 6 s)"
        if resumed is not None else "no ping within 25 s",
        "the TCP connection survived" if finished else f"iperf3: {report.get('error')}")


def _underlay_link(site: Site) -> str:
    with Netlink(site.ns) as nl:
        return next(x.link for x in nl.addresses() if x.address.startswith("198.18."))


def link_flap(tmp: Path) -> Row:
    """The underlay link down for 3 s, then up, under a TCP transfer."""
    with pair(tmp) as (a, b), transfer(a, b, 15) as report:
        time.sleep(3)
        with Netlink(a.ns) as nl:
            link = _underlay_link(a)
            nl.set_down(link)
            time.sleep(3)
            nl.set_up(link)
    ok = "error" not in report
    return Row("link flap", "iperf3 TCP 15 s", "underlay link down 3 s at 3 s, then up",
               f"the TCP connection survived, {_average(report, 15):.2f} Gb/s average"
               if ok else "-", "none" if ok else f"iperf3: {report.get('error')}")


def roaming(tmp: Path) -> Row:
    """The sender's underlay address changes under a TCP transfer."""
    with pair(tmp) as (a, b):
        with transfer(a, b, 10) as report:
            time.sleep(3)
            with Netlink(a.ns) as nl:
                link = _underlay_link(a)
                nl.del_address(link, f"{a.underlay}/24")  # (a secondary would go with it)
                nl.add_address(link, "198.18.0.11/24")
        endpoint = b.dump()[1][2]
    ok = "error" not in report and endpoint == "198.18.0.11:51820"
    got = _average(report, 10) if "end" in report else 0.0
    return Row("roaming", "iperf3 TCP 10 s", "the sender's address changes at 3 s",
               f"the TCP connection survived ({got:.2f} Gb/s average); the peer's endpoint "
               f"is now {endpoint}", "none" if ok else "the flow or the endpoint was lost")


def _tun_drops(site: Site) -> int:
    """Packets the kernel dropped at the TUN's queue (the daemon did not read in time)."""
    out = site.run("ip", "-s", "-j", "link", "show", site.ifname).stdout
    stats = json.loads(out)[0]["stats64"]
    return int(stats["tx"]["dropped"]) + int(stats["rx"]["dropped"])


def no_loss(tmp: Path, seconds: int) -> Row:
    """UDP at half the measured capacity: not one datagram lost."""
    with pair(tmp) as (a, b):
        offered = _udp(a, b, 0, 5)["end"]["sum"]  # as fast as iperf3 sends: what arrives
        capacity = (offered["packets"] - offered["lost_packets"]) * DATAGRAM * 8 / 5
        rate = capacity / 2
        time.sleep(2)  # what the flat-out run queued drains first
        drops = [_tun_drops(a), _tun_drops(b)]
        report = _udp(a, b, rate, seconds)
        drops = [_tun_drops(a) - drops[0], _tun_drops(b) - drops[1]]
    total = report["end"]["sum"]
    return Row("no loss below capacity", f"iperf3 UDP {seconds} s at {rate / 1e9:.2f} Gb/s "
               f"(half of the {capacity / 1e9:.2f} that arrive when iperf3 sends flat out)", "-",
               f"{total['packets'] - total['lost_packets']:,} datagrams",
               f"{total['lost_packets']} lost; TUN queue drops {drops[0]} (sender), "
               f"{drops[1]} (receiver)")


def _udp(a: Site, b: Site, rate: float, seconds: int) -> dict[str, Any]:
    with iperf_server(b.ns, b.inner):
        return iperf(a.ns, b.inner, seconds, "-u", "-b", str(int(rate)), "-l", str(DATAGRAM),
                     "-w", "4M")


def soak(tmp: Path, seconds: int) -> Row:
    """Mixed traffic for ``seconds`` with a rekey every 10 s (the daemons' test-only
    option): memory and file descriptors at the start and the end, pings lost."""
    os.environ["VNET_WG_TEST_REKEY_AFTER_TIME"] = "10"
    try:
        context = pair(tmp)
        a, b = context.__enter__()
    finally:
        del os.environ["VNET_WG_TEST_REKEY_AFTER_TIME"]
    try:
        pids = [pid_of(a), pid_of(b)]
        pinger = netns.popen(a.ns, ["ping", "-q", "-i", "0.2", "-w", str(seconds), b.inner],
                             stdout=subprocess.PIPE, text=True)
        handshakes: set[str] = set()
        with transfer(a, b, seconds) as report:
            time.sleep(10)  # past start-up: the baseline
            rss0, fd0 = [rss_mib(p) for p in pids], [fds(p) for p in pids]
            end = time.monotonic() + seconds - 12
            while time.monotonic() < end:
                handshakes.add(a.dump()[1][4])
                time.sleep(2)
            rss1, fd1 = [rss_mib(p) for p in pids], [fds(p) for p in pids]
        out, _ = pinger.communicate(timeout=30)
        loss = re.search(r"([\d.]+)% packet loss", out)
    finally:
        context.__exit__(None, None, None)
    moved = "error" not in report
    return Row(
        "soak", f"iperf3 TCP {seconds} s, a ping every 0.2 s",
        f"a rekey every 10 s (test-only option): {len(handshakes)} handshakes seen",
        f"RSS {rss0[0]:.0f}/{rss0[1]:.0f} -> {rss1[0]:.0f}/{rss1[1]:.0f} MiB (sender/receiver),"
        f" fds {fd0} -> {fd1}; {_average(report, seconds) if moved else 0:.2f} Gb/s average",
        f"{loss.group(1) if loss else '?'}% of pings" + ("" if moved else "; iperf3 failed"))


def _switch_query(ns: str, name: str, what: str) -> dict[str, Any]:
    done = netns.run(ns, [sys.executable, "-m", "vnet", "switch", what, name, "--json"],
                     capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"vnet switch {what}: {done.stderr.strip()}")
    stats: dict[str, Any] = json.loads(done.stdout)
    return stats


STORM_LIMIT = 1000  # flooded frames a second per port, in the switch floods
ATTACKER = "198.18.0.9"  # a second address on the remote VTEP's host


def switch_floods(tmp: Path, seconds: int) -> list[Row]:
    """vnet switch with three TAP ports and a VXLAN segment, storm control on: a known
    unicast TCP flow between two ports while the third port floods new MACs, then
    broadcasts, and while random datagrams hit the VXLAN port. Each flood also runs once
    at a sink (a veth pair; a closed UDP port), for what the flooder's core alone
    costs the flow."""
    tag = f"{os.getpid() % 10000}"
    names = [f"stress-{n}-{tag}" for n in ("sw", "va", "vb", "vc", "h1")]
    sw, va, vb, vc, h1 = names
    proc = None
    rows = []
    try:
        for ns in names:
            netns.create(ns)
        wg_env.make_underlay(h1, sw)  # h1 198.18.0.1, the switch 198.18.0.2
        config = tmp / "sw.yaml"
        config.write_text(
            f"name: st{tag}\nstorm_limit: {STORM_LIMIT}\nports:\n"
            + "".join(f"  - {{name: tap{x}{tag}, vlan: 10, netns: {ns}}}\n"
                      for x, ns in (("a", va), ("b", vb), ("c", vc)))
            + "segments:\n  - {vni: 100, vlan: 10, remotes: [198.18.0.1]}\n")
        proc = netns.popen(sw, [sys.executable, "-m", "vnet", "switch", "run", str(config)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wg_env.wait_for(lambda: os.path.exists(f"/run/vnet/switch/st{tag}.sock"), 15, "switch")
        for ns, x, addr in ((va, "a", "198.19.100.2"), (vb, "b", "198.19.100.3")):
            with Netlink(ns) as nl:
                nl.add_address(f"tap{x}{tag}", f"{addr}/24")
        base = tcp_gbps(va, vb, "198.19.100.3", seconds)
        with Netlink(vc) as nl:  # a sink: a veth pair whose far end drops what is not its
            nl.add_veth("sink0", "sink1")
            nl.set_up("sink0")
            nl.set_up("sink1")
        floods = (
            ("MAC flood", vc, ["mac-flood", f"tapc{tag}", "0"], ["mac-flood", "sink0", "0"],
             "new source MACs into a port"),
            ("broadcast storm", vc, ["broadcast", f"tapc{tag}", "0"], ["broadcast", "sink0", "0"],
             "broadcasts into a port"),
            ("VXLAN garbage", h1, ["garbage", "198.18.0.2", "4789"],
             ["garbage", "198.18.0.2", "4790"],
             "random datagrams at the VXLAN port from another address of the VTEP's host"),
            ("VXLAN garbage from the VTEP's address", h1, ["garbage", "198.18.0.2", "4789"],
             ["garbage", "198.18.0.2", "4790"],
             "random datagrams at the VXLAN port from the remote VTEP's own address"),
        )
        with Netlink(h1) as nl:
            underlay = next(k.name for k in nl.links() if k.name.startswith("ua"))
            nl.add_address(underlay, f"{ATTACKER}/24")
        for name, ns, argv, sink_argv, what in floods:
            results = []
            source = [ATTACKER] if name == "VXLAN garbage" else []
            for args in (sink_argv, argv):
                before = _switch_query(sw, f"st{tag}", "stats")
                flooder = netns.popen(
                    ns, [sys.executable, FLOOD, *args, "-", "0", str(seconds + 2), *source],
                    stdout=subprocess.PIPE, text=True)
                during = tcp_gbps(va, vb, "198.19.100.3", seconds)
                results.append((during, flood_result(flooder)))
            (control, _), (during, sent) = results
            after = _switch_query(sw, f"st{tag}", "stats")
            storm = (after["ports"][f"tapc{tag}"]["drops"].get("storm-control", 0)
                     - before["ports"][f"tapc{tag}"]["drops"].get("storm-control", 0))
            fdb = _switch_query(sw, f"st{tag}", "fdb")
            rows.append(Row(
                f"switch: {name}", f"iperf3 TCP {seconds} s between two ports; storm control "
                f"{STORM_LIMIT:,} flooded frames/s per port",
                f"{what}, {sent['sent'] / sent['seconds']:,.0f}/s",
                f"{during:.2f} Gb/s: {100 * during / control:.0f}% of the same flood at a sink "
                f"({control:.2f}), {100 * during / base:.0f}% of no flood ({base:.2f}); "
                f"{storm:,} frames stopped by storm control; FDB {len(fdb['fdb'])} entries, "
                f"{fdb['evicted']:,} evicted",
                "none" if during > 0 else "the flow stopped"))
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(10)
        for ns in names:
            if netns.exists(ns):
                netns.delete(ns)
    return rows


SCENARIOS: dict[str, Callable[[Path, argparse.Namespace], list[Row]]] = {
    "configs": lambda tmp, args: big_configs(tmp),
    "idle-peers": lambda tmp, args: [idle_peers(tmp, args.seconds)],
    "handshake-flood": lambda tmp, args: [handshake_flood(tmp, args.seconds)],
    "garbage-flood": lambda tmp, args: [garbage_flood(tmp, args.seconds)],
    "peer-restart": lambda tmp, args: [peer_restart(tmp)],
    "link-flap": lambda tmp, args: [link_flap(tmp)],
    "roaming": lambda tmp, args: [roaming(tmp)],
    "no-loss": lambda tmp, args: [no_loss(tmp, 30)],
    "switch-floods": lambda tmp, args: switch_floods(tmp, args.seconds),
    "soak": lambda tmp, args: [soak(tmp, args.soak)],
}


def write(rows: list[Row], when: str) -> None:
    """The table between the markers: these rows replace those of the same test, the
    others stay (``--only`` reruns a few)."""
    text = DOC.read_text()
    block = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    found = block.search(text)
    kept: dict[str, str] = {}
    for line in (found.group(0) if found else "").splitlines():
        cells = line.split(" | ")
        if line.startswith("| ") and len(cells) == 5 and cells[0] not in ("| test", "|---"):
            kept[cells[0][2:]] = line
    for r in rows:
        kept[r.test] = f"| {r.test} | {r.load} | {r.fault} | {r.kept} | {r.lost} |"
    table = [
        f"Written by `make stress` (last run {when}, this 2-core VM).",
        "",
        "| test | load | fault | kept | lost |",
        "|---|---|---|---|---|",
        *kept.values(),
    ]
    DOC.write_text(block.sub(lambda _: "\n".join([BEGIN, *table, END]), text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SCENARIOS))
    parser.add_argument("--seconds", type=int, default=8, help="iperf3 run under a flood")
    parser.add_argument("--soak", type=int, default=240, help="seconds of the soak")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    chosen = args.only.split(",")
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        print(f"stress: unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2
    wg_env.require_tools()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in chosen:
            start = time.monotonic()
            got = SCENARIOS[name](Path(tmp), args)
            for row in got:
                print(f"{row.test}: {row.kept}; lost: {row.lost} "
                      f"({time.monotonic() - start:.0f} s)", flush=True)
            rows += got
    if not args.no_write:
        write(rows, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
