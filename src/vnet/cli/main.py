"""``vnet``: the command line. Parse, call, print; the logic lives below."""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Any

import click

from vnet import __version__
from vnet.errors import VnetError

# subcommand -> (module, attribute): imported only when used, so that a daemon started
# as `vnet overlay run` does not pay for the lab's, the demos' and the switch's imports
COMMANDS = {
    "tuntap": ("vnet.cli.tuntap", "tuntap"),
    "show": ("vnet.cli.show", "show"),
    "tun": ("vnet.cli.tun_gre", "tun"),  # vnet.cli.echo's group, with gre added
    "tap": ("vnet.cli.tap_run", "tap"),
    "demo": ("vnet.cli.demo", "demo"),
    "switch": ("vnet.cli.switch", "switch"),
    "lab": ("vnet.cli.lab", "lab"),
    "overlay": ("vnet.cli.overlay", "overlay"),
    "capture": ("vnet.cli.capture", "capture_command"),
}


class VnetGroup(click.Group):
    """Turns a VnetError into one line on stderr and exit code 1; loads subcommands
    lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name]
        # no cyclic collection while modules load (a tenth of the start-up of a daemon,
        # which counts when fifty start on two cores); on again before the command runs
        gc.disable()
        try:
            command = getattr(importlib.import_module(module), attribute)
        finally:
            gc.enable()
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VnetError as e:
            click.echo(f"vnet: error: {e}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("vnet: interrupted", err=True)
            sys.exit(130)


@click.group(cls=VnetGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vnet")
def cli() -> None:
    """Linux virtual networking in Python, built on TUN/TAP."""


def main() -> None:
    cli(prog_name="vnet")
