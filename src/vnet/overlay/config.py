"""flannel's network configuration: the JSON document at ``<prefix>/config``.

Read and checked by flannel's rules (flannel's Documentation/configuration.md and
pkg/subnet/config.go): ``Network`` is required; ``SubnetLen`` defaults to 24 (or
Network's length + 2 when the Network is smaller than a /22); ``SubnetMin`` and
``SubnetMax`` default to the second and the last subnet and must lie in the Network on
a SubnetLen boundary; ``Backend.Type`` defaults to ``udp``. Every problem is a
ConfigError that names the key.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from vnet.errors import ConfigError

BACKENDS = ("udp", "vxlan", "wireguard", "host-gw")
UDP_PORT = 8285  # flannel's udp backend
VXLAN_VNI = 1
VXLAN_PORT = 8472  # the kernel's default vxlan port, which flannel keeps
WIREGUARD_PORT = 51820


@dataclass(frozen=True)
class Backend:
    """``Backend`` of the config: its type and the options that type reads."""

    type: str = "udp"
    port: int = UDP_PORT  # udp: Port; vxlan: Port; wireguard: ListenPort
    vni: int = VXLAN_VNI  # vxlan
    keepalive: int = 0  # wireguard: PersistentKeepaliveInterval (seconds)
    options: dict[str, Any] = field(default_factory=dict)  # as written, for the record


@dataclass(frozen=True)
class NetworkConfig:
    network: ipaddress.IPv4Network
    subnet_len: int
    subnet_min: ipaddress.IPv4Address
    subnet_max: ipaddress.IPv4Address
    backend: Backend
    ipv6_network: ipaddress.IPv6Network | None = None

    def subnets(self) -> range:
        """The integer network addresses of every subnet a host may lease, in order."""
        step = 1 << (32 - self.subnet_len)
        return range(int(self.subnet_min), int(self.subnet_max) + 1, step)

    def subnet_at(self, address: int) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network((address, self.subnet_len))

    def contains(self, subnet: ipaddress.IPv4Network) -> bool:
        return subnet.prefixlen == self.subnet_len and int(self.subnet_min) <= int(
            subnet.network_address
        ) <= int(self.subnet_max)


def _int(doc: dict[str, Any], key: str, where: str, low: int, high: int, default: int) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}{key}: expected an integer, got {json.dumps(value)}")
    if not low <= value <= high:
        raise ConfigError(f"{where}{key}: {value} is out of range {low}..{high}")
    return value


def _backend(raw: Any) -> Backend:
    if raw is None:
        return Backend()
    if not isinstance(raw, dict):
        raise ConfigError('Backend: expected an object such as {"Type": "vxlan"}')
    kind = raw.get("Type", "udp")
    if kind not in BACKENDS:
        raise ConfigError(f"Backend.Type: {json.dumps(kind)} is not one of {', '.join(BACKENDS)}")
    if kind == "udp":
        return Backend(kind, _int(raw, "Port", "Backend.", 1, 65535, UDP_PORT), options=raw)
    if kind == "vxlan":
        port = _int(raw, "Port", "Backend.", 0, 65535, 0) or VXLAN_PORT
        vni = _int(raw, "VNI", "Backend.", 0, (1 << 24) - 1, VXLAN_VNI)
        return Backend(kind, port, vni, options=raw)
    if kind == "wireguard":
        port = _int(raw, "ListenPort", "Backend.", 1, 65535, WIREGUARD_PORT)
        keepalive = _int(raw, "PersistentKeepaliveInterval", "Backend.", 0, 65535, 0)
        return Backend(kind, port, keepalive=keepalive, options=raw)
    return Backend(kind, 0, options=raw)


def _address(doc: dict[str, Any], key: str) -> ipaddress.IPv4Address | None:
    value = doc.get(key)
    if value is None:
        return None
    try:
        if not isinstance(value, str):  # ipaddress would take an integer (even a bool)
            raise ValueError(value)
        return ipaddress.IPv4Address(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: {json.dumps(value)} is not an IPv4 address") from None


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
    if "SubnetLen" in doc:
        subnet_len = _int(doc, "SubnetLen", "", 1, 30, 24)
        if subnet_len < network.prefixlen + 2:
            raise ConfigError(
                f"SubnetLen: /{subnet_len} leaves Network {network} fewer than four subnets"
            )
    elif network.prefixlen > 28:
        raise ConfigError(f"Network: {network} is too small; the smallest useful one is a /28")
    else:
        subnet_len = 24 if network.prefixlen <= 22 else network.prefixlen + 2
    size = 1 << (32 - subnet_len)
    mask = (0xFFFFFFFF << (32 - subnet_len)) & 0xFFFFFFFF
    low = _address(doc, "SubnetMin") or network.network_address + size
    high = _address(doc, "SubnetMax") or network.broadcast_address + 1 - size
    for key, value in (("SubnetMin", low), ("SubnetMax", high)):
        if value not in network:
            raise ConfigError(f"{key}: {value} is not in Network {network}")
        if int(value) & mask != int(value):
            raise ConfigError(f"{key}: {value} is not on a /{subnet_len} boundary")
    if int(low) > int(high):
        raise ConfigError(f"SubnetMin: {low} is above SubnetMax {high}")
    ipv6 = None
    if doc.get("EnableIPv6"):
        try:
            if not isinstance(doc.get("IPv6Network"), str):
                raise ValueError(doc.get("IPv6Network"))
            ipv6 = ipaddress.IPv6Network(doc.get("IPv6Network"))
        except (ValueError, TypeError):
            raise ConfigError(
                "IPv6Network: required with EnableIPv6, an IPv6 network in CIDR form"
            ) from None
    return NetworkConfig(network, subnet_len, low, high, _backend(doc.get("Backend")), ipv6)
