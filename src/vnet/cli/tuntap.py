"""``vnet tuntap add|del|list``: what ``ip tuntap`` does."""

from __future__ import annotations

import grp
import json
import pwd

import click
from rich.console import Console
from rich.table import Table

from vnet.errors import ConfigError, KernelError
from vnet.kernel.netlink import Link, Netlink
from vnet.kernel.tun import Mode, TunDevice
from vnet.names import validate_ifname


def resolve_user(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise ConfigError(f"no such user {text!r}") from None


def resolve_group(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise ConfigError(f"no such group {text!r}") from None


def user_name(uid: int | None) -> str:
    if uid is None:
        return "-"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def group_name(gid: int | None) -> str:
    if gid is None:
        return "-"
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def tun_links(nl: Netlink) -> list[Link]:
    return [link for link in nl.links() if link.tun is not None]


def link_flags(link: Link) -> list[str]:
    assert link.tun is not None
    return [
        name for name in ("pi", "vnet_hdr", "multi_queue", "persist") if getattr(link.tun, name)
    ]


@click.group()
def tuntap() -> None:
    """Create, delete and list persistent TUN/TAP devices."""


@tuntap.command("add")
@click.argument("name")
@click.option("--mode", type=click.Choice(["tun", "tap"]), required=True)
@click.option("--pi/--no-pi", default=False, help="Prefix packets with the 4-byte PI header.")
@click.option("--vnet-hdr", is_flag=True, help="Prefix packets with a virtio_net_hdr.")
@click.option("--multi-queue", is_flag=True, help="Allow several queues (fds).")
@click.option("--user", "user", default=None, help="Owner allowed to attach (name or uid).")
@click.option("--group", "group", default=None, help="Group allowed to attach (name or gid).")
def add(
    name: str,
    mode: str,
    pi: bool,
    vnet_hdr: bool,
    multi_queue: bool,
    user: str | None,
    group: str | None,
) -> None:
    """Create a persistent device NAME (like 'ip tuntap add')."""
    validate_ifname(name)
    if not name:
        raise ConfigError("a device name is required")
    uid = resolve_user(user) if user is not None else None
    gid = resolve_group(group) if group is not None else None
    with Netlink() as nl:
        if nl.exists(name):
            raise KernelError(f"device {name!r} already exists")
    # Owner and group first, persist last: if anything fails, closing the fd
    # removes the half-made device.
    with TunDevice(name, Mode(mode), pi=pi, vnet_hdr=vnet_hdr, multi_queue=multi_queue) as dev:
        if uid is not None:
            dev.set_owner(uid)
        if gid is not None:
            dev.set_group(gid)
        dev.set_persist(True)


@tuntap.command("del")
@click.argument("name")
def delete(name: str) -> None:
    """Delete persistent device NAME (like 'ip tuntap del')."""
    validate_ifname(name)
    with Netlink() as nl:
        link = nl.link(name)
    if link.tun is None:
        raise ConfigError(f"{name!r} is a {link.kind or 'plain'} link, not a TUN/TAP device")
    info = link.tun
    if not info.persist:
        raise KernelError(
            f"{name!r} is not persistent: it disappears when the programs holding it close it "
            f"(see 'vnet show {name}')"
        )
    with TunDevice(
        name, Mode(info.mode), pi=info.pi, vnet_hdr=info.vnet_hdr, multi_queue=info.multi_queue
    ) as dev:
        dev.set_persist(False)


@tuntap.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(as_json: bool) -> None:
    """List TUN/TAP devices (like 'ip tuntap list')."""
    with Netlink() as nl:
        links = tun_links(nl)
    if as_json:
        click.echo(json.dumps([_brief(link) for link in links], indent=2))
        return
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "MODE", "FLAGS", "OWNER", "GROUP", "STATE"):
        table.add_column(col)
    for link in links:
        assert link.tun is not None
        table.add_row(
            link.name,
            link.tun.mode,
            ",".join(link_flags(link)) or "-",
            user_name(link.tun.owner),
            group_name(link.tun.group),
            "UP" if link.up else "DOWN",
        )
    Console(width=120).print(table)


def _brief(link: Link) -> dict[str, object]:
    assert link.tun is not None
    return {
        "name": link.name,
        "mode": link.tun.mode,
        "flags": link_flags(link),
        "owner": link.tun.owner,
        "group": link.tun.group,
        "up": link.up,
    }
