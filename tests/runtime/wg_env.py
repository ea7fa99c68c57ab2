"""Two sites over a veth underlay, each with vnet-wg or wireguard-go, configured with `wg`."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vnet.kernel import netns, unixsock
from vnet.kernel.netlink import Netlink
from vnet.paths import wg_socket
from vnet.wireguard import crypto

VNET_WG = str(Path(sys.executable).with_name("vnet-wg"))


def keygen() -> tuple[str, str]:
    private = crypto.generate_private_key(os.urandom(32))
    return (base64.b64encode(private).decode(),
            base64.b64encode(crypto.public_key(private)).decode())


@dataclass
class Site:
    ns: str
    ifname: str
    kind: str  # "vnet" or "go"
    underlay: str
    underlay6: str
    inner: str
    inner6: str
    private: str
    public: str
    key_file: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None
    extra_pids: list[int] = field(default_factory=list)

    @property
    def socket(self) -> str:
        return wg_socket(self.ifname)

    def run(self, *argv: str, timeout: float = 30, check: bool = True,
            **kwargs: Any) -> subprocess.CompletedProcess[str]:
        done = netns.run(self.ns, list(argv), capture_output=True, text=True, timeout=timeout,
                         **kwargs)
        if check and done.returncode != 0:
            raise AssertionError(f"{argv} failed: {done.stdout}{done.stderr}")
        return done

    def wg(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("wg", *args, check=check)

    def ping(self, target: str, count: int = 3, deadline: float = 10) -> bool:
        done = self.run("ping", "-c", str(count), "-i", "0.2", "-W", "2", "-w", str(deadline),
                        target, check=False)
        return done.returncode == 0

    def dump(self) -> list[list[str]]:
        """`wg show IF dump`: the interface line, then one line per peer."""
        return [line.split("\t") for line in self.wg("show", self.ifname, "dump")
                .stdout.splitlines()]


def require_tools() -> None:
    for tool in ("wg", "wireguard-go", "iperf3", "ping"):
        if shutil.which(tool) is None:
            raise AssertionError(f"{tool} is missing: run `make setup` (scripts/setup-system.sh)")


def short_id() -> str:
    return uuid.uuid4().hex[:6]


def make_underlay(ns_a: str, ns_b: str) -> None:
    a, b = f"ua{short_id()}", f"ub{short_id()}"
    for ns in (ns_a, ns_b):
        with Netlink(ns) as nl:
            nl.set_up("lo")
    with Netlink(ns_a) as nl:
        nl.add_veth(a, b, peer_netns=ns_b)
        nl.add_address(a, "198.18.0.1/24")
        nl.add_address(a, "fd00:18::1/64", nodad=True)
        nl.set_up(a)
    with Netlink(ns_b) as nl:
        nl.add_address(b, "198.18.0.2/24")
        nl.add_address(b, "fd00:18::2/64", nodad=True)
        nl.set_up(b)


def new_site(ns: str, kind: str, n: int, tmp: Path) -> Site:
    private, public = keygen()
    key_file = tmp / f"site{n}.key"
    key_file.write_text(private + "\n")
    key_file.chmod(0o600)
    return Site(ns=ns, ifname=f"wg{kind[0]}{n}{short_id()}", kind=kind,
                underlay=f"198.18.0.{n}", underlay6=f"fd00:18::{n}",
                inner=f"198.19.0.{n}", inner6=f"fd00:19::{n}", private=private, public=public,
                key_file=str(key_file), log=tmp / f"site{n}.log")


def start(site: Site, *extra: str) -> None:
    argv = ([VNET_WG, "-f", *extra, site.ifname] if site.kind == "vnet"
            else ["wireguard-go", "-f", site.ifname])
    assert site.log is not None
    out = open(site.log, "wb")  # noqa: SIM115 - handed to the child
    site.proc = netns.popen(site.ns, argv, stdout=out, stderr=subprocess.STDOUT)
    out.close()
    wait_for(lambda: os.path.exists(site.socket) or site.proc is None
             or site.proc.poll() is not None, 15, "UAPI socket")
    if site.proc.poll() is not None:
        raise AssertionError(f"{site.kind} exited: {site.log.read_text()}")


def configure(site: Site, peer: Site, *, v6_endpoint: bool = False, port: int = 51820) -> None:
    endpoint = f"[{peer.underlay6}]:51820" if v6_endpoint else f"{peer.underlay}:51820"
    site.wg("set", site.ifname, "listen-port", str(port), "private-key", site.key_file,
            "peer", peer.public, "endpoint", endpoint,
            "allowed-ips", f"{peer.inner}/32,{peer.inner6}/128")
    with Netlink(site.ns) as nl:
        nl.add_address(site.ifname, f"{site.inner}/24")
        nl.add_address(site.ifname, f"{site.inner6}/64", nodad=True)
        nl.set_up(site.ifname)


def stop(site: Site) -> None:
    if site.proc is not None:
        netns.stop([site.proc])
    for pid in site.extra_pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(site.socket)  # a unique name: only ours


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def iperf(client: Site, server: Site, seconds: int = 2) -> int:
    """Bytes received by a bounded iperf3 TCP run from client to server's inner address."""
    import json

    srv = netns.popen(server.ns, ["iperf3", "-s", "-1", "-B", server.inner, "-p", "5299"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _listening(server, 5299), 10, "iperf3 server")
        done = client.run("iperf3", "-c", server.inner, "-p", "5299", "-t", str(seconds), "-J",
                          timeout=seconds + 30)
        return int(json.loads(done.stdout)["end"]["sum_received"]["bytes"])
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def _listening(site: Site, port: int) -> bool:
    done = site.run("ss", "-Htln", f"sport = :{port}", check=False)
    return bool(done.stdout.strip())


def uapi(site: Site, request: str) -> str:
    return unixsock.request(site.socket, request.encode(), b"\n\n").decode()
