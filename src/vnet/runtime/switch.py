"""The `vnet switch` daemon: the switch core (``vnet.switch.core.Switch``) bound to TAP
ports, AF_PACKET ports and a VXLAN UDP socket, on the daemon base.

In: frames read from each port (after a virtio_net_hdr on vnet_hdr ports), VXLAN
datagrams (GRO runs when on), control requests, and one timer (FDB ageing every
EXPIRE_EVERY seconds). Out: frames written to ports and VXLAN datagrams (a GSO send
per run).

Offloads (on unless ``offload: false``): TAPs and AF_PACKET ports carry a
virtio_net_hdr, so a guest's or the kernel's TSO super-frame (up to 64 KiB)
crosses the switch as one unit. It goes to a vnet_hdr port as it is, and is
cut into MTU frames (gso.split_frame) only for VXLAN or a plain port; VXLAN
datagrams go out with UDP GSO (one sendmsg per run) and come in with UDP GRO,
and TCP frames from VXLAN are merged again (gro.coalesce_frames) before the
TAP write.

A control socket (/run/vnet/switch/NAME.sock, 0600) answers ``fdb`` and
``stats`` with JSON, for `vnet switch fdb|stats NAME`. Shutdown closes every
TAP it created (the kernel removes them) and the sockets.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import select
import socket
import time
from dataclasses import asdict
from typing import Any, Protocol

from vnet.capture.writer import LINKTYPE_ETHERNET, PcapWriter
from vnet.errors import KernelError, PacketError
from vnet.kernel import afpacket, udp, unixsock
from vnet.kernel import gre as gre_socket
from vnet.kernel.netlink import Netlink
from vnet.kernel.tun import TSO_OFFLOADS, Mode, TunDevice
from vnet.packet import gre as gre_packet
from vnet.packet import gro
from vnet.packet.ethernet import ETH_HLEN, mac_str
from vnet.packet.virtio import EMPTY, HDR_LEN, VIRTIO_NET_HDR_F_NEEDS_CSUM, VirtioNetHdr, is_gso
from vnet.packet.vxlan import HEADER_LENGTH as VXLAN_HLEN
from vnet.paths import switch_socket
from vnet.runtime.control import ControlServer
from vnet.runtime.daemon import BATCH, Daemon
from vnet.switch import offload
from vnet.switch.config import SwitchSpec
from vnet.switch.core import GRE_PREFIX, MAX_FRAME, VXLAN_PREFIX, Frame, Output, Switch
from vnet.switch.fdb import Fdb

log = logging.getLogger("vnet.switch")

EXPIRE_EVERY = 10.0
# a port over its storm limit is read STORM_BUDGET frames at a time, then left alone for
# STORM_PAUSE seconds: the rest wait in the kernel's queue, which drops them cheaply when
# full, instead of costing a read each here (at most 16,000 reads a second of that port;
# its frames to known MACs, TSO super-frames among them, pass within that)
STORM_BUDGET = 16
STORM_PAUSE = 0.001
VXLAN_MTU = 1450  # 1500 minus outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14)
GRE_HLEN = gre_packet.header_length(key=0)  # keyed, as the switch's segments send
GRE_MTU = 1500 - 20 - GRE_HLEN - 14  # 1458: outer IPv4, keyed GRE, inner Ethernet
MAX_CONTROL_REQUEST = 256
PORT_READ = 65536 + HDR_LEN  # a super-frame of up to 64 KiB after its virtio_net_hdr


class Tap(Protocol):
    """What the daemon needs of a TAP (a TunDevice; tests pass fakes)."""

    def fileno(self) -> int: ...
    def readinto(self, buffer: bytearray | memoryview) -> int: ...
    def close(self) -> None: ...


class SwitchDaemon(Daemon):
    """vnet switch: ``start()`` creates the ports, the VXLAN socket and the control socket
    (all undone if any step fails); ``run()`` forwards until SIGTERM, ``stop()`` or a
    port's removal; ``close()`` closes the TAPs it created, which removes them."""

    def __init__(
        self, spec: SwitchSpec, control_path: str | None = None, capture: PcapWriter | None = None
    ) -> None:
        """``capture``: every frame every local port receives or is sent (as ``tcpdump
        -i any`` sees a bridge's ports), beside the ports' own ``pcap`` files."""
        super().__init__(spec.name, log)
        self.capture = capture
        # port -> the captures its frames go to (the switch's, its own): empty when none
        self.captures: dict[str, list[PcapWriter]] = {}
        if capture is not None:
            self.on_close(capture.close)
        self.spec = spec
        self.switch = Switch(Fdb(spec.ageing, spec.fdb_capacity), vxlan_port=spec.vxlan_port)
        self.taps: dict[str, Tap] = {}
        self.raw: dict[str, socket.socket] = {}
        self.vxlan: udp.UdpSocket | None = None
        self.vtep_sockets: list[udp.UdpSocket] = []  # one per static remote VTEP
        self.gre: socket.socket | None = None
        self._gre_buffer = bytearray(65536)
        self.vnet_ports: set[str] = set()  # ports whose reads and writes carry virtio_net_hdr
        self.control = ControlServer(
            self,
            control_path or switch_socket(spec.name),
            self._control_request,
            terminator=b"\n",
            max_request=MAX_CONTROL_REQUEST,
            what=f"switch {spec.name!r} is running",
        )
        self._next_expire = 0.0
        # a storming port (or the flooded wildcard VXLAN socket) -> (fd, resume at)
        self._paused: dict[str, tuple[int, float]] = {}
        self._vxlan_buffer = bytearray(65536)  # one UDP (GRO) receive
        # one read from a TAP or netdev port: a frame is handled in place and everything
        # sent on is copied or written before the next read (the core keeps no frame,
        # only MACs as bytes)
        self._port_buffer = memoryview(bytearray(PORT_READ))
        # single VXLAN datagrams held per VTEP while a TAP is read (None: each leaves at
        # once): a stream's ACKs then leave as one GSO send and arrive as one GRO run
        self._held: dict[tuple[str, int], list[bytes]] | None = None

    # --- setup / teardown ---------------------------------------------------------

    def open(self) -> None:
        """Create ports, socket and control socket (start() undoes all of it on failure)."""
        self.control.claim()
        default_limit = self.spec.storm_limit
        for seg in self.spec.segments:
            udp_port = self.spec.vxlan_port if seg.type == "vxlan" else 0
            remotes = [(r, udp_port) for r in seg.remotes]
            limit = default_limit if seg.storm_limit is None else seg.storm_limit
            self.switch.add_segment(seg.ident, seg.vlan, remotes, limit, seg.type)
        for port in self.spec.ports:
            limit = default_limit if port.storm_limit is None else port.storm_limit
            self.switch.add_port(port.name, port.mode, port.vlan, port.allowed, limit)
            self._open_captures(port.name, port.pcap)
            if port.kind == "netdev":
                self._open_netdev(port.name)
                continue
            mtu = port.mtu or self._tunnel_mtu()
            self._open_tap(port.name, port.netns, port.create, mtu)
        if self.spec.offload:
            self.offloads[f"vnet_hdr ({len(self.vnet_ports)}/{len(self.spec.ports)} ports)"] = True
        if "vxlan" in self.spec.tunnel_types:
            self._open_vxlan()
        if "gre" in self.spec.tunnel_types:
            self._open_gre()
        self.control.listen()

    def _open_captures(self, name: str, own: str | None) -> None:
        writers = [self.capture] if self.capture is not None else []
        if own is not None:
            writer = PcapWriter(own, LINKTYPE_ETHERNET)
            self.on_close(writer.close)
            writers.append(writer)
        if writers:
            self.captures[name] = writers

    def _tunnel_mtu(self) -> int | None:
        """A port's MTU when frames cross a tunnel: what fits a 1500-byte underlay."""
        kinds = self.spec.tunnel_types
        if "vxlan" in kinds:
            return VXLAN_MTU
        return GRE_MTU if kinds else None

    def add_tap(self, name: str, tap: Tap, vnet_hdr: bool = False) -> None:
        """Serve a TAP of port ``name`` from the loop (open() does this; tests pass fakes)."""
        self.taps[name] = tap
        if vnet_hdr:
            self.vnet_ports.add(name)
        self.watch(tap.fileno(), functools.partial(self._read_tap, name))

    def _open_tap(self, name: str, target_ns: str | None, create: bool, mtu: int | None) -> None:
        with Netlink() as nl:
            exists = nl.exists(name)
        if create and exists:
            raise KernelError(f"port {name!r}: a link of that name already exists")
        if not create and not exists:
            raise KernelError(f"port {name!r}: no such TAP to attach to")
        tap = TunDevice(name, Mode.TAP, nonblocking=True, vnet_hdr=self.spec.offload)
        self.add_tap(name, tap, self.spec.offload)
        if self.spec.offload:
            try:
                tap.set_offload(TSO_OFFLOADS)
            except KernelError as e:
                log.info("port %s: no TSO from the kernel (%s)", name, e)
        with Netlink() as nl:
            if mtu is not None:
                nl.set_mtu(name, mtu)
            if mtu is not None and self.spec.offload and "vxlan" in self.spec.tunnel_types:
                self._limit_super_frames(nl, name, mtu)
            nl.set_up(name)
            if target_ns is not None:
                nl.move_to_netns(name, target_ns)
        if target_ns is not None:
            with Netlink(target_ns) as nl:
                nl.set_up(name)

    @staticmethod
    def _limit_super_frames(nl: Netlink, name: str, mtu: int) -> None:
        """Make one TSO super-frame of a TAP fit one VXLAN GSO send, and so arrive as one
        GRO run and one merged write at the far end: at MTU 1450, 44 datagrams of 1472
        bytes; a larger one would go as two sends, two runs and two writes."""
        segments = udp.segments_per_send(VXLAN_HLEN + ETH_HLEN + mtu)
        try:
            nl.set_gso_max_segs(name, segments)
        except KernelError as e:
            log.info("port %s: cannot limit TSO to %d segments: %s", name, segments, e)

    def _open_netdev(self, name: str) -> None:
        """Attach to an existing interface (a VM's TAP held by QEMU, a veth) with AF_PACKET."""
        sock = afpacket.open_port(name)
        self.raw[name] = sock
        if self.spec.offload:
            try:
                afpacket.enable_vnet_hdr(sock)
                self.vnet_ports.add(name)
            except KernelError as e:
                log.info("port %s: %s", name, e)
        self.watch(sock.fileno(), functools.partial(self._read_netdev, name))
        with Netlink() as nl:
            nl.set_up(name)

    def _open_vxlan(self) -> None:
        # an oversized frame is better fragmented than silently dropped (EMSGSIZE)
        sock = udp.open_socket(self.spec.vxlan_port, self.spec.local, fragment=True)
        self.vxlan = udp.UdpSocket(sock, self.spec.offload)
        self.note_udp(self.vxlan)
        self.watch(sock.fileno(), self._read_vxlan)
        # each static remote VTEP's datagrams in a queue of their own, whatever its source
        # port (a Linux VTEP picks one per flow): a socket on the port connected to the
        # remote's address and port 0, which the kernel prefers to the wildcard socket; a
        # flood from elsewhere then fills only the wildcard's queue
        udp.share_port(sock)
        remotes = {r for seg in self.spec.segments if seg.type == "vxlan" for r in seg.remotes}
        for remote in sorted(remotes):
            if (":" in remote) != (sock.family == socket.AF_INET6):
                continue  # another family than the bound socket's: the wildcard takes it
            try:
                twin = udp.UdpSocket(udp.open_connected(sock, (remote, 0)), self.spec.offload)
            except OSError as e:
                log.info("VTEP %s shares the VXLAN socket: %s", remote, e.strerror)
                continue
            self.vtep_sockets.append(twin)
            self.watch(twin.fileno(), functools.partial(self._read_vtep, twin.sock))

    def _open_gre(self) -> None:
        """A raw IPv4 socket for GRE (IP protocol 47): it receives every GRE packet the
        host gets, IP header first; the kernel adds the IP header to what it sends."""
        self.gre = gre_socket.open_socket(self.spec.local)
        self.watch(self.gre.fileno(), self._read_gre)

    def close(self) -> None:
        self.control.close()
        if self.gre is not None:
            self.gre.close()
            self.gre = None
        for tap in self.taps.values():
            tap.close()
        self.taps.clear()
        for sock in self.raw.values():
            sock.close()
        self.raw.clear()
        for twin in self.vtep_sockets:
            twin.close()
        self.vtep_sockets.clear()
        if self.vxlan is not None:
            self.vxlan.close()
            self.vxlan = None
        super().close()

    # --- loop -------------------------------------------------------------------------

    def on_start(self) -> None:
        self._next_expire = time.monotonic() + EXPIRE_EVERY

    def next_deadline(self) -> float | None:
        if self._paused:
            return min(self._next_expire, *(at for _, at in self._paused.values()))
        return self._next_expire

    def on_timers(self, now: float) -> None:
        for name, (fd, at) in list(self._paused.items()):
            if at <= now:
                del self._paused[name]
                self.modify(fd, select.EPOLLIN)
        if now >= self._next_expire:
            self.switch.fdb.expire(now)
            self._next_expire = now + EXPIRE_EVERY

    def _storming(self, name: str, now: float) -> bool:
        storm = self.switch.ports[name].storm
        return storm is not None and storm.storming(now)

    def _pause(self, name: str, fd: int, now: float) -> None:
        """A storming port that still had frames after its budget: not read for a while."""
        self.modify(fd, 0)
        self._paused[name] = (fd, now + STORM_PAUSE)

    def _read_tap(self, name: str, events: int) -> None:
        tap = self.taps[name]
        buffer = self._port_buffer
        now = time.monotonic()
        storming = self._storming(name, now)
        try:
            for i in range(STORM_BUDGET if storming else BATCH):
                try:
                    size = tap.readinto(buffer)
                except BlockingIOError:
                    return
                except KernelError as e:
                    log.info("port %s went away (%s): stopping", name, e)
                    self.running = False
                    return
                self._from_port(name, buffer[:size], now)
                if not i:
                    # the first frame left at once (a ping waits for nothing); the single
                    # datagrams after it wait for the TAP to be empty
                    self._held = {}
            if storming:
                self._pause(name, tap.fileno(), now)
        finally:
            self._release_held()

    def _read_netdev(self, name: str, events: int) -> None:
        sock = self.raw[name]
        buffer = self._port_buffer
        now = time.monotonic()
        storming = self._storming(name, now)
        try:
            for _ in range(STORM_BUDGET if storming else BATCH):
                try:
                    size, addr = sock.recvfrom_into(buffer)
                except BlockingIOError:
                    return
                except OSError:
                    continue
                if afpacket.outgoing(addr):
                    continue  # our own transmissions, seen on the way out
                self._from_port(name, buffer[:size], now)
                if self._held is None:
                    self._held = {}  # as in _read_tap: the first frame left at once
            if storming:
                self._pause(name, sock.fileno(), now)
        finally:
            self._release_held()

    def _from_port(self, name: str, data: Frame, now: float) -> None:
        """One read from a local port: a frame, after a virtio_net_hdr on vnet_hdr ports.
        A super-frame is not copied on its way through; one to a port that takes it as it
        is goes out with the header it came with."""
        if name in self.vnet_ports:
            if len(data) < HDR_LEN:
                self.switch.ports[name].stats.drop("malformed")
                return
            head, frame = data[:HDR_LEN], data[HDR_LEN:]
            gso = is_gso(data[1])  # the header's bytes read where they are, not decoded
            offloaded = gso or bool(data[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM)
        else:
            head, frame, gso, offloaded = EMPTY, data, False, False
        if self.captures:
            self._capture(name, frame)
        out = self.switch.between_ports(name, frame, now, gso)
        if out is not None and (not offloaded or out in self.vnet_ports):
            self._write_port(out, frame, head if offloaded else EMPTY)
            return
        if out is not None:
            outputs: list[Output] = [(out, None, frame)]
        else:
            outputs = self.switch.handle_frame(name, frame, now, super_frame=gso)
        if offloaded:
            self._send(outputs, VirtioNetHdr.decode(head)[0], frame)
        else:
            self._send(outputs)

    def _read_vxlan(self, events: int) -> None:
        """The wildcard VXLAN socket: VTEPs without a socket of their own, and anything
        else sent to the port. While static VTEPs have theirs, it is read STORM_BUDGET
        receives at a time, then rested for STORM_PAUSE if more wait."""
        assert self.vxlan is not None
        sock = self.vxlan.sock
        if not self.vtep_sockets:
            self._read_vxlan_from(sock)
        elif self._read_vxlan_from(sock, STORM_BUDGET):
            self._pause(VXLAN_PREFIX, sock.fileno(), time.monotonic())

    def _read_gre(self, events: int) -> None:
        assert self.gre is not None
        sock = self.gre
        now = time.monotonic()
        buf = self._gre_buffer
        view = memoryview(buf)
        merge: dict[str, list[bytes]] = {}  # frames for vnet_hdr ports, to coalesce
        pending = 0
        try:
            for _ in range(BATCH):
                try:
                    n, addr = sock.recvfrom_into(buf)
                except BlockingIOError:
                    return
                except OSError:
                    continue
                try:
                    packet = gre_packet.strip_ipv4(view[:n])
                except PacketError:
                    self.switch.stats.drop("gre-malformed")
                    continue
                outputs = self.switch.handle_gre(packet, addr[0], now)
                pending = self._deliver(outputs, merge, pending)
        finally:
            self._flush_merged(merge)

    def _read_vtep(self, sock: socket.socket, events: int) -> None:
        self._read_vxlan_from(sock)

    def _read_vxlan_from(self, sock: socket.socket, budget: int = BATCH) -> bool:
        """Up to ``budget`` receives; True when that many were read (more may wait)."""
        now = time.monotonic()
        merge: dict[str, list[bytes]] = {}  # frames for vnet_hdr ports, to coalesce
        pending = 0
        buf = self._vxlan_buffer
        try:
            for _ in range(budget):
                try:
                    n, size, addr, _ = udp.recv_into(sock, buf)  # several with GRO, else one
                except BlockingIOError:
                    return False
                except OSError:
                    continue
                source = (addr[0], addr[1])
                run = self._run(memoryview(buf)[:n], size, source, now)
                if isinstance(run, tuple):  # one flow's run for one vnet_hdr port, merged
                    self._flush_merged(merge)
                    pending = 0
                    self._write_port(*run)
                    continue
                pending = self._deliver(run, merge, pending)
        finally:
            self._flush_merged(merge)
        return True

    def _deliver(self, run: list[Output], merge: dict[str, list[bytes]], pending: int) -> int:
        """The outputs of one receive: frames for vnet_hdr ports into ``merge`` (``pending``
        of them so far; the new count is returned), the rest sent. A GRO receive is usually
        one flow's run: merged whole, not split across two super-packets, when what is
        pending would not leave room for it."""
        if pending and pending + len(run) > gro.MAX_SEGMENTS:
            self._flush_merged(merge)
            pending = 0
        for out in run:
            frame = out[2]  # from a tunnel: bytes
            if out[1] is None and out[0] in self.vnet_ports and isinstance(frame, bytes):
                merge.setdefault(out[0], []).append(frame)
                pending += 1
            else:
                self._send([out])
        return pending

    def _run(
        self, view: memoryview, size: int, source: tuple[str, int], now: float
    ) -> list[Output] | tuple[str, bytes, bytes]:
        """What one receive (a GRO run of ``size``-byte datagrams, or one datagram) comes
        to: the core's outputs, or - when the run is one flow's TCP segments behind one
        VXLAN and Ethernet header, and the core sends its first frame, unchanged, to one
        vnet_hdr port, which the rest then follow - that port and the run merged straight
        from the receive buffer (port, super-frame, virtio_net_hdr)."""
        n = len(view)
        step = size or n
        count = -(-n // step)
        merged = None
        if count > 1 and size - VXLAN_HLEN <= MAX_FRAME:
            merged = gro.coalesce_encapsulated(view, size, VXLAN_HLEN)
        if merged is None:
            datagrams = [bytes(view[i : i + step]) for i in range(0, n, step)]
            return self.switch.handle_vxlan_batch(datagrams, source, now)
        first = bytes(view[:size])
        rest_bytes = n - size - (count - 1) * VXLAN_HLEN
        outputs, ports = self.switch.handle_vxlan_run(first, count, rest_bytes, source, now)
        if len(ports) == 1 and ports[0] in self.vnet_ports:
            return ports[0], merged[1], merged[0]
        if ports:  # followed, to other ports: each frame as the core would send it
            frames = [bytes(view[i + VXLAN_HLEN : i + size]) for i in range(size, n, size)]
            return outputs + [(port, None, frame) for frame in frames for port in ports]
        rest = [bytes(view[i : i + size]) for i in range(size, n, size)]
        return outputs + self.switch.handle_vxlan_batch(rest, source, now)

    def _flush_merged(self, merge: dict[str, list[bytes]]) -> None:
        for name, frames in merge.items():
            for vnet, frame in gro.coalesce_frames(frames):
                self._write_port(name, frame, vnet)
        merge.clear()

    def _send(
        self,
        outputs: list[Output],
        hdr: VirtioNetHdr | None = None,
        frame_in: Frame = b"",
    ) -> None:
        """Deliver the core's outputs. With ``hdr``, the input was a super-frame or had a
        partial checksum: switch.offload decides its form per way out."""
        for name, address, data in outputs:
            if address is not None and name.startswith(GRE_PREFIX):
                self._send_gre(data, address[0], hdr, frame_in)
                continue
            if address is not None:
                if hdr is None:  # the core encapsulated a copy: bytes
                    self._send_single(data if isinstance(data, bytes) else bytes(data), address)
                    continue
                try:
                    segments, size = offload.to_tunnel(hdr, frame_in, data)
                except PacketError:
                    self.switch.stats.drop("bad-offload")
                    continue
                if len(segments) <= size:
                    self._send_single(bytes(segments), address)
                    continue
                self._send_held()  # what was held before this goes before it
                assert self.vxlan is not None
                try:
                    self.vxlan.send_segments(segments, size, address)
                except OSError:
                    self.switch.stats.drop("vxlan-send")
                continue
            if hdr is None:
                self._write_port(name, data, EMPTY)
                continue
            try:
                writes = offload.to_port(hdr, frame_in, data, name in self.vnet_ports)
            except PacketError:
                self.switch.ports[name].stats.drop("bad-offload")
                continue
            for vnet, frame in writes:
                self._write_port(name, frame, vnet)

    def _capture(self, name: str, frame: Frame) -> None:
        """A frame port ``name`` received or was sent, into the captures that want it."""
        for writer in self.captures.get(name, ()):
            writer.write(frame)

    def _write_port(self, name: str, frame: Frame, vnet: Frame) -> None:
        """One frame to a local port; ``vnet`` is its virtio_net_hdr (used on vnet_hdr ports)."""
        if self.captures:
            self._capture(name, frame)
        buffers = [vnet, frame] if name in self.vnet_ports else [frame]
        raw = self.raw.get(name)
        try:
            if raw is not None:
                raw.sendmsg(buffers)
                return
            tap = self.taps.get(name)
            if tap is not None:
                os.writev(tap.fileno(), buffers)
        except OSError:
            self.switch.ports[name].stats.drop("netdev-send" if raw is not None else "tap-write")

    def _send_gre(
        self, packet: Frame, host: str, hdr: VirtioNetHdr | None, frame_in: Frame
    ) -> None:
        """One GRE packet to ``host`` (the kernel adds the IP header), or, for a super-frame
        or a partial checksum, one per MTU frame: a raw socket has no GSO."""
        assert self.gre is not None
        packets: list[bytes | bytearray | memoryview] = [packet]
        if hdr is not None:
            try:
                segments, size = offload.to_tunnel(hdr, frame_in, packet, GRE_HLEN)
            except PacketError:
                self.switch.stats.drop("bad-offload")
                return
            view = memoryview(segments)
            packets = [view[i : i + size] for i in range(0, len(view), size)]
        for one in packets:
            try:
                self.gre.sendto(one, (host, 0))
            except OSError:
                self.switch.stats.drop("gre-send")

    def _send_single(self, datagram: bytes, address: tuple[str, int]) -> None:
        """One VXLAN datagram: held with the others for its VTEP while a TAP is read."""
        held = self._held
        if held is None:
            self._send_vxlan([datagram], address)
        else:
            held.setdefault(address, []).append(datagram)

    def _send_held(self) -> None:
        """Send what is held, each VTEP's datagrams together (as GSO runs where their sizes
        allow)."""
        held = self._held
        if held:
            for address, datagrams in held.items():
                self._send_vxlan(datagrams, address)
            held.clear()

    def _release_held(self) -> None:
        """Send what is held and hold nothing more."""
        self._send_held()
        self._held = None

    def _send_vxlan(self, datagrams: list[bytes], address: tuple[str, int]) -> None:
        assert self.vxlan is not None
        try:
            self.vxlan.send_datagrams(datagrams, address)
        except OSError:
            self.switch.stats.drop("vxlan-send")

    # --- control ------------------------------------------------------------------------

    def _control_request(self, request: bytes) -> bytes:
        answer = self.describe(request.decode(errors="replace").strip())
        return json.dumps(answer).encode() + b"\n"

    def describe(self, request: str) -> dict[str, Any]:
        now = time.monotonic()
        if request == "fdb":
            return {
                "fdb": [
                    {
                        "vlan": vlan,
                        "mac": mac_str(mac),
                        "port": e.port,
                        "remote": _remote_text(e.remote),
                        "age": round(now - e.last_seen, 1),
                    }
                    for vlan, mac, e in self.switch.fdb.entries()
                ],
                "evicted": self.switch.fdb.evicted,
            }
        if request == "stats":
            ports = {
                name: asdict(p.stats) | {"mode": p.mode, "vlan": p.vlan}
                for name, p in self.switch.ports.items()
            }
            segments = [*self.switch.segments.values(), *self.switch.gre_segments.values()]
            ports.update({s.name: asdict(s.stats) | {"vlan": s.vlan} for s in segments})
            return {"ports": ports, "switch": asdict(self.switch.stats)}
        return {"error": f"unknown request {request!r}"}


def _remote_text(remote: tuple[str, int] | None) -> str | None:
    """A VXLAN VTEP as HOST:PORT, a GRE endpoint (port 0) as its address."""
    if remote is None:
        return None
    return f"{remote[0]}:{remote[1]}" if remote[1] else remote[0]


def query(name: str, request: str) -> dict[str, Any]:
    path = switch_socket(name)
    try:
        data = unixsock.request(path, request.encode() + b"\n", b"\n")
    except (FileNotFoundError, ConnectionRefusedError):
        raise KernelError(f"switch {name!r} is not running (no {path})") from None
    result: dict[str, Any] = json.loads(data)
    return result
