"""Configuration files in the wg(8) format, plus wg-quick's Address and MTU.

Errors name the file and line. The result is a ``SetRequest`` (replacing all
peers, as ``wg setconf`` does) so a file goes through the same validated path
as the UAPI.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass, field

from vnet.errors import ConfigError
from vnet.wireguard.uapi import PeerChange, SetRequest, UapiError, parse_endpoint, parse_prefix

WG_QUICK_ONLY = {"dns", "table", "preup", "postup", "predown", "postdown", "saveconfig"}


@dataclass
class FileConfig:
    request: SetRequest
    addresses: list[str] = field(default_factory=list)
    mtu: int | None = None


def parse_base64_key(value: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("key is not valid base64") from None
    if len(raw) != 32 or len(value) != 44:
        raise ConfigError("key must be 32 bytes (44 base64 characters)")
    return raw


def parse_config(text: str, path: str = "<config>") -> FileConfig:
    req = SetRequest(replace_peers=True)
    cfg = FileConfig(req)
    section: str | None = None
    peer: PeerChange | None = None
    peer_line = 0
    for number, raw_line in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}"
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            if peer is not None and peer.public_key == b"":
                raise ConfigError(f"{path}:{peer_line}: [Peer] has no PublicKey")
            section = line[1:-1].strip().lower()
            if section == "peer":
                peer = PeerChange(b"", replace_allowed_ips=True)
                peer_line = number
                req.peers.append(peer)
            elif section != "interface":
                raise ConfigError(f"{where}: unknown section {line}")
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep:
            raise ConfigError(f"{where}: expected Key = Value")
        if section is None:
            raise ConfigError(f"{where}: {key} outside of an [Interface] or [Peer] section")
        try:
            if section == "interface":
                _interface_key(cfg, key, value)
            else:
                assert peer is not None
                _peer_key(peer, key, value)
        except (ConfigError, UapiError) as e:
            raise ConfigError(f"{where}: {e}") from None
    if peer is not None and peer.public_key == b"":
        raise ConfigError(f"{path}:{peer_line}: [Peer] has no PublicKey")
    return cfg


def _interface_key(cfg: FileConfig, key: str, value: str) -> None:
    req = cfg.request
    if key == "privatekey":
        req.private_key = parse_base64_key(value)
    elif key == "listenport":
        req.listen_port = _int(value, "ListenPort", 0, 65535)
    elif key == "fwmark":
        req.fwmark = 0 if value == "off" else _int(value, "FwMark", 0, 0xFFFFFFFF)
    elif key == "address":
        for item in value.split(","):
            try:
                ipaddress.ip_interface(item.strip())
            except ValueError:
                raise ConfigError(f"invalid Address {item.strip()!r}") from None
            cfg.addresses.append(item.strip())
    elif key == "mtu":
        cfg.mtu = _int(value, "MTU", 576, 65535)
    elif key in WG_QUICK_ONLY:
        raise ConfigError(f"{key} is a wg-quick setting: use 'wg-quick up' for it")
    else:
        raise ConfigError(f"unknown [Interface] key {key!r}")


def _peer_key(peer: PeerChange, key: str, value: str) -> None:
    if key == "publickey":
        peer.public_key = parse_base64_key(value)
    elif key == "presharedkey":
        peer.preshared_key = parse_base64_key(value)
    elif key == "allowedips":
        peer.allowed_ips.extend(parse_prefix(v.strip()) for v in value.split(",") if v.strip())
    elif key == "endpoint":
        peer.endpoint = parse_endpoint(value)
    elif key == "persistentkeepalive":
        peer.persistent_keepalive = (
            0 if value == "off" else _int(value, "PersistentKeepalive", 0, 65535)
        )
    else:
        raise ConfigError(f"unknown [Peer] key {key!r}")


def _int(value: str, what: str, low: int, high: int) -> int:
    try:
        number = int(value, 0)
    except ValueError:
        raise ConfigError(f"{what} {value!r} is not a number") from None
    if not low <= number <= high:
        raise ConfigError(f"{what} {number} is out of range {low}..{high}")
    return number
