"""``vnet tun gre``: the IP-over-GRE endpoint (``vnet.tunnel.gre_ip``) bound to a TUN and
a raw GRE socket, on the daemon base - the simplest program of the pattern vnet-wg
follows: read IP packets from a TUN, carry them somewhere else, write what comes back.

A kernel peer is ``ip tunnel add NAME mode gre local B remote A [key K]``.
"""

from __future__ import annotations

import logging
import socket

from vnet.errors import KernelError, PacketError
from vnet.kernel import gre as gre_socket
from vnet.kernel.netlink import Netlink
from vnet.kernel.tun import Mode, TunDevice
from vnet.names import validate_ifname
from vnet.packet import gre
from vnet.runtime.daemon import BATCH, Daemon
from vnet.tunnel.gre_ip import GreIpEndpoint, default_mtu

log = logging.getLogger("vnet.gre")


class GreTunDaemon(Daemon):
    """``start()`` creates TUN ``name`` (MTU, addresses, up) and the GRE socket; ``run()``
    carries packets until SIGTERM; ``close()`` removes the TUN by closing it."""

    def __init__(
        self,
        name: str,
        local: str | None,
        remote: str,
        *,
        key: int | None = None,
        addresses: tuple[str, ...] = (),
        mtu: int | None = None,
    ) -> None:
        validate_ifname(name)
        super().__init__(name, log)
        self.local = local
        self.endpoint = GreIpEndpoint(remote, key)
        self.addresses = addresses
        self.mtu = mtu or default_mtu(key)
        self.tun: TunDevice | None = None
        self.sock: socket.socket | None = None
        self._buffer = bytearray(65536)

    def open(self) -> None:
        self.sock = gre_socket.open_socket(self.local)
        self.tun = TunDevice(self.name, Mode.TUN, nonblocking=True)
        with Netlink() as nl:
            nl.set_mtu(self.tun.name, self.mtu)
            for address in self.addresses:
                nl.add_address(self.tun.name, address, nodad=True)
            nl.set_up(self.tun.name)
        self.watch(self.tun.fileno(), self._read_tun)
        self.watch(self.sock.fileno(), self._read_gre)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        super().close()

    def on_start(self) -> None:
        key = self.endpoint.key
        log.info("%s: up, GRE %s -> %s%s, MTU %d", self.name, self.local or "any",
                 self.endpoint.remote,
                 f" key {key}" if key is not None else "", self.mtu)

    def _read_tun(self, events: int) -> None:
        assert self.tun is not None and self.sock is not None
        remote = (self.endpoint.remote, 0)
        for _ in range(BATCH):
            try:
                packet = self.tun.read()
            except BlockingIOError:
                return
            except KernelError:
                log.info("%s: the interface was removed", self.name)
                self.running = False
                return
            wire = self.endpoint.encapsulate(packet)
            if wire is None:
                continue
            try:
                self.sock.sendto(wire, remote)
            except OSError as e:
                self.endpoint.drops["send-" + (e.strerror or "error").lower()] += 1

    def _read_gre(self, events: int) -> None:
        assert self.tun is not None and self.sock is not None
        view = memoryview(self._buffer)
        for _ in range(BATCH):
            try:
                n, addr = self.sock.recvfrom_into(self._buffer)
            except BlockingIOError:
                return
            except OSError:
                continue
            try:
                packet = gre.strip_ipv4(view[:n])
            except PacketError:
                self.endpoint.drops["malformed"] += 1
                continue
            inner = self.endpoint.decapsulate(addr[0], packet)
            if inner is None:
                continue
            try:
                self.tun.write(inner)
            except (BlockingIOError, KernelError):
                self.endpoint.drops["tun-write"] += 1

    def summary(self) -> str:
        e = self.endpoint
        drops = ", ".join(f"{k} {v}" for k, v in sorted(e.drops.items())) or "none"
        return (f"{self.name}: sent {e.tx_packets} packets ({e.tx_bytes} B), received "
                f"{e.rx_packets} ({e.rx_bytes} B); dropped: {drops}")
