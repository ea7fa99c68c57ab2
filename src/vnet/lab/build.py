"""`vnet lab up`: build a validated lab step by step, recording each step in its state,
and undo all of it on any failure or Ctrl-C (then re-raise)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

from vnet.errors import ConfigError, KernelError
from vnet.kernel import netns, nft
from vnet.kernel.files import write_file
from vnet.kernel.netlink import Netlink
from vnet.kernel.tun import Mode, TunDevice
from vnet.lab import state as st
from vnet.lab.addressing import assign
from vnet.lab.schema import (
    Command,
    Device,
    Etcd,
    Lab,
    Masquerade,
    Qemu,
    VnetOverlay,
    VnetSwitch,
    VnetWg,
)
from vnet.overlay.config import parse_config
from vnet.overlay.lease import Lease
from vnet.overlay.subnetenv import parse_env
from vnet.paths import WG_SOCKET_DIR, switch_socket
from vnet.runtime import etcd_server
from vnet.runtime.etcd import Registry
from vnet.wireguard import crypto

READY_TIMEOUT = 20.0
FLANNEL_PREFIX = "/coreos.com/network"
BIN = Path(sys.executable).parent
VM_DIR = Path(os.environ.get("VNET_VM_DIR", Path(__file__).resolve().parents[3] / ".cache/vm"))


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_interrupted: list[bool] = [False]  # set by the handler below, read between steps


@contextlib.contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """Ctrl-C or SIGTERM during `up` rolls back. The handler only takes note, and each
    step (and each wait) raises KeyboardInterrupt at its start (``_raise_if_interrupted``):
    raised from the handler, it could land in Python's fork callbacks (pyroute2 forks a
    netns worker) or a finalizer, which drop it with a traceback on stderr and go on."""

    me = os.getpid()
    _interrupted[0] = False

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != me:  # a forked helper (pyroute2's netns worker): die as asked
            os._exit(128 + signum)
        _interrupted[0] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
        _raise_if_interrupted()
    finally:
        for signum, previous in old.items():
            signal.signal(signum, previous)


def _raise_if_interrupted() -> None:
    if _interrupted[0]:
        raise KeyboardInterrupt


def up(lab: Lab, source: str, text: str, log: Callable[[str], None]) -> str:
    """Bring the lab up; "already up" when it is, from the same file. Leftovers of a
    crashed run that the lab provably owns are removed first; anything else in the way
    is an error and nothing is touched."""
    stamp = digest(text)
    current = st.State.load(lab.name)
    if (
        current is not None
        and current.status == "up"
        and current.digest == stamp
        and all(st.owned(lab.name, ns) for ns in current.namespaces)
        and all(st.alive(p) for p in current.processes)
    ):
        return "already up"
    if current is not None or st.leftovers(lab.name):
        removed = st.teardown(lab.name)
        log(f"removed what an earlier run of lab {lab.name!r} left: {', '.join(removed) or '-'}")
    for host in lab.hosts:
        ns = lab.namespace(host)
        if netns.exists(ns):
            raise ConfigError(
                f"network namespace {ns!r} exists and does not belong to lab {lab.name!r}"
            )
    assigned = assign(lab)  # load() already proved it fits the pools
    state = st.State(lab.name, source=source, digest=stamp)
    state.save()
    try:
        with _interrupt_on_sigterm():
            _Builder(lab, state, assigned, log).build()
    except BaseException:
        st.teardown(lab.name)
        raise
    state.status = "up"
    state.save()
    return "up"


class _Builder:
    def __init__(
        self, lab: Lab, state: st.State, assigned: dict[int, list[str]], log: Callable[[str], None]
    ) -> None:
        self.lab = lab
        self.state = state
        self.assigned = assigned
        self.log = log
        self.dir = st.State.directory(lab.name)
        self.keys: dict[str, tuple[str, str]] = {}  # vnet-wg process -> (private, public)
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def ns(self, host: str) -> str:
        return self.lab.namespace(host)

    def build(self) -> None:
        for host, spec in self.lab.hosts.items():
            self.namespace(host, spec.forwarding)
        for bridge in self.lab.bridges:
            with Netlink(self.ns(bridge.host)) as nl:
                nl.add_bridge(bridge.name)
            self.configure(bridge.host, bridge.name, self.assigned[id(bridge)])
        for link in self.lab.links:
            _raise_if_interrupted()
            with Netlink(self.ns(link.a.host)) as nl:
                nl.add_veth(link.a.name, link.b.name, peer_netns=self.ns(link.b.host))
            for end in (link.a, link.b):
                self.device(end)
        for tap in self.lab.taps:
            with netns.entered(self.ns(tap.host)), TunDevice(tap.name, Mode.TAP) as dev:
                dev.set_persist(True)  # stays after this fd closes; goes with the namespace
            self.device(tap)
        for vx in self.lab.vxlans:
            with Netlink(self.ns(vx.host)) as nl:
                nl.add_vxlan(vx.name, vx.vni, remote=vx.remote, local=vx.local, dev=vx.dev,
                             port=vx.port)
            self.device(vx)
        for host, spec in self.lab.hosts.items():
            self.masquerade(host, spec.masquerade)
        self.generate_keys()
        for proc in self.lab.processes:
            self.process(proc)
        for host, spec in self.lab.hosts.items():  # last: some go via process devices
            with Netlink(self.ns(host)) as nl:
                for route in spec.routes:
                    try:
                        nl.add_route(route.to, via=route.via, dev=route.dev)
                    except KernelError as e:
                        raise KernelError(f"host {host}: {e}", e.errno) from None

    def namespace(self, host: str, forwarding: bool) -> None:
        _raise_if_interrupted()
        ns = self.ns(host)
        self.state.namespaces.append(ns)
        self.state.save()  # write-ahead: a crash after create still finds it by its tag
        # Ctrl-C between create and tag would leave a namespace nobody can prove is ours
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            netns.create(ns)
            with Netlink(ns) as nl:
                nl.set_alias("lo", st.tag(self.lab.name))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        with Netlink(ns) as nl:
            nl.set_up("lo")
        if forwarding:
            with netns.entered(ns):
                for knob in ("ipv4/ip_forward", "ipv6/conf/all/forwarding"):
                    with open(f"/proc/sys/net/{knob}", "w") as f:
                        f.write("1")
        self.log(f"host {host}: namespace {ns}")

    def configure(
        self, host: str, name: str, addresses: list[str], mtu: int | None = None
    ) -> None:
        with Netlink(self.ns(host)) as nl:
            if mtu is not None:
                nl.set_mtu(name, mtu)
            for address in addresses:
                nl.add_address(name, address, nodad=True)
            nl.set_up(name)

    def device(self, dev: Device) -> None:
        _raise_if_interrupted()
        if dev.bridge is not None:
            with Netlink(self.ns(dev.host)) as nl:
                nl.set_master(dev.name, dev.bridge)
        self.configure(dev.host, dev.name, self.assigned[id(dev)], dev.mtu)

    def masquerade(self, host: str, rules: list[Masquerade]) -> None:
        """Source NAT to the outgoing address (what docker does for docker0), with nft."""
        if not rules:
            return
        lines = ["add table inet vnetlab",
                 "add chain inet vnetlab post { type nat hook postrouting priority 100 ; }"]
        for rule in rules:
            family = "ip" if ipaddress.ip_network(rule.source, strict=False).version == 4 else "ip6"
            lines.append(
                f"add rule inet vnetlab post {family} saddr {rule.source} "
                f'oifname "{rule.out}" masquerade'
            )
        script = "\n".join(lines)
        nft.load(script, self.ns(host), f"host {host}: masquerade")

    def generate_keys(self) -> None:
        for proc in self.lab.processes:
            if isinstance(proc, VnetWg):
                private = crypto.generate_private_key(os.urandom(32))
                self.keys[proc.name] = (
                    base64.b64encode(private).decode(),
                    base64.b64encode(crypto.public_key(private)).decode(),
                )

    def secret_file(self, name: str, text: str) -> Path:
        path = self.dir / name
        write_file(path, text, 0o600)
        return path

    # --- processes ------------------------------------------------------------------

    def process(self, proc: VnetWg | VnetSwitch | Qemu | Etcd | VnetOverlay | Command) -> None:
        _raise_if_interrupted()
        ns = self.ns(proc.host)
        if isinstance(proc, VnetWg):
            config = self.secret_file(f"{proc.name}.conf", self.wg_config(proc))
            # UAPI sockets live in WG_SOCKET_DIR, one namespace-blind directory: two sites
            # with a tun0 each would collide. Each daemon gets its own, in a mount namespace.
            run_dir = self.dir / f"{proc.name}.run"
            run_dir.mkdir(mode=0o700)
            os.makedirs(WG_SOCKET_DIR, exist_ok=True)
            argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    f'mount --bind "$0" {WG_SOCKET_DIR} && exec "$@"', str(run_dir),
                    str(BIN / "vnet-wg"), "-f", "--config", str(config), proc.interface]
            self.spawn(proc.name, ns, argv)
            sock = run_dir / f"{proc.interface}.sock"
            self.wait(proc.name, sock.exists)
            self.configure(proc.host, proc.interface, [])  # up, as wg-quick does
        elif isinstance(proc, VnetSwitch):
            config = self.secret_file(f"{proc.name}.yaml", self.switch_config(proc))
            self.spawn(proc.name, ns, [str(BIN / "vnet"), "switch", "run", str(config)])
            control = switch_socket(self.switch_name(proc))
            self.wait(proc.name, lambda: os.path.exists(control))
            for port in proc.ports:
                if port.addresses:
                    self.configure(port.netns or proc.host, port.name, port.addresses)
        elif isinstance(proc, Qemu):
            self.spawn(proc.name, ns, self.qemu_argv(proc))

            def tap_present() -> bool:
                with Netlink(ns) as nl:
                    return nl.exists(proc.tap)

            self.wait(proc.name, tap_present)
        elif isinstance(proc, Etcd):
            self.etcd(proc)
        elif isinstance(proc, VnetOverlay):
            self.overlay(proc)
        else:
            self.spawn(proc.name, ns, list(proc.argv))

    def etcd_member(self, proc: Etcd) -> etcd_server.Member:
        return etcd_server.Member(proc.name, proc.address, self.ns(proc.host))

    def etcd(self, proc: Etcd) -> None:
        """Start a member; once every member of its cluster runs, wait for a leader and
        store the flannel config and the overlay hosts' reservations."""
        by_name = {p.name: p for p in self.lab.processes if isinstance(p, Etcd)}
        cluster = [proc, *(by_name[n] for n in proc.cluster if n != proc.name)]
        members = [self.etcd_member(p) for p in cluster]
        self.spawn(proc.name, self.ns(proc.host), etcd_server.argv(members[0], members, self.dir))
        if not all(p.name in self.children for p in cluster):
            return
        try:
            etcd_server.wait_healthy(members, READY_TIMEOUT)
        except KernelError as e:
            raise ConfigError(f"process {proc.name}: {e}") from None
        for member_proc, member in zip(cluster, members, strict=True):
            if member_proc.flannel is not None:
                self.store_flannel(member, member_proc.flannel)

    def store_flannel(self, member: etcd_server.Member, config: dict[str, Any]) -> None:
        document = json.dumps(config)
        network = parse_config(document)  # refused here, not by every agent later
        registry = Registry([(member.address, member.client_port)], FLANNEL_PREFIX)
        kind = "" if network.backend.type == "udp" else network.backend.type
        assert member.netns is not None
        with netns.entered(member.netns):
            registry.put(registry.config_key, document)
            for proc in self.lab.processes:
                if isinstance(proc, VnetOverlay) and proc.subnet is not None:
                    public = self.address_of(proc.host, proc.iface)
                    lease = Lease(ipaddress.IPv4Network(proc.subnet),
                                  ipaddress.IPv4Address(public), kind)
                    registry.put(registry.subnets_prefix + lease.key, lease.encode())

    def address_of(self, host: str, name: str) -> str:
        for _, dev in self.lab.devices():
            if dev.host == host and dev.name == name:
                for address in self.assigned[id(dev)]:
                    iface = ipaddress.ip_interface(address)
                    if iface.version == 4:
                        return str(iface.ip)
        raise ConfigError(f"{host}/{name}: no IPv4 address for the overlay to use")

    def overlay(self, proc: VnetOverlay) -> None:
        by_name = {p.name: p for p in self.lab.processes if isinstance(p, Etcd)}
        endpoints = ",".join(self.etcd_member(by_name[n]).client_url for n in proc.etcd)
        subnet_file = self.dir / f"{proc.name}.subnet.env"
        argv = [str(BIN / "vnet"), "overlay", "run", "--etcd-endpoints", endpoints,
                "--iface", proc.iface, "--subnet-file", str(subnet_file),
                "--wg-socket-dir", str(self.dir / f"{proc.name}.wg")]
        self.spawn(proc.name, self.ns(proc.host), argv)
        self.wait(proc.name, subnet_file.exists)
        if proc.bridge is None:
            return
        env = parse_env(subnet_file.read_text())
        bridge = next(b for b in self.lab.bridges
                      if b.host == proc.host and b.name == proc.bridge)
        given = self.assigned.get(id(bridge), [])
        with Netlink(self.ns(proc.host)) as nl:
            nl.set_mtu(proc.bridge, int(env["FLANNEL_MTU"]))
            if not given:
                nl.add_address(proc.bridge, env["FLANNEL_SUBNET"])
            elif env["FLANNEL_SUBNET"] not in given:
                raise ConfigError(
                    f"process {proc.name}: the agent took {env['FLANNEL_SUBNET']}, but bridge "
                    f"{proc.bridge} has {', '.join(given)} (reserve it with subnet:)"
                )

    def wg_config(self, proc: VnetWg) -> str:
        private, _ = self.keys[proc.name]
        lines = ["[Interface]", f"PrivateKey = {private}", f"ListenPort = {proc.listen_port}"]
        lines += [f"Address = {a}" for a in proc.addresses]
        lines.append(f"MTU = {proc.mtu}")
        for peer in proc.peers:
            lines += ["", "[Peer]", f"PublicKey = {self.keys[peer.process][1]}"]
            if peer.endpoint:
                lines.append(f"Endpoint = {peer.endpoint}")
            lines.append(f"AllowedIPs = {', '.join(peer.allowed_ips)}")
        return "\n".join(lines) + "\n"

    def switch_name(self, proc: VnetSwitch) -> str:
        return f"{self.lab.name}-{proc.name}"

    def switch_config(self, proc: VnetSwitch) -> str:
        spec = {
            "name": self.switch_name(proc),
            "vxlan_port": proc.vxlan_port,
            "ports": [
                {"name": p.name, "vlan": p.vlan}
                | ({"netns": self.ns(p.netns)} if p.netns else {})
                for p in proc.ports
            ],
            "segments": [s.model_dump() for s in proc.segments],
        }
        if proc.local is not None:
            spec["local"] = proc.local
        return str(yaml.safe_dump(spec, sort_keys=False))

    def qemu_argv(self, proc: Qemu) -> list[str]:
        image = VM_DIR
        if not (image / "vmlinuz").is_file():
            raise ConfigError(
                f"process {proc.name}: no VM image in {image} "
                "(build it: python scripts/build_vm.py .cache/vm)"
            )
        append = (
            f"console=ttyS0 quiet panic=-1 vnet.ip={proc.address} vnet.target={proc.target} "
            "vnet.tries=30 vnet.hold=86400"
        )
        tap = [str(BIN / "vnet"), "tap", "run", "--name", proc.tap]
        if proc.bridge:
            tap += ["--bridge", proc.bridge]
        return [*tap, "--", "qemu-system-x86_64", "-accel", "tcg", "-m", str(proc.memory),
                "-nodefaults", "-nographic", "-serial", "stdio", "-no-reboot",
                "-kernel", str(image / "vmlinuz"), "-initrd", str(image / "initrd.img"),
                "-append", append, "-netdev", "tap,fd={fd},id=n0",
                "-device", f"virtio-net-pci,netdev=n0,romfile=,mac={self.guest_mac(proc)}"]

    def guest_mac(self, proc: Qemu) -> str:
        """QEMU gives every guest 52:54:00:12:34:56; two on one bridge must differ."""
        h = hashlib.sha256(f"{self.lab.name}/{proc.name}".encode()).digest()
        return "52:54:00:" + ":".join(f"{b:02x}" for b in h[:3])

    def spawn(self, name: str, ns: str, argv: list[str]) -> None:
        log = self.dir / f"{name}.log"
        with open(log, "wb") as out:
            proc = netns.popen(ns, argv, stdin=subprocess.DEVNULL, stdout=out,
                               stderr=subprocess.STDOUT, start_new_session=True)
        started = st.start_time(proc.pid)
        self.state.processes.append(st.ProcessRecord(name, proc.pid, started or 0, str(log)))
        self.state.save()
        self.children[name] = proc
        self.log(f"process {name}: pid {proc.pid} in {ns}")

    def wait(self, name: str, ready: Callable[[], bool]) -> None:
        child = self.children[name]
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready():
            _raise_if_interrupted()
            if child.poll() is not None:
                tail = Path(self.dir / f"{name}.log").read_text(errors="replace").strip()
                last = tail.splitlines()[-1] if tail else f"exit code {child.returncode}"
                raise ConfigError(f"process {name} failed to start: {last}")
            if time.monotonic() > deadline:
                raise ConfigError(f"process {name} not ready after {READY_TIMEOUT:.0f} s")
            time.sleep(0.05)
