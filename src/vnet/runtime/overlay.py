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
from vnet.kernel.netlink import Netlink
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
READ_BUFFER = 65536 + HDR_LEN
NFT_TABLE = "vnet-overlay"  # --ip-masq rules


@dataclass
class AgentOptions:
    endpoints: list[tuple[str, int]]
    prefix: str = "/coreos.com/network"
    public_ip: str | None = None
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
        try:
            wanted = ipaddress.IPv4Address(public_ip)
        except ValueError:
            raise ConfigError(f"--public-ip {public_ip!r} is not an IPv4 address") from None
        match = [a for a in addresses if a.interface.ip == wanted]
        if not match:
            raise ConfigError(f"--public-ip {public_ip}: no interface has that address")
        name = iface or match[0].link
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
        self.mtu = 0
        self.device: str | None = None  # the backend's interface
        self.tun: TunDevice | None = None
        self.sock: udp.UdpSocket | None = None
        self.udp_table: AllowedIPs[UdpPeer] = AllowedIPs()
        self.wg: WgDaemon | None = None  # the wireguard backend's vnet-wg, in a thread
        self._wg_thread: threading.Thread | None = None
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
        backend_data = self._open_backend(config)
        self._retry("lease", lambda: self._acquire(config, backend_data))
        assert self.lease is not None
        self._open_backend_address(config, self.lease)
        assert self.mesh is not None
        self._apply(self.mesh.reset(self._initial))  # the device is up: routes can go in
        if self.options.ip_masq:
            nft.load(nft.masquerade_leaving(NFT_TABLE, str(config.network)), what="--ip-masq")
            self.on_close(self._unmasquerade)
        self._write_subnet_env(config, self.lease)
        log.info(
            "%s: lease %s (%s backend, public %s on %s, MTU %d)",
            self.registry.endpoint(),
            self.lease.subnet,
            config.backend.type,
            self.public_ip,
            self.iface,
            self.mtu,
        )
        self._registry_thread = threading.Thread(
            target=self._follow_registry, name="etcd", daemon=True
        )

    def on_start(self) -> None:
        assert self._registry_thread is not None
        self._registry_thread.start()

    def _acquire(self, config: NetworkConfig, backend_data: dict[str, object]) -> None:
        kvs, revision = self.registry.get_prefix(self.registry.subnets_prefix)
        leases = self._decode_all(kvs)
        kind = "" if config.backend.type == "udp" else config.backend.type
        public = ipaddress.IPv4Address(self.public_ip)
        mine = [
            lease for lease in leases if lease.public_ip == public and config.contains(lease.subnet)
        ]
        taken = {lease.subnet for lease in leases}
        held = {kv.key.rsplit("/", 1)[-1]: kv.lease for kv in kvs}
        if mine:  # this host's lease from an earlier run, or a reservation: keep its subnet
            subnet = mine[0].subnet
            lease = Lease(subnet, public, kind, dict(backend_data))
            reserved = not held.get(lease.key)  # no etcd lease: it never expires
            lease_id = 0 if reserved else self.registry.grant(LEASE_TTL)
            if not reserved or mine[0].encode() != lease.encode():  # else: nothing to write
                self.registry.put(
                    self.registry.subnets_prefix + lease.key, lease.encode(), lease_id
                )
        else:
            previous = None
            with contextlib.suppress(OSError), open(self.options.subnet_file, "rb") as f:
                previous = subnetenv.previous_subnet(f.read().decode(errors="replace"))
            picked = allocate.pick(config, taken, random.Random(), previous)
            if picked is None:
                raise ConfigError(
                    f"subnet pool exhausted: all {len(config.subnets())} /{config.subnet_len}"
                    f" subnets of {config.network} are leased"
                )
            subnet = picked
            lease = Lease(subnet, public, kind, dict(backend_data))
            created = self.registry.create(
                self.registry.subnets_prefix + lease.key, lease.encode(), LEASE_TTL
            )
            if created is None:
                raise ConfigError(f"{subnet} was taken meanwhile by another host")
            lease_id = created
        self.lease, self.lease_id = lease, lease_id
        # a reservation (lease id 0) is never renewed
        self.renew_at = time.monotonic() + (LEASE_TTL - RENEW_MARGIN if lease_id else 10**9)
        self.mesh = Mesh(config.backend, subnet)
        self.revision = revision
        self._initial = [x for x in leases if x.subnet != subnet]

    def _decode_all(self, kvs: list[KeyValue]) -> list[Lease]:
        out = []
        for kv in kvs:
            try:
                out.append(decode(kv.key, kv.value))
            except LeaseError as e:
                log.warning("ignoring %s", e)
        return out

    # --- backends --------------------------------------------------------------------

    def _open_backend(self, config: NetworkConfig) -> dict[str, object]:
        """Create the backend's device; return the BackendData to publish."""
        kind = config.backend.type
        if kind == "udp":
            self._open_udp(config)
            return {}
        if kind == "vxlan":
            self.device = backends.vxlan_device(config.backend.vni)
            mac = vtep_mac(self.public_ip)
            nl = self.netlink
            if nl.exists(self.device):
                nl.delete_link(self.device)  # a leftover: rebuilt from the leases
            nl.add_vxlan(
                self.device,
                config.backend.vni,
                local=self.public_ip,
                dev=self.iface,
                port=config.backend.port,
                learning=False,
            )
            self.on_close(self._delete_device)
            nl.set_mac(self.device, mac)
            nl.set_mtu(self.device, self.mtu)
            return {"VNI": config.backend.vni, "VtepMAC": mac}
        if kind == "wireguard":
            return self._open_wireguard(config)
        return {}  # host-gw: routes only

    def _unmasquerade(self) -> None:
        with contextlib.suppress(VnetError):
            nft.load(f"delete table ip {NFT_TABLE}\n", what="--ip-masq")

    def _delete_device(self) -> None:
        if self.device is None:
            return
        with contextlib.suppress(VnetError):
            if self.netlink.exists(self.device):
                self.netlink.delete_link(self.device)

    def _open_backend_address(self, config: NetworkConfig, lease: Lease) -> None:
        """The backend device's address (the subnet's first address, /32, as flannel)
        and the route of the whole Network through it."""
        if self.device is None:
            return
        nl = self.netlink
        nl.pin(self.device)  # one lookup, not one per entry a lease brings
        nl.add_address(self.device, f"{lease.subnet.network_address}/32")
        nl.set_up(self.device)
        if config.backend.type != "vxlan":  # vxlan routes each subnet onlink
            nl.replace_route(str(config.network), dev=self.device)

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

    def _open_wireguard(self, config: NetworkConfig) -> dict[str, object]:
        from vnet.runtime.wg import WgDaemon
        from vnet.wireguard import crypto
        from vnet.wireguard.config import FileConfig
        from vnet.wireguard.uapi import SetRequest

        private = self._private_key(wg_key_file(self.options.subnet_file))
        request = SetRequest(private_key=private, listen_port=config.backend.port)
        self.device = backends.WIREGUARD_DEVICE
        wg = WgDaemon(
            self.device,
            config=FileConfig(request=request, addresses=[], mtu=self.mtu),
            offload=self.options.offload,
            forwarding=True,
            **({"socket_dir": self.options.wg_socket_dir} if self.options.wg_socket_dir else {}),
        )
        wg.start()
        self.wg = wg
        self.on_close(self._stop_wireguard)
        self._wg_thread = threading.Thread(target=wg.run, name="wireguard", daemon=True)
        self._wg_thread.start()
        public = base64.b64encode(crypto.public_key(private)).decode()
        return {"PublicKey": public, "Port": config.backend.port}

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

    def _stop_wireguard(self) -> None:
        wg = self.wg
        if wg is not None:
            wg.stop()
            if self._wg_thread is not None:
                self._wg_thread.join(5)
            wg.close()
        self.wg = None

    def _wg_uapi(self, request: str) -> None:
        wg = self.wg
        if wg is not None:
            done = threading.Event()
            answer: list[str] = []

            def apply() -> None:
                answer.append(wg.handle_uapi(request))
                done.set()

            wg.post(apply)  # in its own loop's thread
            if not done.wait(5) or answer[0] != "errno=0\n\n":
                log.warning(
                    "wireguard: set refused: %s", answer[0].strip() if answer else "timeout"
                )

    # --- applying changes ------------------------------------------------------------

    def _apply(self, changes: Changes) -> None:
        if not changes:
            return
        wg_lines: list[str] = []
        nl = self.netlink
        for entry in changes.remove:
            self._remove(nl, entry, wg_lines)
        for entry in changes.add:
            self._add(nl, entry, wg_lines)
        if wg_lines:
            self._wg_uapi("set=1\n" + "".join(wg_lines).rstrip("\n"))  # as framed by wg
        assert self.mesh is not None
        log.info("%d other hosts reachable", len(self.mesh.installed))

    def _add(self, nl: Netlink, entry: Entry, wg_lines: list[str]) -> None:
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
                wg_lines.append(
                    f"public_key={key}\nendpoint={entry.endpoint[0]}:{entry.endpoint[1]}\n"
                    f"replace_allowed_ips=true\nallowed_ip={entry.allowed_ip}\n"
                    + (
                        f"persistent_keepalive_interval={entry.keepalive}\n"
                        if entry.keepalive
                        else ""
                    )
                )
        except VnetError as e:
            log.warning("cannot install %s: %s", entry, e)

    def _remove(self, nl: Netlink, entry: Entry, wg_lines: list[str]) -> None:
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
                wg_lines.append(f"public_key={key}\nremove=true\n")
        except VnetError as e:
            log.debug("cannot remove %s: %s", entry, e)  # already gone

    def _write_subnet_env(self, config: NetworkConfig, lease: Lease) -> None:
        path = self.options.subnet_file
        os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
        text = subnetenv.format_env(config.network, lease.subnet, self.mtu, self.options.ip_masq)
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
                for item in registry.watch(registry.subnets_prefix, revision + 1):
                    if self._stopping.is_set():
                        return
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
                    n, size, _ = udp.recv_into(sock.sock, buf)
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
