"""`vnet lab` topology files: YAML validated by pydantic, errors with file, line and field.

A lab is a set of hosts (network namespaces named ``LAB-HOST``) joined by veth
links, bridges, TAPs and vxlan devices, with addresses, routes, NAT, the
processes vnet runs in them (vnet-wg, vnet switch, a QEMU guest, any command)
and the checks that say what must and must not reach what.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from vnet.errors import ConfigError
from vnet.names import validate_ifname

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
    vni: int = Field(ge=0, le=(1 << 24) - 1)
    vlan: int = Field(ge=1, le=4094)
    remotes: list[Ip] = Field(default_factory=list)


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



class Command(Strict):
    kind: Literal["command"]
    name: str = Field(pattern=NAME)
    host: str
    argv: list[str] = Field(min_length=1)


Process = Annotated[VnetWg | VnetSwitch | Qemu | Command, Field(discriminator="kind")]


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


def _cross_check(lab: Lab) -> list[tuple[str, str]]:
    """References that pydantic cannot see: (path, message) for each problem."""
    problems: list[tuple[str, str]] = []
    hosts = set(lab.hosts)
    seen: dict[tuple[str, str], str] = {}
    bridges = {(b.host, b.name): b for b in lab.bridges}

    def host_ok(path: str, host: str) -> None:
        if host not in hosts:
            problems.append((f"{path}.host", f"no host {host!r} in hosts"))

    for path, dev in lab.devices():
        host_ok(path, dev.host)
        key = (dev.host, dev.name)
        if key in seen:
            problems.append((f"{path}.name", f"{dev.name!r} is already defined at {seen[key]}"))
        seen[key] = path
        if isinstance(dev, Device):
            if dev.bridge is not None and (dev.host, dev.bridge) not in bridges:
                problems.append((f"{path}.bridge", f"no bridge {dev.bridge!r} on {dev.host}"))
            if dev.pool is not None:
                owner = [b for b in lab.bridges if b.name == dev.pool and b.pool]
                if not owner:
                    problems.append((f"{path}.pool", f"no bridge {dev.pool!r} with a pool"))
    for name, host in lab.hosts.items():
        for i, route in enumerate(host.routes):
            if route.dev is not None and (name, route.dev) not in seen and not any(
                isinstance(p, VnetWg) and p.host == name and p.interface == route.dev
                for p in lab.processes
            ):
                problems.append((f"hosts.{name}.routes.{i}.dev", f"no device {route.dev!r}"))
    names: dict[str, str] = {}
    for i, proc in enumerate(lab.processes):
        path = f"processes.{i}"
        host_ok(path, proc.host)
        if proc.name in names:
            problems.append((f"{path}.name", f"{proc.name!r} is also {names[proc.name]}"))
        names[proc.name] = path
        if isinstance(proc, VnetSwitch):
            for j, port in enumerate(proc.ports):
                if port.netns is not None and port.netns not in hosts:
                    problems.append((f"{path}.ports.{j}.netns", f"no host {port.netns!r}"))
        if isinstance(proc, Qemu) and proc.bridge is not None and (
            proc.host, proc.bridge
        ) not in bridges:
            problems.append((f"{path}.bridge", f"no bridge {proc.bridge!r} on {proc.host}"))
    wg = {p.name for p in lab.processes if isinstance(p, VnetWg)}
    for i, proc in enumerate(lab.processes):
        if isinstance(proc, VnetWg):
            for j, peer in enumerate(proc.peers):
                if peer.process not in wg or peer.process == proc.name:
                    problems.append(
                        (f"processes.{i}.peers.{j}.process", f"no other vnet-wg {peer.process!r}")
                    )
    for i, check in enumerate(lab.checks):
        if check.from_ is not None and check.from_ not in hosts:
            problems.append((f"checks.{i}.from", f"no host {check.from_!r} in hosts"))
        if check.process is not None and check.process not in names:
            problems.append((f"checks.{i}.process", f"no process {check.process!r}"))
    return problems


# --- loading with line numbers -----------------------------------------------------------


def _lines(text: str) -> dict[tuple[str, ...], int]:
    """Line (1-based) of every mapping key and sequence item, by its path."""
    out: dict[tuple[str, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str, ...]) -> None:
        out.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                sub = (*path, str(key.value))
                out[sub] = key.start_mark.line + 1
                walk(value, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, str(i)))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return out


def _line_of(lines: dict[tuple[str, ...], int], path: tuple[str, ...]) -> int | None:
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def load(text: str, source: str) -> Lab:
    """Parse and validate; every problem is a ConfigError ``FILE:LINE: FIELD: message``."""
    try:
        data: Any = yaml.safe_load(text)
        lines = _lines(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise ConfigError(f"{source}{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: a lab file is a mapping (name, hosts, links, ...)")
    try:
        lab = Lab.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        loc = tuple(str(p) for p in first["loc"] if str(p) not in _PROCESS_KINDS)
        line = _line_of(lines, loc)
        field = ".".join(loc) or "(top)"
        msg = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{source}:{line}: {field}: {msg}") from None
    problems = _cross_check(lab)
    if not problems:
        from vnet.lab.addressing import assign  # it reads these models: imported late

        try:
            assign(lab)
        except ConfigError as e:
            path, _, msg = str(e).partition(": ")
            problems.append((path, msg))
    if problems:
        path, msg = problems[0]
        line = _line_of(lines, tuple(path.split(".")))
        raise ConfigError(f"{source}:{line}: {path}: {msg}")
    return lab


_PROCESS_KINDS = {"vnet-wg", "vnet-switch", "qemu", "command"}
