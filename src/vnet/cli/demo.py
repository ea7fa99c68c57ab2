"""``vnet demo``: the project's main job, end to end, then cleaned up."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from vnet.demo import wg as wg_demo
from vnet.demo.echo import PING_COUNT, run_demo


@click.command()
@click.argument("which", type=click.Choice(["wg", "echo", "overlay"]), default="wg")
def demo(which: str) -> None:
    """Run a demo in throwaway namespaces: 'wg' (default) two sites joined by vnet-wg,
    'echo' a userspace host answering ping behind a TUN and a TAP, 'overlay' flannel's
    network of three hosts with leases in etcd."""
    if which == "wg":
        _wg_demo()
    elif which == "overlay":
        _overlay_demo()
    else:
        _echo_demo()


def _overlay_demo() -> None:
    from vnet.demo import overlay

    console = Console(width=120)
    console.print(
        "[bold]vnet demo overlay[/]: examples/flannel-udp.yaml - three hosts take a subnet "
        "each from etcd and run `vnet overlay` (udp backend: flannel0 + UDP 8285); two "
        "containers per host on a docker0 configured from subnet.env"
    )
    report = overlay.run_demo()
    table = Table(title="leases in etcd (flannel's keys and values)")
    for col in ("key", "value", "ttl"):
        table.add_column(col)
    for row in report.leases:
        table.add_row(row["key"], row["value"], row["ttl"])
    console.print(table)
    console.print("[bold]host1: subnet.env[/] (as the agent wrote it, as flanneld writes it)")
    console.print(report.subnet_env.rstrip())
    console.print("[bold]host1: ip route[/]")
    console.print(report.routes.rstrip())
    table = Table(title="container to container")
    for col in ("check", "expect", "outcome"):
        table.add_column(col)
    for c in report.checks:
        table.add_row(c.check, c.expect, c.outcome if c.ok else f"[red]{c.outcome}[/]")
    console.print(table)
    if not report.ok:
        console.print("[red]FAILED[/]: some containers did not reach each other")
        sys.exit(1)
    console.print("[green]OK[/]: every container reached the others across hosts; lab removed")


def _wg_demo() -> None:
    console = Console(width=120)
    console.print(
        "[bold]vnet demo[/]: two sites in namespaces, each behind vnet-wg "
        "(WireGuard protocol), keys generated fresh"
    )
    report = wg_demo.run_demo()
    table = Table(title="tunnel endpoints")
    for col in ("site", "interface", "public key", "peer endpoint", "handshake", "rx", "tx"):
        table.add_column(col)
    for s in report.sites:
        age = "never" if s.handshake_age is None else f"{s.handshake_age:.0f} s ago"
        table.add_row(
            s.name,
            s.ifname,
            s.public_key[:12] + "…",
            s.endpoint,
            age,
            _size(s.rx_bytes),
            _size(s.tx_bytes),
        )
    console.print(table)
    table = Table(title="through the tunnel")
    for col in ("test", "target", "result"):
        table.add_column(col)
    for p in report.pings:
        rtt = (
            "lost"
            if p.rtt_avg is None
            else (
                f"{p.received}/{p.sent} replies, rtt min/avg/max "
                f"{p.rtt_min:.3f}/{p.rtt_avg:.3f}/{p.rtt_max:.3f} ms"
            )
        )
        table.add_row("ping", p.target, rtt)
    for direction, gbps in report.throughput:
        table.add_row(f"iperf3 TCP {wg_demo.IPERF_SECONDS} s", direction, f"{gbps * 1000:.0f} Mb/s")
    console.print(table)
    if not report.ok:
        console.print("[red]FAILED[/]: traffic did not pass")
        sys.exit(1)
    console.print("[green]OK[/]: encrypted tunnel carried ping and TCP; namespaces removed")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _echo_demo() -> None:
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
