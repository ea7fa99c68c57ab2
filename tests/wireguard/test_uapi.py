"""The UAPI text protocol and the config file format."""

from __future__ import annotations

import base64
import contextlib
import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vnet.errors import ConfigError
from vnet.wireguard import crypto
from vnet.wireguard.config import parse_config
from vnet.wireguard.device import Device
from vnet.wireguard.peer import Endpoint
from vnet.wireguard.uapi import UapiError, apply_set, format_get, parse_endpoint, parse_set

PRIV = crypto.generate_private_key(bytes(range(32)))
PEER = crypto.public_key(crypto.generate_private_key(bytes(range(1, 33))))
PEER2 = crypto.public_key(crypto.generate_private_key(bytes(range(2, 34))))


def configured() -> Device:
    dev = Device()
    apply_set(dev, parse_set([
        f"private_key={PRIV.hex()}", "listen_port=51820",
        f"public_key={PEER.hex()}", "endpoint=198.18.0.2:51820",
        "allowed_ip=198.19.0.2/32", "allowed_ip=fd00:19::/64",
        "persistent_keepalive_interval=0",
    ]), 0.0)
    return dev


def test_get_lists_device_and_peers() -> None:
    text = format_get(configured())
    lines = text.splitlines()
    assert lines[0] == f"private_key={PRIV.hex()}"
    assert "listen_port=51820" in lines and f"public_key={PEER.hex()}" in lines
    assert "endpoint=198.18.0.2:51820" in lines
    assert lines[-2:] == ["allowed_ip=198.19.0.2/32", "allowed_ip=fd00:19::/64"]
    assert "last_handshake_time_sec=0" in lines and "protocol_version=1" in lines


def test_set_semantics() -> None:
    dev = configured()
    apply_set(dev, parse_set([f"public_key={PEER.hex()}", "replace_allowed_ips=true",
                              "allowed_ip=198.19.5.0/24", "endpoint=[fd00:18::2]:1"]), 0.0)
    peer = dev.peers[PEER]
    assert [str(p) for p in dev.allowed_ips.prefixes(peer)] == ["198.19.5.0/24"]
    assert peer.endpoint == Endpoint("fd00:18::2", 1)
    apply_set(dev, parse_set([f"public_key={PEER2.hex()}", "update_only=true"]), 0.0)
    assert PEER2 not in dev.peers
    apply_set(dev, parse_set([f"public_key={PEER.hex()}", "remove=true"]), 0.0)
    assert not dev.peers and list(dev.allowed_ips) == []
    apply_set(dev, parse_set(["private_key="]), 0.0)
    assert dev.identity is None and "private_key" not in format_get(dev)


def test_bad_request_changes_nothing() -> None:
    dev = configured()
    before = format_get(dev)
    for bad, code in [
        ([f"public_key={PEER.hex()}", "allowed_ip=198.19.9.0/24", "endpoint=nonsense"],
         errno.EINVAL),
        (["listen_port=70000"], errno.EINVAL),
        (["private_key=abc"], errno.EINVAL),
        (["bogus=1"], errno.EINVAL),
        ([f"public_key={PEER.hex()}", "remove=yes"], errno.EINVAL),
        ([f"public_key={PEER.hex()}", "protocol_version=2"], errno.EINVAL),
        (["no equals sign"], errno.EINVAL),
    ]:
        with pytest.raises(UapiError) as info:
            parse_set(bad)
        assert info.value.errno == code
    assert format_get(dev) == before


def test_endpoints() -> None:
    assert parse_endpoint("198.18.0.1:51820") == Endpoint("198.18.0.1", 51820)
    assert parse_endpoint("[fd00::1]:9") == Endpoint("fd00::1", 9)
    assert parse_endpoint("[::ffff:198.18.0.1]:9") == Endpoint("198.18.0.1", 9)
    for bad in ("198.18.0.1", "host.example:1", "198.18.0.1:0", "[fd00::1]:x", ":5"):
        with pytest.raises(UapiError):
            parse_endpoint(bad)


@given(st.lists(st.text(max_size=80), max_size=8))
def test_parse_set_fuzz(lines: list[str]) -> None:
    with contextlib.suppress(UapiError):
        parse_set(lines)


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


CONFIG = f"""
# a comment
[Interface]
PrivateKey = {b64(PRIV)}
ListenPort = 51821
Address = 198.19.0.1/24, fd00:19::1/64
MTU = 1400

[Peer]
PublicKey = {b64(PEER)}
AllowedIPs = 198.19.0.2/32, fd00:19::2/128
Endpoint = 198.18.0.2:51820
PersistentKeepalive = 25
"""


def test_config_file() -> None:
    cfg = parse_config(CONFIG, "site.conf")
    assert cfg.addresses == ["198.19.0.1/24", "fd00:19::1/64"] and cfg.mtu == 1400
    req = cfg.request
    assert req.private_key == PRIV and req.listen_port == 51821 and req.replace_peers
    assert req.peers[0].public_key == PEER and req.peers[0].persistent_keepalive == 25
    dev = Device()
    apply_set(dev, req, 0.0)
    assert len(dev.allowed_ips.prefixes(dev.peers[PEER])) == 2


@pytest.mark.parametrize(("text", "needle"), [
    ("[Interface]\nPrivateKey = no!pe\n", "site.conf:2: key is not valid base64"),
    ("[Interface]\nPrivateKey = nope\n", "site.conf:2: key must be 32 bytes"),
    ("[Interface]\nListenPort = 99999\n", "site.conf:2: ListenPort 99999 is out of range"),
    ("[Interface]\nDNS = 198.18.0.53\n", "site.conf:2: dns is a wg-quick setting"),
    ("[Peer]\nAllowedIPs = 198.19.0.0/33\n", "site.conf:2: invalid allowed_ip"),
    ("[Peer]\nEndpoint = 198.18.0.2\n", "site.conf:2: endpoint"),
    ("[Interface]\n[Peer]\nEndpoint = 198.18.0.2:1\n", "site.conf:2: [Peer] has no PublicKey"),
    ("ListenPort = 1\n", "site.conf:1: listenport outside of an [Interface]"),
    ("[Nope]\n", "site.conf:1: unknown section"),
    ("[Interface]\nColour = blue\n", "site.conf:2: unknown [Interface] key"),
])
def test_config_errors_name_file_and_line(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.conf")
    assert needle in str(info.value)
    assert b64(PRIV) not in str(info.value)


@given(st.text(max_size=300))
def test_config_fuzz(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text)
