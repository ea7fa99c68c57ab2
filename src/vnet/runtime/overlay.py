"""The `vnet overlay` agent: flanneld's job on one host, on the daemon base.

Start-up (``open``): find the host's public address; wait for a valid network config in
etcd (retrying with backoff while etcd is unreachable or the config is malformed, and
saying why); create the backend's device, then take a lease - the one this host held
before or one reserved for it (same PublicIP; a reservation is a key without an etcd
lease, flannel's Documentation/reservations.md), else the subnet of the last subnet.env
when free, else a random free one - with a create-if-absent transaction bound to a
24-hour etcd lease; install the entries that reach every other lease; write subnet.env.

Running: a registry thread watches the subnets prefix from the revision the leases were
read at and renews the lease an hour before it expires; it hands each event to the loop
(``Daemon.post``), which applies what ``overlay.mesh.Mesh`` says changed. When etcd goes
away the data path keeps the last known leases; when it returns the thread reads every
lease again (a resync), re-creates this host's lease if it was lost, and the mesh
applies the difference. The udp backend's data path (flannel0 <-> UDP 8285) runs in the
loop: TUN super-packets split into MTU packets leave as one UDP GSO send per
destination, and GRO runs are coalesced back into super-packets for the TUN.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import ipaddress
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vnet.errors import ConfigError, KernelError, PacketError, VnetError
from vnet.kernel import nft, udp
from vnet.kernel.files import write_file
from vnet.kernel.netlink import Address, Netlink
from vnet.kernel.tun import TunDevice
from vnet.overlay import allocate, backends, subnetenv
from vnet.overlay.backends import Entry, Fdb, Neighbor, Route, UdpPeer, WgPeer
from vnet.overlay.config import NetworkConfig, parse_config
from vnet.overlay.lease import LEASE_TTL, RENEW_MARGIN, Lease, LeaseError, decode, parse_key
from vnet.overlay.mesh import Changes, Mesh
from vnet.packet.virtio import HDR_LEN, VirtioNetHdr
from vnet.runtime.daemon import BATCH, Daemon
from vnet.runtime.etcd import EtcdUnavailableError, KeyValue, Registry, WatchEvent
from vnet.wireguard.allowedips import AllowedIPs, parse_prefix

if TYPE_CHECKING:  # imported when the wireguard backend starts: it brings numpy and pyca
    from vnet.runtime.wg import WgDaemon

log = logging.getLogger("vnet.overlay")

RETRY_MIN, RETRY_MAX = 0.5, 10.0  # seconds between attempts while etcd or the config is bad
OVERHEAD = {"udp": 28, "vxlan": 50, "wireguard": 80, "host-gw": 0}  # bytes per packet
OVERHEAD_V6 = {"vxlan": 70, "wireguard": 80, "host-gw": 0}  # over an IPv6 underlay
READ_BUFFER = 65536 + HDR_LEN
NFT_TABLE = "vnet-overlay"  # --ip-masq rules
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class AgentOptions:
    endpoints: list[tuple[str, int]]
    prefix: str = "/coreos.com/network"
    public_ip: str | None = None
    public_ipv6: str | None = None  # used when the network has IPv6
    iface: str | None = None
    subnet_file: str = "/run/flannel/subnet.env"
    ip_masq: bool = False
    wg_socket_dir: str | None = None  # default: wg(8)'s /var/run/wireguard
    offload: bool = True


def find_public(nl: Netlink, public_ip: str | None, iface: str | None) -> tuple[str, str, int]:
    """(public IPv4 address, its interface, that interface's MTU): flanneld's rules -
    --public-ip, else --iface's first IPv4 address, else the default route's interface."""
    addresses = [a for a in nl.addresses() if a.interface.version == 4]
    if public_ip is not None:
        name = iface or _given(addresses, public_ip, "--public-ip", 4)[0].link
        return public_ip, name, nl.link(name).mtu
    if iface is None:
        default = [r for r in nl.routes(socket.AF_INET) if r.dst == "default" and r.dev]
        if not default:
            raise ConfigError("no default route: give --iface or --public-ip")
        iface = default[0].dev
    assert iface is not None
    mine = [a for a in addresses if a.link == iface]
    if not mine:
        raise ConfigError(f"--iface {iface}: it has no IPv4 address")
    return str(mine[0].interface.ip), iface, nl.link(iface).mtu


def _given(addresses: list[Address], text: str, option: str, version: int) -> list[Address]:
    """The addresses equal to an option's value; ConfigError when it is no IPv``version``
    address or no interface holds it."""
    try:
        wanted = ipaddress.ip_address(text)
    except ValueError:
        wanted = None
    if wanted is None or wanted.version != version:
        raise ConfigError(f"{option} {text!r} is not an IPv{version} address")
    match = [a for a in addresses if a.interface.ip == wanted]
    if not match:
        raise ConfigError(f"{option} {text}: no interface has that address")
    return match


def find_public6(nl: Netlink, public_ipv6: str | None, iface: str) -> str:
    """The host's public IPv6 address: --public-ipv6, else the first global IPv6 address
    of the public interface (flanneld's rule)."""
    addresses = [a for a in nl.addresses() if a.interface.version == 6]
    if public_ipv6 is not None:
        return str(_given(addresses, public_ipv6, "--public-ipv6", 6)[0].interface.ip)
    mine = [
        a for a in addresses
        if a.link == iface and not a.interface.ip.is_link_local and not a.interface.ip.is_loopback
    ]
    if not mine:
        raise ConfigError(
            f"EnableIPv6: {iface} has no global IPv6 address; give --public-ipv6"
        )
    return str(mine[0].interface.ip)


def wg_key_file(subnet_file: str) -> str:
    """Where the wireguard backend keeps the host's private key: /run/flannel/wgkey beside
    the default subnet.env (flannel's place), else beside the subnet file, named after it
    (two agents with subnet files in one directory must not share a key)."""
    if os.path.basename(subnet_file) == "subnet.env":
        return os.path.join(os.path.dirname(subnet_file), "wgkey")
    return subnet_file + ".wgkey"


def vtep_mac(public_ip: str) -> str:
    """A stable locally administered MAC for flannel.VNI, derived from the host's address:
    a restarted agent publishes the same VtepMAC, so nothing changes elsewhere."""
    digest = hashlib.sha256(f"vnet-overlay {public_ip}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02 | (digest[0] & 0xFC), *digest[1:6]))


class OverlayAgent(Daemon):
    """vnet overlay: ``start()`` blocks until a config is valid and a lease is held (Ctrl-C
    undoes what was made); ``run()`` follows the leases until SIGTERM; ``close()`` removes
    the backend's device and routes. The lease stays in etcd (24 h): a restarted agent
    takes the same subnet."""

    def __init__(self, options: AgentOptions) -> None:
        super().__init__("overlay", log)
        self.options = options
        self.registry = Registry(options.endpoints, options.prefix)
        self.config: NetworkConfig | None = None
        self.lease: Lease | None = None
        self.lease_id = 0
        self.renew_at = 0.0
        self.revision = 0
        self.mesh: Mesh | None = None
        self.public_ip = ""
        self.iface = ""
        self.mtu = self.mtu6 = 0  # the backend devices' (IPv4, IPv6)
        self.device: str | None = None  # the backend's interface
        self.device6: str | None = None  # its IPv6 one (may be the same)
        self.public_ipv6: str | None = None
        self.tun: TunDevice | None = None
        self.sock: udp.UdpSocket | None = None
        self.udp_table: AllowedIPs[UdpPeer] = AllowedIPs()
        # the wireguard backend's vnet-wg devices, each in a thread
        self.wg: dict[str, tuple[WgDaemon, threading.Thread]] = {}
        self._stopping = threading.Event()
        self._registry_thread: threading.Thread | None = None
        self.etcd_down_since: float | None = None
        self._initial: list[Lease] = []  # the other leases read with ours
        self.nl: Netlink | None = None  # one rtnetlink socket for the agent's life
        self._buffer = bytearray(READ_BUFFER)

    @property
    def netlink(self) -> Netlink:
        assert self.nl is not None, "opened first thing in open()"
        return self.nl

    # --- start-up ------------------------------------------------------------------

    def _retry(self, what: str, attempt: Callable[[], object]) -> object:
        """Call ``attempt`` until it returns without EtcdUnavailableError or ConfigError,
        sleeping with backoff and logging each new reason once."""
        delay, last = RETRY_MIN, ""
        while True:
            try:
                return attempt()
            except (EtcdUnavailableError, ConfigError) as e:
                if str(e) != last:
                    log.warning("%s: %s; retrying", what, e)
                    last = str(e)
            if self._stopping.wait(delay):
                raise KernelError("stopped while starting", errno.EINTR)
            delay = min(delay * 2, RETRY_MAX)

    def _read_config(self) -> NetworkConfig:
        kv, _ = self.registry.get(self.registry.config_key)
        if kv is None:
            raise ConfigError(f"no network config at {self.registry.config_key} yet")
        try:
            return parse_config(kv.value)
        except ConfigError as e:
            raise ConfigError(f"{self.registry.config_key}: {e}") from None

    def open(self) -> None:
        self.nl = nl = Netlink()
        self.on_close(nl.close)
        self.public_ip, self.iface, ext_mtu = find_public(
            nl, self.options.public_ip, self.options.iface
        )
        config = self._retry("network config", self._read_config)
        assert isinstance(config, NetworkConfig)
        self.config = config
        self.mtu = ext_mtu - OVERHEAD[config.backend.type]
        if config.ipv6 is not None:
            self.public_ipv6 = find_public6(nl, self.options.public_ipv6, self.iface)
        self.mtu6 = ext_mtu - OVERHEAD_V6.get(config.backend.type, 0)
        backend_data = self._open_backend(config)
        self._retry("lease", lambda: self._acquire(config, *backend_data))
        assert self.lease is not None
        self._open_backend_address(config, self.lease)
        assert self.mesh is not None
        self._apply(self.mesh.reset(self._initial))  # the device is up: routes can go in
        if self.options.ip_masq:
            script = nft.masquerade_leaving(NFT_TABLE, str(config.network))
            if config.ipv6 is not None:
                script += nft.masquerade_leaving(NFT_TABLE, str(config.ipv6.network))
            self.on_close(self._unmasquerade)
            nft.load(script, what="--ip-masq")
        self._write_subnet_env(config, self.lease)
        v6 = self.lease.ipv6_subnet
        log.info(
            "%s: lease %s%s (%s backend, public %s%s on %s, MTU %d)",
            self.registry.endpoint(),
            self.lease.subnet,
            f" and {v6}" if v6 else "",
            config.backend.type,
            self.public_ip,
            f" and {self.public_ipv6}" if v6 else "",
            self.iface,
            self.mtu,
        )
        self._registry_thread = threading.Thread(
            target=self._follow_registry, name="etcd", daemon=True
        )

    def on_start(self) -> None:
        assert self._registry_thread is not None
        self._registry_thread.start()

    def _acquire(
        self, config: NetworkConfig, backend_data: dict[str, object], v6_data: dict[str, object]
    ) -> None:
        kvs, revision = self.registry.get_prefix(self.registry.subnets_prefix)
        leases = self._decode_all(kvs)
        kind = "" if config.backend.type == "udp" else config.backend.type
        public = ipaddress.IPv4Address(self.public_ip)
        public6 = ipaddress.IPv6Address(self.public_ipv6) if self.public_ipv6 else None
        held = {kv.key.rsplit("/", 1)[-1]: kv.lease for kv in kvs}
        mine = [lease for lease in leases if lease.public_ip == public]
        for old in [x for x in mine if not self._fits(config, x)]:
            # flanneld's rule: a lease of this host that the config no longer allows (another
            # Network, IPv6 switched on or off) is given up, and a new one taken
            log.warning("lease %s does not fit the network config: deleting it", old.key)
            self.registry.delete(self.registry.subnets_prefix + old.key)
            leases.remove(old)
            mine.remove(old)
        if mine:  # this host's lease from an earlier run, or a reservation: keep its subnets
            lease = Lease(
                mine[0].subnet, public, kind, dict(backend_data),
                mine[0].ipv6_subnet, public6, dict(v6_data),
            )
            reserved = not held.get(lease.key)  # no etcd lease: it never expires
            lease_id = 0 if reserved else self.registry.grant(LEASE_TTL)
            if not reserved or mine[0].encode() != lease.encode():  # else: nothing to write
                self.registry.put(
                    self.registry.subnets_prefix + lease.key, lease.encode(), lease_id
                )
        else:
            previous: tuple[ipaddress.IPv4Network | None, ipaddress.IPv6Network | None]
            previous = (None, None)
            with contextlib.suppress(OSError), open(self.options.subnet_file, "rb") as f:
                previous = subnetenv.previous_subnets(f.read().decode(errors="replace"))
            rng = random.Random()
            subnet = allocate.pick(config.pool, {x.subnet for x in leases}, rng, previous[0])
            subnet6 = None
            if config.ipv6 is not None:
                taken6 = {x.ipv6_subnet for x in leases if x.ipv6_subnet is not None}
                subnet6 = allocate.pick(config.ipv6, taken6, rng, previous[1])
            for pool, picked in ((config.pool, subnet), (config.ipv6, subnet6)):
                if pool is not None and picked is None:
                    raise ConfigError(
                        f"subnet pool exhausted: all {pool.size} /{pool.subnet_len}"
                        f" subnets of {pool.network} are leased"
                    )
            assert subnet is not None
            lease = Lease(
                subnet, public, kind, dict(backend_data), subnet6, public6, dict(v6_data)
            )
            created = self.registry.create(
                self.registry.subnets_prefix + lease.key, lease.encode(), LEASE_TTL
            )
            if created is None:
                raise ConfigError(f"{lease.key} was taken meanwhile by another host")
            lease_id = created
        self.lease, self.lease_id = lease, lease_id
        # a reservation (lease id 0) is never renewed
        self.renew_at = time.monotonic() + (LEASE_TTL - RENEW_MARGIN if lease_id else 10**9)
        self.mesh = Mesh(config.backend, lease.subnet, config.ipv6 is not None)
        self.revision = revision
        self._initial = [x for x in leases if x.subnet != lease.subnet]

    @staticmethod
    def _fits(config: NetworkConfig, lease: Lease) -> bool:
        if not config.pool.contains(lease.subnet):
            return False
        if config.ipv6 is None or lease.ipv6_subnet is None:
            return config.ipv6 is None and lease.ipv6_subnet is None
        return config.ipv6.contains(lease.ipv6_subnet)

    def _decode_all(self, kvs: list[KeyValue]) -> list[Lease]:
        out = []
        for kv in kvs:
            try:
                out.append(decode(kv.key, kv.value))
            except LeaseError as e:
                log.warning("ignoring %s", e)
        return out

    # --- backends --------------------------------------------------------------------

    def _open_backend(self, config: NetworkConfig) -> tuple[dict[str, object], dict[str, object]]:
        """Create the backend's devices; return the BackendData and BackendV6Data to
        publish."""
        kind = config.backend.type
        if kind == "udp":
            self._open_udp(config)
            return {}, {}
        if kind == "vxlan":
            self.device = backends.vxlan_device(config.backend.vni)
            data = self._open_vxlan(config, self.device, self.public_ip, self.mtu)
            data6: dict[str, object] = {}
            if self.public_ipv6 is not None:
                self.device6 = backends.vxlan_device(config.backend.vni, 6)
                data6 = self._open_vxlan(config, self.device6, self.public_ipv6, self.mtu6)
            return data, data6
        if kind == "wireguard":
            return self._open_wireguard(config)
        return {}, {}  # host-gw: routes only

    def _open_vxlan(
        self, config: NetworkConfig, device: str, local: str, mtu: int
    ) -> dict[str, object]:
        """flannel.VNI (or flannel-v6.VNI) with a VtepMAC derived from ``local``."""
        nl = self.netlink
        if nl.exists(device):
            nl.delete_link(device)  # a leftover: rebuilt from the leases
        nl.add_vxlan(
            device,
            config.backend.vni,
            local=local,
            dev=self.iface,
            port=config.backend.port,
            learning=False,
        )
        self.on_close(functools.partial(self._delete_link, device))
        mac = vtep_mac(local)
        nl.set_mac(device, mac)
        nl.set_mtu(device, mtu)
        return {"VNI": config.backend.vni, "VtepMAC": mac}

    def _unmasquerade(self) -> None:
        with contextlib.suppress(VnetError):
            nft.load(f"delete table ip {NFT_TABLE}\n", what="--ip-masq")
        if self.config is not None and self.config.ipv6 is not None:
            with contextlib.suppress(VnetError):
                nft.load(f"delete table ip6 {NFT_TABLE}\n", what="--ip-masq")

    def _delete_link(self, device: str) -> None:
        with contextlib.suppress(VnetError):
            if self.netlink.exists(device):
                self.netlink.delete_link(device)

    def _open_backend_address(self, config: NetworkConfig, lease: Lease) -> None:
        """The backend devices' addresses (each subnet's first address, alone, as
        flannel) and the routes of the whole Network and IPv6Network through them."""
        sides: list[tuple[str, IPNetwork, IPNetwork]] = []  # device, subnet, network
        if self.device is not None:
            sides.append((self.device, lease.subnet, config.network))
        if self.device6 is not None and lease.ipv6_subnet is not None and config.ipv6:
            sides.append((self.device6, lease.ipv6_subnet, config.ipv6.network))
        nl = self.netlink
        for device, subnet, network in sides:
            nl.pin(device)  # one lookup, not one per entry a lease brings
            nl.add_address(device, f"{subnet.network_address}/{subnet.max_prefixlen}", nodad=True)
            nl.set_up(device)
            if config.backend.type != "vxlan":  # vxlan routes each subnet onlink
                nl.replace_route(str(network), dev=device)

    def _open_udp(self, config: NetworkConfig) -> None:
        offload = self.options.offload
        tun, _ = self.open_tun(backends.UDP_DEVICE, offload)
        self.tun = tun
        self.device = tun.name
        self.on_close(tun.close)
        self.netlink.set_mtu(self.device, self.mtu)
        sock = udp.open_socket(config.backend.port, self.public_ip)
        self.sock = udp.UdpSocket(sock, offload)
        self.on_close(self.sock.close)
        self.note_udp(self.sock)
        self.watch(tun.fileno(), self._read_tun)
        self.watch(sock.fileno(), self._read_udp)

    def _open_wireguard(
        self, config: NetworkConfig
    ) -> tuple[dict[str, object], dict[str, object]]:
        from vnet.wireguard import crypto

        private = self._private_key(wg_key_file(self.options.subnet_file))
        public = base64.b64encode(crypto.public_key(private)).decode()
        backend = config.backend
        self.device = backends.WIREGUARD_DEVICE
        self._start_wireguard(self.device, private, backend.port, self.mtu)
        data: dict[str, object] = {"PublicKey": public, "Port": backend.port}
        if self.public_ipv6 is None:
            return data, {}
        if backend.mode == "separate":  # IPv6 peers on their own device and port
            self.device6 = backends.WIREGUARD_DEVICE_V6
            self._start_wireguard(self.device6, private, backend.port_v6, self.mtu6)
            return data, {"PublicKey": public, "Port": backend.port_v6}
        self.device6 = self.device  # one device, both families, the one port
        return data, dict(data)

    def _start_wireguard(self, device: str, private: bytes, port: int, mtu: int) -> None:
        from vnet.paths import WG_SOCKET_DIR
        from vnet.runtime.wg import WgDaemon
        from vnet.wireguard.config import FileConfig
        from vnet.wireguard.uapi import SetRequest

        request = SetRequest(private_key=private, listen_port=port)
        wg = WgDaemon(
            device,
            config=FileConfig(request=request, addresses=[], mtu=mtu),
            offload=self.options.offload,
            forwarding=True,
            socket_dir=self.options.wg_socket_dir or WG_SOCKET_DIR,
        )
        wg.start()
        thread = threading.Thread(target=wg.run, name=device, daemon=True)
        self.wg[device] = wg, thread
        self.on_close(functools.partial(self._stop_wireguard, device))
        thread.start()

    @staticmethod
    def _private_key(path: str) -> bytes:
        """The host's WireGuard key, kept (0600) beside subnet.env: a restart keeps it."""
        from vnet.wireguard import crypto

        with contextlib.suppress(OSError, ValueError):
            with open(path, encoding="ascii") as f:
                key = base64.b64decode(f.read().strip(), validate=True)
            if len(key) == 32:
                return key
        key = crypto.generate_private_key(os.urandom(32))
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        write_file(path, base64.b64encode(key).decode() + "\n", 0o600)
        return bytes(key)

    def _stop_wireguard(self, device: str) -> None:
        wg, thread = self.wg.pop(device)
        wg.stop()
        thread.join(5)
        wg.close()

    def _wg_uapi(self, device: str, request: str) -> None:
        if device not in self.wg:
            return
        wg = self.wg[device][0]
        done = threading.Event()
        answer: list[str] = []

        def apply() -> None:
            answer.append(wg.handle_uapi(request))
            done.set()

        wg.post(apply)  # in its own loop's thread
        if not done.wait(5) or answer[0] != "errno=0\n\n":
            log.warning(
                "%s: set refused: %s", device, answer[0].strip() if answer else "timeout"
            )

    # --- applying changes ------------------------------------------------------------

    def _apply(self, changes: Changes) -> None:
        if not changes:
            return
        wg_lines: dict[str, list[str]] = {}  # device -> UAPI lines
        nl = self.netlink
        for entry in changes.remove:
            self._remove(nl, entry, wg_lines)
        for entry in changes.add:
            self._add(nl, entry, wg_lines)
        for device, lines in wg_lines.items():
            self._wg_uapi(device, "set=1\n" + "".join(lines).rstrip("\n"))  # as framed by wg
        assert self.mesh is not None
        log.info("%d other hosts reachable", len(self.mesh.installed))

    def _add(self, nl: Netlink, entry: Entry, wg_lines: dict[str, list[str]]) -> None:
        try:
            if isinstance(entry, Route):
                nl.replace_route(entry.dst, via=entry.via, dev=entry.dev, onlink=entry.onlink)
            elif isinstance(entry, Neighbor):
                nl.replace_neighbor(entry.dev, entry.address, entry.mac)
            elif isinstance(entry, Fdb):
                nl.replace_fdb(entry.dev, entry.mac, entry.remote)
            elif isinstance(entry, UdpPeer):
                self.udp_table.insert(parse_prefix(entry.subnet), entry)
            elif isinstance(entry, WgPeer):
                key = base64.b64decode(entry.public_key).hex()
                host, port = entry.endpoint
                lines = [
                    f"public_key={key}",
                    f"endpoint={f'[{host}]' if ':' in host else host}:{port}",
                    "replace_allowed_ips=true",
                    *(f"allowed_ip={ip}" for ip in entry.allowed_ips),
                ]
                if entry.keepalive:
                    lines.append(f"persistent_keepalive_interval={entry.keepalive}")
                wg_lines.setdefault(entry.device, []).append("\n".join(lines) + "\n")
        except VnetError as e:
            log.warning("cannot install %s: %s", entry, e)

    def _remove(self, nl: Netlink, entry: Entry, wg_lines: dict[str, list[str]]) -> None:
        try:
            if isinstance(entry, Route):
                nl.del_route(entry.dst, via=entry.via, dev=entry.dev)
            elif isinstance(entry, Neighbor):
                nl.del_neighbor(entry.dev, entry.address)
            elif isinstance(entry, Fdb):
                nl.del_fdb(entry.dev, entry.mac, entry.remote)
            elif isinstance(entry, UdpPeer):
                self.udp_table.remove(parse_prefix(entry.subnet), entry)
            elif isinstance(entry, WgPeer):
                key = base64.b64decode(entry.public_key).hex()
                wg_lines.setdefault(entry.device, []).append(f"public_key={key}\nremove=true\n")
        except VnetError as e:
            log.debug("cannot remove %s: %s", entry, e)  # already gone

    def _write_subnet_env(self, config: NetworkConfig, lease: Lease) -> None:
        path = self.options.subnet_file
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        v6 = None
        if config.ipv6 is not None and lease.ipv6_subnet is not None:
            v6 = (config.ipv6.network, lease.ipv6_subnet)
        text = subnetenv.format_env(
            config.network, lease.subnet, self.mtu, self.options.ip_masq, v6
        )
        write_file(path, text, 0o644)  # readers never see half a file

    # --- the registry thread -----------------------------------------------------------

    def _follow_registry(self) -> None:
        """Watch the leases and renew ours; runs until stop. Blocks on etcd, never the loop."""
        registry = self.registry
        revision = self.revision
        resync = False
        delay = RETRY_MIN
        while not self._stopping.is_set():
            try:
                if resync:
                    kvs, revision = registry.get_prefix(registry.subnets_prefix)
                    leases = self._decode_all(kvs)
                    self._ensure_own(leases)
                    self.post(functools.partial(self._on_snapshot, leases))
                    resync = False
                if time.monotonic() >= self.renew_at:
                    self._renew()
                log.debug("watching from revision %d", revision + 1)
                for item in registry.watch(registry.subnets_prefix, revision + 1):
                    if self._stopping.is_set():
                        return
                    log.debug("watch: %s", item)
                    if isinstance(item, int):
                        revision = max(revision, item)
                        if time.monotonic() >= self.renew_at:
                            break  # a busy watch must not put the renewal off
                    else:
                        self.post(functools.partial(self._on_event, item))
                if self.etcd_down_since is not None:
                    log.info("etcd reachable again at %s", registry.endpoint())
                    self.etcd_down_since = None
                delay = RETRY_MIN
            except EtcdUnavailableError as e:
                if self.etcd_down_since is None:
                    self.etcd_down_since = time.monotonic()
                    log.warning("%s; forwarding on the last known leases", e)
                resync = True
                self._stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX)

    def _renew(self) -> None:
        ttl = self.registry.refresh(self.lease_id) if self.lease_id else 0
        if ttl <= 0:
            self._ensure_own(None)
        self.renew_at = time.monotonic() + LEASE_TTL - RENEW_MARGIN

    def _ensure_own(self, leases: list[Lease] | None) -> None:
        """Put this host's lease back if etcd lost it (expired while etcd was away, or
        deleted by hand) and nobody took the subnet meanwhile."""
        lease = self.lease
        assert lease is not None
        if leases is None:
            kv, _ = self.registry.get(self.registry.subnets_prefix + lease.key)
            holder = decode(kv.key, kv.value) if kv is not None else None
        else:
            holder = next((x for x in leases if x.subnet == lease.subnet), None)
        if holder is not None and holder.public_ip != lease.public_ip:
            log.error(
                "%s is now leased by %s: this host must restart to get another",
                lease.subnet,
                holder.public_ip,
            )
            return
        if holder is None:
            created = self.registry.create(
                self.registry.subnets_prefix + lease.key, lease.encode(), LEASE_TTL
            )
            if created is not None:
                self.lease_id = created
                self.renew_at = time.monotonic() + LEASE_TTL - RENEW_MARGIN
                log.info("lease %s re-created", lease.subnet)

    def _on_snapshot(self, leases: list[Lease]) -> None:
        assert self.mesh is not None
        self._apply(self.mesh.reset(leases))

    def _on_event(self, event: WatchEvent) -> None:
        assert self.mesh is not None
        try:
            if event.kind == "delete":
                subnet, _ = parse_key(event.kv.key)
                if self.lease is not None and subnet == self.lease.subnet:
                    log.warning("this host's lease %s was deleted", subnet)
                    return
                self._apply(self.mesh.delete(subnet))
            else:
                self._apply(self.mesh.put(decode(event.kv.key, event.kv.value)))
        except LeaseError as e:
            log.warning("ignoring %s", e)

    def close(self) -> None:
        self._stopping.set()
        super().close()

    # --- the udp backend's data path ------------------------------------------------------

    def _read_tun(self, events: int) -> None:
        from vnet.packet import gso  # numpy: only the udp backend's data path needs it

        tun = self.tun
        assert tun is not None and self.sock is not None
        buf = self._buffer
        view = memoryview(buf)
        offload = self.options.offload
        for _ in range(BATCH):
            try:
                n = tun.readinto(buf)
            except BlockingIOError:
                return
            except KernelError:
                self.running = False
                return
            if not offload:
                self._send([bytes(view[:n])])
                continue
            try:
                hdr, packet = VirtioNetHdr.decode(view[:n])
                if hdr.gso:
                    self._send(gso.split_rows(hdr, packet, 1).packets())
                else:
                    self._send([gso.finished(hdr, packet)])
            except PacketError as e:
                log.debug("dropped a TUN packet: %s", e)

    def _send(self, packets: list[bytes]) -> None:
        """Packets of one flow (or one packet) to the host that leases their destination."""
        sock = self.sock
        assert sock is not None
        first = packets[0]
        if len(first) < 20 or first[0] >> 4 != 4:
            return
        peer = self.udp_table.lookup(first[16:20])
        if peer is None:
            return  # a subnet of the network that no host leases
        endpoint = peer.endpoint
        try:
            sock.send_datagrams(packets, endpoint)
        except OSError as e:
            log.debug("udp send to %s: %s", endpoint, e.strerror)

    def _read_udp(self, events: int) -> None:
        from vnet.packet import gro

        sock = self.sock
        tun = self.tun
        assert sock is not None and tun is not None
        buf = self._buffer
        view = memoryview(buf)
        for _ in range(BATCH):
            try:
                if sock.gro:
                    n, size, _, _ = udp.recv_into(sock.sock, buf)
                else:
                    n, _ = sock.sock.recvfrom_into(buf)
                    size = 0
            except BlockingIOError:
                return
            except OSError:
                continue
            step = size or n
            packets = [bytes(view[i : min(i + step, n)]) for i in range(0, n, step)]
            writes = gro.coalesce(packets) if self.options.offload else [(p,) for p in packets]
            for parts in writes:  # each one packet: (virtio_net_hdr, packet) or (packet,)
                with contextlib.suppress(BlockingIOError, KernelError):
                    tun.writev(parts)
