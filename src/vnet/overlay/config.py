"""flannel's network configuration: the JSON document at ``<prefix>/config``.

Read and checked by flannel's rules (flannel's Documentation/configuration.md and
pkg/subnet/config.go): ``Network`` is required; ``SubnetLen`` defaults to 24 (or
Network's length + 2 when the Network is smaller than a /22); ``SubnetMin`` and
``SubnetMax`` default to the second and the last subnet and must lie in the Network on
a SubnetLen boundary; ``Backend.Type`` defaults to ``udp``. With ``EnableIPv6``,
``IPv6Network`` is required and ``IPv6SubnetLen`` (64, or the network's length + 2 when
it is narrower than a /62), ``IPv6SubnetMin`` and ``IPv6SubnetMax`` follow the same
rules: each host leases one subnet of each family. Every problem is a ConfigError that
names the key.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from vnet.errors import ConfigError

BACKENDS = ("udp", "vxlan", "wireguard", "host-gw")
UDP_PORT = 8285  # flannel's udp backend
VXLAN_VNI = 1
VXLAN_PORT = 8472  # the kernel's default vxlan port, which flannel keeps
WIREGUARD_PORT = 51820
WIREGUARD_PORT_V6 = 51821  # flannel-wg-v6 in the "separate" mode
# separate: IPv6 peers on a second device; the others: one device, both families,
# reached over IPv4, IPv6 or (auto) IPv4 unless only IPv6 is public, as flannel
WIREGUARD_MODES = ("separate", "auto", "ipv4", "ipv6")


@dataclass(frozen=True)
class Backend:
    """``Backend`` of the config: its type and the options that type reads."""

    type: str = "udp"
    port: int = UDP_PORT  # udp: Port; vxlan: Port; wireguard: ListenPort
    vni: int = VXLAN_VNI  # vxlan
    keepalive: int = 0  # wireguard: PersistentKeepaliveInterval (seconds)
    port_v6: int = WIREGUARD_PORT_V6  # wireguard: ListenPortV6
    mode: str = "separate"  # wireguard: Mode
    options: dict[str, Any] = field(default_factory=dict)  # as written, for the record


NetT = TypeVar("NetT", ipaddress.IPv4Network, ipaddress.IPv6Network)


@dataclass(frozen=True)
class Pool(Generic[NetT]):
    """The subnets hosts may lease from one network: every /subnet_len from subnet_min to
    subnet_max (addresses as integers: an IPv6 pool may hold more subnets than a range
    can count)."""

    network: NetT
    subnet_len: int
    first: int  # SubnetMin
    last: int  # SubnetMax

    @property
    def step(self) -> int:
        return 1 << (self.network.max_prefixlen - self.subnet_len)

    @property
    def size(self) -> int:
        return (self.last - self.first) // self.step + 1

    @property
    def subnet_min(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return self.at(0).network_address

    @property
    def subnet_max(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return self.at(self.size - 1).network_address

    def at(self, i: int) -> NetT:
        """The i-th subnet of the pool."""
        return type(self.network)((self.first + i * self.step, self.subnet_len))

    def index(self, subnet: NetT) -> int | None:
        """Where ``subnet`` is in the pool, or None when it is not one of its subnets."""
        address = int(subnet.network_address)
        if (
            subnet.version != self.network.version
            or subnet.prefixlen != self.subnet_len
            or not self.first <= address <= self.last
        ):
            return None
        return (address - self.first) // self.step

    def contains(self, subnet: NetT) -> bool:
        return self.index(subnet) is not None


@dataclass(frozen=True)
class NetworkConfig:
    pool: Pool[ipaddress.IPv4Network]
    backend: Backend
    ipv6: Pool[ipaddress.IPv6Network] | None = None  # EnableIPv6

    @property
    def network(self) -> ipaddress.IPv4Network:
        return self.pool.network


def _int(doc: dict[str, Any], key: str, where: str, low: int, high: int, default: int) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}{key}: expected an integer, got {json.dumps(value)}")
    if not low <= value <= high:
        raise ConfigError(f"{where}{key}: {value} is out of range {low}..{high}")
    return value


def _backend(raw: Any, ipv6: bool) -> Backend:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError('Backend: expected an object such as {"Type": "vxlan"}')
    kind = raw.get("Type", "udp")
    if kind not in BACKENDS:
        raise ConfigError(f"Backend.Type: {json.dumps(kind)} is not one of {', '.join(BACKENDS)}")
    if kind == "udp":
        if ipv6:  # as flannel's: its wire format has no IPv6
            raise ConfigError("EnableIPv6: the udp backend carries IPv4 only; use vxlan, "
                              "wireguard or host-gw for IPv6")
        return Backend(kind, _int(raw, "Port", "Backend.", 1, 65535, UDP_PORT), options=raw)
    if kind == "vxlan":
        port = _int(raw, "Port", "Backend.", 0, 65535, 0) or VXLAN_PORT
        vni = _int(raw, "VNI", "Backend.", 0, (1 << 24) - 1, VXLAN_VNI)
        return Backend(kind, port, vni, options=raw)
    if kind == "wireguard":
        port = _int(raw, "ListenPort", "Backend.", 1, 65535, WIREGUARD_PORT)
        keepalive = _int(raw, "PersistentKeepaliveInterval", "Backend.", 0, 65535, 0)
        port6 = _int(raw, "ListenPortV6", "Backend.", 1, 65535, WIREGUARD_PORT_V6)
        mode = raw.get("Mode", "separate")
        if mode not in WIREGUARD_MODES:
            raise ConfigError(
                f"Backend.Mode: {json.dumps(mode)} is not one of {', '.join(WIREGUARD_MODES)}"
            )
        if ipv6 and mode == "separate" and port6 == port:
            raise ConfigError(f"Backend.ListenPortV6: {port6} is ListenPort's too")
        return Backend(kind, port, keepalive=keepalive, port_v6=port6, mode=mode, options=raw)
    return Backend(kind, 0, options=raw)


def _address(doc: dict[str, Any], key: str, version: int) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    try:
        if not isinstance(value, str):  # ipaddress would take an integer (even a bool)
            raise ValueError(value)
        address = ipaddress.ip_address(value)
        if address.version != version:
            raise ValueError(value)
        return int(address)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: {json.dumps(value)} is not an IPv{version} address") from None


def parse_config(text: str | bytes) -> NetworkConfig:
    """Parse and check the config document; a ConfigError names the key at fault."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"config: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ConfigError('config: expected a JSON object with at least "Network"')
    if doc.get("EnableIPv4", True) is not True:
        raise ConfigError("EnableIPv4: only IPv4 networks (with optional IPv6) are supported")
    raw = doc.get("Network")
    if raw is None:
        raise ConfigError('Network: missing (the IPv4 network in CIDR form, e.g. "198.18.0.0/16")')
    try:
        if not isinstance(raw, str):
            raise ValueError(raw)
        network = ipaddress.IPv4Network(raw)
    except (ValueError, TypeError):
        raise ConfigError(
            f"Network: {json.dumps(raw)} is not an IPv4 network in CIDR form"
        ) from None
    pool = _pool(doc, "", network, 30, 24, 22)
    ipv6 = None
    if doc.get("EnableIPv6", False) is not False:
        if doc["EnableIPv6"] is not True:
            raise ConfigError(
                f"EnableIPv6: expected true or false, got {json.dumps(doc['EnableIPv6'])}"
            )
        raw6 = doc.get("IPv6Network")
        try:
            if not isinstance(raw6, str):
                raise ValueError(raw6)
            network6 = ipaddress.IPv6Network(raw6)
        except (ValueError, TypeError):
            raise ConfigError(
                f"IPv6Network: {json.dumps(raw6)} is not an IPv6 network in CIDR form"
                " (required with EnableIPv6)"
            ) from None
        ipv6 = _pool(doc, "IPv6", network6, 126, 64, 62)
    backend = _backend(doc.get("Backend"), ipv6 is not None)
    return NetworkConfig(pool, backend, ipv6)


def _pool(doc: dict[str, Any], tag: str, network: NetT, longest: int, default: int,
          wide: int) -> Pool[NetT]:
    """``<tag>SubnetLen``, ``<tag>SubnetMin`` and ``<tag>SubnetMax`` by flannel's rules:
    the length defaults to ``default`` for a network of /``wide`` or wider, else to the
    network's length + 2 (four subnets); min and max to the second and the last subnet."""
    bits = network.max_prefixlen
    name = f"{tag}Network"
    if f"{tag}SubnetLen" in doc:
        subnet_len = _int(doc, f"{tag}SubnetLen", "", 1, longest, default)
        if subnet_len < network.prefixlen + 2:
            raise ConfigError(
                f"{tag}SubnetLen: /{subnet_len} leaves {name} {network} fewer than four subnets"
            )
    elif network.prefixlen > longest - 2:
        raise ConfigError(
            f"{name}: {network} is too small; the smallest useful one is a /{longest - 2}"
        )
    else:
        subnet_len = default if network.prefixlen <= wide else network.prefixlen + 2
    size = 1 << (bits - subnet_len)
    mask = ((1 << bits) - 1) ^ (size - 1)
    base = int(network.network_address)
    low = _address(doc, f"{tag}SubnetMin", network.version)
    high = _address(doc, f"{tag}SubnetMax", network.version)
    first = base + size if low is None else low
    last = base + network.num_addresses - size if high is None else high
    for key, value in ((f"{tag}SubnetMin", first), (f"{tag}SubnetMax", last)):
        text = type(network.network_address)(value)
        if not base <= value < base + network.num_addresses:
            raise ConfigError(f"{key}: {text} is not in {name} {network}")
        if value & mask != value:
            raise ConfigError(f"{key}: {text} is not on a /{subnet_len} boundary")
    if first > last:
        kind = type(network.network_address)
        raise ConfigError(
            f"{tag}SubnetMin: {kind(first)} is above {tag}SubnetMax {kind(last)}"
        )
    return Pool(network, subnet_len, first, last)
