"""The `vnet switch` daemon: TAP ports and a VXLAN UDP socket around the switch core.

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
from vnet.kernel import unixsock
from vnet.kernel.netlink import Netlink
from vnet.kernel.tun import Mode, TunDevice
from vnet.packet.ethernet import mac_str
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
        self.control: socket.socket | None = None
        self.selector = selectors.DefaultSelector()
        self._running = False
        self._wake_r, self._wake_w = socket.socketpair()

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
        tap = TunDevice(name, Mode.TAP, nonblocking=True)
        self.taps[name] = tap
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
        sock.setblocking(False)
        self.sock = sock

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
        self._wake_r.close()
        self._wake_w.close()

    # --- loop -------------------------------------------------------------------------

    def stop(self) -> None:
        self._running = False
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

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
        sel.register(self._wake_r, selectors.EVENT_READ, ("wake", ""))
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
                        self._wake_r.recv(64)
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
                frame = tap.read()
            except BlockingIOError:
                return
            except KernelError as e:
                log.info("port %s went away (%s): stopping", name, e)
                self._running = False
                return
            self._send(self.switch.handle_frame(name, frame, now))

    def _read_netdev(self, name: str) -> None:
        sock = self.raw[name]
        now = time.monotonic()
        for _ in range(BATCH):
            try:
                frame, addr = sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                continue
            if addr[2] == PACKET_OUTGOING:
                continue  # our own transmissions, seen on the way out
            self._send(self.switch.handle_frame(name, frame, now))

    def _read_vxlan(self) -> None:
        assert self.sock is not None
        now = time.monotonic()
        for _ in range(BATCH):
            try:
                data, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                return
            except OSError:
                continue
            self._send(self.switch.handle_vxlan(data, (addr[0], addr[1]), now))

    def _send(self, outputs: list[Output]) -> None:
        for name, address, data in outputs:
            if address is not None:
                if self.sock is not None:
                    with contextlib.suppress(OSError):
                        self.sock.sendto(data, address)
                continue
            raw = self.raw.get(name)
            if raw is not None:
                try:
                    raw.send(data)
                except OSError:
                    self.switch.ports[name].stats.drop("netdev-send")
                continue
            tap = self.taps.get(name)
            if tap is None:
                continue
            try:
                tap.write(data)
            except (BlockingIOError, KernelError, PacketError):
                self.switch.ports[name].stats.drop("tap-write")

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
