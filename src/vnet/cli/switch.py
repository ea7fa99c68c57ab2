"""``vnet switch run|fdb|stats``: the userspace L2 switch."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from vnet.capture.writer import LINKTYPE_ETHERNET
from vnet.cli import pcap_options, unprivileged
from vnet.errors import ConfigError, VnetError
from vnet.runtime import privileges
from vnet.runtime.switch import SwitchDaemon, query
from vnet.switch.config import SwitchSpec, load, parse_port_flag, parse_segment_flag


@click.group()
def switch() -> None:
    """A learning L2 switch over TAP ports and VXLAN tunnels."""


@switch.command("run")
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="Switch name (control socket, `vnet switch fdb`).")
@click.option(
    "--port",
    "ports",
    multiple=True,
    metavar="TAP[:VLAN]",
    help="Access port on a new TAP (repeatable).",
)
@click.option(
    "--trunk",
    "trunks",
    multiple=True,
    metavar="TAP:VLAN,VLAN",
    help="802.1Q trunk port on a new TAP (repeatable).",
)
@click.option(
    "--segment",
    "segments",
    multiple=True,
    metavar="VNI:VLAN[:REMOTE,...]",
    help="Extend VLAN over VXLAN VNI to static remote VTEPs (repeatable).",
)
@click.option(
    "--gre-segment",
    "gre_segments",
    multiple=True,
    metavar="KEY:VLAN[:REMOTE,...]",
    help="Extend VLAN over GRE (gretap) with KEY to static remote IPv4 endpoints (repeatable).",
)
@click.option("--vxlan-port", type=int, default=None, help="UDP port (4789; Linux used 8472).")
@click.option("--local", default=None, help="Underlay address to bind.")
@click.option(
    "--no-offload",
    is_flag=True,
    help="No vnet_hdr/TSO on TAPs and no UDP GSO/GRO: one frame per syscall.",
)
@click.option(
    "--storm-limit",
    type=click.IntRange(min=0),
    default=None,
    metavar="PPS",
    help="Flooded frames (broadcast, multicast, unknown unicast) a second that one port "
    "may cause; the rest are dropped (0: no limit, the default).",
)
@unprivileged.options("its ports and sockets")
@pcap_options.options("Capture every frame every port receives or is sent to FILE (Ethernet).")
def run(
    config: str | None,
    name: str | None,
    ports: tuple[str, ...],
    trunks: tuple[str, ...],
    segments: tuple[str, ...],
    gre_segments: tuple[str, ...],
    vxlan_port: int | None,
    local: str | None,
    no_offload: bool,
    storm_limit: int | None,
    user: str | None,
    group: str | None,
    keep_caps: bool,
    pcap: str | None,
    pcap_size: float,
    pcap_files: int,
) -> None:
    """Run a switch from CONFIG (YAML) and/or flags until Ctrl-C / SIGTERM."""
    identity = unprivileged.identity(user, group, keep_caps)
    text = None
    if config is not None:
        try:
            with open(config, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read {config}: {e.strerror}") from None
    overrides: dict[str, object] = {
        "name": name,
        "vxlan_port": vxlan_port,
        "local": local,
        "offload": False if no_offload else None,
        "storm_limit": storm_limit,
        "ports": [parse_port_flag(p, "access") for p in ports]
        + [parse_port_flag(t, "trunk") for t in trunks],
        "segments": [parse_segment_flag(s) for s in segments]
        + [parse_segment_flag(s, "gre") for s in gre_segments],
    }
    spec = load(text, config or "command line", overrides)
    capture = pcap_options.writer(pcap, pcap_size, pcap_files, LINKTYPE_ETHERNET)
    daemon = SwitchDaemon(spec, capture=capture)
    daemon.start()
    if identity is not None:
        keep = privileges.NEEDED if keep_caps else ()
        try:
            privileges.drop(identity, keep, [daemon.control.path])
        except VnetError:
            daemon.close()  # nothing runs half-dropped
            raise
    click.echo(
        f"switch {spec.name}: {len(spec.ports)} ports, {_segments(spec)}, "
        f"{daemon.offload_summary()} (Ctrl-C to stop)",
        err=True,
    )
    try:
        daemon.run()
    finally:
        daemon.close()


def _segments(spec: SwitchSpec) -> str:
    vxlan = sum(1 for seg in spec.segments if seg.type == "vxlan")
    gre = len(spec.segments) - vxlan
    text = f"{vxlan} VXLAN segments on UDP {spec.vxlan_port}"
    return text + (f", {gre} GRE segments" if gre else "")


@switch.command("fdb")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def fdb(name: str, as_json: bool) -> None:
    """Show the MAC table of running switch NAME."""
    data = query(name, "fdb")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for col in ("VLAN", "MAC", "PORT", "VTEP", "AGE s"):
        table.add_column(col)
    for e in data["fdb"]:
        table.add_row(str(e["vlan"]), e["mac"], e["port"], e["remote"] or "-", str(e["age"]))
    Console(width=120).print(table)


@switch.command("stats")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(name: str, as_json: bool) -> None:
    """Show per-port counters of running switch NAME."""
    data = query(name, "stats")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    table = Table(box=None, header_style="bold")
    for col in ("PORT", "VLAN", "RX", "TX", "DROPS"):
        table.add_column(col)
    for port, s in data["ports"].items():
        drops = ", ".join(f"{k}={v}" for k, v in s["drops"].items()) or "-"
        table.add_row(
            port,
            str(s["vlan"]),
            f"{s['rx_frames']} ({s['rx_bytes']} B)",
            f"{s['tx_frames']} ({s['tx_bytes']} B)",
            drops,
        )
    Console(width=120).print(table)
