"""``vnet capture DEV -w FILE``: a device's packets into a pcap file."""

from __future__ import annotations

import signal
from types import FrameType

import click

from vnet.capture.live import Limits, capture, open_device
from vnet.capture.writer import PcapWriter


@click.command("capture")
@click.argument("device")
@click.option("-w", "--write", "path", required=True, metavar="FILE",
              help="The pcap file (raw IP for a TUN, Ethernet for a TAP); tcpdump -r reads it.")
@click.option("-c", "--count", type=click.IntRange(min=0), default=0,
              help="Stop after this many packets (0: no limit).")
@click.option("--duration", type=click.FloatRange(min=0), default=0.0,
              help="Stop after this many seconds (0: no limit).")
@click.option("--size", type=click.FloatRange(min=0), default=0.0, metavar="MB",
              help="Rotate FILE past this size: FILE.1, FILE.2, ... (0: never).")
@click.option("--files", type=click.IntRange(min=1), default=5, show_default=True,
              help="Files kept when rotating, FILE included.")
def capture_command(device: str, path: str, count: int, duration: float, size: float,
                    files: int) -> None:
    """Capture what DEVICE (a TUN or TAP vnet runs, or any Ethernet device) carries, both
    ways, until Ctrl-C/SIGTERM or a limit."""
    sock, linktype = open_device(device)
    try:
        writer = PcapWriter(path, linktype, max_bytes=int(size * 1e6), files=files)
    except BaseException:
        sock.close()
        raise
    stop = [False]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        written = capture(sock, writer, Limits(count, duration), stop)
    finally:
        writer.close()
        sock.close()
        for s, handler in old.items():
            signal.signal(s, handler)
    rotated = f", {writer.rotations} rotations" if writer.rotations else ""
    click.echo(f"{device}: {written} packets to {path}{rotated}", err=True)
