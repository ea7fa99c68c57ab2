"""``vnet lab up|down|status|exec|check|graph``: declarative topologies in namespaces."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from vnet.errors import ConfigError
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink
from vnet.lab import graph as lab_graph
from vnet.lab import state as st
from vnet.lab.build import up as lab_up
from vnet.lab.check import run_checks
from vnet.lab.load import load
from vnet.lab.schema import NAME, Lab


def _read(path: str) -> tuple[Lab, str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    return load(text, path), text


def _lab_name(target: str) -> str:
    """A lab file, or the name of a lab that is (or was) up."""
    if Path(target).is_file():
        return _read(target)[0].name
    if re.match(NAME, target):
        return target
    raise ConfigError(f"{target}: no such lab file, and not a lab name")


@click.group()
def lab() -> None:
    """Topologies from YAML files: hosts, links, bridges, tunnels, processes, checks."""


@lab.command("up")
@click.argument("file", type=click.Path(dir_okay=False))
def up(file: str) -> None:
    """Build the lab in FILE (idempotent; everything is undone if a step fails)."""
    model, text = _read(file)
    result = lab_up(model, str(Path(file).resolve()), text, lambda m: click.echo(m, err=True))
    click.echo(f"lab {model.name}: {result} ({len(model.hosts)} hosts)")


@lab.command("down")
@click.argument("target")
def down(target: str) -> None:
    """Remove everything lab TARGET (a file or a lab name) made, and nothing else."""
    name = _lab_name(target)
    removed = st.teardown(name)
    click.echo(f"lab {name}: down ({len(removed)} namespaces removed)")


@lab.command("status")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(target: str, as_json: bool) -> None:
    """Hosts, interfaces, addresses and processes of lab TARGET."""
    name = _lab_name(target)
    state = st.State.load(name)
    if state is None:
        raise ConfigError(f"lab {name} is not up")
    hosts = []
    for ns in state.namespaces:
        links: list[dict[str, object]] = []
        present = st.owned(name, ns)
        if present:
            with Netlink(ns) as nl:
                addrs = nl.addresses()
                for link in nl.links():
                    if link.name == "lo":
                        continue
                    links.append({"name": link.name, "kind": link.kind, "up": link.up,
                                  "addresses": [a.address for a in addrs if a.link == link.name]})
        hosts.append({"namespace": ns, "present": present, "links": links})
    procs = [{"name": p.name, "pid": p.pid, "running": st.alive(p), "log": p.log}
             for p in state.processes]
    data = {"lab": name, "status": state.status, "file": state.source, "hosts": hosts,
            "processes": procs}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    console = Console(width=120)
    console.print(f"lab [bold]{name}[/bold]: {state.status} (from {state.source})")
    table = Table(box=None, header_style="bold")
    for col in ("NAMESPACE", "LINK", "KIND", "STATE", "ADDRESSES"):
        table.add_column(col)
    for h in hosts:
        if not h["links"]:
            table.add_row(str(h["namespace"]), "-", "-", "present" if h["present"] else "gone", "")
        for link in h["links"]:  # type: ignore[attr-defined]
            table.add_row(str(h["namespace"]), link["name"], link["kind"] or "-",
                          "up" if link["up"] else "down", " ".join(link["addresses"]))
    console.print(table)
    if procs:
        ptable = Table(box=None, header_style="bold")
        for col in ("PROCESS", "PID", "STATE", "LOG"):
            ptable.add_column(col)
        for p in procs:
            ptable.add_row(str(p["name"]), str(p["pid"]),
                           "running" if p["running"] else "exited", str(p["log"]))
        console.print(ptable)


@lab.command("exec", context_settings={"ignore_unknown_options": True,
                                       "allow_interspersed_args": False})
@click.argument("target")
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(target: str, host: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in HOST of lab TARGET: vnet lab exec FILE HOST -- CMD ARGS."""
    name = _lab_name(target)
    ns = f"{name}-{host}"
    if not st.owned(name, ns):
        raise ConfigError(f"lab {name} has no running host {host!r}")
    sys.exit(netns.run(ns, list(command)).returncode)


@lab.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def check(file: str, as_json: bool) -> None:
    """Run the reachability/isolation checks of FILE against the running lab."""
    model, _ = _read(file)
    state = st.State.load(model.name)
    if state is None or state.status != "up":
        raise ConfigError(f"lab {model.name} is not up (vnet lab up {file})")
    results = run_checks(model)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in results], indent=2))
    else:
        table = Table(box=None, header_style="bold", title=f"lab {model.name}: checks")
        for col in ("CHECK", "EXPECT", "OUTCOME", "OK"):
            table.add_column(col)
        for r in results:
            table.add_row(r.check, r.expect, r.outcome, "[green]ok[/]" if r.ok else "[red]FAIL[/]")
        Console(width=120).print(table)
    failed = sum(not r.ok for r in results)
    click.echo(f"{len(results) - failed}/{len(results)} checks passed", err=True)
    if failed:
        sys.exit(1)


@lab.command("graph")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", default=None, help="Output .svg, .png or .dot (default FILE.svg).")
def graph(file: str, output: str | None) -> None:
    """Draw the topology of FILE (Graphviz)."""
    model, _ = _read(file)
    out = output or str(Path(file).with_suffix(".svg"))
    fmt = lab_graph.render(model, out)
    click.echo(f"lab {model.name}: {fmt} written to {out}")
