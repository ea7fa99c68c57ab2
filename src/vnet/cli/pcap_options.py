"""``--pcap FILE``, ``--pcap-size MB`` and ``--pcap-files N``, shared by the daemons that
can capture what they carry (vnet-wg, vnet switch)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from vnet.capture.writer import PcapWriter

F = TypeVar("F", bound=Callable[..., Any])


def options(what: str) -> Callable[[F], F]:
    """The three options; ``what`` says what ``--pcap`` captures."""

    def decorate(f: F) -> F:
        f = click.option(
            "--pcap-files",
            type=click.IntRange(min=1),
            default=5,
            show_default=True,
            help="Files kept when rotating, FILE included.",
        )(f)
        f = click.option(
            "--pcap-size",
            type=click.FloatRange(min=0),
            default=0.0,
            metavar="MB",
            help="Rotate the capture past this size: FILE.1, FILE.2, ... (0: never).",
        )(f)
        return click.option("--pcap", default=None, metavar="FILE", help=what)(f)

    return decorate


def writer(path: str | None, size: float, files: int, linktype: int) -> PcapWriter | None:
    """The capture the options ask for (None: none); ConfigError for a file that cannot be
    written or a limit that holds nothing."""
    if path is None:
        return None
    return PcapWriter(path, linktype, max_bytes=int(size * 1e6), files=files)
