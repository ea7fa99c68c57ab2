"""What each backend makes of a remote host's lease: the kernel entries and tunnel peers
that reach its subnet (flannel's pkg/backend/*). Pure: the agent applies the entries.

- ``udp``: the subnet's packets go to the lease's PublicIP, port 8285, as raw IP in UDP
  (the agent's userspace table, one route for the whole Network via flannel0);
- ``vxlan``: flannel.VNI gets a permanent neighbour (the subnet's first address at the
  lease's VtepMAC), a forwarding entry (VtepMAC at PublicIP) and an onlink route of the
  subnet via that first address;
- ``wireguard``: a peer (the lease's PublicKey at PublicIP:Port) whose allowed IPs are
  the subnet, on flannel-wg, which has one route for the whole Network;
- ``host-gw``: a route of the subnet via PublicIP (hosts on one L2 segment).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from vnet.overlay.config import Backend
from vnet.overlay.lease import Lease, LeaseError

UDP_DEVICE = "flannel0"
WIREGUARD_DEVICE = "flannel-wg"


def vxlan_device(vni: int) -> str:
    return f"flannel.{vni}"


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
    public_key: str  # base64, as in the lease
    endpoint: tuple[str, int]
    allowed_ip: str
    keepalive: int = 0


Entry = Route | Neighbor | Fdb | UdpPeer | WgPeer


def entries(backend: Backend, lease: Lease) -> list[Entry]:
    """The entries that reach ``lease``'s subnet; LeaseError when the lease lacks what
    this backend needs (a VtepMAC, a PublicKey)."""
    subnet = str(lease.subnet)
    public = str(lease.public_ip)
    # flanneld's udp backend publishes no BackendType
    if lease.backend_type != backend.type and not (
        backend.type == "udp" and not lease.backend_type
    ):
        raise LeaseError(
            f"{lease.key}: backend {lease.backend_type!r}, this network runs {backend.type!r}"
        )
    if backend.type == "udp":
        return [UdpPeer(subnet, (public, backend.port))]
    if backend.type == "host-gw":
        return [Route(subnet, via=public)]
    if backend.type == "vxlan":
        mac = lease.backend_data.get("VtepMAC")
        if not isinstance(mac, str) or len(mac.split(":")) != 6:
            raise LeaseError(f"{lease.key}: BackendData has no valid VtepMAC")
        dev = vxlan_device(backend.vni)
        first = str(lease.subnet.network_address)
        return [
            Neighbor(dev, first, mac.lower()),
            Fdb(dev, mac.lower(), public),
            Route(subnet, via=first, dev=dev, onlink=True),
        ]
    key = lease.backend_data.get("PublicKey")
    port = lease.backend_data.get("Port", backend.port)
    try:
        if not isinstance(key, str) or len(base64.b64decode(key, validate=True)) != 32:
            raise ValueError
    except (ValueError, binascii.Error):
        raise LeaseError(f"{lease.key}: BackendData has no valid PublicKey") from None
    if not isinstance(port, int) or not 0 < port < 65536:
        raise LeaseError(f"{lease.key}: BackendData.Port {port!r} is not a port")
    return [WgPeer(key, (public, port), subnet, backend.keepalive)]
