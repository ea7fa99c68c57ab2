"""Run an echo responder on a TUN/TAP file descriptor.

Strips the optional packet-information and virtio_net_hdr prefixes on the
way in and puts them back on the way out, so the core sees bare packets.
"""

from __future__ import annotations

import select
import threading
import time

from vnet.echo.responder import L2Responder, L3Responder
from vnet.errors import KernelError
from vnet.kernel.tun import PI_SIZE, Mode, TunDevice, pi_header
from vnet.packet.ethernet import ETH_P_IP, ETH_P_IPV6
from vnet.packet.virtio import EMPTY as EMPTY_VNET_HDR


class EchoServer:
    def __init__(self, dev: TunDevice, responder: L3Responder | L2Responder) -> None:
        if (dev.mode is Mode.TUN) != isinstance(responder, L3Responder):
            raise KernelError(f"{dev.name}: a {dev.mode.value} device needs the matching responder")
        self.dev = dev
        self.responder = responder
        self.vnet_hdr_size = dev.get_vnet_hdr_size() if dev.vnet_hdr else 0

    def handle_raw(self, data: bytes) -> bytes | None:
        """One read from the fd in, one write to the fd (or None) out."""
        view = memoryview(data)
        if self.dev.pi:
            view = view[PI_SIZE:]
        if self.vnet_hdr_size:
            view = view[self.vnet_hdr_size :]
        reply = self.responder.handle(view)
        if reply is None:
            return None
        prefix = b""
        if self.dev.pi:
            if self.dev.mode is Mode.TUN:
                proto = ETH_P_IP if reply[0] >> 4 == 4 else ETH_P_IPV6
            else:
                proto = int.from_bytes(reply[12:14], "big")
            prefix += pi_header(proto)
        if self.vnet_hdr_size:
            prefix += EMPTY_VNET_HDR + bytes(self.vnet_hdr_size - len(EMPTY_VNET_HDR))
        return prefix + reply

    def serve(
        self,
        stop: threading.Event,
        *,
        max_replies: int | None = None,
        duration: float | None = None,
        poll_interval: float = 0.2,
    ) -> None:
        """Answer until ``stop`` is set, ``max_replies`` sent or ``duration`` passed."""
        self.dev.nonblocking = True
        deadline = None if duration is None else time.monotonic() + duration
        fd = self.dev.fileno()
        stats = self.responder.stats
        while not stop.is_set():
            if max_replies is not None and stats.echo_v4 + stats.echo_v6 >= max_replies:
                return
            wait = poll_interval
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    return
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                continue
            for _ in range(256):  # drain a burst, bounded so stop is checked
                try:
                    data = self.dev.read()
                except BlockingIOError:
                    break
                reply = self.handle_raw(data)
                if reply is not None:
                    self.dev.write(reply)
