"""``vnet``: the command line. Parse, call, print; the logic lives below."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from vnet import __version__
from vnet.errors import VnetError

F = TypeVar("F", bound=Callable[..., Any])


class VnetGroup(click.Group):
    """Turns a VnetError into one line on stderr and exit code 1."""

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


def _register() -> None:
    from vnet.cli import demo, echo, lab, overlay, show, switch, tap_run, tuntap

    assert tap_run.tap_run is not None  # registers `vnet tap run` on the tap group

    cli.add_command(tuntap.tuntap)
    cli.add_command(show.show)
    cli.add_command(echo.tun)
    cli.add_command(echo.tap)
    cli.add_command(demo.demo)
    cli.add_command(switch.switch)
    cli.add_command(lab.lab)
    cli.add_command(overlay.overlay)


_register()


def main() -> None:
    cli(prog_name="vnet")
