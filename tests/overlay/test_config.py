"""flannel's network config: defaults, flannel's checks, one-line errors naming the key."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnet.errors import ConfigError
from vnet.overlay.config import NetT, Pool, parse_config


def test_defaults_follow_flannel() -> None:
    config = parse_config('{"Network": "198.18.0.0/16"}')
    assert config.pool.subnet_len == 24
    assert str(config.pool.subnet_min) == "198.18.1.0"  # the first subnet is skipped
    assert str(config.pool.subnet_max) == "198.18.255.0"
    assert config.backend.type == "udp" and config.backend.port == 8285
    assert config.pool.size == 255 and config.ipv6 is None
    small = parse_config('{"Network": "198.18.0.0/26"}')
    assert small.pool.subnet_len == 28  # smaller than a /22: four subnets
    vxlan = parse_config('{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan"}}')
    assert (vxlan.backend.vni, vxlan.backend.port) == (1, 8472)
    wg = parse_config('{"Network":"198.18.0.0/16","Backend":{"Type":"wireguard",'
                      '"PersistentKeepaliveInterval":25}}')
    assert (wg.backend.port, wg.backend.keepalive) == (51820, 25)
    assert (wg.backend.port_v6, wg.backend.mode) == (51821, "separate")


def test_ipv6_pool_follows_flannel() -> None:
    config = parse_config('{"Network":"198.18.0.0/16","EnableIPv6":true,'
                          '"IPv6Network":"fd00:1::/48","Backend":{"Type":"vxlan"}}')
    assert config.ipv6 is not None
    assert config.ipv6.subnet_len == 64  # a /62 or wider: /64 subnets
    assert str(config.ipv6.subnet_min) == "fd00:1:0:1::"
    assert str(config.ipv6.subnet_max) == "fd00:1:0:ffff::"
    assert config.ipv6.size == 65535
    narrow = parse_config('{"Network":"198.18.0.0/16","EnableIPv6":true,'
                          '"IPv6Network":"fd00::/120","Backend":{"Type":"host-gw"}}')
    assert narrow.ipv6 is not None and narrow.ipv6.subnet_len == 122
    huge = parse_config('{"Network":"198.18.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/8",'
                        '"IPv6SubnetMin":"fd00:0:0:2::","Backend":{"Type":"host-gw"}}')
    assert huge.ipv6 is not None and huge.ipv6.size == (1 << 56) - 2  # counted, not listed
    assert huge.ipv6.at(huge.ipv6.size - 1) == ipaddress.IPv6Network("fdff:ffff:ffff:ffff::/64")
    assert huge.ipv6.index(ipaddress.IPv6Network("fd00:0:0:1::/64")) is None  # below min

@pytest.mark.parametrize(("doc", "message"), [
    ("not json", "config: not valid JSON"),
    ("[]", "config: expected a JSON object"),
    ("{}", "Network: missing"),
    ('{"Network": "fd00::/64"}', "Network: \"fd00::/64\" is not an IPv4 network"),
    ('{"Network": "198.18.0.0/30"}', "Network: 198.18.0.0/30 is too small"),
    ('{"Network": "198.18.0.0/16", "SubnetLen": 17}', "SubnetLen: /17 leaves"),
    ('{"Network": "198.18.0.0/16", "SubnetLen": 31}', "SubnetLen: 31 is out of range"),
    ('{"Network": "198.18.0.0/16", "SubnetLen": "24"}', "SubnetLen: expected an integer"),
    ('{"Network": "198.18.0.0/16", "SubnetMin": "198.19.0.0"}', "SubnetMin: 198.19.0.0 is not in"),
    ('{"Network": "198.18.0.0/16", "SubnetMax": "198.18.3.7"}', "SubnetMax: 198.18.3.7 is not on"),
    ('{"Network": "198.18.0.0/16", "SubnetMin": "198.18.9.0", "SubnetMax": "198.18.2.0"}',
     "SubnetMin: 198.18.9.0 is above"),
    ('{"Network": "198.18.0.0/16", "Backend": {"Type": "gre"}}', "Backend.Type: \"gre\""),
    ('{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan", "VNI": -1}}',
     "Backend.VNI: -1 is out of range"),
    ('{"Network": "198.18.0.0/16", "Backend": "vxlan"}', "Backend: expected an object"),
    ('{"Network": "198.18.0.0/16", "SubnetMin": true}', "SubnetMin: true is not an IPv4"),
    ('{"Network": 3232235520}', "Network: 3232235520 is not an IPv4 network"),
    ('{"Network": "198.18.0.0/16", "EnableIPv6": true}', "IPv6Network: null is not an IPv6"),
    ('{"Network": "198.18.0.0/16", "EnableIPv6": 1}', "EnableIPv6: expected true or false"),
    ('{"Network": "198.18.0.0/16", "EnableIPv6": true, "IPv6Network": "198.19.0.0/16"}',
     "IPv6Network: \"198.19.0.0/16\" is not an IPv6"),
    ('{"Network": "198.18.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/126"}',
     "IPv6Network: fd00::/126 is too small"),
    ('{"Network": "198.18.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48",'
     ' "IPv6SubnetLen": 49}', "IPv6SubnetLen: /49 leaves IPv6Network fd00::/48"),
    ('{"Network": "198.18.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48",'
     ' "IPv6SubnetMin": "fd01::"}', "IPv6SubnetMin: fd01:: is not in IPv6Network"),
    ('{"Network": "198.18.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48",'
     ' "IPv6SubnetMax": "fd00::1"}', "IPv6SubnetMax: fd00::1 is not on a /64 boundary"),
    ('{"Network": "198.18.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48",'
     ' "IPv6SubnetMax": "198.18.0.0"}', "IPv6SubnetMax: \"198.18.0.0\" is not an IPv6"),
    ('{"Network": "198.18.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48"}',
     "EnableIPv6: the udp backend carries IPv4 only"),
    ('{"Network": "198.18.0.0/16", "Backend": {"Type": "wireguard", "Mode": "both"}}',
     "Backend.Mode: \"both\" is not one of"),
    ('{"Network": "198.18.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48",'
     ' "Backend": {"Type": "wireguard", "ListenPortV6": 51820}}',
     "Backend.ListenPortV6: 51820 is ListenPort's too"),
])
def test_bad_configs_name_the_key(doc: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(doc)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=3),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({}, optional={
    "Network": st.sampled_from(["198.18.0.0/16", "198.18.0.0/28", "x", 5]) | json_values,
    "SubnetLen": st.integers(0, 40) | json_values,
    "SubnetMin": st.sampled_from(["198.18.4.0", "198.18.4.1"]) | json_values,
    "SubnetMax": st.sampled_from(["198.18.200.0", "10.0.0.0"]) | json_values,
    "EnableIPv6": st.booleans() | json_values,
    "IPv6Network": st.sampled_from(["fd00::/48", "fd00::/125", "fd00::/8", "x"]) | json_values,
    "IPv6SubnetLen": st.integers(0, 130) | json_values,
    "IPv6SubnetMin": st.sampled_from(["fd00:0:0:4::", "fd00::4:1"]) | json_values,
    "Backend": st.fixed_dictionaries({}, optional={
        "Type": st.sampled_from(["udp", "vxlan", "wireguard", "host-gw", "x"]),
        "Port": json_values, "VNI": json_values, "ListenPort": json_values,
        "ListenPortV6": json_values, "Mode": st.sampled_from(["auto", "x"]) | json_values,
    }) | json_values,
}))
def test_any_document_parses_or_raises_config_error(doc: dict[str, object]) -> None:
    try:
        config = parse_config(json.dumps(doc))
    except ConfigError:
        return
    check_pool(config.pool)
    if config.ipv6 is not None:
        check_pool(config.ipv6)
    assert isinstance(config.pool.at(0), ipaddress.IPv4Network)


def check_pool(pool: Pool[NetT]) -> None:
    assert pool.subnet_min in pool.network and pool.subnet_max in pool.network
    first, last = pool.at(0), pool.at(pool.size - 1)
    assert first.subnet_of(pool.network) and last.subnet_of(pool.network)
    assert pool.index(first) == 0 and pool.index(last) == pool.size - 1
