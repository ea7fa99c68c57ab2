"""rtnetlink through pyroute2: links, addresses, routes, veth, bridges, vxlan.

``Netlink(netns=NAME)`` talks to another namespace without entering it.
Every pyroute2 failure becomes a ``KernelError`` that names the object.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from vnet.errors import ConfigError, KernelError
from vnet.kernel import netns as _netns
from vnet.names import validate_ifname

IFF_UP = 0x1
IFA_F_NODAD = 0x02
RTNH_F_ONLINK = 0x04  # linux/rtnetlink.h
NUD_PERMANENT = 0x80  # linux/neighbour.h
NUD_NOARP = 0x40
NTF_SELF = 0x02
AF_BRIDGE = 7
VXLAN_PORT_IANA = 4789  # RFC 7348 §5
VXLAN_PORT_LINUX = 8472  # the Linux default before IANA assigned 4789


@dataclass(frozen=True)
class TunInfo:
    """IFLA_INFO_DATA of a tun/tap link (IFLA_TUN_*)."""

    mode: str
    pi: bool
    vnet_hdr: bool
    persist: bool
    multi_queue: bool
    owner: int | None
    group: int | None
    queues: int | None
    disabled_queues: int | None


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None
    up: bool
    operstate: str
    mtu: int
    mac: str | None
    master: int | None
    tun: TunInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    gso_max_segs: int = 0  # the most segments the stack puts in one TSO/GSO packet

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Address:
    link: str
    address: str  # with prefix, e.g. 198.18.0.1/24

    @property
    def interface(self) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
        return ipaddress.ip_interface(self.address)


@dataclass(frozen=True)
class Route:
    dst: str  # "default" or a prefix
    gateway: str | None
    dev: str | None
    table: int
    metric: int | None


def parse_interface(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise ConfigError(f"invalid address {text!r}: expected ADDRESS/PREFIXLEN") from None
    if "/" not in text:
        raise ConfigError(f"address {text!r} needs a prefix length, e.g. {text}/24")
    return iface


def parse_mac(text: str) -> str:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ConfigError(f"invalid MAC address {text!r}: expected six hex bytes aa:bb:cc:dd:ee:ff")
    try:
        raw = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ConfigError(f"invalid MAC address {text!r}") from None
    if raw[0] & 1:
        raise ConfigError(f"MAC address {text!r} is multicast; a link needs a unicast address")
    return text.lower()


def _ip_address(text: str, what: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(f"invalid {what} address {text!r}") from None


def _family(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _describe(code: int) -> str:
    return os.strerror(code) if code > 0 else "unknown error"


class Netlink:
    """One rtnetlink socket, in this namespace or in the named one."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._pinned: dict[str, int] = {}  # see pin()
        if netns is not None and not _netns.exists(netns):
            raise KernelError(f"network namespace {netns!r} does not exist", errno.ENOENT)
        try:
            self._ipr = IPRoute(netns=netns) if netns else IPRoute()
        except OSError as e:
            raise KernelError(f"cannot open a netlink socket: {e.strerror}", e.errno) from None

    def close(self) -> None:
        self._ipr.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._ipr, method)(*args, **kwargs)
        except NetlinkError as e:
            code = int(e.code)
            if code == errno.EPERM:
                msg = f"{what}: permission denied (run as root or with CAP_NET_ADMIN)"
            elif code == errno.EEXIST:
                msg = f"{what}: already exists"
            elif code == errno.ENODEV:
                msg = f"{what}: no such device"
            elif code == errno.EADDRNOTAVAIL:
                msg = f"{what}: address not available"
            elif code == errno.ENETUNREACH:
                msg = f"{what}: gateway is not reachable from any link"
            elif code == errno.ESRCH:
                msg = f"{what}: no such route"
            else:
                msg = f"{what}: {_describe(code)}"
            raise KernelError(msg, code) from None
        except OSError as e:
            raise KernelError(f"{what}: {e.strerror}", e.errno) from None

    # --- links --------------------------------------------------------------

    def pin(self, name: str) -> int:
        """Look ``name``'s index up once from now on: for a link this program made and
        owns, which it then changes many times (each lookup is a netlink dump). Deleting
        or moving the link through this object forgets it."""
        self._pinned.pop(name, None)
        self._pinned[name] = index = self.index(name)
        return index

    def index(self, name: str) -> int:
        pinned = self._pinned.get(name)
        if pinned is not None:
            return pinned
        validate_ifname(name)
        found = self._call(f"look up {name}", "link_lookup", ifname=name)
        if not found:
            where = f" in namespace {self.netns!r}" if self.netns else ""
            raise KernelError(f"link {name!r} does not exist{where}", errno.ENODEV)
        return int(found[0])

    def exists(self, name: str) -> bool:
        validate_ifname(name)
        return bool(self._call(f"look up {name}", "link_lookup", ifname=name))

    def links(self) -> list[Link]:
        return [_link_from_msg(m) for m in self._call("list links", "link", "dump")]

    def link(self, name: str) -> Link:
        msgs = self._call(f"get link {name}", "link", "get", index=self.index(name))
        return _link_from_msg(msgs[0])

    def set_up(self, name: str) -> None:
        self._call(f"set {name} up", "link", "set", index=self.index(name), state="up")

    def set_down(self, name: str) -> None:
        self._call(f"set {name} down", "link", "set", index=self.index(name), state="down")

    def set_mtu(self, name: str, mtu: int) -> None:
        if not 68 <= mtu <= 65535:
            raise ConfigError(f"MTU {mtu} is out of range 68..65535")
        self._call(f"set MTU {mtu} on {name}", "link", "set", index=self.index(name), mtu=mtu)

    def set_txqueuelen(self, name: str, length: int) -> None:
        """IFLA_TXQLEN: for a TUN/TAP, the packets the kernel queues for its reader."""
        if not 1 <= length <= 1 << 20:
            raise ConfigError(f"queue length {length} is out of range 1..{1 << 20}")
        self._call(
            f"set txqueuelen {length} on {name}", "link", "set", index=self.index(name),
            txqlen=length,
        )

    def set_gso_max_segs(self, name: str, segments: int) -> None:
        """IFLA_GSO_MAX_SEGS: the most segments the stack puts in one TSO/GSO packet."""
        if not 1 <= segments <= 65535:
            raise ConfigError(f"GSO segment limit {segments} is out of range 1..65535")
        self._call(
            f"set gso_max_segs {segments} on {name}",
            "link",
            "set",
            index=self.index(name),
            gso_max_segs=segments,
        )

    def set_mac(self, name: str, mac: str) -> None:
        mac = parse_mac(mac)
        self._call(f"set MAC {mac} on {name}", "link", "set", index=self.index(name), address=mac)

    def set_alias(self, name: str, alias: str) -> None:
        """IFLA_IFALIAS: a free-text label kept by the kernel (``ip link set NAME alias``)."""
        self._call(f"set alias of {name}", "link", "set", index=self.index(name), ifalias=alias)

    def alias(self, name: str) -> str | None:
        msgs = self._call(f"read link {name}", "get_links", self.index(name))
        value = msgs[0].get_attr("IFLA_IFALIAS") if msgs else None
        return str(value) if value else None

    def rename(self, name: str, new_name: str) -> None:
        validate_ifname(new_name)
        self._call(f"rename {name}", "link", "set", index=self.index(name), ifname=new_name)
        self._pinned.pop(name, None)

    def delete_link(self, name: str) -> None:
        self._call(f"delete link {name}", "link", "del", index=self.index(name))
        self._pinned.pop(name, None)

    def move_to_netns(self, name: str, netns: str) -> None:
        """Move a link into another named namespace (it leaves this one)."""
        if not _netns.exists(netns):
            raise KernelError(f"network namespace {netns!r} does not exist", errno.ENOENT)
        fd = os.open(_netns.path(netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._call(
                f"move {name} to namespace {netns}",
                "link",
                "set",
                index=self.index(name),
                net_ns_fd=fd,
            )
            self._pinned.pop(name, None)
        finally:
            os.close(fd)

    def add_veth(self, name: str, peer: str, *, peer_netns: str | None = None) -> None:
        """A veth pair; the peer end may be created straight in another namespace."""
        validate_ifname(name)
        validate_ifname(peer)
        if self.exists(name):
            raise KernelError(f"add veth {name}: already exists", errno.EEXIST)
        peer_spec: dict[str, Any] = {"ifname": peer}
        fd = None
        if peer_netns is not None:
            if not _netns.exists(peer_netns):
                raise KernelError(f"network namespace {peer_netns!r} does not exist", errno.ENOENT)
            fd = os.open(_netns.path(peer_netns), os.O_RDONLY | os.O_CLOEXEC)
            peer_spec["net_ns_fd"] = fd
        try:
            self._call(
                f"add veth {name}/{peer}", "link", "add", ifname=name, kind="veth", peer=peer_spec
            )
        finally:
            if fd is not None:
                os.close(fd)

    def add_bridge(self, name: str, *, stp: bool = False) -> None:
        validate_ifname(name)
        self._call(
            f"add bridge {name}", "link", "add", ifname=name, kind="bridge", br_stp_state=int(stp)
        )

    def set_master(self, port: str, bridge: str | None) -> None:
        """Enslave ``port`` to ``bridge``; None releases it."""
        master = 0 if bridge is None else self.index(bridge)
        what = f"release {port}" if bridge is None else f"add {port} to bridge {bridge}"
        self._call(what, "link", "set", index=self.index(port), master=master)

    def add_vxlan(
        self,
        name: str,
        vni: int,
        *,
        remote: str | None = None,
        group: str | None = None,
        local: str | None = None,
        dev: str | None = None,
        port: int = VXLAN_PORT_IANA,
        learning: bool = True,
    ) -> None:
        """A kernel VXLAN device (RFC 7348): unicast ``remote`` or multicast ``group``."""
        validate_ifname(name)
        if not 0 <= vni < 1 << 24:
            raise ConfigError(f"VNI {vni} is out of range 0..16777215")
        if not 1 <= port <= 65535:
            raise ConfigError(f"UDP port {port} is out of range 1..65535")
        if remote is not None and group is not None:
            raise ConfigError("give a VXLAN remote or a group, not both")
        spec: dict[str, Any] = {
            "vxlan_id": vni,
            "vxlan_port": port,
            "vxlan_learning": int(learning),
        }
        for key, value in (("remote", remote), ("group", group), ("local", local)):
            if value is None:
                continue
            addr = _ip_address(value, f"VXLAN {key}")
            attr = "vxlan_local" if key == "local" else "vxlan_group"
            if addr.version == 6:
                attr += "6"
            spec[attr] = str(addr)
        if dev is not None:
            spec["vxlan_link"] = self.index(dev)
        self._call(f"add vxlan {name}", "link", "add", ifname=name, kind="vxlan", **spec)

    # --- addresses ----------------------------------------------------------

    def add_address(self, name: str, cidr: str, *, nodad: bool = False) -> None:
        iface = parse_interface(cidr)
        kwargs: dict[str, Any] = {
            "index": self.index(name),
            "address": str(iface.ip),
            "prefixlen": iface.network.prefixlen,
        }
        if nodad and iface.version == 6:
            kwargs["flags"] = IFA_F_NODAD
        self._call(f"add address {cidr} to {name}", "addr", "add", **kwargs)

    def del_address(self, name: str, cidr: str) -> None:
        iface = parse_interface(cidr)
        self._call(
            f"delete address {cidr} from {name}",
            "addr",
            "del",
            index=self.index(name),
            address=str(iface.ip),
            prefixlen=iface.network.prefixlen,
        )

    def addresses(self, name: str | None = None) -> list[Address]:
        names = {link.index: link.name for link in self.links()}
        kwargs: dict[str, Any] = {}
        if name is not None:
            kwargs["index"] = self.index(name)
        out = []
        for msg in self._call("list addresses", "addr", "dump", **kwargs):
            addr = msg.get_attr("IFA_ADDRESS")
            if addr is None:
                continue
            link = names.get(msg["index"], str(msg["index"]))
            if name is not None and link != name:
                continue
            out.append(Address(link, f"{addr}/{msg['prefixlen']}"))
        return out

    # --- routes ---------------------------------------------------------------

    def add_route(
        self,
        dst: str,
        *,
        via: str | None = None,
        dev: str | None = None,
        table: int | None = None,
        metric: int | None = None,
    ) -> None:
        kwargs = self._route_args(dst, via, dev, table, metric)
        self._call(f"add route {dst}", "route", "add", **kwargs)

    def del_route(
        self,
        dst: str,
        *,
        via: str | None = None,
        dev: str | None = None,
        table: int | None = None,
    ) -> None:
        kwargs = self._route_args(dst, via, dev, table, None)
        self._call(f"delete route {dst}", "route", "del", **kwargs)

    def replace_route(
        self, dst: str, *, via: str | None = None, dev: str | None = None, onlink: bool = False
    ) -> None:
        """Add or update a route (``ip route replace``); ``onlink``: the gateway is taken
        to be on ``dev`` even with no address of its subnet there (flannel's vxlan)."""
        kwargs = self._route_args(dst, via, dev, None, None)
        if onlink:
            kwargs["flags"] = RTNH_F_ONLINK
        self._call(f"replace route {dst}", "route", "replace", **kwargs)

    def replace_neighbor(self, dev: str, address: str, mac: str) -> None:
        """A permanent neighbour entry: ``address`` is at ``mac`` on ``dev``."""
        ip = _ip_address(address, "neighbour")
        self._call(
            f"neighbour {address} on {dev}",
            "neigh",
            "replace",
            dst=str(ip),
            lladdr=parse_mac(mac),
            ifindex=self.index(dev),
            state=NUD_PERMANENT,
            family=_family(ip),
        )

    def del_neighbor(self, dev: str, address: str) -> None:
        ip = _ip_address(address, "neighbour")
        self._call(
            f"delete neighbour {address} on {dev}",
            "neigh",
            "del",
            dst=str(ip),
            ifindex=self.index(dev),
            family=_family(ip),
        )

    def replace_fdb(self, dev: str, mac: str, remote: str) -> None:
        """A permanent forwarding entry of a vxlan device: frames for ``mac`` go to the
        VTEP ``remote`` (``bridge fdb replace MAC dev DEV dst REMOTE``)."""
        self._call(
            f"fdb {mac} on {dev}",
            "fdb",
            "replace",
            ifindex=self.index(dev),
            lladdr=parse_mac(mac),
            dst=str(_ip_address(remote, "VTEP")),
            state=NUD_PERMANENT | NUD_NOARP,
            flags=NTF_SELF,  # the vxlan device's own table, not a bridge master's
        )

    def del_fdb(self, dev: str, mac: str, remote: str) -> None:
        self._call(
            f"delete fdb {mac} on {dev}",
            "fdb",
            "del",
            ifindex=self.index(dev),
            lladdr=parse_mac(mac),
            dst=str(_ip_address(remote, "VTEP")),
        )

    def neighbors(self, dev: str) -> list[tuple[str, str]]:
        """(address, MAC) of the permanent neighbour entries on ``dev``."""
        out = []
        index = self.index(dev)
        for msg in self._call(f"list neighbours on {dev}", "neigh", "dump", ifindex=index):
            address, mac = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
            if address and mac and msg["state"] & NUD_PERMANENT and msg["family"] != AF_BRIDGE:
                out.append((address, mac))
        return out

    def fdb_entries(self, dev: str) -> list[tuple[str, str]]:
        """(MAC, remote VTEP) of a vxlan device's forwarding entries."""
        out = []
        index = self.index(dev)
        for msg in self._call(f"list fdb of {dev}", "fdb", "dump"):
            if msg["ifindex"] != index:
                continue
            mac, remote = msg.get_attr("NDA_LLADDR"), msg.get_attr("NDA_DST")
            if mac and remote:
                out.append((mac, remote))
        return out

    def _route_args(
        self, dst: str, via: str | None, dev: str | None, table: int | None, metric: int | None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if dst == "default":
            gw = _ip_address(via, "gateway") if via is not None else None
            version = gw.version if gw is not None else 4
            kwargs["dst"] = "0.0.0.0/0" if version == 4 else "::/0"
        else:
            try:
                net = ipaddress.ip_network(dst, strict=True)
            except ValueError as e:
                raise ConfigError(f"invalid route destination {dst!r}: {e}") from None
            kwargs["dst"] = str(net)
            version = net.version
            gw = _ip_address(via, "gateway") if via is not None else None
        if gw is not None:
            if gw.version != version:
                raise ConfigError(f"gateway {via} is not of the same family as {dst}")
            kwargs["gateway"] = str(gw)
        if dev is not None:
            kwargs["oif"] = self.index(dev)
        if via is None and dev is None:
            raise ConfigError(f"route {dst} needs a gateway (via) or a device (dev)")
        if table is not None:
            kwargs["table"] = table
        if metric is not None:
            kwargs["priority"] = metric
        kwargs["family"] = socket.AF_INET if version == 4 else socket.AF_INET6
        return kwargs

    def routes(self, family: int = socket.AF_UNSPEC, table: int | None = None) -> list[Route]:
        names = {link.index: link.name for link in self.links()}
        out = []
        for msg in self._call("list routes", "route", "dump", family=family):
            tbl = msg.get_attr("RTA_TABLE") or msg["table"]
            if table is not None and tbl != table:
                continue
            dst = msg.get_attr("RTA_DST")
            prefix = f"{dst}/{msg['dst_len']}" if dst else "default"
            oif = msg.get_attr("RTA_OIF")
            out.append(
                Route(
                    prefix,
                    msg.get_attr("RTA_GATEWAY"),
                    names.get(oif) if oif else None,
                    int(tbl),
                    msg.get_attr("RTA_PRIORITY"),
                )
            )
        return out


def _link_from_msg(msg: Any) -> Link:
    kind = None
    tun = None
    extra: dict[str, Any] = {}
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    if linkinfo is not None:
        kind = linkinfo.get_attr("IFLA_INFO_KIND")
        data = linkinfo.get_attr("IFLA_INFO_DATA")
        if kind == "tun" and data is not None:
            tun = TunInfo(
                mode="tap" if data.get_attr("IFLA_TUN_TYPE") == 2 else "tun",
                pi=bool(data.get_attr("IFLA_TUN_PI")),
                vnet_hdr=bool(data.get_attr("IFLA_TUN_VNET_HDR")),
                persist=bool(data.get_attr("IFLA_TUN_PERSIST")),
                multi_queue=bool(data.get_attr("IFLA_TUN_MULTI_QUEUE")),
                owner=data.get_attr("IFLA_TUN_OWNER"),
                group=data.get_attr("IFLA_TUN_GROUP"),
                queues=data.get_attr("IFLA_TUN_NUM_QUEUES"),
                disabled_queues=data.get_attr("IFLA_TUN_NUM_DISABLED_QUEUES"),
            )
        elif kind == "vxlan" and data is not None:
            extra["vni"] = data.get_attr("IFLA_VXLAN_ID")
            extra["port"] = data.get_attr("IFLA_VXLAN_PORT")
    master = msg.get_attr("IFLA_MASTER")
    return Link(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        kind=kind,
        up=bool(msg["flags"] & IFF_UP),
        operstate=str(msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN"),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        mac=msg.get_attr("IFLA_ADDRESS"),
        master=int(master) if master else None,
        tun=tun,
        extra=extra,
        gso_max_segs=int(msg.get_attr("IFLA_GSO_MAX_SEGS") or 0),
    )
