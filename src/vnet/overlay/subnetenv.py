"""``/run/flannel/subnet.env``, written as flanneld writes it, so that a docker0 or CNI
bridge can be configured from it:

    FLANNEL_NETWORK=198.18.0.0/16
    FLANNEL_SUBNET=198.18.7.1/24
    FLANNEL_MTU=1472
    FLANNEL_IPMASQ=false

FLANNEL_SUBNET is the first address of the host's subnet with its length (the bridge's
address), FLANNEL_MTU what a container may send through the backend.
"""

from __future__ import annotations

import ipaddress

from vnet.errors import ConfigError


def format_env(
    network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network, mtu: int, ip_masq: bool
) -> str:
    first = subnet.network_address + 1
    return (
        f"FLANNEL_NETWORK={network}\n"
        f"FLANNEL_SUBNET={first}/{subnet.prefixlen}\n"
        f"FLANNEL_MTU={mtu}\n"
        f"FLANNEL_IPMASQ={'true' if ip_masq else 'false'}\n"
    )


def parse_env(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"subnet.env:{number}: expected KEY=VALUE")
        out[key] = value
    return out


def previous_subnet(text: str) -> ipaddress.IPv4Network | None:
    """The subnet a subnet.env records (what a restarted host asks for again)."""
    try:
        value = parse_env(text).get("FLANNEL_SUBNET")
        return ipaddress.IPv4Interface(value).network if value else None
    except (ConfigError, ValueError):
        return None
