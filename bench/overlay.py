"""`vnet overlay` at scale, and per backend: writes its section of bench/RESULTS.md.

1. Scale: N hosts (namespaces on one underlay bridge, one agent each) join one network
   through a 3-member etcd cluster, with the host-gw backend (one route per other host)
   and with vxlan (a neighbour, an fdb entry and a route). Measured: the time from
   starting the agents to a full mesh (every host has a route to every other host's
   subnet), pings across a sample of host pairs, each agent's RSS and the CPU the agents
   used. With vxlan, the etcd leader is then killed:
   the pairs still ping, and a host that joins afterwards converges (its time). Then one
   agent is restarted: its subnet is the same, and the other hosts' routes to it never
   disappear meanwhile (watched every 20 ms).
2. Throughput: two hosts, a container on each, iperf3 TCP 10 s between the containers,
   for each backend (udp, vxlan - the kernel's own vxlan -, wireguard, host-gw).

Root only; about 5 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.runtime.overlay_env import Host, Overlay  # noqa: E402

from vnet.kernel import netns  # noqa: E402
from vnet.kernel.netlink import Netlink  # noqa: E402

SECTION = "## vnet overlay"


def routes_to_network(host: Host) -> set[str]:
    with Netlink(host.ns) as nl:
        return {r.dst for r in nl.routes(socket.AF_INET) if r.dst.startswith("198.19.")}


def wait_mesh(env: Overlay, hosts: list[Host], timeout: float) -> float | None:
    """Seconds until every host in ``hosts`` reaches every other host's subnet: each agent
    says so in its log when it has installed what reaches the others (reading logs costs
    the 2 CPUs next to nothing, unlike polling 50 namespaces' routes); then the kernel's
    routes are checked once."""
    start = time.monotonic()
    wanted = f": {len(env.hosts) - 1} other hosts reachable"
    pending = list(hosts)
    while pending and time.monotonic() - start < timeout:
        pending = [h for h in pending if not h.log.exists() or wanted not in h.log.read_text()]
        if pending:
            time.sleep(0.1)
    if pending:
        return None
    took = time.monotonic() - start
    for host in env.hosts:
        if "_subnet" not in host.env:
            env.wait_subnet(host)
            host.env["_subnet"] = host.env["FLANNEL_SUBNET"].rsplit(".", 1)[0] + ".0/24"
    subnets = {h.env["_subnet"] for h in env.hosts}
    for host in hosts:
        missing = subnets - {host.env["_subnet"]} - routes_to_network(host)
        if missing:
            raise RuntimeError(f"{host.ns} logged a full mesh but routes {sorted(missing)}")
    return took


def overlay_ip(host: Host) -> str:
    """An address of the host's subnet that the host holds (flannel.1's is the first)."""
    first = host.env["_subnet"].split("/")[0]
    return first if "vxlan" in host.log.read_text() else first[:-1] + "1"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ping_pairs(env: Overlay, pairs: list[tuple[Host, Host]]) -> int:
    ok = 0
    for a, b in pairs:
        done = env.ns_run(a.ns, "ping", "-c", "1", "-W", "2", overlay_ip(b), check=False)
        ok += done.returncode == 0
    return ok


def rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match[1]) / 1024 if match else 0.0


def leader(env: Overlay) -> str:
    """The etcd member that leads, from the JSON gateway's status of each member."""
    import requests

    for member in env.members:
        if env.etcd_procs[member.name].poll() is not None:
            continue
        with netns.entered(member.netns or ""):
            status = requests.post(member.client_url + "/v3/maintenance/status", json={},
                                   timeout=2).json()
        if status.get("leader") == status.get("header", {}).get("member_id"):
            return member.name
    raise RuntimeError("no etcd leader")


def scale(count: int, pairs_wanted: int, tmp: Path, backend: str, faults: bool) -> list[str]:
    env = Overlay(tmp / f"scale-{backend}")
    env.tmp.mkdir()
    lines = []
    try:
        env.build(count, members=3)
        env.set_config({"Type": backend})
        for host in env.hosts:
            env.start_agent(host)
        took = wait_mesh(env, env.hosts, timeout=120)
        mesh = f"{took:.1f} s" if took is not None else "not reached in 120 s"
        cpu = sum(cpu_seconds(h.agent.pid) for h in env.hosts if h.agent is not None)
        if backend == "host-gw":  # no device holds an address of the subnet: lo does
            for host in env.hosts:
                with Netlink(host.ns) as nl:
                    nl.add_address("lo", f"{overlay_ip(host)}/32")
        rng = random.Random(1)
        pairs = [tuple(rng.sample(env.hosts, 2)) for _ in range(pairs_wanted)]
        ok = ping_pairs(env, pairs)  # type: ignore[arg-type]
        rss = [rss_mib(h.agent.pid) for h in env.hosts if h.agent is not None]
        lines.append(f"- {count} hosts, {backend} backend, 3-member etcd cluster: full mesh "
                     f"{mesh} after the agents started; {ok}/{len(pairs)} sampled host pairs "
                     f"ping; agent RSS median {statistics.median(rss):.0f} MiB, max "
                     f"{max(rss):.0f} MiB; the agents' CPU until then {cpu:.1f} s in all "
                     f"({cpu / count:.2f} s each, on {os.cpu_count()} cores).")
        if not faults:
            return lines
        # the etcd leader dies
        victim = leader(env)
        env.etcd_procs[victim].send_signal(signal.SIGKILL)
        env.etcd_procs[victim].wait()
        ok = ping_pairs(env, pairs[:50])  # type: ignore[arg-type]
        late = env.add_host(count + 1)
        env.start_agent(late)
        joined = wait_mesh(env, env.hosts, timeout=60)
        lines.append(f"- etcd leader {victim} killed (SIGKILL): {ok}/50 pairs still ping; a "
                     f"host joining afterwards: full mesh again in "
                     f"{joined:.1f} s" if joined is not None else "not converged in 60 s")
        # an agent restarts
        host = env.hosts[0]
        before = host.env["FLANNEL_SUBNET"]
        watchers = env.hosts[1:6]
        env.stop_agent(host)
        host.subnet_file.unlink()
        host.env = {}
        env.start_agent(host)
        flaps = 0
        deadline = time.monotonic() + 30
        while not host.subnet_file.exists() and time.monotonic() < deadline:
            for w in watchers:
                flaps += before.rsplit(".", 1)[0] + ".0/24" not in routes_to_network(w)
            time.sleep(0.02)
        env.wait_subnet(host)
        for _ in range(25):  # and for half a second after it is back
            for w in watchers:
                flaps += before.rsplit(".", 1)[0] + ".0/24" not in routes_to_network(w)
            time.sleep(0.02)
        same = host.env["FLANNEL_SUBNET"] == before
        lines.append(f"- agent restart on {host.ns.split('-')[0]}: subnet "
                     f"{'kept' if same else 'CHANGED'} ({before}); route flaps seen on 5 "
                     f"other hosts while it restarted: {flaps}.")
    finally:
        env.teardown()
    return lines


def throughput(seconds: int, tmp: Path) -> list[str]:
    rows = ["| backend | TCP Gb/s, container to container | RTT ms |", "|---|---|---|"]
    for backend in ("udp", "vxlan", "wireguard", "host-gw"):
        env = Overlay(tmp / backend)
        env.tmp.mkdir()
        try:
            env.build(2)
            env.start({"Type": backend})
            a, b = env.hosts
            for _ in range(50):
                if env.ping(a, b, deadline=1):
                    break
            server = netns.popen(b.container, ["iperf3", "-s", "-1"],
                                 stdout=open(os.devnull, "w"))  # noqa: SIM115
            time.sleep(0.5)
            done = env.ns_run(a.container, "iperf3", "-c", b.container_ip, "-t", str(seconds),
                              "-J", timeout=seconds + 30)
            server.wait(10)
            gbps = json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
            ping = env.ns_run(a.container, "ping", "-c", "10", "-i", "0.05", b.container_ip)
            rtt = re.search(r"= [\d.]+/([\d.]+)/", ping.stdout)
            rows.append(f"| {backend}{' (kernel vxlan)' if backend == 'vxlan' else ''} | "
                        f"{gbps:.3f} | {rtt[1] if rtt else '-'} |")
        finally:
            env.teardown()
    return rows


def write_section(text: str, out: Path) -> None:
    """Replace (or append) this script's section of RESULTS.md, leaving the rest."""
    old = out.read_text() if out.exists() else "# Benchmark results\n"
    start = old.find(SECTION)
    if start >= 0:
        end = old.find("\n## ", start + 1)
        old = old[:start] + (old[end + 1:] if end >= 0 else "")
    out.write_text(old.rstrip() + "\n\n" + text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (namespaces)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="vnet-overlay-bench-") as tmp:
        lines = scale(args.hosts, args.pairs, Path(tmp), "host-gw", faults=False)
        lines += scale(args.hosts, args.pairs, Path(tmp), "vxlan", faults=True)
        rows = throughput(args.seconds, Path(tmp))
    text = "\n".join([
        f"{SECTION} (`make bench-overlay`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "", *lines, "", *rows, "",
    ])
    write_section(text, Path(args.out))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
