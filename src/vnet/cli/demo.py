"""``vnet demo``: the project's main job, end to end, then cleaned up."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from vnet.demo.echo import PING_COUNT, run_demo


@click.command()
def demo() -> None:
    """Ping a userspace host behind a TUN and a TAP, in a throwaway namespace."""
    console = Console(width=120)
    console.print(
        "[bold]vnet demo[/]: namespace + TUN echo + TAP echo "
        f"(ARP/NDP/ICMP), {PING_COUNT} pings per target"
    )
    report = run_demo()
    table = Table(title=f"ping from the kernel (namespace {report.namespace})")
    for col in ("device", "target", "sent", "received", "rtt min/avg/max ms"):
        table.add_column(col)
    for p in report.pings:
        rtt = "-" if p.rtt_avg is None else f"{p.rtt_min:.3f}/{p.rtt_avg:.3f}/{p.rtt_max:.3f}"
        table.add_row(p.device, p.target, str(p.sent), str(p.received), rtt)
    console.print(table)
    table = Table(title="userspace responders")
    cols = (
        "device",
        "mode",
        "packets_in",
        "packets_out",
        "echo_v4",
        "echo_v6",
        "arp_replies",
        "ndp_replies",
        "ignored",
        "malformed",
    )
    for col in cols:
        table.add_column(col)
    for r in report.responders:
        table.add_row(*(str(r[c]) for c in cols))
    console.print(table)
    table = Table(title="vnet show (while running)")
    for col in ("device", "mode", "flags", "held by"):
        table.add_column(col)
    for row in report.show:
        held = ", ".join(f"{h['comm']} pid {h['pid']} fd {h['fd']}" for h in row["holders"])
        table.add_row(row["name"], row["mode"], ",".join(row["flags"]) or "-", held or "-")
    console.print(table)
    if not report.ok:
        console.print("[red]FAILED[/]: some pings were lost")
        sys.exit(1)
    console.print(f"[green]OK[/]: every ping answered; namespace {report.namespace} removed")
