"""The `vnet switch` daemon: TAP ports and a VXLAN UDP socket around the switch core.

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

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from vnet.errors import KernelError, PacketError
from vnet.kernel import udp, unixsock
from vnet.kernel.netlink import Netlink
from vnet.kernel.tun import TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, Mode, TunDevice
from vnet.packet import gro
from vnet.packet.ethernet import mac_str
from vnet.packet.virtio import EMPTY, HDR_LEN, VIRTIO_NET_HDR_F_NEEDS_CSUM, VirtioNetHdr
from vnet.runtime.wakeup import Wakeup
from vnet.switch import offload
from vnet.switch.config import SwitchSpec
from vnet.switch.core import VXLAN_PREFIX, Output, Switch
from vnet.switch.fdb import Fdb

log = logging.getLogger("vnet.switch")

CONTROL_DIR = "/run/vnet/switch"
BATCH = 256
EXPIRE_EVERY = 10.0
VXLAN_MTU = 1450  # 1500 minus outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14)
IP_MTU_DISCOVER = 10
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
PACKET_VNET_HDR = 15
TAP_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
IP_PMTUDISC_DONT = 0


def control_path(name: str) -> str:
    return os.path.join(CONTROL_DIR, f"{name}.sock")


class SwitchDaemon:
    def __init__(self, spec: SwitchSpec) -> None:
        self.spec = spec
        self.switch = Switch(Fdb(spec.ageing, spec.fdb_capacity), vxlan_port=spec.vxlan_port)
        self.taps: dict[str, TunDevice] = {}
        self.raw: dict[str, socket.socket] = {}
        self.sock: socket.socket | None = None
        self.vnet_ports: set[str] = set()  # ports whose reads and writes carry virtio_net_hdr
        self.gso = False
        self.gro = False
        self.control: socket.socket | None = None
        self.selector = selectors.DefaultSelector()
        self._running = False
        self._wakeup = Wakeup()

    # --- setup / teardown ---------------------------------------------------------

    def start(self) -> None:
        """Create ports, socket and control socket; on failure undo all of it."""
        try:
            self._claim_control()
            for seg in self.spec.segments:
                remotes = [(r, self.spec.vxlan_port) for r in seg.remotes]
                self.switch.add_segment(seg.vni, seg.vlan, remotes)
            for port in self.spec.ports:
                self.switch.add_port(port.name, port.mode, port.vlan, port.allowed)
                if port.kind == "netdev":
                    self._open_netdev(port.name)
                    continue
                mtu = port.mtu or (VXLAN_MTU if self.spec.segments else None)
                self._open_tap(port.name, port.netns, port.create, mtu)
            if self.spec.segments:
                self._open_vxlan()
            self._listen_control()
        except BaseException:
            self.close()
            raise

    def _open_tap(self, name: str, target_ns: str | None, create: bool, mtu: int | None) -> None:
        with Netlink() as nl:
            exists = nl.exists(name)
        if create and exists:
            raise KernelError(f"port {name!r}: a link of that name already exists")
        if not create and not exists:
            raise KernelError(f"port {name!r}: no such TAP to attach to")
        tap = TunDevice(name, Mode.TAP, nonblocking=True, vnet_hdr=self.spec.offload)
        self.taps[name] = tap
        if self.spec.offload:
            self.vnet_ports.add(name)
            try:
                tap.set_offload(TAP_OFFLOADS)
            except KernelError as e:
                log.info("port %s: no TSO from the kernel (%s)", name, e)
        with Netlink() as nl:
            if mtu is not None:
                nl.set_mtu(name, mtu)
            nl.set_up(name)
            if target_ns is not None:
                nl.move_to_netns(name, target_ns)
        if target_ns is not None:
            with Netlink(target_ns) as nl:
                nl.set_up(name)

    def _open_netdev(self, name: str) -> None:
        """Attach to an existing interface (a VM's TAP held by QEMU, a veth) with AF_PACKET."""
        try:
            index = socket.if_nametoindex(name)
        except OSError:
            raise KernelError(f"port {name!r}: no such interface to attach to") from None
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.bind((name, ETH_P_ALL))
            mreq = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")
            sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        except OSError as e:
            sock.close()
            raise KernelError(f"port {name!r}: cannot attach: {e.strerror}", e.errno) from None
        if self.spec.offload:
            try:
                sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
                self.vnet_ports.add(name)
            except OSError as e:
                log.info("port %s: no vnet_hdr on AF_PACKET (%s)", name, e.strerror)
        sock.setblocking(False)
        self.raw[name] = sock
        with Netlink() as nl:
            nl.set_up(name)

    def _open_vxlan(self) -> None:
        local = self.spec.local
        family = socket.AF_INET6 if local and ":" in local else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(
                (local or ("::" if family == socket.AF_INET6 else "0.0.0.0"), self.spec.vxlan_port)
            )
        except OSError as e:
            sock.close()
            raise KernelError(
                f"cannot bind VXLAN UDP port {self.spec.vxlan_port}: {e.strerror}", e.errno
            ) from None
        for opt in (33, 32):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE: past net.core.[rw]mem_max
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        # an oversized frame is better fragmented than silently dropped (EMSGSIZE)
        with contextlib.suppress(OSError):
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        if self.spec.offload:
            self.gso = udp.gso_supported(sock)
            self.gro = udp.enable_gro(sock)
        sock.setblocking(False)
        self.sock = sock

    def offload_summary(self) -> str:
        if not self.spec.offload:
            return "offloads off"
        parts = [f"vnet_hdr on {len(self.vnet_ports)} ports"]
        if self.sock is not None:
            gso_on, gro_on = ("on" if f else "off" for f in (self.gso, self.gro))
            parts.append(f"UDP GSO {gso_on}, GRO {gro_on}")
        return ", ".join(parts)

    def _claim_control(self) -> None:
        unixsock.claim(control_path(self.spec.name), f"switch {self.spec.name!r} is running")

    def _listen_control(self) -> None:
        self.control = unixsock.listen(control_path(self.spec.name), 8)

    def close(self) -> None:
        for tap in self.taps.values():
            tap.close()
        self.taps.clear()
        for sock in self.raw.values():
            sock.close()
        self.raw.clear()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.control is not None:
            unixsock.remove(self.control, control_path(self.spec.name))
            self.control = None
        self.selector.close()
        self._wakeup.close()

    # --- loop -------------------------------------------------------------------------

    def stop(self) -> None:
        self._running = False
        self._wakeup.set()

    def run(self, ready: Callable[[], None] | None = None) -> None:
        sel = self.selector
        for name, tap in self.taps.items():
            sel.register(tap.fileno(), selectors.EVENT_READ, ("tap", name))
        for name, raw in self.raw.items():
            sel.register(raw, selectors.EVENT_READ, ("netdev", name))
        if self.sock is not None:
            sel.register(self.sock, selectors.EVENT_READ, ("vxlan", ""))
        if self.control is not None:
            sel.register(self.control, selectors.EVENT_READ, ("control", ""))
        sel.register(self._wakeup, selectors.EVENT_READ, ("wake", ""))
        old = {
            s: signal.signal(s, lambda n, f: self.stop()) for s in (signal.SIGTERM, signal.SIGINT)
        }
        self._running = True
        next_expire = time.monotonic() + EXPIRE_EVERY
        if ready is not None:
            ready()
        try:
            while self._running:
                for key, _ in sel.select(1.0):
                    kind, name = key.data
                    if kind == "tap":
                        self._read_tap(name)
                    elif kind == "netdev":
                        self._read_netdev(name)
                    elif kind == "vxlan":
                        self._read_vxlan()
                    elif kind == "control":
                        self._control()
                    else:
                        self._wakeup.clear()
                now = time.monotonic()
                if now >= next_expire:
                    self.switch.fdb.expire(now)
                    next_expire = now + EXPIRE_EVERY
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def _read_tap(self, name: str) -> None:
        tap = self.taps[name]
        now = time.monotonic()
        for _ in range(BATCH):
            try:
                data = tap.read()
            except BlockingIOError:
                return
            except KernelError as e:
                log.info("port %s went away (%s): stopping", name, e)
                self._running = False
                return
            self._from_port(name, data, now)

    def _read_netdev(self, name: str) -> None:
        sock = self.raw[name]
        now = time.monotonic()
        for _ in range(BATCH):
            try:
                data, addr = sock.recvfrom(65535 + HDR_LEN)
            except BlockingIOError:
                return
            except OSError:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue  # our own transmissions, seen on the way out
            self._from_port(name, data, now)

    def _from_port(self, name: str, data: bytes, now: float) -> None:
        """One read from a local port: a frame, after a virtio_net_hdr on vnet_hdr ports."""
        if name not in self.vnet_ports:
            self._send(self.switch.handle_frame(name, data, now))
            return
        try:
            hdr, view = VirtioNetHdr.decode(data)
        except PacketError:
            self.switch.ports[name].stats.drop("malformed")
            return
        frame = bytes(view)
        if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM or hdr.gso:
            self._send(self.switch.handle_frame(name, frame, now, super_frame=hdr.gso), hdr, frame)
        else:
            self._send(self.switch.handle_frame(name, frame, now))

    def _read_vxlan(self) -> None:
        assert self.sock is not None
        sock = self.sock
        now = time.monotonic()
        merge: dict[str, list[bytes]] = {}  # frames for vnet_hdr ports, to coalesce
        pending = 0
        try:
            for _ in range(BATCH):
                try:
                    datagrams, addr = udp.recv_many(sock)  # several with GRO, else one
                except BlockingIOError:
                    return
                except OSError:
                    continue
                source = (addr[0], addr[1])
                for out in self.switch.handle_vxlan_batch(datagrams, source, now):
                    if out[1] is None and out[0] in self.vnet_ports:
                        merge.setdefault(out[0], []).append(out[2])
                        pending += 1
                    else:
                        self._send([out])
                if pending >= gro.MAX_SEGMENTS:
                    self._flush_merged(merge)
                    pending = 0
        finally:
            self._flush_merged(merge)

    def _flush_merged(self, merge: dict[str, list[bytes]]) -> None:
        for name, frames in merge.items():
            for vnet, frame in gro.coalesce_frames(frames):
                self._write_port(name, frame, vnet)
        merge.clear()

    def _send(
        self,
        outputs: list[Output],
        hdr: VirtioNetHdr | None = None,
        frame_in: bytes = b"",
    ) -> None:
        """Deliver the core's outputs. With ``hdr``, the input was a super-frame or had a
        partial checksum: switch.offload decides its form per way out."""
        for name, address, data in outputs:
            if address is not None:
                if hdr is None:
                    self._send_vxlan([data], address)
                    continue
                try:
                    datagrams = offload.to_vxlan(hdr, frame_in, data)
                except PacketError:
                    self.switch.stats.drop("bad-offload")
                    continue
                self._send_vxlan(datagrams, address)
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

    def _write_port(self, name: str, frame: bytes, vnet: bytes) -> None:
        """One frame to a local port; ``vnet`` is its virtio_net_hdr (used on vnet_hdr ports)."""
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

    def _send_vxlan(self, datagrams: list[bytes], address: tuple[str, int]) -> None:
        assert self.sock is not None
        sock = self.sock
        if self.gso and len(datagrams) > 1:
            try:
                for run in udp.runs(datagrams):
                    udp.send_run(sock, run, address)
                return
            except udp.GsoUnsupportedError as e:
                log.info("UDP GSO refused (%s): sending one datagram per call", e.strerror)
                self.gso = False
            except OSError:
                self.switch.stats.drop("vxlan-send")
                return
        for datagram in datagrams:
            try:
                sock.sendto(datagram, address)
            except OSError:
                self.switch.stats.drop("vxlan-send")

    # --- control ------------------------------------------------------------------------

    def _control(self) -> None:
        assert self.control is not None
        try:
            conn, _ = self.control.accept()
        except BlockingIOError:
            return
        with conn:
            conn.settimeout(2.0)
            try:
                request = conn.recv(256).decode(errors="replace").strip()
                conn.sendall(json.dumps(self.describe(request)).encode() + b"\n")
            except OSError:
                return

    def describe(self, request: str) -> dict[str, Any]:
        now = time.monotonic()
        if request == "fdb":
            return {
                "fdb": [
                    {
                        "vlan": vlan,
                        "mac": mac_str(mac),
                        "port": e.port,
                        "remote": f"{e.remote[0]}:{e.remote[1]}" if e.remote else None,
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
            ports.update(
                {
                    VXLAN_PREFIX + str(vni): asdict(s.stats) | {"vlan": s.vlan}
                    for vni, s in self.switch.segments.items()
                }
            )
            return {"ports": ports, "switch": asdict(self.switch.stats)}
        return {"error": f"unknown request {request!r}"}


def query(name: str, request: str) -> dict[str, Any]:
    path = control_path(name)
    try:
        data = unixsock.request(path, request.encode() + b"\n", b"\n")
    except (FileNotFoundError, ConnectionRefusedError):
        raise KernelError(f"switch {name!r} is not running (no {path})") from None
    result: dict[str, Any] = json.loads(data)
    return result
