"""The main demo: two sites in namespaces, each behind vnet-wg, traffic through the tunnel."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vnet.demo.echo import PingResult, parse_ping
from vnet.errors import ConfigError, KernelError
from vnet.kernel import netns, unixsock
from vnet.kernel.files import write_file
from vnet.kernel.netlink import Netlink
from vnet.paths import wg_socket
from vnet.wireguard import crypto

IPERF_SECONDS = 3


@dataclass
class SiteReport:
    name: str
    ifname: str
    public_key: str
    endpoint: str
    handshake_age: float | None
    rx_bytes: int
    tx_bytes: int


@dataclass
class WgDemoReport:
    sites: list[SiteReport]
    pings: list[PingResult]
    throughput: list[tuple[str, float]]  # (direction, Gb/s)

    @property
    def ok(self) -> bool:
        return all(p.sent and p.received == p.sent for p in self.pings) and all(
            g > 0 for _, g in self.throughput
        )


def _uapi_get(ifname: str) -> dict[str, str]:
    data = unixsock.request(wg_socket(ifname), b"get=1\n\n", b"\n\n")
    out: dict[str, str] = {}
    for line in data.decode().splitlines():
        key, _, value = line.partition("=")
        out.setdefault(key, value)
    return out


def _iperf(client_ns: str, server_ns: str, server_ip: str) -> float:
    server = netns.popen(
        server_ns,
        ["iperf3", "-s", "-1", "-B", server_ip, "-p", "5211"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            probe = netns.run(
                server_ns,
                ["ss", "-Htln", "sport = :5211"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            if probe.stdout.strip():
                break
            time.sleep(0.05)
        done = netns.run(
            client_ns,
            ["iperf3", "-c", server_ip, "-p", "5211", "-t", str(IPERF_SECONDS), "-J"],
            capture_output=True,
            text=True,
            timeout=IPERF_SECONDS + 30,
        )
        if done.returncode != 0:
            return 0.0
        return float(json.loads(done.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def run_demo() -> WgDemoReport:
    if os.geteuid() != 0:
        raise ConfigError("the demo needs root (namespaces, TUN devices)")
    for tool in ("ping", "iperf3", "ss"):
        if shutil.which(tool) is None:
            raise ConfigError(f"{tool} not found: run 'make setup' first")
    tag = f"{os.getpid() % 100000}"
    names = [f"vnet-demo-a-{tag}", f"vnet-demo-b-{tag}"]
    ifnames = [f"wgdemoa{tag}", f"wgdemob{tag}"]
    underlay = ["198.18.0.1", "198.18.0.2"]
    inner = ["198.19.0.1", "198.19.0.2"]
    inner6 = ["fd00:19::1", "fd00:19::2"]
    privates = [crypto.generate_private_key(os.urandom(32)) for _ in range(2)]
    publics = [base64.b64encode(crypto.public_key(k)).decode() for k in privates]
    procs: list[subprocess.Popen[bytes]] = []
    created: list[str] = []
    workdir = Path(tempfile.mkdtemp(prefix="vnet-demo-"))
    try:
        for ns in names:
            netns.create(ns)
            created.append(ns)
            with Netlink(ns) as nl:
                nl.set_up("lo")
        with Netlink(names[0]) as nl:
            nl.add_veth(f"eth{tag}a", f"eth{tag}b", peer_netns=names[1])
            nl.add_address(f"eth{tag}a", f"{underlay[0]}/24")
            nl.set_up(f"eth{tag}a")
        with Netlink(names[1]) as nl:
            nl.add_address(f"eth{tag}b", f"{underlay[1]}/24")
            nl.set_up(f"eth{tag}b")
        for i in range(2):
            j = 1 - i
            conf = workdir / f"site{i}.conf"
            write_file(
                conf,
                f"[Interface]\nPrivateKey = {base64.b64encode(privates[i]).decode()}\n"
                f"ListenPort = 51820\nAddress = {inner[i]}/24, {inner6[i]}/64\n\n"
                f"[Peer]\nPublicKey = {publics[j]}\nEndpoint = {underlay[j]}:51820\n"
                f"AllowedIPs = {inner[j]}/32, {inner6[j]}/128\n",
                0o600,
            )
            argv = [
                sys.executable,
                "-c",
                "from vnet.cli.wg import main; main()",
                "-f",
                "--config",
                str(conf),
                ifnames[i],
            ]
            procs.append(
                netns.popen(names[i], argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )
        for i in range(2):
            deadline = time.monotonic() + 15
            while not os.path.exists(wg_socket(ifnames[i])):
                if procs[i].poll() is not None or time.monotonic() > deadline:
                    stream = procs[i].stderr
                    err = stream.read().decode() if stream is not None else ""
                    raise KernelError(f"vnet-wg did not start: {err.strip()}")
                time.sleep(0.05)
            with Netlink(names[i]) as nl:
                nl.set_up(ifnames[i])
        pings = []
        for target in (inner[1], inner6[1]):
            done = netns.run(
                names[0],
                ["ping", "-c", "10", "-i", "0.1", "-W", "2", target],
                capture_output=True,
                text=True,
                timeout=30,
            )
            pings.append(parse_ping("site A -> B", target, done.stdout))
        throughput = [
            ("A -> B", _iperf(names[0], names[1], inner[1])),
            ("B -> A", _iperf(names[1], names[0], inner[0])),
        ]
        sites = []
        now = time.time()
        for i in range(2):
            info = _uapi_get(ifnames[i])
            hs = int(info.get("last_handshake_time_sec", "0"))
            sites.append(
                SiteReport(
                    name="site A" if i == 0 else "site B",
                    ifname=ifnames[i],
                    public_key=publics[i],
                    endpoint=info.get("endpoint", "-"),
                    handshake_age=now - hs if hs else None,
                    rx_bytes=int(info.get("rx_bytes", "0")),
                    tx_bytes=int(info.get("tx_bytes", "0")),
                )
            )
        return WgDemoReport(sites, pings, throughput)
    finally:
        netns.stop(procs)
        for ns in created:
            netns.delete(ns)
        shutil.rmtree(workdir, ignore_errors=True)
