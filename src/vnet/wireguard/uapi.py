"""The cross-platform userspace API (wireguard.com/xplatform): the text `wg` speaks.

``parse_set`` validates a whole ``set=1`` request before anything changes, so
a bad line leaves the device as it was (wireguard-go applies line by line;
we do not). ``format_get`` answers ``get=1``. Errors carry the errno `wg`
prints ("errno=22" is EINVAL).
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass, field

from vnet.errors import ConfigError, ProtocolError
from vnet.wireguard.allowedips import Prefix
from vnet.wireguard.allowedips import parse_prefix as _parse_prefix
from vnet.wireguard.device import Device
from vnet.wireguard.peer import Endpoint


class UapiError(ProtocolError):
    def __init__(self, message: str, code: int = errno.EINVAL) -> None:
        super().__init__(message)
        self.errno = code


@dataclass
class PeerChange:
    public_key: bytes
    remove: bool = False
    update_only: bool = False
    preshared_key: bytes | None = None
    endpoint: Endpoint | None = None
    persistent_keepalive: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: list[Prefix] = field(default_factory=list)


@dataclass
class SetRequest:
    private_key: bytes | None = None  # 32 zero bytes remove the key
    listen_port: int | None = None
    fwmark: int | None = None
    replace_peers: bool = False
    peers: list[PeerChange] = field(default_factory=list)


def parse_hex_key(value: str, what: str) -> bytes:
    if len(value) != 64:
        raise UapiError(f"{what} must be 64 hex digits")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise UapiError(f"{what} is not hex") from None


def parse_endpoint(value: str) -> Endpoint:
    """``198.18.0.1:51820`` or ``[fd00::1]:51820`` (literal addresses only)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise UapiError(f"endpoint {value!r} needs HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        addr = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        raise UapiError(f"endpoint {value!r}: {host!r} is not an IP address") from None
    port = _parse_int(port_text, "endpoint port", 1, 65535)
    if addr.version == 6 and isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return Endpoint(str(addr.ipv4_mapped), port)
    return Endpoint(str(addr), port)


def format_endpoint(endpoint: Endpoint) -> str:
    host, port = endpoint.host, endpoint.port
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _parse_int(value: str, what: str, low: int, high: int) -> int:
    try:
        number = int(value, 0) if value.startswith("0x") else int(value)
    except ValueError:
        raise UapiError(f"{what} {value!r} is not a number") from None
    if not low <= number <= high:
        raise UapiError(f"{what} {number} is out of range {low}..{high}")
    return number


def _parse_bool(value: str, key: str) -> bool:
    if value != "true":
        raise UapiError(f"{key} must be 'true'")
    return True


def parse_prefix(value: str) -> Prefix:
    try:
        return _parse_prefix(value)
    except ConfigError:
        raise UapiError(f"invalid allowed_ip {value!r}") from None


def parse_set(lines: list[str]) -> SetRequest:
    """The key=value lines after ``set=1`` (without the blank terminator)."""
    req = SetRequest()
    peer: PeerChange | None = None
    for number, line in enumerate(lines, 1):
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiError(f"line {number}: expected key=value")
        if key == "public_key":
            peer = PeerChange(parse_hex_key(value, "public_key"))
            req.peers.append(peer)
            continue
        if peer is None:
            if key == "private_key":
                req.private_key = parse_hex_key(value, "private_key") if value else bytes(32)
            elif key == "listen_port":
                req.listen_port = _parse_int(value, "listen_port", 0, 65535)
            elif key == "fwmark":
                req.fwmark = _parse_int(value, "fwmark", 0, 0xFFFFFFFF) if value else 0
            elif key == "replace_peers":
                req.replace_peers = _parse_bool(value, key)
            else:
                raise UapiError(f"line {number}: invalid device key {key!r}")
            continue
        if key == "remove":
            peer.remove = _parse_bool(value, key)
        elif key == "update_only":
            peer.update_only = _parse_bool(value, key)
        elif key == "preshared_key":
            peer.preshared_key = parse_hex_key(value, "preshared_key")
        elif key == "endpoint":
            peer.endpoint = parse_endpoint(value)
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive = _parse_int(value, "persistent_keepalive_interval", 0, 65535)
        elif key == "replace_allowed_ips":
            peer.replace_allowed_ips = _parse_bool(value, key)
        elif key == "allowed_ip":
            peer.allowed_ips.append(parse_prefix(value))
        elif key == "protocol_version":
            if value != "1":
                raise UapiError(f"protocol_version {value!r} is not supported")
        else:
            raise UapiError(f"line {number}: invalid peer key {key!r}")
    return req


def apply_set(device: Device, req: SetRequest, now: float) -> None:
    """Apply a validated request (the runtime has already bound any new port)."""
    if req.private_key is not None:
        device.set_private_key(req.private_key)
    if req.listen_port is not None:
        device.listen_port = req.listen_port
    if req.fwmark is not None:
        device.fwmark = req.fwmark
    if req.replace_peers:
        device.remove_all_peers()
    own = device.identity.public if device.identity else None
    for change in req.peers:
        if change.public_key == own:
            continue  # a peer with our own key is ignored, as wireguard-go does
        if change.remove:
            device.remove_peer(change.public_key)
            continue
        if change.update_only and change.public_key not in device.peers:
            continue
        peer = device.add_peer(change.public_key)
        if change.preshared_key is not None:
            peer.preshared_key = change.preshared_key
        if change.endpoint is not None:
            peer.endpoint = change.endpoint
        if change.replace_allowed_ips:
            device.allowed_ips.remove_owner(peer)
        for prefix in change.allowed_ips:
            device.allowed_ips.insert(prefix, peer)
        if change.persistent_keepalive is not None:
            peer.set_persistent_keepalive(change.persistent_keepalive, now)


def format_get(device: Device) -> str:
    lines = []
    if device.identity is not None:
        lines.append(f"private_key={device.identity.private.hex()}")
    if device.listen_port:
        lines.append(f"listen_port={device.listen_port}")
    if device.fwmark:
        lines.append(f"fwmark={device.fwmark}")
    for peer in device.peers.values():
        lines.append(f"public_key={peer.public_key.hex()}")
        lines.append(f"preshared_key={peer.preshared_key.hex()}")
        lines.append("protocol_version=1")
        if peer.endpoint is not None:
            lines.append(f"endpoint={format_endpoint(peer.endpoint)}")
        when = peer.last_handshake_unix
        seconds = int(when) if when else 0
        nanos = int((when - seconds) * 1e9) if when else 0
        lines.append(f"last_handshake_time_sec={seconds}")
        lines.append(f"last_handshake_time_nsec={nanos}")
        lines.append(f"tx_bytes={peer.tx_bytes}")
        lines.append(f"rx_bytes={peer.rx_bytes}")
        lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        lines.extend(f"allowed_ip={prefix}" for prefix in device.allowed_ips.prefixes(peer))
    return "".join(line + "\n" for line in lines)
