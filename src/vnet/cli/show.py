"""``vnet show [DEV]``: each TUN/TAP with its flags and the processes holding it."""

from __future__ import annotations

import json
import os
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from vnet.cli.tuntap import group_name, link_flags, tun_links, user_name
from vnet.errors import ConfigError
from vnet.kernel.netlink import Link, Netlink
from vnet.kernel.procfs import Holder, tun_holders


def describe(links: list[Link], nl: Netlink) -> list[dict[str, Any]]:
    holders = tun_holders()
    here = os.stat("/proc/self/ns/net").st_ino
    out = []
    for link in links:
        assert link.tun is not None
        mine = [h for h in holders.get(link.name, []) if h.netns_inode == here]
        out.append(
            {
                "name": link.name,
                "index": link.index,
                "mode": link.tun.mode,
                "flags": link_flags(link),
                "pi": link.tun.pi,
                "vnet_hdr": link.tun.vnet_hdr,
                "multi_queue": link.tun.multi_queue,
                "persist": link.tun.persist,
                "owner": link.tun.owner,
                "group": link.tun.group,
                "queues": link.tun.queues if link.tun.multi_queue else len(mine),
                "disabled_queues": link.tun.disabled_queues or 0,
                "up": link.up,
                "operstate": link.operstate,
                "mtu": link.mtu,
                "mac": link.mac,
                "addresses": [a.address for a in nl.addresses(link.name)],
                "holders": [_holder(h) for h in mine],
            }
        )
    return out


def _holder(h: Holder) -> dict[str, Any]:
    return {"pid": h.pid, "fd": h.fd, "comm": h.comm, "cmdline": h.cmdline}


@click.command()
@click.argument("dev", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(dev: str | None, as_json: bool) -> None:
    """Show TUN/TAP devices, their flags and which processes hold them open."""
    with Netlink() as nl:
        if dev is not None:
            link = nl.link(dev)
            if link.tun is None:
                raise ConfigError(f"{dev!r} is a {link.kind or 'plain'} link, not a TUN/TAP device")
            links = [link]
        else:
            links = tun_links(nl)
        rows = describe(links, nl)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for col in (
        "NAME",
        "MODE",
        "FLAGS",
        "OWNER",
        "GROUP",
        "QUEUES",
        "STATE",
        "ADDRESSES",
        "HELD BY",
    ):
        table.add_column(col)
    for row in rows:
        held = "\n".join(f"{h['comm']} (pid {h['pid']}) fd {h['fd']}" for h in row["holders"])
        queues = str(row["queues"])
        if row["disabled_queues"]:
            queues += f" ({row['disabled_queues']} detached)"
        table.add_row(
            row["name"],
            row["mode"],
            ",".join(row["flags"]) or "-",
            user_name(row["owner"]),
            group_name(row["group"]),
            queues,
            "UP" if row["up"] else "DOWN",
            "\n".join(row["addresses"]) or "-",
            held or "-",
        )
    Console(width=160).print(table)
