"""`vnet switch` configuration: a YAML file and/or command-line flags, validated by pydantic."""

from __future__ import annotations

import ipaddress
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vnet.errors import ConfigError
from vnet.names import validate_ifname
from vnet.packet.vxlan import VXLAN_PORT


class PortSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    mode: Literal["access", "trunk"] = "access"
    vlan: int = Field(1, ge=0, le=4094)
    allowed: list[int] | None = None
    netns: str | None = None  # move the TAP there (as a VM or container would hold it)
    create: bool = True  # False: attach to an existing persistent TAP
    kind: Literal["tap", "netdev"] = "tap"  # netdev: an existing interface, via AF_PACKET
    mtu: int | None = Field(None, ge=68, le=65535)  # default: 1450 when VXLAN is in use
    storm_limit: int | None = Field(None, ge=0)  # default: the switch's
    pcap: str | None = None  # a capture file of what the port receives and is sent

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        validate_ifname(value)
        if not value:
            raise ValueError("a port needs a name")
        return value


def check_segment_id(kind: str, vni: int | None, key: int | None) -> None:
    """A vxlan segment names its VNI, a gre segment its key, never both (ValueError,
    which pydantic reports with the field's place): here and in a lab's switches."""
    if kind == "vxlan" and (vni is None or key is not None):
        raise ValueError("a vxlan segment takes a vni (and no key)")
    if kind == "gre" and (key is None or vni is not None):
        raise ValueError("a gre segment takes a key (and no vni)")


class SegmentSpec(BaseModel):
    """A VLAN over VXLAN (``vni``) or, with ``type: gre``, over gretap (``key``)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["vxlan", "gre"] = "vxlan"
    vni: int | None = Field(None, ge=0, le=(1 << 24) - 1)
    key: int | None = Field(None, ge=0, le=(1 << 32) - 1)
    vlan: int = Field(ge=1, le=4094)
    remotes: list[str] = Field(default_factory=list)
    storm_limit: int | None = Field(None, ge=0)  # default: the switch's

    @model_validator(mode="after")
    def _id(self) -> SegmentSpec:
        check_segment_id(self.type, self.vni, self.key)
        return self

    @property
    def ident(self) -> int:
        """The VNI or the GRE key."""
        value = self.vni if self.type == "vxlan" else self.key
        assert value is not None
        return value

    @field_validator("remotes")
    @classmethod
    def _remotes(cls, values: list[str]) -> list[str]:
        for value in values:
            ipaddress.ip_address(value)
        return values

    @model_validator(mode="after")
    def _gre_over_ipv4(self) -> SegmentSpec:
        if self.type == "gre" and any(":" in r for r in self.remotes):
            raise ValueError("GRE remotes are IPv4 addresses")
        return self


class SwitchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    vxlan_port: int = Field(VXLAN_PORT, ge=1, le=65535)
    local: str | None = None  # underlay address to bind (default: any)
    ageing: float = Field(300.0, gt=0)
    fdb_capacity: int = Field(8192, ge=1)
    offload: bool = True  # vnet_hdr + TSO on TAPs, UDP GSO/GRO on the VXLAN socket
    # flooded frames (broadcast, multicast, unknown unicast) a second that one port or
    # segment may cause, unless it sets its own; 0: no limit, as a Linux bridge
    storm_limit: int = Field(0, ge=0)
    ports: list[PortSpec] = Field(default_factory=list)
    segments: list[SegmentSpec] = Field(default_factory=list)

    @property
    def tunnel_types(self) -> frozenset[str]:
        """The kinds of tunnel the segments use ("vxlan", "gre"; empty: no tunnel)."""
        return frozenset(seg.type for seg in self.segments)


def _format(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top)"
    return f"{source}: {where}: {first['msg']}"


def load(text: str | None, source: str, overrides: dict[str, object]) -> SwitchSpec:
    data: dict[str, object] = {}
    if text is not None:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{source}{line}: not valid YAML") from None
        except (ValueError, OverflowError):  # PyYAML's scanner on "\U" escapes out of range
            raise ConfigError(f"{source}: not valid YAML (an escape out of range)") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{source}: expected a mapping at the top level")
        data = dict(loaded or {})
    for key, value in overrides.items():
        if isinstance(value, list):
            existing = data.get(key)
            data[key] = (list(existing) if isinstance(existing, list) else []) + value
        elif value is not None:
            data[key] = value
    try:
        return SwitchSpec.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(e, source)) from None


def parse_port_flag(text: str, mode: str) -> dict[str, object]:
    """``NAME[:VLAN]`` (access) or ``NAME:VLAN,VLAN...`` (trunk, first listed is allowed)."""
    name, _, rest = text.partition(":")
    try:
        if mode == "access":
            return {"name": name, "vlan": int(rest) if rest else 1}
        return {
            "name": name,
            "mode": "trunk",
            "vlan": 0,
            "allowed": [int(v) for v in rest.split(",") if v],
        }
    except ValueError:
        raise ConfigError(f"--{mode} {text!r}: VLANs are numbers") from None


def parse_segment_flag(text: str, kind: str = "vxlan") -> dict[str, object]:
    """``VNI:VLAN[:REMOTE,REMOTE...]`` (``--segment``), or ``KEY:VLAN[:REMOTE,...]`` for a
    GRE segment (``--gre-segment``)."""
    flag, ident = ("--segment", "VNI") if kind == "vxlan" else ("--gre-segment", "KEY")
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise ConfigError(f"{flag} {text!r}: expected {ident}:VLAN[:REMOTE,...]")
    try:
        number, vlan = int(parts[0]), int(parts[1])
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: {ident} and VLAN are numbers") from None
    remotes = [r for r in parts[2].split(",") if r] if len(parts) == 3 else []
    return {"type": kind, "vni" if kind == "vxlan" else "key": number, "vlan": vlan,
            "remotes": remotes}
