"""Lab files: validation names the file, line and field; nothing but ConfigError escapes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT
from vnet.errors import ConfigError
from vnet.lab import graph
from vnet.lab.addressing import assign
from vnet.lab.load import load

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
DOCKER = (ROOT / "examples" / "docker-bridge.yaml").read_text()


def error(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(text, "lab.yaml")
    return str(e.value)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_load_and_draw(path: Path) -> None:
    lab = load(path.read_text(), str(path))
    dot = graph.dot(lab)
    assert dot.startswith("digraph") and dot.count("subgraph cluster_") == len(lab.hosts)
    assert lab.checks, "every example says what must work"


def test_pool_addresses_docker_style() -> None:
    lab = load(DOCKER, "docker.yaml")
    assigned = assign(lab)
    assert assigned[id(lab.bridges[0])] == ["198.18.10.1/24"]  # the gateway
    assert assigned[id(lab.links[0].a)] == ["198.18.10.2/24"]
    assert assigned[id(lab.links[1].a)] == ["198.18.10.3/24"]


def test_exhausted_pool() -> None:
    text = DOCKER.replace("pool: 198.18.10.0/24", "pool: 198.18.10.0/30")
    assert error(text) == "lab.yaml:21: links.1.a.pool: pool of bridge 'docker0' is exhausted"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("c1:\n", "c1:\n    colour: red\n"), "lab.yaml:12: hosts.c1.colour: Extra inputs"),
        (("198.18.20.2/24", "198.18.20.2"), "lab.yaml:24: links.2.b.addresses.0: address"),
        (("{host: c2, name: eth0", "{host: c9, name: eth0"),
         "lab.yaml:21: links.1.a.host: no host"),
        (("name: veth-c2", "name: veth-c1"), "lab.yaml:22: links.1.b.name: 'veth-c1' is already"),
        (("bridge: docker0}\n  - a: {host: c2", "bridge: br9}\n  - a: {host: c2"),
         "lab.yaml:20: links.0.b.bridge: no bridge 'br9' on host"),
        (("name: veth-c1", "name: this-name-is-too-long"), "lab.yaml:20: links.0.b.name:"),
        (("ping: 198.18.10.3}", "ping: nowhere}"), "lab.yaml:26: checks.0.ping:"),
        (("name: docker\n", "name: Docker!\n"), "lab.yaml:4: name: String should match"),
        (("hosts:\n", "hosts:\n  [oops\n"), "lab.yaml:8: expected ','"),
    ],
)
def test_errors_name_file_line_and_field(change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in DOCKER
    message = error(DOCKER.replace(old, new, 1))
    assert message.startswith(expected), message
    assert "\n" not in message


def test_top_level_must_be_a_mapping() -> None:
    assert error("- a\n- b\n") == "lab.yaml:1: a lab file is a mapping (name, hosts, links, ...)"
    assert error("name: x\nhosts: {}\n").startswith("lab.yaml:2: hosts: a lab needs")


@pytest.mark.parametrize("text", ['name: "\\UFFFFFFFF"\n', 'name: "\\U00110000"\n'])
def test_escapes_out_of_range_are_a_config_error(text: str) -> None:
    # found by fuzz/configs.py: PyYAML's scanner raises ValueError/OverflowError here
    assert error(text) == "lab.yaml: not valid YAML (an escape out of range)"


def test_gre_segments_take_a_key_not_a_vni() -> None:
    gre = (ROOT / "examples" / "neutron-gre-vnet.yaml").read_text()
    assert "a gre segment takes a key (and no vni)" in error(
        gre.replace("{type: gre, key: 100,", "{type: gre, vni: 100,", 1))


def test_process_and_check_references() -> None:
    vpn = (ROOT / "examples" / "openvpn-style.yaml").read_text()
    assert "processes.0.peers.0.process: no other vnet-wg 'wg-c'" in error(
        vpn.replace("{process: wg-b", "{process: wg-c"))
    kvm = (ROOT / "examples" / "kvm-bridge.yaml").read_text()
    assert "checks.2.process: no process 'vm9'" in error(
        kvm.replace("{process: vm1,", "{process: vm9,"))
    assert "a check is either from + ping or process + output" in error(
        kvm.replace("{from: host, ping: 198.18.30.11}", "{from: host}"))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_lab_or_a_config_error(text: str) -> None:
    try:
        load(text, "fuzz.yaml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(DOCKER) - 1), st.integers(1, 20), st.text(max_size=8))
def test_mangled_example_is_a_lab_or_a_config_error(at: int, cut: int, insert: str) -> None:
    text = DOCKER[:at] + insert + DOCKER[at + cut:]
    try:
        lab = load(text, "fuzz.yaml")
        assign(lab)
        graph.dot(lab)
    except ConfigError as e:
        assert str(e).startswith("fuzz.yaml")
