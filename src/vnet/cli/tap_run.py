"""``vnet tap run -- PROGRAM ... {fd} ...``: open a TAP and hand its fd to a program,
as libvirt hands QEMU the TAP it opened (``-netdev tap,fd=N``)."""

from __future__ import annotations

import signal
import subprocess
import sys
from types import FrameType

import click

from vnet.cli.echo import tap
from vnet.errors import ConfigError
from vnet.kernel.netlink import Netlink, parse_interface
from vnet.kernel.tun import Mode, TunDevice
from vnet.names import validate_ifname


@tap.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("--name", default="", help="TAP name (default: the kernel picks tapN).")
@click.option("--vnet-hdr", is_flag=True, help="Open with IFF_VNET_HDR (guest offloads).")
@click.option("--bridge", default=None, help="Enslave the TAP to this Linux bridge.")
@click.option(
    "--address",
    "addresses",
    multiple=True,
    metavar="CIDR",
    help="Kernel-side address (repeatable).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def tap_run(
    name: str,
    vnet_hdr: bool,
    bridge: str | None,
    addresses: tuple[str, ...],
    command: tuple[str, ...],
) -> None:
    """Open a TAP, put its fd number where COMMAND says {fd}, run COMMAND with it."""
    validate_ifname(name)
    for text in addresses:
        parse_interface(text)
    if not any("{fd}" in arg for arg in command):
        raise ConfigError(
            "put {fd} in the command where it takes the TAP's descriptor, "
            "e.g. -netdev tap,fd={fd},id=n0"
        )
    with TunDevice(name, Mode.TAP, vnet_hdr=vnet_hdr) as dev, Netlink() as nl:
        for text in addresses:
            nl.add_address(dev.name, text, nodad=True)
        if bridge is not None:
            nl.set_master(dev.name, bridge)
        nl.set_up(dev.name)
        dev.inheritable = True
        fd = dev.fileno()
        argv = [arg.replace("{fd}", str(fd)) for arg in command]
        try:
            child = subprocess.Popen(argv, pass_fds=[fd])
        except FileNotFoundError:
            raise ConfigError(f"program not found: {argv[0]}") from None
        click.echo(f"{dev.name}: fd {fd} handed to {argv[0]} (pid {child.pid})", err=True)

        def forward(signum: int, frame: FrameType | None) -> None:
            child.send_signal(signum)

        old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            code = child.wait()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
    sys.exit(code)
