"""``vnet tun gre NAME --local A --remote B [--key K]``: IP over GRE on a TUN."""

from __future__ import annotations

import ipaddress
import logging
import sys

import click

from vnet.cli.echo import tun
from vnet.errors import ConfigError
from vnet.packet.gre import MAX_KEY
from vnet.runtime.gre_tun import GreTunDaemon


def _ipv4(value: str, what: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ConfigError(f"{what} {value!r} is not an IPv4 address") from None


@tun.command("gre")
@click.argument("name")
@click.option("--local", default=None,
              help="This host's underlay IPv4 address (default: any; the kernel picks).")
@click.option("--remote", required=True, help="The other end's underlay IPv4 address.")
@click.option("--key", type=click.IntRange(0, MAX_KEY), default=None, help="GRE key (RFC 2890).")
@click.option("--address", "addresses", multiple=True, metavar="CIDR",
              help="An address for the TUN (repeatable).")
@click.option("--mtu", type=click.IntRange(68, 65535), default=None,
              help="TUN MTU (default 1476, 1472 with a key, as Linux's gre).")
def tun_gre(name: str, local: str | None, remote: str, key: int | None, addresses: tuple[str, ...],
            mtu: int | None) -> None:
    """Create TUN NAME and carry its IP packets over GRE to REMOTE until Ctrl-C/SIGTERM
    (the kernel's peer: `ip tunnel add NAME mode gre local REMOTE remote LOCAL [key K]`)."""
    for address in addresses:
        try:
            ipaddress.ip_interface(address)
        except ValueError:
            raise ConfigError(f"--address {address!r} is not an address/prefix") from None
    daemon = GreTunDaemon(name, _ipv4(local, "--local") if local else None,
                          _ipv4(remote, "--remote"), key=key,
                          addresses=addresses, mtu=mtu)
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    daemon.start()
    try:
        daemon.run()
    finally:
        click.echo(daemon.summary(), err=True)
        daemon.close()
