"""``/run/flannel/subnet.env``, written as flanneld writes it, so that a docker0 or CNI
bridge can be configured from it:

    FLANNEL_NETWORK=198.18.0.0/16
    FLANNEL_SUBNET=198.18.7.1/24
    FLANNEL_MTU=1472
    FLANNEL_IPMASQ=false

(FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET after FLANNEL_SUBNET when the network
has IPv6). FLANNEL_SUBNET is the first address of the host's subnet with its length (the bridge's
address), FLANNEL_MTU what a container may send through the backend.
"""

from __future__ import annotations

import contextlib
import ipaddress

from vnet.errors import ConfigError


def format_env(
    network: ipaddress.IPv4Network,
    subnet: ipaddress.IPv4Network,
    mtu: int,
    ip_masq: bool,
    ipv6: tuple[ipaddress.IPv6Network, ipaddress.IPv6Network] | None = None,
) -> str:
    """The file's text; ``ipv6``: (IPv6Network, this host's IPv6 subnet) when enabled."""
    text = f"FLANNEL_NETWORK={network}\nFLANNEL_SUBNET={_first(subnet)}\n"
    if ipv6 is not None:
        text += f"FLANNEL_IPV6_NETWORK={ipv6[0]}\nFLANNEL_IPV6_SUBNET={_first(ipv6[1])}\n"
    return text + f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ={'true' if ip_masq else 'false'}\n"


def _first(subnet: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return f"{subnet.network_address + 1}/{subnet.prefixlen}"


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


def previous_subnets(
    text: str,
) -> tuple[ipaddress.IPv4Network | None, ipaddress.IPv6Network | None]:
    """The subnets a subnet.env records (what a restarted host asks for again)."""
    try:
        env = parse_env(text)
    except ConfigError:
        return None, None
    v4 = v6 = None
    with contextlib.suppress(ValueError):
        v4 = ipaddress.IPv4Interface(env.get("FLANNEL_SUBNET", "")).network
    with contextlib.suppress(ValueError):
        v6 = ipaddress.IPv6Interface(env.get("FLANNEL_IPV6_SUBNET", "")).network
    return v4, v6
