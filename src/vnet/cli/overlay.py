"""``vnet overlay run|leases|config``: flannel's subnet-per-host network with etcd."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click

from vnet.errors import ConfigError
from vnet.overlay.config import parse_config
from vnet.overlay.lease import LeaseError, decode
from vnet.runtime.etcd import Registry, parse_endpoints
from vnet.runtime.overlay import AgentOptions, OverlayAgent

DEFAULT_ENDPOINTS = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/coreos.com/network"


def _registry(endpoints: str, prefix: str) -> Registry:
    return Registry(parse_endpoints(endpoints), prefix)


@click.group()
def overlay() -> None:
    """flannel's overlay network: a subnet per host, leases in etcd."""


etcd_endpoints = click.option(
    "--etcd-endpoints", default=DEFAULT_ENDPOINTS, show_default=True,
    help="Comma-separated etcd client URLs.",
)
etcd_prefix = click.option(
    "--etcd-prefix", default=DEFAULT_PREFIX, show_default=True,
    help="Where the config and the subnet leases live.",
)


@overlay.command("run")
@etcd_endpoints
@etcd_prefix
@click.option("--public-ip", default=None, help="This host's address (default: --iface's).")
@click.option("--public-ipv6", default=None, help="This host's IPv6 address, for a network "
              "with EnableIPv6 (default: --iface's first global one).")
@click.option("--iface", default=None, help="The interface to the other hosts (default: "
              "the default route's).")
@click.option("--subnet-file", default="/run/flannel/subnet.env", show_default=True,
              help="Where to write FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ.")
@click.option("--ip-masq", is_flag=True, help="Masquerade traffic from the network to the "
              "outside, as flanneld does (nftables; FLANNEL_IPMASQ=true).")
@click.option("--wg-socket-dir", default=None, help="UAPI directory of the wireguard "
              "backend's device (default /var/run/wireguard).")
@click.option("--no-offload", is_flag=True, help="udp backend: one packet per syscall.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info")
def run(etcd_endpoints: str, etcd_prefix: str, public_ip: str | None,
        public_ipv6: str | None, iface: str | None,
        subnet_file: str, ip_masq: bool, wg_socket_dir: str | None, no_offload: bool,
        log_level: str) -> None:
    """Join the network: take a subnet, reach every other host's, until Ctrl-C/SIGTERM."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    options = AgentOptions(
        endpoints=parse_endpoints(etcd_endpoints), prefix=etcd_prefix, public_ip=public_ip,
        public_ipv6=public_ipv6, iface=iface, subnet_file=subnet_file, ip_masq=ip_masq,
        wg_socket_dir=wg_socket_dir, offload=not no_offload,
    )
    agent = OverlayAgent(options)
    agent.start()
    try:
        agent.run()
    finally:
        agent.close()


@overlay.command("config")
@etcd_endpoints
@etcd_prefix
@click.argument("document", required=False)
def config(etcd_endpoints: str, etcd_prefix: str, document: str | None) -> None:
    """Show the network config, or check DOCUMENT (JSON, or @FILE) and store it."""
    registry = _registry(etcd_endpoints, etcd_prefix)
    if document is None:
        kv, _ = registry.get(registry.config_key)
        if kv is None:
            raise ConfigError(f"no network config at {registry.config_key}")
        click.echo(kv.value.decode(errors="replace"))
        return
    if document.startswith("@"):
        try:
            with open(document[1:], encoding="utf-8") as f:
                document = f.read()
        except OSError as e:
            raise ConfigError(f"cannot read {document[1:]}: {e.strerror}") from None
    parse_config(document)  # refuse what agents would refuse
    registry.put(registry.config_key, document.strip())


@overlay.command("leases")
@etcd_endpoints
@etcd_prefix
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def leases(etcd_endpoints: str, etcd_prefix: str, as_json: bool) -> None:
    """List the subnet leases, as flanneld wrote them or vnet did."""
    registry = _registry(etcd_endpoints, etcd_prefix)
    kvs, revision = registry.get_prefix(registry.subnets_prefix)
    rows: list[dict[str, Any]] = []
    for kv in kvs:
        try:
            lease = decode(kv.key, kv.value)
        except LeaseError as e:
            rows.append({"subnet": kv.key, "error": str(e)})
            continue
        row: dict[str, Any] = {"subnet": str(lease.subnet), "public_ip": str(lease.public_ip),
               "backend": lease.backend_type or "udp", "data": lease.backend_data,
               "etcd_lease": f"{kv.lease:x}" if kv.lease else "-"}
        if lease.ipv6_subnet is not None:
            row |= {"ipv6_subnet": str(lease.ipv6_subnet),
                    "public_ipv6": str(lease.public_ipv6) if lease.public_ipv6 else None,
                    "v6_data": lease.backend_v6_data}
        rows.append(row)
    if as_json:
        click.echo(json.dumps({"revision": revision, "leases": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("SUBNET", "PUBLIC IP", "BACKEND", "BACKEND DATA", "ETCD LEASE"):
        table.add_column(column)
    for row in rows:
        if "error" in row:
            table.add_row(row["subnet"], "-", "-", row["error"], "-")
            continue
        subnet, public = row["subnet"], row["public_ip"]
        if "ipv6_subnet" in row:
            subnet += "\n" + row["ipv6_subnet"]
            public += "\n" + (row["public_ipv6"] or "-")
        data = json.dumps(row["data"]) if row["data"] else "-"
        if row.get("v6_data"):
            data += "\n" + json.dumps(row["v6_data"])
        table.add_row(subnet, public, row["backend"], data, row["etcd_lease"])
    Console(width=int(os.environ.get("COLUMNS", "120"))).print(table)
