"""``vnet tun echo`` / ``vnet tap echo``: a userspace host that answers ping."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import click

from vnet.echo.responder import AddressSet, L2Responder, L3Responder
from vnet.errors import ConfigError
from vnet.kernel.netlink import Netlink, parse_interface, parse_mac
from vnet.kernel.tun import Mode, TunDevice
from vnet.names import validate_ifname
from vnet.packet.ethernet import mac_bytes, mac_str
from vnet.runtime.echo import EchoServer

FC = TypeVar("FC", bound=Callable[..., Any])


def _common(f: FC) -> FC:
    for decorator in reversed(
        [
            click.argument("name"),
            click.option(
                "--address",
                "addresses",
                multiple=True,
                metavar="CIDR",
                help="Kernel-side address, e.g. 198.18.1.1/24 (repeatable); the "
                "responder answers for the rest of the prefix.",
            ),
            click.option("--pi", is_flag=True, help="Use the 4-byte packet-information header."),
            click.option("--vnet-hdr", is_flag=True, help="Use a virtio_net_hdr prefix."),
            click.option(
                "--count",
                type=click.IntRange(min=1),
                default=None,
                help="Stop after this many echo replies.",
            ),
            click.option(
                "--duration",
                type=click.FloatRange(min=0, min_open=True),
                default=None,
                help="Stop after this many seconds.",
            ),
            click.option("--json", "as_json", is_flag=True, help="Print the counters as JSON."),
        ]
    ):
        f = decorator(f)
    return f


@click.group()
def tun() -> None:
    """Programs on a TUN device (layer 3)."""


@click.group()
def tap() -> None:
    """Programs on a TAP device (layer 2)."""


@tun.command("echo")
@_common
def tun_echo(**options: Any) -> None:
    """Create TUN NAME and answer ICMP/ICMPv6 echo requests routed into it."""
    run_echo(Mode.TUN, mac=None, **options)


@tap.command("echo")
@_common
@click.option("--mac", default=None, help="The responder's MAC (default: random, local).")
def tap_echo(**options: Any) -> None:
    """Create TAP NAME and answer ARP, neighbour solicitations and ping on it."""
    run_echo(Mode.TAP, **options)


def run_echo(
    mode: Mode,
    *,
    name: str,
    addresses: tuple[str, ...],
    mac: str | None,
    pi: bool,
    vnet_hdr: bool,
    count: int | None,
    duration: float | None,
    as_json: bool,
) -> None:
    # Check everything the user typed before touching the kernel.
    validate_ifname(name)
    for text in addresses:
        parse_interface(text)
    answer_set = AddressSet(addresses)
    responder: L2Responder | L3Responder
    if mode is Mode.TAP:
        raw_mac = mac_bytes(parse_mac(mac)) if mac else bytes([0x02]) + os.urandom(5)
        responder = L2Responder(raw_mac, answer_set)
    else:
        if mac is not None:
            raise ConfigError("--mac applies to TAP devices only")
        responder = L3Responder(answer_set)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    old_term = signal.signal(signal.SIGTERM, on_signal)
    old_int = signal.signal(signal.SIGINT, on_signal)
    try:
        with TunDevice(name, mode, pi=pi, vnet_hdr=vnet_hdr) as dev, Netlink() as nl:
            present = {a.address for a in nl.addresses(dev.name)}
            for text in addresses:
                if str(parse_interface(text)) not in present:
                    nl.add_address(dev.name, text, nodad=True)
            nl.set_up(dev.name)
            what = "ICMP echo" if mode is Mode.TUN else "ARP, NDP and ICMP echo"
            nets = ", ".join(str(n) for n in answer_set.networks) or "any address"
            if isinstance(responder, L2Responder):
                nets += f" as {mac_str(responder.mac)}"
            click.echo(f"{dev.name}: answering {what} for {nets} (Ctrl-C to stop)", err=True)
            EchoServer(dev, responder).serve(stop, max_replies=count, duration=duration)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    stats = responder.stats.as_dict()
    if as_json:
        click.echo(json.dumps({"device": name, "mode": mode.value, **stats}))
    else:
        click.echo(" ".join(f"{k}={v}" for k, v in stats.items()))
