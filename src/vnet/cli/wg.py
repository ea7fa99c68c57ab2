"""``vnet-wg [-f] IFNAME``: the daemon, with wireguard-go's command-line conventions.

Without ``-f`` it forks and returns once the interface and its UAPI socket
exist, which is what ``wg-quick`` expects of WG_QUICK_USERSPACE_IMPLEMENTATION.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable

import click

from vnet import __version__
from vnet.capture.writer import LINKTYPE_RAW
from vnet.cli import pcap_options, unprivileged
from vnet.errors import VnetError
from vnet.runtime import privileges
from vnet.runtime.wg import WgDaemon
from vnet.wireguard import crypto
from vnet.wireguard.config import FileConfig, parse_config

log = logging.getLogger("vnet.wg")


class WgError(click.ClickException):
    def show(self, file: object = None) -> None:
        click.echo(f"vnet-wg: error: {self.message}", err=True)


def _load(path: str | None) -> FileConfig | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
            mode = os.fstat(f.fileno()).st_mode
    except OSError as e:
        raise WgError(f"cannot read {path}: {e.strerror}") from None
    if mode & 0o044:  # as wg-quick warns: the file holds a private key
        click.echo(
            f"vnet-wg: warning: {path} is readable by group or others "
            f"(mode {mode & 0o777:o}); it holds a private key: chmod 600 it",
            err=True,
        )
    return parse_config(text, path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("ifname")
@click.option("-f", "--foreground", is_flag=True, help="Stay in the foreground.")
@click.option(
    "--config",
    "config_path",
    default=None,
    metavar="FILE",
    help="Apply a wg(8) config file (plus Address, MTU) at start.",
)
@click.option(
    "--metrics",
    default=None,
    metavar="[HOST]:PORT",
    help="Serve Prometheus metrics (default host 127.0.0.1).",
)
@click.option(
    "--offload/--no-offload",
    default=True,
    help="TUN TSO + UDP GSO/GRO where the kernel allows (default on).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default=None,
    help="Logging threshold (env LOG_LEVEL works too).",
)
@unprivileged.options("the TUN and its sockets")
@pcap_options.options("Capture the tunnel's inner packets (decrypted, both ways) to FILE.")
@click.option(
    "--pcap-outer",
    default=None,
    metavar="FILE",
    help="Capture the encrypted UDP datagrams (both ways, with IP/UDP headers) to FILE.",
)
@click.version_option(__version__, prog_name="vnet-wg")
def cli(
    ifname: str,
    foreground: bool,
    config_path: str | None,
    metrics: str | None,
    offload: bool,
    log_level: str | None,
    user: str | None,
    group: str | None,
    keep_caps: bool,
    pcap: str | None,
    pcap_size: float,
    pcap_files: int,
    pcap_outer: str | None,
) -> None:
    """A WireGuard-compatible VPN daemon on TUN interface IFNAME."""
    level = (log_level or os.environ.get("LOG_LEVEL") or "info").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        level = "INFO"
    foreground = foreground or os.environ.get("WG_PROCESS_FOREGROUND") == "1"
    try:
        config = _load(config_path)
        identity = unprivileged.identity(user, group, keep_caps)
        capture = pcap_options.writer(pcap, pcap_size, pcap_files, LINKTYPE_RAW)
        outer = pcap_options.writer(pcap_outer, pcap_size, pcap_files, LINKTYPE_RAW)
        daemon = WgDaemon(ifname, config=config, metrics=metrics, offload=offload,
                          capture=capture, capture_outer=outer)
    except VnetError as e:
        raise WgError(str(e)) from None
    drop = None
    if identity is not None:
        keep = privileges.NEEDED if keep_caps else ()
        drop = functools.partial(_drop, daemon, identity, keep)
    if foreground:
        logging.basicConfig(
            level=level, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
        )
        _run(daemon, None, drop)
        return
    _daemonize(daemon, level, drop)


def _drop(daemon: WgDaemon, identity: privileges.Identity, keep: tuple[int, ...]) -> None:
    crypto.exercise()  # what the crypto libraries import on first use is read while we can
    daemon.hand_over(identity.uid)  # so that the user can still open the peers' sockets
    privileges.drop(identity, keep, [daemon.uapi.path])


def _run(daemon: WgDaemon, ready_fd: int | None, drop: Callable[[], None] | None) -> None:
    try:
        daemon.start()
        if drop is not None:
            try:
                drop()
            except VnetError:
                daemon.close()  # nothing runs half-dropped
                raise
            log.info("%s: running as uid %d, gid %d", daemon.ifname, os.getuid(), os.getgid())
    except VnetError as e:
        if ready_fd is not None:
            os.write(ready_fd, f"error: {e}".encode())
            os._exit(1)
        raise WgError(str(e)) from None

    def ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, b"ok")
            os.close(ready_fd)

    try:
        daemon.run(ready)
    finally:
        daemon.close()


def _daemonize(daemon: WgDaemon, level: str, drop: Callable[[], None] | None) -> None:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_fd)
        chunks = []
        while chunk := os.read(read_fd, 4096):
            chunks.append(chunk)
        answer = b"".join(chunks).decode(errors="replace")
        if answer == "ok":
            return
        message = answer.removeprefix("error: ") or "the daemon exited before it was ready"
        raise WgError(message)
    os.close(read_fd)
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    logging.basicConfig(level=level, format="%(name)s: %(message)s")
    try:
        _run(daemon, write_fd, drop)
    except BaseException:
        os._exit(1)
    os._exit(0)


def main() -> None:
    cli.main(prog_name="vnet-wg", standalone_mode=True)


if __name__ == "__main__":
    main()
