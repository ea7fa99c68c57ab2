"""The vnet-wg daemon: binds the WireGuard core to a TUN, a UDP socket and the UAPI socket.

One thread, one epoll. The UAPI socket follows wireguard-go's conventions
(/var/run/wireguard/IFNAME.sock, 0600 in a 0755 directory) so `wg` and
`wg-quick` drive vnet-wg unchanged.

Latency: a packet after a quiet spell meets a cold CPU (caches and TLB emptied
while the vCPU slept; one Python call then costs microseconds, not tens of
nanoseconds), so the path from a wake-up to the send touches as little code as
it can: epoll without the selectors layer, complete packets passed on without
decoding their virtio_net_hdr, the first packet of a wake sent before looking
for more, and one datagram sent without the grouping of the batch path.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import itertools
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from types import FrameType

from vnet.errors import ConfigError, KernelError, PacketError, ProtocolError
from vnet.kernel import udp, unixsock
from vnet.kernel.netlink import Netlink
from vnet.kernel.tun import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, Mode, TunDevice, validate_ifname
from vnet.packet import gro, gso
from vnet.packet.rows import PacketRows
from vnet.packet.virtio import HDR_LEN, VirtioNetHdr
from vnet.runtime.wakeup import Wakeup
from vnet.wireguard.config import FileConfig
from vnet.wireguard.constants import DEFAULT_MTU, PADDING_MULTIPLE
from vnet.wireguard.device import Device
from vnet.wireguard.messages import TRANSPORT_MIN_SIZE
from vnet.wireguard.peer import Endpoint
from vnet.wireguard.uapi import SetRequest, UapiError, apply_set, format_get, parse_set

log = logging.getLogger("vnet.wg")

SOCKET_DIR = "/var/run/wireguard"
SO_MARK = 36
SO_SNDBUFFORCE = 32  # asm-generic/socket.h; Python's socket module lacks these two
SO_RCVBUFFORCE = 33
BATCH = 256  # datagrams or packets handled per readiness event before looking around
SOCKET_BUFFER = 4 << 20
MAX_UAPI_REQUEST = 1 << 20
READ_BUFFER = 65536 + HDR_LEN  # one TUN super-packet or one UDP GRO run
QUIET = 0.001  # seconds without TUN traffic after which a packet is sent alone


def socket_path(ifname: str) -> str:
    return os.path.join(SOCKET_DIR, f"{ifname}.sock")


def _normalize(addr: tuple[str, int] | tuple[str, int, int, int]) -> Endpoint:
    host = addr[0]
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, int(addr[1])


class UdpBind:
    """The UDP socket: dual-stack IPv6 where the kernel allows it, IPv4 otherwise."""

    def __init__(self, port: int, fwmark: int = 0, offload: bool = False) -> None:
        self.sock = self._open(port)
        self.port = int(self.sock.getsockname()[1])
        self.set_fwmark(fwmark)
        self.gso = offload and udp.gso_supported(self.sock)
        self.gro = offload and udp.enable_gro(self.sock)

    @staticmethod
    def _open(port: int) -> socket.socket:
        try:
            sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            address: tuple[str, int] = ("::", port)
        except OSError:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            address = ("0.0.0.0", port)
        try:
            sock.bind(address)
        except OSError as e:
            sock.close()
            if e.errno == errno.EADDRINUSE:
                raise UapiError(f"UDP port {port} is in use", errno.EADDRINUSE) from None
            raise UapiError(f"cannot bind UDP port {port}: {e.strerror}", errno.EIO) from None
        # the *FORCE variants pass net.core.[rw]mem_max (we hold CAP_NET_ADMIN); a burst of
        # GRO/GSO-sized datagrams overflows the default ~200 KiB and costs TCP retransmits
        for force, plain in (
            (SO_RCVBUFFORCE, socket.SO_RCVBUF),
            (SO_SNDBUFFORCE, socket.SO_SNDBUF),
        ):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
            except OSError:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)
        sock.setblocking(False)
        return sock

    @property
    def family(self) -> int:
        return int(self.sock.family)

    def set_fwmark(self, mark: int) -> None:
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        except OSError as e:
            if mark:
                raise UapiError(f"cannot set fwmark: {e.strerror}", errno.EPERM) from None

    def address(self, endpoint: Endpoint) -> tuple[str, int]:
        host, port = endpoint
        if self.family == socket.AF_INET6 and ":" not in host:
            host = "::ffff:" + host
        return host, port

    def close(self) -> None:
        self.sock.close()


def send_segments(
    bind: UdpBind, data: bytes | bytearray, size: int, address: tuple[str, int]
) -> None:
    """Datagrams of ``size`` bytes back to back (the last may be shorter): GSO sends where
    on, one datagram per call otherwise or once refused."""
    try:
        if len(data) <= size:  # one datagram
            bind.sock.sendto(data, address)
            return
        for chunk in udp.gso_chunks(data, size):
            if bind.gso:
                try:
                    udp.send_gso(bind.sock, chunk, size, address)
                    continue
                except udp.GsoUnsupportedError as e:
                    log.info("UDP GSO refused (%s): sending one datagram per call", e.strerror)
                    bind.gso = False
            for start in range(0, len(chunk), size):
                bind.sock.sendto(chunk[start : start + size], address)
    except OSError as e:
        log.debug("udp send to %s: %s", address, e.strerror)


def send_datagrams(bind: UdpBind, datagrams: list[bytes], address: tuple[str, int]) -> None:
    """Send to one address: each GSO-able run (equal sizes, a shorter last) as segments."""
    for run in udp.runs(datagrams):
        send_segments(bind, run[0] if len(run) == 1 else b"".join(run), len(run[0]), address)


class UapiConnection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""


class WgDaemon:
    def __init__(
        self,
        ifname: str,
        *,
        config: FileConfig | None = None,
        metrics: str | None = None,
        offload: bool = True,
    ) -> None:
        validate_ifname(ifname)
        if not ifname:
            raise ConfigError("an interface name is required")
        self.ifname = ifname
        self.config = config
        self.metrics = metrics
        self.offload = offload
        self.tso = False
        self.device = Device(mtu=config.mtu if config and config.mtu else DEFAULT_MTU)
        self.device.wall_offset = time.time() - time.monotonic()
        self._poll = select.epoll()
        self._handlers: dict[int, Callable[[], None]] = {}  # fd -> what reads it
        self.tun: TunDevice | None = None
        self.bind: UdpBind | None = None
        self.uapi: socket.socket | None = None
        self.uapi_path = socket_path(ifname)
        self._running = False
        self._wakeup = Wakeup()
        self._tun_buffer = bytearray(READ_BUFFER)
        self._tun_last_read = 0.0  # monotonic time of the last TUN readiness
        self._udp_buffer = bytearray(READ_BUFFER)
        self.packets_written = 0
        self.write_errors = 0
        self.tun_errors = 0

    # --- setup / teardown ---------------------------------------------------------

    def start(self) -> None:
        """Create everything; on any failure undo what was made and raise."""
        try:
            self._claim_socket_path()
            self.tun = TunDevice(self.ifname, Mode.TUN, nonblocking=True, vnet_hdr=self.offload)
            if self.offload:
                try:
                    self.tun.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
                    self.tso = True
                except KernelError as e:
                    log.info(
                        "%s: TUN TSO unavailable, segments come one by one: %s", self.ifname, e
                    )
            with Netlink() as nl:
                nl.set_mtu(self.tun.name, self.device.mtu)
                if self.tso:
                    self._limit_super_packets(nl, self.tun.name)
                for address in self.config.addresses if self.config else []:
                    nl.add_address(self.tun.name, address, nodad=True)
            self.bind = UdpBind(0, offload=self.offload)
            self.device.listen_port = self.bind.port
            if self.config is not None:
                self._apply(self.config.request, time.monotonic())
            self._listen_uapi()
            if self.metrics:
                self._start_metrics(self.metrics)
        except BaseException:
            self.close()
            raise

    def _limit_super_packets(self, nl: Netlink, name: str) -> None:
        """Make one TSO super-packet fit one UDP GSO send (and so arrive as one GRO run):
        at MTU 1420, 44 datagrams of 1452 bytes; a larger one would go as 44 + a few."""
        segments = udp.segments_per_send(self.device.mtu + TRANSPORT_MIN_SIZE)
        try:
            nl.set_gso_max_segs(name, segments)
        except KernelError as e:
            log.info("%s: cannot limit TSO to %d segments: %s", self.ifname, segments, e)

    def _claim_socket_path(self) -> None:
        unixsock.claim(self.uapi_path, f"another daemon serves interface {self.ifname}")

    def _listen_uapi(self) -> None:
        self.uapi = unixsock.listen(self.uapi_path)

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

    def close(self) -> None:
        if self.uapi is not None:
            unixsock.remove(self.uapi, self.uapi_path)
            self.uapi = None
        if self.bind is not None:
            self.bind.close()
            self.bind = None
        if self.tun is not None:
            self.tun.close()
            self.tun = None
        self._poll.close()
        self._handlers.clear()
        self._wakeup.close()

    # --- the loop ---------------------------------------------------------------------

    def _watch(self, fd: int, handler: Callable[[], None]) -> None:
        self._poll.register(fd, select.EPOLLIN)
        self._handlers[fd] = handler

    def _unwatch(self, fd: int) -> None:
        """Before the fd is closed (a closed socket's fileno() is -1)."""
        with contextlib.suppress(OSError, ValueError):
            self._poll.unregister(fd)
        self._handlers.pop(fd, None)

    def stop(self) -> None:
        self._running = False
        self._wakeup.set()

    def run(self, ready: Callable[[], None] | None = None) -> None:
        assert self.tun is not None and self.bind is not None and self.uapi is not None
        self._watch(self.tun.fileno(), self._read_tun)
        self._watch(self.bind.sock.fileno(), self._read_udp)
        self._watch(self.uapi.fileno(), self._accept)
        self._watch(self._wakeup.fileno(), self._wakeup.clear)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self._running = True
        log.info(
            "%s: up, listening on UDP port %d; offloads: %s",
            self.ifname,
            self.bind.port,
            self.offload_summary(),
        )
        if ready is not None:
            ready()
        # what start-up made lives as long as the daemon: out of the collector's sight,
        # so that a collection on the packet path walks only what packets made
        gc.freeze()
        poll = self._poll.poll
        handlers = self._handlers
        device = self.device
        try:
            while self._running:
                deadline = device.next_deadline()
                timeout = 1.0 if deadline is None else deadline - time.monotonic()
                for fd, _ in poll(min(1.0, max(0.0, timeout))):
                    on_ready = handlers.get(fd)  # None: unwatched by an earlier handler
                    if on_ready is not None:
                        on_ready()
                    if not self._running:
                        break
                # handlers flush what they produce; timers run only when one is due (a
                # timer set meanwhile is a second or more away, and the next deadline
                # counts it)
                if deadline is not None:
                    now = time.monotonic()
                    if now >= deadline:
                        device.on_timers(now)
                        self._flush()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            log.info("%s: shutting down", self.ifname)

    def offload_summary(self) -> str:
        bind = self.bind
        parts = [
            f"tun vnet_hdr {'on' if self.offload else 'off'}",
            f"tun tso {'on' if self.tso else 'off'}",
            f"udp gso {'on' if bind and bind.gso else 'off'}",
            f"udp gro {'on' if bind and bind.gro else 'off'}",
        ]
        return ", ".join(parts)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop()

    def _read_tun(self) -> None:
        assert self.tun is not None
        now = time.monotonic()
        tun = self.tun
        device = self.device
        quiet = now - self._tun_last_read > QUIET
        self._tun_last_read = now
        buf = self._tun_buffer
        view = memoryview(buf)
        for i in range(BATCH):
            try:
                n = tun.readinto(buf)
            except BlockingIOError:
                break
            except KernelError as e:
                if e.errno in (errno.EBADFD, errno.EIO, errno.ENODEV):
                    log.info("%s: the interface was removed", self.ifname)
                    self._running = False
                    return
                raise
            if not self.offload:
                device.on_tun_packet(bytes(view[:n]), now)
            elif n > HDR_LEN and not buf[0] and not buf[1]:
                # flags and gso_type zero: a complete packet (a ping), nothing to decode
                device.on_tun_packet(bytes(view[HDR_LEN:n]), now)
            else:
                try:
                    hdr, packet = VirtioNetHdr.decode(view[:n])
                    if hdr.gso:
                        device.on_tun_segments(gso.split_rows(hdr, packet, PADDING_MULTIPLE), now)
                        self._flush()  # one super-packet: one GSO send
                        continue
                    # one packet with a partial checksum (an ACK): finished here
                    device.on_tun_packet(gso.finished(hdr, packet), now)
                except PacketError as e:
                    self.tun_errors += 1
                    log.debug("%s: dropped a TUN packet: %s", self.ifname, e)
                    continue
            if not i:
                self._flush()  # the first leaves at once; more single ones leave together
                if quiet:
                    # after a quiet spell the next packet is most likely far off: back to
                    # sleep at once, so that whatever this send woke (the peer's daemon
                    # on this vCPU) runs now rather than after a read that fails
                    return
        self._flush()

    def _read_udp(self) -> None:
        assert self.bind is not None
        sock = self.bind.sock
        gro_on = self.bind.gro
        now = time.monotonic()
        device = self.device
        buf = self._udp_buffer
        view = memoryview(buf)
        for _ in range(BATCH):
            try:
                if gro_on:
                    n, size, addr = udp.recv_into(sock, buf)  # several datagrams at once
                else:
                    data, addr = sock.recvfrom(READ_BUFFER)
            except BlockingIOError:
                break
            except OSError as e:  # ICMP errors surface here (ECONNREFUSED): nothing to do
                log.debug("udp receive: %s", e.strerror)
                continue
            source = _normalize(addr)
            if gro_on:
                device.on_datagram_run(view[:n], size, source, now)
                self._flush()  # one GRO run: one coalesced TUN write
                if not size:
                    # a lone datagram: back to the loop rather than to a receive that
                    # would likely fail - what the TUN write caused (the kernel's answer to
                    # a ping) is in the TUN queue already and waits for that loop
                    return
            else:
                device.on_datagram(data, source, now)
        self._flush()

    def _flush(self) -> None:
        outputs = self.device.runs_to_send()
        if outputs:
            self._send(outputs)
        deliveries = self.device.deliveries()
        if deliveries:
            self._write_tun(deliveries)

    def _send(self, outputs: list[tuple[bytes | bytearray, int, Endpoint]]) -> None:
        bind = self.bind
        assert bind is not None
        if len(outputs) == 1:  # one datagram or one run: nothing to group
            data, size, endpoint = outputs[0]
            send_segments(bind, data, size, bind.address(endpoint))
            return
        # single datagrams in a row to one address go out together (as GSO runs where
        # they can); a run the core built goes out as it is
        for (address, single), group in itertools.groupby(
            outputs, key=lambda o: (bind.address(o[2]), o[1] >= len(o[0]))
        ):
            if single:
                send_datagrams(bind, [bytes(data) for data, _, _ in group], address)
            else:
                for data, size, _ in group:
                    send_segments(bind, data, size, address)

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
        for parts in writes:
            try:
                tun.writev(parts)
                self.packets_written += 1
            except BlockingIOError:
                self.write_errors += 1
            except KernelError:
                self.write_errors += 1  # e.g. EIO while the link is down

    def _coalesced(self, packets: list[bytes]) -> list[tuple[bytes, ...]]:
        if not self.offload:
            return [(packet,) for packet in packets]
        return list(gro.coalesce(packets))

    # --- UAPI -------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.uapi is not None
        try:
            conn, _ = self.uapi.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        self._watch(conn.fileno(), functools.partial(self._serve, UapiConnection(conn)))

    def _serve(self, conn: UapiConnection) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(conn)
            return
        conn.buffer += chunk
        if len(conn.buffer) > MAX_UAPI_REQUEST:
            self._drop(conn)
            return
        while b"\n\n" in conn.buffer:
            request, conn.buffer = conn.buffer.split(b"\n\n", 1)
            reply = self.handle_uapi(request.decode(errors="replace"))
            try:
                conn.sock.setblocking(True)
                conn.sock.settimeout(2.0)
                conn.sock.sendall(reply.encode())
                conn.sock.setblocking(False)
            except OSError:
                self._drop(conn)
                return

    def _drop(self, conn: UapiConnection) -> None:
        self._unwatch(conn.sock.fileno())
        conn.sock.close()

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
            return "errno=0\n\n"
        log.warning("%s: unknown uapi operation %r", self.ifname, op[:40])
        return f"errno={errno.EINVAL}\n\n"

    def _apply(self, req: SetRequest, now: float) -> None:
        """Bind a new port (which can fail) before changing anything else."""
        assert self.bind is not None
        new_bind = None
        if req.listen_port not in (None, 0, self.bind.port):
            assert req.listen_port is not None
            new_bind = UdpBind(req.listen_port, self.device.fwmark, offload=self.offload)
        if req.fwmark is not None:
            (new_bind or self.bind).set_fwmark(req.fwmark)
        if new_bind is not None:
            self._unwatch(self.bind.sock.fileno())
            self.bind.close()
            self.bind = new_bind
            if self._running:
                self._watch(new_bind.sock.fileno(), self._read_udp)
        try:
            apply_set(self.device, req, now)
        except ProtocolError as e:
            raise UapiError(str(e)) from None
        self.device.listen_port = self.bind.port
        self._flush()
