"""`vnet switch` configuration: YAML and flags; only ConfigError escapes."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vnet.errors import ConfigError
from vnet.switch.config import load, parse_segment_flag


def test_segments_of_both_kinds() -> None:
    spec = load(
        "name: s\nsegments:\n  - {vni: 5, vlan: 1}\n  - {type: gre, key: 4000000000, vlan: 2}\n",
        "s.yaml", {"segments": [parse_segment_flag("7:3:198.18.0.1", "gre")]},
    )
    assert [(s.type, s.ident, s.vlan) for s in spec.segments] == [
        ("vxlan", 5, 1), ("gre", 4_000_000_000, 2), ("gre", 7, 3)]


@pytest.mark.parametrize(("text", "problem"), [
    ("name: s\nsegments:\n  - {type: gre, vni: 5, vlan: 1}\n", "a gre segment takes a key"),
    ("name: s\nsegments:\n  - {key: 5, vlan: 1}\n", "a vxlan segment takes a vni"),
    ("name: s\nsegments:\n  - {type: gre, key: 5, vlan: 1, remotes: ['fd00::1']}\n",
     "GRE remotes are IPv4"),
    ("name: s\nports:\n  - {name: t, storm_limit: -1}\n", "ports.0.storm_limit"),
    ('name: "\\UFFFFFFFF"\n', "not valid YAML (an escape out of range)"),  # found by fuzzing
    ('name: "\\U00110000"\n', "not valid YAML (an escape out of range)"),
])
def test_bad_input_is_one_config_error(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load(text, "s.yaml", {})
    with pytest.raises(ConfigError, match="KEY and VLAN are numbers"):
        parse_segment_flag("x:1", "gre")


@given(st.text(max_size=200))
def test_anything_is_a_spec_or_a_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        load(text, "s.yaml", {})
