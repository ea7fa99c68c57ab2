"""The vnet-wg daemon: the WireGuard core (``vnet.wireguard.Device``) bound to a TUN, a
UDP socket and the UAPI socket, on the daemon base.

In: IP packets the kernel routes into the TUN (with a virtio_net_hdr when offloads are
on: TSO super-packets and partial checksums), UDP datagrams (GRO runs when on), UAPI
requests from `wg`/`wg-quick`, and the device's timers (``Device.next_deadline``).
Out: datagrams the device queued (a GSO send per run), packets written to the TUN (TCP
runs coalesced into super-packets), UAPI replies. The UAPI socket follows wireguard-go's
conventions (/var/run/wireguard/IFNAME.sock, 0600 in a 0755 directory) so `wg` and
`wg-quick` drive vnet-wg unchanged.

Latency: a packet after a quiet spell meets a cold CPU (caches and TLB emptied while
the vCPU slept; one Python call then costs microseconds, not tens of nanoseconds), so
the path from a wake-up to the send touches as little code as it can: epoll straight
to a bound method, complete packets passed on without decoding their virtio_net_hdr,
the first packet of a wake sent before looking for more, and one datagram sent without
the grouping of the batch path.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from vnet import native
from vnet.capture.outer import udp_packet
from vnet.capture.writer import PcapWriter
from vnet.errors import ConfigError, KernelError, PacketError, ProtocolError
from vnet.kernel import udp
from vnet.kernel.netlink import Netlink
from vnet.names import validate_ifname
from vnet.packet import gro, gso
from vnet.packet.rows import PacketRows
from vnet.packet.virtio import EMPTY as EMPTY_HDR
from vnet.packet.virtio import (
    HDR_LEN,
    VIRTIO_NET_HDR_GSO_ECN,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6,
    VirtioNetHdr,
)
from vnet.paths import WG_SOCKET_DIR, wg_socket
from vnet.runtime.control import ControlServer
from vnet.runtime.daemon import BATCH, Daemon
from vnet.wireguard.config import FileConfig
from vnet.wireguard.constants import DEFAULT_MTU, PADDING_MULTIPLE
from vnet.wireguard.device import Device
from vnet.wireguard.messages import TRANSPORT_MIN_SIZE
from vnet.wireguard.peer import Endpoint
from vnet.wireguard.uapi import SetRequest, UapiError, apply_set, format_get, parse_set

log = logging.getLogger("vnet.wg")

# a full routing table as one peer's allowed-ips (~130,000 prefixes) is ~3.4 MB of UAPI
# text, 10,000 peers ~2 MB: 32 MiB holds either many times over and still bounds a client
MAX_UAPI_REQUEST = 32 << 20
READ_BUFFER = 65536 + HDR_LEN  # one TUN super-packet or one UDP GRO run
# packets the kernel holds for us on the TUN: a TUN's default (500) is 8 ms of a 0.7 Gb/s
# UDP stream, and on a busy 2-core host the daemon may wait longer for a core. In make
# stress's no-loss run, 500 lost datagrams at the TUN in 1 run of 3, 1000 in 2 of 4, this
# in none of 4; TCP is not bloated by it (TCP small queues bound what a flow queues)
TUN_QUEUE = 4096
TEST_REKEY_VARIABLE = "VNET_WG_TEST_REKEY_AFTER_TIME"
TSO_TYPES = (VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6)
QUIET = 0.001  # seconds without TUN traffic after which a packet is sent alone
# peers with a session get a connected socket each (UdpBind.pin), up to this many (each
# is a file descriptor); the others' datagrams come through the wildcard socket
MAX_PINNED = 256
PIN_CHECK = 0.5  # seconds between looks at which peers need one
# datagrams read from the wildcard socket per wake while peers have their own sockets:
# there, only handshakes from new or roaming peers arrive, and any flood
WILDCARD_BUDGET = 16
# UDP receives (GRO runs) per wake before the loop turns to the TUN. Each run written to
# the TUN makes the inner TCP answer with an ACK, which waits in the TUN meanwhile, and a
# TCP sender held by its send buffer (one stream) waits for those ACKs. In make bench's
# one stream: 6 to 16 runs a wake gave 4.3-4.5 Gb/s, 32 3.9-4.0, 4 4.2 at more CPU for
# the extra wake-ups. Four streams ran alike with 8 and 256.
RECEIVE_BUDGET = 8
MAX_ROUTES = 1024  # endpoints whose send address and source are kept ready


def _normalize(
    addr: tuple[str, int] | tuple[str, int, int, int], local: udp.Local | None = None
) -> Endpoint:
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    if local is None:
        return Endpoint(host, int(addr[1]))
    return Endpoint(host, int(addr[1]), *local)


class UdpBind(udp.UdpSocket):
    """The UDP socket: dual-stack IPv6 where the kernel allows it, IPv4 otherwise. Its
    errors are UAPI errors: a `wg set listen-port` that cannot bind answers EADDRINUSE."""

    def __init__(self, port: int, fwmark: int = 0, offload: bool = False) -> None:
        try:
            sock = udp.open_socket(port, dual_stack=True)
        except KernelError as e:
            raise UapiError(str(e), e.errno or errno.EIO) from None
        super().__init__(sock, offload)
        udp.enable_pktinfo(sock)  # replies leave from the address the peer wrote to
        self.port = int(sock.getsockname()[1])
        self.offload = offload
        try:
            self.set_fwmark(fwmark)
            udp.share_port(sock)
        except (UapiError, OSError):
            sock.close()
            raise

    def pin(self, endpoint: Endpoint) -> udp.UdpSocket:
        """A socket of its own for what ``endpoint`` sends us (OSError if refused): a
        flood at the port then fills the wildcard socket's queue, not the peer's."""
        sock = udp.open_connected(self.sock, self.address(endpoint))
        udp.enable_pktinfo(sock)
        return udp.UdpSocket(sock, self.offload)

    def set_fwmark(self, mark: int) -> None:
        try:
            udp.set_fwmark(self.sock, mark)
        except KernelError as e:
            raise UapiError(str(e), errno.EPERM) from None

    def address(self, endpoint: Endpoint) -> tuple[str, int]:
        host = endpoint.host
        if self.family == socket.AF_INET6 and ":" not in host:
            host = "::ffff:" + host
        return host, endpoint.port

    def control(self, endpoint: Endpoint) -> udp.Control:
        """How a send to ``endpoint`` leaves from the address of ours it wrote to."""
        if not endpoint.local or (self.family == socket.AF_INET and ":" in endpoint.local):
            return ()
        return udp.source_control(self.family, endpoint.local, endpoint.ifindex)


class TunPort(Protocol):
    """What the loop needs of the TUN (a TunDevice; tests pass fakes)."""

    def fileno(self) -> int: ...
    def readinto(self, buffer: bytearray) -> int: ...
    def writev(self, parts: Sequence[bytes]) -> int: ...
    def close(self) -> None: ...


class WgDaemon(Daemon):
    """vnet-wg: ``start()`` creates the TUN IFNAME, binds UDP and the UAPI socket (all
    undone if any step fails); ``run()`` serves them until SIGTERM, ``stop()`` or the
    interface's removal; ``close()`` removes the socket and, by closing it, the TUN."""

    def __init__(
        self,
        ifname: str,
        *,
        config: FileConfig | None = None,
        metrics: str | None = None,
        offload: bool = True,
        socket_dir: str = WG_SOCKET_DIR,
        forwarding: bool = False,
        capture: PcapWriter | None = None,
        capture_outer: PcapWriter | None = None,
    ) -> None:
        validate_ifname(ifname)
        if not ifname:
            raise ConfigError("an interface name is required")
        super().__init__(ifname, log)
        self.ifname = ifname
        self.config = config
        self.metrics = metrics
        self.offload = offload
        # a router's TUN (the overlay's flannel-wg) takes super-packets built for other
        # links: limiting its GSO segments would make the kernel cut those in software
        self.forwarding = forwarding
        # the inner packets both ways (what the TUN reads and writes), when asked for
        self.capture = capture
        # and the encrypted datagrams both ways, with their IP and UDP headers
        self.capture_outer = capture_outer
        for writer in (capture, capture_outer):
            if writer is not None:
                self.on_close(writer.close)
        self.tso = False
        self.device = Device(mtu=config.mtu if config and config.mtu else DEFAULT_MTU)
        test_rekey = os.environ.get(TEST_REKEY_VARIABLE)
        if test_rekey:  # soak tests only: many rekeys in minutes; never set by vnet itself
            try:
                self.device.rekey_after_time = float(test_rekey)
            except ValueError:
                raise ConfigError(f"{TEST_REKEY_VARIABLE}={test_rekey!r} is not seconds") from None
            log.warning("%s: test option: rekeying every %s s", ifname, test_rekey)
        self.device.wall_offset = time.time() - time.monotonic()
        self.tun: TunPort | None = None
        self.bind: UdpBind | None = None
        self.uapi_path = wg_socket(ifname, socket_dir)
        self.uapi = ControlServer(
            self,
            self.uapi_path,
            self._uapi_request,
            terminator=b"\n\n",
            max_request=MAX_UAPI_REQUEST,
            what=f"another daemon serves interface {ifname}",
        )
        self._tun_buffer = bytearray(READ_BUFFER)
        self._tun_last_read = 0.0  # monotonic time of the last TUN readiness
        self._udp_last_read = 0.0  # and of the UDP socket's
        self._udp_buffer = bytearray(READ_BUFFER)
        self._pinned: dict[tuple[str, int], udp.UdpSocket] = {}
        # an idle ping's hops go the latency path (Device.send_one, receive_one), unless
        # a capture wants to see what passes
        self._latency_path = capture is None and capture_outer is None
        # endpoint -> (socket address, ancillary data) for a send; and back: (source,
        # our address it arrived at) -> endpoint. Both bounded (MAX_ROUTES), so that
        # a datagram's hop costs two dict look-ups, not string work
        self._routes: dict[Endpoint, tuple[tuple[str, int], udp.Control]] = {}
        self._sources: dict[tuple[object, udp.Local | None], Endpoint] = {}
        self._next_pin_check = 0.0
        self._pin_refused = False  # logged once
        self.packets_written = 0
        self.write_errors = 0
        self.tun_errors = 0

    # --- setup / teardown ---------------------------------------------------------

    def open(self) -> None:
        self.uapi.claim()
        tun, self.tso = self.open_tun(self.ifname, self.offload)
        self.tun = tun  # closed by close() from here on
        with Netlink() as nl:
            nl.set_mtu(tun.name, self.device.mtu)
            nl.set_txqueuelen(tun.name, TUN_QUEUE)
            if self.tso and not self.forwarding:
                self._limit_super_packets(nl, tun.name)
            for address in self.config.addresses if self.config else []:
                nl.add_address(tun.name, address, nodad=True)
        self.attach(tun, UdpBind(0, offload=self.offload))
        if self.config is not None:
            self._apply(self.config.request, time.monotonic())
        self.uapi.listen()
        if self.metrics:
            self._start_metrics(self.metrics)

    def attach(self, tun: TunPort, bind: UdpBind) -> None:
        """Serve ``tun`` and ``bind`` from the loop (open() does this; tests pass fakes)."""
        self.tun = tun
        self.watch(tun.fileno(), self._read_tun)
        self._use_bind(bind)

    def _use_bind(self, bind: UdpBind) -> None:
        if self.bind is not None:
            self._unpin_all()  # bound to the old port
            self._next_pin_check = 0.0  # the peers get new ones as they write to the new
            self.unwatch(self.bind.fileno())
            self.bind.close()
        self.bind = bind
        self._routes.clear()  # addresses are written for the socket's family
        self.device.listen_port = bind.port
        self.note_udp(bind)
        self.watch(bind.fileno(), self._read_udp)

    def _limit_super_packets(self, nl: Netlink, name: str) -> None:
        """Make one TSO super-packet fit one UDP GSO send (and so arrive as one GRO run):
        at MTU 1420, 44 datagrams of 1452 bytes; a larger one would go as 44 + a few."""
        segments = udp.segments_per_send(self.device.mtu + TRANSPORT_MIN_SIZE)
        try:
            nl.set_gso_max_segs(name, segments)
        except KernelError as e:
            log.info("%s: cannot limit TSO to %d segments: %s", self.ifname, segments, e)

    def _start_metrics(self, address: str) -> None:
        from prometheus_client import start_http_server
        from prometheus_client.core import REGISTRY

        from vnet.runtime.wg_metrics import WgCollector

        host, _, port_text = address.rpartition(":")
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(f"--metrics {address!r}: expected [HOST]:PORT") from None
        REGISTRY.register(WgCollector(self.ifname, self.device))
        try:
            start_http_server(port, addr=host or "127.0.0.1")
        except OSError as e:
            raise KernelError(f"cannot serve metrics on {address}: {e.strerror}", e.errno) from None

    def hand_over(self, uid: int) -> None:
        """Make ``uid`` the UDP socket's owner before the process becomes that user: the
        kernel lets only the port's owner add sockets to it (``UdpBind.pin``)."""
        if self.bind is not None:
            os.fchown(self.bind.fileno(), uid, -1)

    def close(self) -> None:
        self.uapi.close()
        self._unpin_all()
        if self.bind is not None:
            self.bind.close()
            self.bind = None
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        super().close()

    # --- the loop ---------------------------------------------------------------------

    def on_start(self) -> None:
        assert self.bind is not None
        log.info(
            "%s: up, listening on UDP port %d; offloads: %s; data path: %s",
            self.ifname,
            self.bind.port,
            self.offload_summary(),
            native.IMPLEMENTATION,
        )

    def next_deadline(self) -> float | None:
        return self.device.next_deadline()

    def deadline_source(self) -> Callable[[], float | None]:
        return self.device.timer_queue.next_deadline

    def on_timers(self, now: float) -> None:
        self.device.on_timers(now)
        self._flush()
        if now >= self._next_pin_check:
            self._pin_peers(now)

    def _read_tun(self, events: int) -> None:
        assert self.tun is not None
        now = time.monotonic()
        # a quiet spell: this fd unread for QUIET and nothing else ready. Busy with the
        # other direction, the loop may not look here for as long; the ACKs queued
        # meanwhile are then read together, not one a wake
        quiet = self.lone_event and now - self._tun_last_read > QUIET
        self._tun_last_read = now
        if quiet and self._latency_path:
            # after a quiet spell the next packet is most likely far off: one read, then
            # back to sleep at once, so that whatever this send woke (the peer's daemon
            # on this vCPU) runs now rather than after a read that fails
            self._read_tun_lone(now)
            return
        tun = self.tun
        buf = self._tun_buffer
        for i in range(BATCH):
            try:
                n = tun.readinto(buf)
            except BlockingIOError:
                break
            except KernelError as e:
                self._tun_failed(e)
                return
            self._tun_packet(n, now)
            if not i:
                self._flush()  # the first leaves at once; more single ones leave together
                if quiet:
                    return  # as above
        self._flush()

    def _read_tun_lone(self, now: float) -> None:
        """One read, and a complete packet sealed and sent at once where the core can
        (``Device.send_one``); anything else goes the general way."""
        assert self.tun is not None
        buf = self._tun_buffer
        try:
            n = self.tun.readinto(buf)
        except BlockingIOError:
            return
        except KernelError as e:
            self._tun_failed(e)
            return
        packet = self._complete_packet(n)
        if packet is not None:
            ready = self.device.send_one(packet, now)
            if ready is None:
                self.device.on_tun_packet(packet, now)
            elif self._send_one(*ready):
                return
            else:
                self.device.outbox(*ready)  # refused: the general send retries it
        else:
            self._tun_offloaded(n, now)
        self._flush()

    def _tun_failed(self, e: KernelError) -> None:
        if e.errno in (errno.EBADFD, errno.EIO, errno.ENODEV):
            log.info("%s: the interface was removed", self.ifname)
            self.running = False
            return
        raise e

    def _complete_packet(self, n: int) -> bytes | None:
        """The packet of the ``n`` bytes read from the TUN when it is complete as it is
        (with offloads: flags and gso_type zero, a ping: nothing to decode); else None."""
        buf = self._tun_buffer
        if not self.offload:
            return bytes(memoryview(buf)[:n])
        if n > HDR_LEN and not buf[0] and not buf[1]:
            return bytes(memoryview(buf)[HDR_LEN:n])
        return None

    def _tun_packet(self, n: int, now: float) -> None:
        """The ``n`` bytes read from the TUN into its buffer, to the core."""
        if self.capture is not None:
            view = memoryview(self._tun_buffer)
            self.capture.write(view[HDR_LEN:n] if self.offload else view[:n])
        complete = self._complete_packet(n)
        if complete is not None:
            self.device.on_tun_packet(complete, now)
            return
        self._tun_offloaded(n, now)

    def _tun_offloaded(self, n: int, now: float) -> None:
        """The ``n`` bytes read from the TUN when they are not a complete packet (their
        virtio_net_hdr asks for segmentation or a checksum, or they are too short for
        one), to the core."""
        view = memoryview(self._tun_buffer)
        device = self.device
        try:
            hdr, packet = VirtioNetHdr.decode(view[:n])
            if hdr.gso:
                # split and sealed in one native call; else split into rows here
                tcp = hdr.gso_type & ~VIRTIO_NET_HDR_GSO_ECN
                if tcp not in TSO_TYPES or not device.on_tun_super(
                    packet, tcp == VIRTIO_NET_HDR_GSO_TCPV4, hdr.gso_size, now
                ):
                    rows = gso.split_rows(hdr, packet, PADDING_MULTIPLE)
                    device.on_tun_segments(rows, now)
                self._flush()  # one super-packet: one GSO send
                return
            # one packet with a partial checksum (an ACK): finished here
            device.on_tun_packet(gso.finished(hdr, packet), now)
        except PacketError as e:
            self.tun_errors += 1
            log.debug("%s: dropped a TUN packet: %s", self.ifname, e)

    def _read_udp(self, events: int) -> None:
        """The wildcard socket: every peer's datagrams until it has a socket of its own,
        then handshakes from new or roaming peers, and whatever else reaches the port."""
        bind = self.bind
        assert bind is not None
        budget = WILDCARD_BUDGET if self._pinned else RECEIVE_BUDGET
        now = self._receive(bind.sock, bind.gro, budget)
        if now >= self._next_pin_check:
            self._pin_peers(now)

    def _receive(self, sock: socket.socket, gro_on: bool, budget: int) -> float:
        now = time.monotonic()
        quiet = self.lone_event and now - self._udp_last_read > QUIET  # as in _read_tun
        self._udp_last_read = now
        if quiet and self._latency_path:
            # a lone datagram after a quiet spell (an idle ping's hop): back to the loop
            # after it rather than to a receive that would likely fail - what its TUN
            # write caused (the kernel's answer to a ping) is in the TUN queue already
            # and waits for that loop. In a stream (or a flood) the reads go on.
            self._receive_lone(sock, gro_on, now)
            return now
        device = self.device
        buf = self._udp_buffer
        view = memoryview(buf)
        for _ in range(budget):
            try:
                # several datagrams at once with GRO
                n, size, addr, local = udp.recv_into(sock, buf)
            except BlockingIOError:
                break
            except OSError as e:  # ICMP errors surface here (ECONNREFUSED): nothing to do
                log.debug("udp receive: %s", e.strerror)
                continue
            source = self._source(addr, local)
            if self.capture_outer is not None:
                self._capture_received(view[:n], size, source)
            if gro_on:
                device.on_datagram_run(view[:n], size, source, now)
                self._flush()  # one GRO run: one coalesced TUN write
                if not size and quiet:
                    return now  # as above
            else:
                device.on_datagram(bytes(view[:n]), source, now)
        self._flush()
        return now

    def _receive_lone(self, sock: socket.socket, gro_on: bool, now: float) -> None:
        """One receive, and a datagram of transport data opened and written at once where
        the core can (``Device.receive_one``); anything else goes the general way."""
        buf = self._udp_buffer
        try:
            n, size, addr, local = udp.recv_into(sock, buf)
        except BlockingIOError:
            return
        except OSError as e:
            log.debug("udp receive: %s", e.strerror)
            return
        source = self._source(addr, local)
        device = self.device
        if not size:
            packet = device.receive_one(bytes(memoryview(buf)[:n]), source, now)
            if packet is not None:
                if packet:
                    self._write_one(packet)
                return
        if gro_on:
            device.on_datagram_run(memoryview(buf)[:n], size, source, now)
        else:
            device.on_datagram(bytes(memoryview(buf)[:n]), source, now)
        self._flush()

    def _source(
        self, addr: tuple[str, int] | tuple[str, int, int, int], local: udp.Local | None
    ) -> Endpoint:
        """The endpoint of a datagram from ``addr`` that arrived at ``local``, kept."""
        key = (addr, local)
        source = self._sources.get(key)
        if source is None:
            if len(self._sources) >= MAX_ROUTES:
                self._sources.clear()
            source = self._sources[key] = _normalize(addr, local)
        return source

    # --- the peers' own sockets -------------------------------------------------------

    def _pin_peers(self, now: float) -> None:
        """Give each peer with a session (up to MAX_PINNED) a socket of its own, and close
        those of peers that moved, lost their session or went."""
        self._next_pin_check = now + PIN_CHECK
        bind = self.bind
        if bind is None:
            return
        wanted: dict[tuple[str, int], Endpoint] = {}
        for peer in self.device.peers.values():
            end = peer.endpoint
            if end is not None and peer.current is not None and len(wanted) < MAX_PINNED:
                wanted[end.host, end.port] = end
        for key in [k for k in self._pinned if k not in wanted]:
            self._unpin(key)
        if self._pin_refused:
            return
        for key, endpoint in wanted.items():
            if key in self._pinned:
                continue
            try:
                pinned = bind.pin(endpoint)
            except OSError as e:
                # the peer's datagrams still arrive, through the wildcard socket
                if e.errno in (errno.EADDRINUSE, errno.EPERM, errno.EACCES):
                    # the port's owner is another user: it will stay so
                    log.info("%s: peers share the listening socket: %s", self.ifname, e.strerror)
                    self._pin_refused = True
                    return
                log.debug("%s: no socket of its own for %s: %s", self.ifname, key, e.strerror)
                continue
            self._pinned[key] = pinned
            self.watch(pinned.fileno(), self._reader(pinned))

    def _reader(self, pinned: udp.UdpSocket) -> Callable[[int], None]:
        sock, gro_on, receive = pinned.sock, pinned.gro, self._receive

        def read(events: int) -> None:
            receive(sock, gro_on, RECEIVE_BUDGET)

        return read

    def _unpin(self, key: tuple[str, int]) -> None:
        pinned = self._pinned.pop(key)
        self.unwatch(pinned.fileno())
        pinned.close()

    def _unpin_all(self) -> None:
        for key in list(self._pinned):
            self._unpin(key)

    def _flush(self) -> None:
        outputs = self.device.runs_to_send()
        if outputs:
            if self.capture_outer is not None:
                self._capture_sent(outputs)
            self._send(outputs)
        deliveries = self.device.deliveries()
        if deliveries:
            self._write_tun(deliveries)

    def _send(self, outputs: list[tuple[bytes | bytearray, int, Endpoint]]) -> None:
        bind = self.bind
        assert bind is not None
        try:
            if len(outputs) == 1:  # one datagram or one run: nothing to group
                data, size, endpoint = outputs[0]
                if size >= len(data) and self._send_one(data, endpoint):
                    return
                if not bind.send_segments(
                    data, size, bind.address(endpoint), bind.control(endpoint)
                ):
                    self.device.source_gone(endpoint)
                return
            # single datagrams in a row to one endpoint go out together (as GSO runs
            # where they can); a run the core built goes out as it is
            for (endpoint, single), group in itertools.groupby(
                outputs, key=lambda o: (o[2], o[1] >= len(o[0]))
            ):
                address, control = bind.address(endpoint), bind.control(endpoint)
                if single:
                    kept = bind.send_datagrams([bytes(d) for d, _, _ in group], address, control)
                else:
                    kept = bind.send_runs(((d, size) for d, size, _ in group), address, control)
                if not kept:
                    self.device.source_gone(endpoint)
        except OSError as e:
            log.debug("udp send: %s", e.strerror)

    def _send_one(self, data: bytes | bytearray, endpoint: Endpoint) -> bool:
        """One datagram straight to the socket, its address and source taken from a
        cache (an idle ping's hop). False, nothing sent, when the kernel refuses: the
        general path then retries it and handles a source that is no longer ours."""
        bind = self.bind
        assert bind is not None
        route = self._routes.get(endpoint)
        if route is None:
            if len(self._routes) >= MAX_ROUTES:
                self._routes.clear()
            route = self._routes[endpoint] = (bind.address(endpoint), bind.control(endpoint))
        try:
            udp.send_one(bind.sock, data, *route)
        except OSError:
            return False
        return True

    def _capture_received(self, run: memoryview, size: int, source: Endpoint) -> None:
        assert self.bind is not None
        ours = (source.local, self.bind.port)
        self._capture_run(run, size, (source.host, source.port), ours)

    def _capture_sent(self, outputs: list[tuple[bytes | bytearray, int, Endpoint]]) -> None:
        assert self.bind is not None
        for data, size, endpoint in outputs:
            ours = (endpoint.local, self.bind.port)
            self._capture_run(data, size, ours, (endpoint.host, endpoint.port))

    def _capture_run(
        self,
        run: bytes | bytearray | memoryview,
        size: int,
        source: tuple[str, int],
        destination: tuple[str, int],
    ) -> None:
        """Each datagram of a run (``size`` bytes each; 0: one) into the outer capture."""
        assert self.capture_outer is not None
        step = size or len(run)
        for i in range(0, len(run), step):
            self.capture_outer.write(udp_packet(run[i : i + step], source, destination))

    def _write_tun(self, deliveries: list[bytes | PacketRows]) -> None:
        tun = self.tun
        assert tun is not None
        writes: list[tuple[bytes, ...]] = []  # each written as one packet (writev)
        packets: list[bytes] = []  # single packets in a row: coalesced together
        for item in deliveries:
            if isinstance(item, bytes):
                packets.append(item)
                continue
            if packets:
                writes += self._coalesced(packets)
                packets = []
            if self.offload:
                writes += gro.coalesce_rows(item)
            else:
                writes += [(packet,) for packet in item.packets()]
        writes += self._coalesced(packets)
        if self.capture is not None:
            for parts in writes:
                self.capture.write(b"".join(parts[1:]) if self.offload else parts[0])
        for parts in writes:
            try:
                tun.writev(parts)
                self.packets_written += 1
            except BlockingIOError:
                self.write_errors += 1
            except KernelError:
                self.write_errors += 1  # e.g. EIO while the link is down

    def _write_one(self, packet: bytes) -> None:
        """One packet to the TUN, as ``_write_tun`` writes it, without its grouping."""
        assert self.tun is not None
        try:
            self.tun.writev((EMPTY_HDR, packet) if self.offload else (packet,))
            self.packets_written += 1
        except (BlockingIOError, KernelError):
            self.write_errors += 1

    def _coalesced(self, packets: list[bytes]) -> list[tuple[bytes, ...]]:
        if not self.offload:
            return [(packet,) for packet in packets]
        return list(gro.coalesce(packets))

    # --- UAPI -------------------------------------------------------------------------------

    def _uapi_request(self, request: bytes) -> bytes:
        return self.handle_uapi(request.decode(errors="replace")).encode()

    def handle_uapi(self, request: str) -> str:
        lines = request.split("\n")
        op = lines[0]
        if op == "get=1":
            return format_get(self.device) + "errno=0\n\n"
        if op == "set=1":
            try:
                self._apply(parse_set(lines[1:]), time.monotonic())
            except UapiError as e:
                log.warning("%s: uapi set refused: %s", self.ifname, e)
                return f"errno={e.errno}\n\n"
            except Exception:
                # not the client's mistake but ours: logged with its traceback, answered
                # as an I/O error, and the daemon goes on serving its peers
                log.exception("%s: uapi set failed", self.ifname)
                return f"errno={errno.EIO}\n\n"
            return "errno=0\n\n"
        log.warning("%s: unknown uapi operation %r", self.ifname, op[:40])
        return f"errno={errno.EINVAL}\n\n"

    def _apply(self, req: SetRequest, now: float) -> None:
        """Bind a new port and set the fwmark (either can fail) before changing anything
        else; a failure leaves the device as it was."""
        assert self.bind is not None
        new_bind = None
        try:
            if req.listen_port not in (None, 0, self.bind.port):
                assert req.listen_port is not None
                new_bind = UdpBind(req.listen_port, self.device.fwmark, offload=self.offload)
            if req.fwmark is not None:
                (new_bind or self.bind).set_fwmark(req.fwmark)
        except UapiError:
            if new_bind is not None:
                new_bind.close()
            raise
        if new_bind is not None:
            self._use_bind(new_bind)
        try:
            apply_set(self.device, req, now)
        except ProtocolError as e:
            raise UapiError(str(e)) from None
        self.device.listen_port = self.bind.port  # 0 in a request keeps the bound port
        self._flush()
