"""Leases as flannel keeps them in etcd (flannel's Documentation/reservations.md).

A host's lease is the key ``<prefix>/subnets/<a.b.c.d>-<len>`` (``&<v6>-<len>`` appended
when it has an IPv6 subnet too) whose value is flannel's ``LeaseAttrs`` JSON:

    {"PublicIP":"198.18.0.3","PublicIPv6":null,"BackendType":"vxlan",
     "BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}

(a dual-stack host: ``"PublicIPv6":"fd00::3"`` and a ``BackendV6Data`` object after
BackendData, which the IPv6 side of the backend reads)

bound to an etcd lease of 24 hours that the holder renews. A key with a TTL of 0 is a
reservation (never expires).
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from vnet.errors import ProtocolError

LEASE_TTL = 24 * 3600  # seconds, as flanneld
RENEW_MARGIN = 3600  # renew this long before expiry, as flanneld
_KEY = re.compile(r"(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([0-9a-fA-F:]+)-(\d+))?$")


class LeaseError(ProtocolError):
    """A key or value under the subnets prefix that is not a flannel lease."""


@dataclass(frozen=True)
class Lease:
    subnet: ipaddress.IPv4Network
    public_ip: ipaddress.IPv4Address
    backend_type: str
    backend_data: dict[str, Any] = field(default_factory=dict, compare=False)
    ipv6_subnet: ipaddress.IPv6Network | None = None
    public_ipv6: ipaddress.IPv6Address | None = None
    backend_v6_data: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def key(self) -> str:
        return subnet_key(self.subnet, self.ipv6_subnet)

    def encode(self) -> str:
        """The value flanneld writes (Go's encoding of LeaseAttrs: field order kept, a
        missing PublicIPv6 as null, BackendType and BackendData omitted when empty)."""
        attrs: dict[str, Any] = {
            "PublicIP": str(self.public_ip),
            "PublicIPv6": str(self.public_ipv6) if self.public_ipv6 else None,
        }
        if self.backend_type:  # flanneld's udp backend leaves it empty: omitted
            attrs["BackendType"] = self.backend_type
        if self.backend_data:
            attrs["BackendData"] = self.backend_data
        if self.backend_v6_data:
            attrs["BackendV6Data"] = self.backend_v6_data
        return json.dumps(attrs, separators=(",", ":"))


def subnet_key(subnet: ipaddress.IPv4Network, ipv6: ipaddress.IPv6Network | None = None) -> str:
    key = f"{subnet.network_address}-{subnet.prefixlen}"
    if ipv6 is not None:
        key += f"&{ipv6.network_address}-{ipv6.prefixlen}"
    return key


def parse_key(key: str) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network | None]:
    """The subnets of a lease key (its last path element)."""
    match = _KEY.search(key.rsplit("/", 1)[-1])
    if match is None:
        raise LeaseError(f"{key!r} is not a subnet lease key")
    try:
        subnet = ipaddress.IPv4Network(f"{match[1]}/{match[2]}")
        ipv6 = ipaddress.IPv6Network(f"{match[3]}/{match[4]}") if match[3] else None
    except ValueError as e:
        raise LeaseError(f"{key!r}: {e}") from None
    return subnet, ipv6


def decode(key: str, value: str | bytes) -> Lease:
    """A lease from its etcd key and value, as flanneld or vnet wrote it."""
    subnet, ipv6 = parse_key(key)
    try:
        attrs = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        raise LeaseError(f"{key}: the value is not JSON") from None
    if not isinstance(attrs, dict):
        raise LeaseError(f"{key}: the value is not a JSON object")
    try:
        public = ipaddress.IPv4Address(attrs.get("PublicIP"))
    except (ValueError, TypeError):
        raise LeaseError(f"{key}: PublicIP {attrs.get('PublicIP')!r} is not IPv4") from None
    public6 = None
    if attrs.get("PublicIPv6") is not None:
        try:
            public6 = ipaddress.IPv6Address(attrs["PublicIPv6"])
        except (ValueError, TypeError):
            raise LeaseError(
                f"{key}: PublicIPv6 {attrs['PublicIPv6']!r} is not IPv6"
            ) from None
    kind = attrs.get("BackendType", "")
    data = attrs.get("BackendData") or {}
    data6 = attrs.get("BackendV6Data") or {}
    if not isinstance(kind, str) or not isinstance(data, dict) or not isinstance(data6, dict):
        raise LeaseError(f"{key}: BackendType, BackendData or BackendV6Data has the wrong type")
    return Lease(subnet, public, kind, data, ipv6, public6, data6)
