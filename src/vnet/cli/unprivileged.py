"""``--user``, ``--group`` and ``--keep-caps``, shared by the daemons that can drop root."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from vnet.errors import ConfigError
from vnet.runtime import privileges

F = TypeVar("F", bound=Callable[..., Any])


def options(what: str) -> Callable[[F], F]:
    """The three options, for a daemon that opens ``what`` as root."""

    def decorate(f: F) -> F:
        f = click.option(
            "--keep-caps",
            is_flag=True,
            help="With --user: keep CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (fwmark, ports < 1024).",
        )(f)
        f = click.option(
            "--group", default=None, help="With --user: this group (default: the user's)."
        )(f)
        return click.option("--user", default=None, help=f"Run as this user once {what} are open.")(
            f
        )

    return decorate


def identity(user: str | None, group: str | None, keep_caps: bool) -> privileges.Identity | None:
    """Who to become (None: stay root); ConfigError for a mistake on the command line."""
    if (group or keep_caps) and not user:
        raise ConfigError("--group and --keep-caps go with --user")
    return privileges.resolve(user, group) if user else None
