"""What each backend makes of a remote host's lease: the kernel entries and tunnel peers
that reach its subnet (flannel's pkg/backend/*). Pure: the agent applies the entries.

- ``udp``: the subnet's packets go to the lease's PublicIP, port 8285, as raw IP in UDP
  (the agent's userspace table, one route for the whole Network via flannel0); IPv4 only;
- ``vxlan``: flannel.VNI gets a permanent neighbour (the subnet's first address at the
  lease's VtepMAC), a forwarding entry (VtepMAC at PublicIP) and an onlink route of the
  subnet via that first address; the IPv6 subnet the same on flannel-v6.VNI, from
  BackendV6Data and PublicIPv6;
- ``wireguard``: a peer (the lease's PublicKey at PublicIP:Port) whose allowed IPs are
  the subnet, on flannel-wg, which has one route for the whole Network; with IPv6, in
  the "separate" mode a second peer on flannel-wg-v6 (BackendV6Data's key and port at
  PublicIPv6), else one peer for both subnets;
- ``host-gw``: a route of the subnet via PublicIP (hosts on one L2 segment), and of the
  IPv6 subnet via PublicIPv6.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass

from vnet.overlay.config import Backend
from vnet.overlay.lease import Lease, LeaseError

UDP_DEVICE = "flannel0"
WIREGUARD_DEVICE = "flannel-wg"
WIREGUARD_DEVICE_V6 = "flannel-wg-v6"  # the "separate" mode's IPv6 device


def vxlan_device(vni: int, version: int = 4) -> str:
    return f"flannel.{vni}" if version == 4 else f"flannel-v6.{vni}"


@dataclass(frozen=True)
class Route:
    dst: str
    via: str | None = None
    dev: str | None = None
    onlink: bool = False


@dataclass(frozen=True)
class Neighbor:
    dev: str
    address: str
    mac: str


@dataclass(frozen=True)
class Fdb:
    dev: str
    mac: str
    remote: str


@dataclass(frozen=True)
class UdpPeer:
    subnet: str
    endpoint: tuple[str, int]


@dataclass(frozen=True)
class WgPeer:
    device: str
    public_key: str  # base64, as in the lease
    endpoint: tuple[str, int]
    allowed_ips: tuple[str, ...]
    keepalive: int = 0


Entry = Route | Neighbor | Fdb | UdpPeer | WgPeer


def entries(backend: Backend, lease: Lease, ipv6: bool = False) -> list[Entry]:
    """The entries that reach ``lease``'s subnets (its IPv6 one too when the network has
    ``ipv6`` and the lease an IPv6 subnet); LeaseError when the lease lacks what this
    backend needs (a VtepMAC, a PublicKey, a PublicIPv6)."""
    # flanneld's udp backend publishes no BackendType
    if lease.backend_type != backend.type and not (
        backend.type == "udp" and not lease.backend_type
    ):
        raise LeaseError(
            f"{lease.key}: backend {lease.backend_type!r}, this network runs {backend.type!r}"
        )
    v6 = lease.ipv6_subnet if ipv6 else None
    if v6 is not None and lease.public_ipv6 is None:
        raise LeaseError(f"{lease.key}: an IPv6 subnet but no PublicIPv6")
    subnet, public = str(lease.subnet), str(lease.public_ip)
    public6 = str(lease.public_ipv6)
    if backend.type == "udp":
        return [UdpPeer(subnet, (public, backend.port))]
    if backend.type == "host-gw":
        routes: list[Entry] = [Route(subnet, via=public)]
        return routes + ([Route(str(v6), via=public6)] if v6 is not None else [])
    if backend.type == "vxlan":
        out = _vxlan(lease, backend.vni, lease.subnet, public, lease.backend_data, 4)
        if v6 is not None:
            out += _vxlan(lease, backend.vni, v6, public6, lease.backend_v6_data, 6)
        return out
    key, port = _wireguard(lease, lease.backend_data, backend.port, "BackendData")
    keepalive = backend.keepalive
    if v6 is None:
        return [WgPeer(WIREGUARD_DEVICE, key, (public, port), (subnet,), keepalive)]
    key6, port6 = _wireguard(lease, lease.backend_v6_data, backend.port_v6, "BackendV6Data")
    if backend.mode == "separate":
        return [
            WgPeer(WIREGUARD_DEVICE, key, (public, port), (subnet,), keepalive),
            WgPeer(WIREGUARD_DEVICE_V6, key6, (public6, port6), (str(v6),), keepalive),
        ]
    over_v6 = backend.mode == "ipv6" or (
        backend.mode == "auto" and lease.public_ip.is_private and lease.public_ipv6 is not None
        and lease.public_ipv6.is_global
    )  # auto: IPv4 unless only the IPv6 address is public (flannel's selectMode)
    endpoint = (public6, port6) if over_v6 else (public, port)
    return [WgPeer(WIREGUARD_DEVICE, key, endpoint, (subnet, str(v6)), keepalive)]


def _vxlan(
    lease: Lease,
    vni: int,
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network,
    public: str,
    data: dict[str, object],
    version: int,
) -> list[Entry]:
    mac = data.get("VtepMAC")
    if not isinstance(mac, str) or len(mac.split(":")) != 6:
        where = "BackendData" if version == 4 else "BackendV6Data"
        raise LeaseError(f"{lease.key}: {where} has no valid VtepMAC")
    dev = vxlan_device(vni, version)
    first = str(subnet.network_address)
    return [
        Neighbor(dev, first, mac.lower()),
        Fdb(dev, mac.lower(), public),
        Route(str(subnet), via=first, dev=dev, onlink=True),
    ]


def _wireguard(
    lease: Lease, data: dict[str, object], default_port: int, where: str
) -> tuple[str, int]:
    key = data.get("PublicKey")
    port = data.get("Port") or default_port  # older flanneld published no Port
    try:
        if not isinstance(key, str) or len(base64.b64decode(key, validate=True)) != 32:
            raise ValueError
    except (ValueError, binascii.Error):
        raise LeaseError(f"{lease.key}: {where} has no valid PublicKey") from None
    if not isinstance(port, int) or not 0 < port < 65536:
        raise LeaseError(f"{lease.key}: {where}.Port {port!r} is not a port")
    return key, port
