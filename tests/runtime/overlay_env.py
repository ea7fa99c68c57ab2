"""Hosts in namespaces on one underlay bridge, an etcd member beside them, a `vnet overlay`
agent per host and a docker0-style bridge with a container per host, configured from the
subnet.env the agent wrote: flannel's picture, for the overlay tests."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vnet.kernel import netns
from vnet.kernel.netlink import Netlink
from vnet.overlay.subnetenv import parse_env
from vnet.runtime import etcd_server
from vnet.runtime.etcd import Registry

VNET = str(Path(sys.executable).with_name("vnet"))
ETCD_IP = "198.18.0.250"  # the first member; the others follow (.251, .252)
NETWORK = "198.19.0.0/16"
IPV6_NETWORK = "fd00:19::/48"  # with dual_stack=True


@dataclass
class Host:
    index: int
    ns: str
    container: str
    address: str
    dir: Path
    agent: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def subnet_file(self) -> Path:
        return self.dir / "subnet.env"

    @property
    def log(self) -> Path:
        return self.dir / "agent.log"

    @property
    def container_ip(self) -> str:
        subnet = self.env["FLANNEL_SUBNET"].split("/")[0]
        return subnet.rsplit(".", 1)[0] + ".2"

    @property
    def container_ip6(self) -> str:
        first = ipaddress.IPv6Interface(self.env["FLANNEL_IPV6_SUBNET"])
        return str(first.ip + 1)


@dataclass
class Overlay:
    tmp: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    hosts: list[Host] = field(default_factory=list)
    members: list[etcd_server.Member] = field(default_factory=list)
    etcd_procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    data: Path | None = None
    log_level: str = "info"  # the agents'

    @property
    def underlay(self) -> str:
        return f"ovu-{self.tag}"

    @property
    def endpoints(self) -> str:
        return ",".join(m.client_url for m in self.members)

    def registry(self) -> Registry:
        """A client for the test itself, in the first member's namespace."""
        return Registry([(m.address, m.client_port) for m in self.members],
                        "/coreos.com/network")

    def etcd_call(self, fn: Any) -> Any:
        with netns.entered(self.members[0].netns or ""):
            return fn(self.registry())

    def ns_run(self, ns: str, *argv: str, check: bool = True, timeout: float = 30,
               ) -> subprocess.CompletedProcess[str]:
        done = netns.run(ns, list(argv), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode:
            raise AssertionError(f"{argv} in {ns}: {done.stdout}{done.stderr}")
        return done

    def namespace(self, name: str) -> str:
        """A namespace of this testbed (deleted by teardown), its lo up."""
        netns.create(name)
        self.namespaces.append(name)
        self.ns_run(name, "ip", "link", "set", "lo", "up")
        return name

    def plug(self, ns: str, address: str, name: str) -> None:
        """A veth from ``ns`` (as eth0) into the underlay bridge (``name``, cut to 15
        bytes, is its end on the bridge), with ``address`` and fd00::<its last byte>."""
        name = name[:15]
        with Netlink(self.underlay) as nl:
            nl.add_veth(name, "eth0", peer_netns=ns)
            nl.set_master(name, "br0")
            nl.set_up(name)
        with Netlink(ns) as nl:
            nl.add_address("eth0", f"{address}/24")
            nl.add_address("eth0", f"fd00::{address.rsplit('.', 1)[1]}/64", nodad=True)
            nl.set_up("eth0")

    def build(self, count: int, members: int = 1) -> None:
        self.namespace(self.underlay)
        with Netlink(self.underlay) as nl:
            nl.add_bridge("br0")
            nl.set_up("br0")
        self.data = etcd_server.data_root()
        for m in range(members):
            ns = self.namespace(f"ove{m}-{self.tag}")
            address = f"198.18.0.{250 + m}"
            self.plug(ns, address, f"ve{m}-{self.tag}")
            self.members.append(etcd_server.Member(f"etcd{m}", address, ns))
        for member in self.members:
            self.start_member(member)
        etcd_server.wait_healthy(self.members)
        for i in range(1, count + 1):
            self.add_host(i)

    def start_member(self, member: etcd_server.Member) -> None:
        assert self.data is not None
        self.etcd_procs[member.name] = etcd_server.start(
            member, self.members, self.data, self.tmp / f"{member.name}.log")

    def add_host(self, i: int) -> Host:
        ns = self.namespace(f"ovh{i}-{self.tag}")
        self.plug(ns, f"198.18.0.{i}", f"vh{i}-{self.tag}")
        self.ns_run(ns, "sysctl", "-qw", "net.ipv4.ip_forward=1",
                    "net.ipv6.conf.all.forwarding=1")
        container = self.namespace(f"ovc{i}-{self.tag}")
        host_dir = self.tmp / f"h{i}"
        host_dir.mkdir()
        host = Host(i, ns, container, f"198.18.0.{i}", host_dir)
        self.hosts.append(host)
        return host

    def set_config(self, backend: dict[str, Any], dual_stack: bool = False,
                   **extra: Any) -> None:
        v6 = {"EnableIPv6": True, "IPv6Network": IPV6_NETWORK} if dual_stack else {}
        document = json.dumps({"Network": NETWORK, **v6, "Backend": backend, **extra})
        self.etcd_call(lambda r: r.put(r.config_key, document))

    def start_agent(self, host: Host, *extra: str) -> None:
        argv = [VNET, "overlay", "run", "--etcd-endpoints", self.endpoints, "--iface", "eth0",
                "--subnet-file", str(host.subnet_file), "--wg-socket-dir", str(host.dir / "wg"),
                "--log-level", self.log_level, *extra]
        # nsenter rather than a setns in a forked copy of this process: fifty agents
        # start in a fraction of the time (no preexec_fn: the child is spawned, not forked)
        with open(host.log, "ab") as log:
            host.agent = subprocess.Popen(["nsenter", f"--net={netns.path(host.ns)}", *argv],
                                          stdout=log, stderr=subprocess.STDOUT)

    def wait_subnet(self, host: Host, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not host.subnet_file.exists():
            assert host.agent is not None
            if host.agent.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"agent on {host.ns} wrote no subnet.env:\n"
                                     + host.log.read_text())
            time.sleep(0.1)
        host.env = parse_env(host.subnet_file.read_text())

    def attach_container(self, host: Host) -> None:
        """docker0 from subnet.env (the bridge takes FLANNEL_SUBNET, the MTU FLANNEL_MTU)
        and one container on it, as Docker would configure them from that file."""
        mtu = int(host.env["FLANNEL_MTU"])
        v6 = host.env.get("FLANNEL_IPV6_SUBNET")
        with Netlink(host.ns) as nl:
            nl.add_bridge("docker0")
            nl.add_address("docker0", host.env["FLANNEL_SUBNET"])
            if v6:
                nl.add_address("docker0", v6, nodad=True)
            nl.set_mtu("docker0", mtu)
            nl.set_up("docker0")
            nl.add_veth(f"veth{host.index}", "eth0", peer_netns=host.container)
            nl.set_master(f"veth{host.index}", "docker0")
            nl.set_mtu(f"veth{host.index}", mtu)
            nl.set_up(f"veth{host.index}")
        prefix = host.env["FLANNEL_SUBNET"].split("/")[1]
        with Netlink(host.container) as nl:
            nl.add_address("eth0", f"{host.container_ip}/{prefix}")
            nl.set_mtu("eth0", mtu)
            nl.set_up("eth0")
            nl.add_route("default", via=host.env["FLANNEL_SUBNET"].split("/")[0])
            if v6:
                prefix6 = v6.split("/")[1]
                nl.add_address("eth0", f"{host.container_ip6}/{prefix6}", nodad=True)
                nl.add_route("default", via=v6.split("/")[0])

    def start(self, backend: dict[str, Any], *extra: str, **config: Any) -> None:
        self.set_config(backend, **config)
        for host in self.hosts:
            self.start_agent(host, *extra)
        for host in self.hosts:
            self.wait_subnet(host)
            self.attach_container(host)

    def ping(self, a: Host, b: Host, count: int = 1, deadline: float = 10,
             ipv6: bool = False) -> bool:
        target = b.container_ip6 if ipv6 else b.container_ip
        done = self.ns_run(a.container, "ping", "-c", str(count), "-i", "0.2", "-W", "1",
                           "-w", str(deadline), target, check=False, timeout=deadline + 5)
        return done.returncode == 0

    def logs(self) -> str:
        return "\n".join(f"--- {h.ns}\n{h.log.read_text()}" for h in self.hosts
                         if h.log.exists())

    def stop_agent(self, host: Host) -> None:
        if host.agent is not None:
            netns.stop([host.agent])
            host.agent = None

    def teardown(self) -> None:
        procs = [h.agent for h in self.hosts if h.agent is not None]
        netns.stop([*procs, *self.etcd_procs.values()])
        for ns in reversed(self.namespaces):
            if netns.exists(ns):
                netns.delete(ns)
        if self.data is not None:
            subprocess.run(["rm", "-rf", str(self.data)], check=False)
