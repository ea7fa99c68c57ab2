"""Which addresses the overlay agent publishes (flanneld's rules), on a stand-in for
rtnetlink: no root needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import pytest

from vnet.errors import ConfigError
from vnet.kernel.netlink import Address, Netlink
from vnet.runtime.overlay import find_public, find_public6


@dataclass
class _Link:
    mtu: int


class _Netlink:
    def addresses(self) -> list[Address]:
        return [Address("eth0", "198.18.0.7/24"), Address("eth0", "fe80::1/64"),
                Address("eth0", "fd00::7/64"), Address("eth1", "198.18.1.7/24"),
                Address("eth1", "fd00:1::7/64")]

    def link(self, name: str) -> _Link:
        return _Link(1500 if name == "eth0" else 9000)

    def routes(self, family: int) -> list[Any]:
        return []


NL = cast(Netlink, _Netlink())


def test_public_addresses_follow_flanneld() -> None:
    assert find_public(NL, None, "eth1") == ("198.18.1.7", "eth1", 9000)
    assert find_public(NL, "198.18.0.7", None) == ("198.18.0.7", "eth0", 1500)
    assert find_public6(NL, None, "eth0") == "fd00::7"  # global, not the link-local one
    assert find_public6(NL, "fd00:1::7", "eth0") == "fd00:1::7"


@pytest.mark.parametrize(("call", "message"), [
    (lambda: find_public(NL, "fd00::7", None), "--public-ip 'fd00::7' is not an IPv4 address"),
    (lambda: find_public(NL, "198.18.9.9", None), "--public-ip 198.18.9.9: no interface"),
    (lambda: find_public(NL, None, None), "no default route: give --iface or --public-ip"),
    (lambda: find_public6(NL, "198.18.0.7", "eth0"), "is not an IPv6 address"),
    (lambda: find_public6(NL, "fd00::9", "eth0"), "--public-ipv6 fd00::9: no interface"),
    (lambda: find_public6(NL, None, "eth9"), "EnableIPv6: eth9 has no global IPv6 address"),
])
def test_bad_public_addresses_are_named(call: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        call()
