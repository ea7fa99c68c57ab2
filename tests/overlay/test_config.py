"""flannel's network config: defaults, flannel's checks, one-line errors naming the key."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vnet.errors import ConfigError
from vnet.overlay.config import parse_config


def test_defaults_follow_flannel() -> None:
    config = parse_config('{"Network": "198.18.0.0/16"}')
    assert config.subnet_len == 24
    assert str(config.subnet_min) == "198.18.1.0"  # the first subnet is skipped
    assert str(config.subnet_max) == "198.18.255.0"
    assert config.backend.type == "udp" and config.backend.port == 8285
    assert len(config.subnets()) == 255
    small = parse_config('{"Network": "198.18.0.0/26"}')
    assert small.subnet_len == 28  # smaller than a /22: four subnets
    vxlan = parse_config('{"Network": "198.18.0.0/16", "Backend": {"Type": "vxlan"}}')
    assert (vxlan.backend.vni, vxlan.backend.port) == (1, 8472)
    wg = parse_config('{"Network":"198.18.0.0/16","Backend":{"Type":"wireguard",'
                      '"PersistentKeepaliveInterval":25}}')
    assert (wg.backend.port, wg.backend.keepalive) == (51820, 25)


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
    "Backend": st.fixed_dictionaries({}, optional={
        "Type": st.sampled_from(["udp", "vxlan", "wireguard", "host-gw", "x"]),
        "Port": json_values, "VNI": json_values, "ListenPort": json_values}) | json_values,
}))
def test_any_document_parses_or_raises_config_error(doc: dict[str, object]) -> None:
    try:
        config = parse_config(json.dumps(doc))
    except ConfigError:
        return
    assert config.subnet_min in config.network and config.subnet_max in config.network
    first = config.subnet_at(config.subnets()[0])
    assert first.subnet_of(config.network)
    assert isinstance(first, ipaddress.IPv4Network)
