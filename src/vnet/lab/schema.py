"""`vnet lab` topology files, the schema: what each part of a lab may hold (pydantic).

A lab is a set of hosts (network namespaces named ``LAB-HOST``) joined by veth
links, bridges, TAPs and vxlan devices, with addresses, routes, NAT, the
processes vnet runs in them (vnet-wg, vnet switch, a QEMU guest, any command)
and the checks that say what must and must not reach what.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from vnet.errors import ConfigError
from vnet.names import validate_ifname
from vnet.switch.config import check_segment_id

NAME = r"^[a-z][a-z0-9-]{0,11}$"  # LAB-HOST must fit a namespace name with room to spare


def _ifname(value: str) -> str:
    if not value:
        raise ValueError("an interface needs a name")
    try:
        validate_ifname(value)
    except ConfigError as e:
        raise ValueError(str(e)) from None
    return value


def _cidr(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"address {value!r} needs a prefix length (like /24)")
    ipaddress.ip_interface(value)
    return value


def _ip(value: str) -> str:
    ipaddress.ip_address(value)
    return value


IfName = Annotated[str, AfterValidator(_ifname)]
Cidr = Annotated[str, AfterValidator(_cidr)]
Ip = Annotated[str, AfterValidator(_ip)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Route(Strict):
    to: str  # "default" or a CIDR
    via: Ip | None = None
    dev: IfName | None = None

    @field_validator("to")
    @classmethod
    def _to(cls, value: str) -> str:
        if value != "default":
            ipaddress.ip_network(value, strict=False)
        return value

    @model_validator(mode="after")
    def _target(self) -> Route:
        if self.via is None and self.dev is None:
            raise ValueError("a route needs via or dev")
        return self


class Masquerade(Strict):
    source: str  # CIDR whose traffic is rewritten
    out: IfName  # leaving through this interface

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        ipaddress.ip_network(value, strict=False)
        return value


class Host(Strict):
    forwarding: bool = False
    routes: list[Route] = Field(default_factory=list)
    masquerade: list[Masquerade] = Field(default_factory=list)


class Device(Strict):
    """Where an interface lives and what it gets: addresses, a bridge, an MTU."""

    host: str
    name: IfName
    addresses: list[Cidr] = Field(default_factory=list)
    pool: str | None = None  # take the next free address from this bridge's pool
    bridge: str | None = None  # enslave to this bridge (on the same host)
    mtu: int | None = Field(None, ge=68, le=65535)



class Bridge(Strict):
    host: str
    name: IfName
    addresses: list[Cidr] = Field(default_factory=list)
    pool: str | None = None  # CIDR; the bridge takes the first address (the gateway)


    @field_validator("pool")
    @classmethod
    def _pool(cls, value: str | None) -> str | None:
        if value is not None:
            net = ipaddress.ip_network(value, strict=True)
            if net.num_addresses < 4:
                raise ValueError(f"pool {value} is too small")
        return value


class Link(Strict):
    """A veth pair: ``a`` and ``b`` may be on different hosts."""

    a: Device
    b: Device


class Vxlan(Device):
    vni: int = Field(ge=0, le=(1 << 24) - 1)
    local: Ip
    remote: Ip
    dev: IfName | None = None  # underlay interface
    port: int = Field(4789, ge=1, le=65535)


class WgPeer(Strict):
    process: str  # the other vnet-wg process of this lab (its public key is used)
    endpoint: str | None = None  # HOST:PORT
    allowed_ips: list[str] = Field(min_length=1)

    @field_validator("allowed_ips")
    @classmethod
    def _allowed(cls, values: list[str]) -> list[str]:
        for value in values:
            ipaddress.ip_network(value, strict=False)
        return values


class VnetWg(Strict):
    kind: Literal["vnet-wg"]
    name: str = Field(pattern=NAME)
    host: str
    interface: IfName
    listen_port: int = Field(51820, ge=1, le=65535)
    addresses: list[Cidr] = Field(default_factory=list)
    mtu: int = Field(1420, ge=1280, le=65535)
    peers: list[WgPeer] = Field(default_factory=list)



class SwitchPort(Strict):
    name: IfName
    vlan: int = Field(1, ge=1, le=4094)
    netns: str | None = None  # a host of this lab: the TAP is moved there
    addresses: list[Cidr] = Field(default_factory=list)  # given to the TAP there



class SwitchSegment(Strict):
    """A VLAN over VXLAN (``vni``) or, with ``type: gre``, over gretap (``key``)."""

    type: Literal["vxlan", "gre"] = "vxlan"
    vni: int | None = Field(None, ge=0, le=(1 << 24) - 1)
    key: int | None = Field(None, ge=0, le=(1 << 32) - 1)
    vlan: int = Field(ge=1, le=4094)
    remotes: list[Ip] = Field(default_factory=list)

    @model_validator(mode="after")
    def _ident(self) -> SwitchSegment:
        check_segment_id(self.type, self.vni, self.key)
        return self

    @property
    def label(self) -> str:
        return f"VNI {self.vni}" if self.type == "vxlan" else f"GRE key {self.key}"


class VnetSwitch(Strict):
    kind: Literal["vnet-switch"]
    name: str = Field(pattern=NAME)
    host: str
    local: Ip | None = None
    vxlan_port: int = Field(4789, ge=1, le=65535)
    ports: list[SwitchPort] = Field(default_factory=list)
    segments: list[SwitchSegment] = Field(default_factory=list)


class Qemu(Strict):
    """A QEMU guest (scripts/build_vm.py image) on a TAP that vnet opens: it takes
    ``address`` and pings ``target`` at boot, then stays up."""

    kind: Literal["qemu"]
    name: str = Field(pattern=NAME)
    host: str
    tap: IfName
    bridge: str | None = None
    address: Cidr
    target: Ip
    memory: int = Field(192, ge=96, le=4096)



class Etcd(Strict):
    """An etcd member (Debian's etcd) on ``address`` of its host, its data in the lab's
    state directory. ``cluster``: the other etcd processes it forms a cluster with.
    ``flannel``: a flannel network config stored at /coreos.com/network/config once the
    cluster answers."""

    kind: Literal["etcd"]
    name: str = Field(pattern=NAME)
    host: str
    address: Ip
    cluster: list[str] = Field(default_factory=list)
    flannel: dict[str, Any] | None = None


class VnetOverlay(Strict):
    """`vnet overlay run` on a host: joins the flannel network kept in the ``etcd``
    processes, through ``iface``. ``subnet``: reserve this subnet for the host (flannel's
    reservations) so that the lab's addresses are known in advance. ``bridge``: a bridge
    of the host that the lab configures from the subnet.env the agent writes (address,
    MTU), as Docker's daemon would."""

    kind: Literal["vnet-overlay"]
    name: str = Field(pattern=NAME)
    host: str
    etcd: list[str] = Field(min_length=1)
    iface: IfName
    subnet: str | None = None
    bridge: IfName | None = None

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.IPv4Network(value, strict=True)
        return value


class Command(Strict):
    kind: Literal["command"]
    name: str = Field(pattern=NAME)
    host: str
    argv: list[str] = Field(min_length=1)


Process = Annotated[
    VnetWg | VnetSwitch | Qemu | Etcd | VnetOverlay | Command, Field(discriminator="kind")
]


class Check(Strict):
    """``from`` HOST pings ``ping`` (``expect: reach``, the default, or ``isolated``), or
    the output of lab process ``process`` comes to contain ``output``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: str | None = Field(None, alias="from")
    ping: Ip | None = None
    process: str | None = None
    output: str | None = None
    expect: Literal["reach", "isolated"] = "reach"

    @model_validator(mode="after")
    def _form(self) -> Check:
        pings = self.from_ is not None and self.ping is not None
        outputs = self.process is not None and self.output is not None
        if pings == outputs:
            raise ValueError("a check is either from + ping or process + output")
        return self


class Lab(Strict):
    name: str = Field(pattern=NAME)
    description: str = ""
    hosts: dict[str, Host]
    bridges: list[Bridge] = Field(default_factory=list)
    links: list[Link] = Field(default_factory=list)
    taps: list[Device] = Field(default_factory=list)
    vxlans: list[Vxlan] = Field(default_factory=list)
    processes: list[Process] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: dict[str, Host]) -> dict[str, Host]:
        if not value:
            raise ValueError("a lab needs at least one host")
        for name in value:
            if not re.match(NAME, name):
                raise ValueError(f"host name {name!r} must match {NAME}")
        return value

    def namespace(self, host: str) -> str:
        return f"{self.name}-{host}"

    def devices(self) -> list[tuple[str, Device | Bridge]]:
        """Every interface the lab creates, with the path of its definition."""
        out: list[tuple[str, Device | Bridge]] = []
        out += [(f"bridges.{i}", b) for i, b in enumerate(self.bridges)]
        for i, link in enumerate(self.links):
            out += [(f"links.{i}.a", link.a), (f"links.{i}.b", link.b)]
        out += [(f"taps.{i}", t) for i, t in enumerate(self.taps)]
        out += [(f"vxlans.{i}", v) for i, v in enumerate(self.vxlans)]
        return out
