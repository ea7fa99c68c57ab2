"""TUN/TAP devices through ``/dev/net/tun``: every ioctl of the kernel's tuntap.txt.

A ``TunDevice`` is one virtual NIC. Its first file descriptor is queue 0; with
``multi_queue`` more queues can be opened (``add_queue``) and detached/attached
(``TUNSETQUEUE``). A non-persistent device disappears when its last fd closes.

ioctl numbers and flags come from ``include/uapi/linux/if_tun.h`` and
``include/uapi/linux/if.h``. Some ioctls take their argument by value
(PERSIST, OWNER, GROUP, OFFLOAD), others through a pointer (SNDBUF, VNETHDRSZ):
that is the kernel's ABI, mirrored below.
"""

from __future__ import annotations

import asyncio
import enum
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

from vnet.errors import ConfigError, KernelError
from vnet.names import validate_ifname

CLONE_PATH = "/dev/net/tun"

# ioctl request numbers: _IOW('T', n, int) = 0x400454nn, _IOR('T', n, ...) = 0x800454nn
TUNSETNOCSUM = 0x400454C8
TUNSETDEBUG = 0x400454C9
TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
TUNSETOWNER = 0x400454CC
TUNSETLINK = 0x400454CD
TUNSETGROUP = 0x400454CE
TUNGETFEATURES = 0x800454CF
TUNSETOFFLOAD = 0x400454D0
TUNSETTXFILTER = 0x400454D1
TUNGETIFF = 0x800454D2
TUNGETSNDBUF = 0x800454D3
TUNSETSNDBUF = 0x400454D4
TUNGETVNETHDRSZ = 0x800454D7
TUNSETVNETHDRSZ = 0x400454D8
TUNSETQUEUE = 0x400454D9
TUNSETIFINDEX = 0x400454DA
TUNSETVNETLE = 0x400454DC
TUNGETVNETLE = 0x800454DD
TUNSETVNETBE = 0x400454DE
TUNGETVNETBE = 0x800454DF
TUNSETCARRIER = 0x400454E2
TUNGETDEVNETNS = 0x000054E3

# ifr_flags for TUNSETIFF / TUNGETIFF / TUNSETQUEUE
IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NAPI = 0x0010
IFF_NAPI_FRAGS = 0x0020
IFF_NO_CARRIER = 0x0040
IFF_MULTI_QUEUE = 0x0100
IFF_ATTACH_QUEUE = 0x0200
IFF_DETACH_QUEUE = 0x0400
IFF_PERSIST = 0x0800
IFF_NO_PI = 0x1000
IFF_ONE_QUEUE = 0x2000  # obsolete, ignored by the kernel
IFF_VNET_HDR = 0x4000
IFF_TUN_EXCL = 0x8000

# TUNSETOFFLOAD bits: what the kernel may hand us without segmenting/checksumming first
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10
TUN_F_USO4 = 0x20
TUN_F_USO6 = 0x40
TSO_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6  # what vnet's daemons ask a TUN/TAP for

OFFLOAD_NAMES = {
    "csum": TUN_F_CSUM,
    "tso4": TUN_F_TSO4,
    "tso6": TUN_F_TSO6,
    "tso_ecn": TUN_F_TSO_ECN,
    "ufo": TUN_F_UFO,
    "uso4": TUN_F_USO4,
    "uso6": TUN_F_USO6,
}

# struct tun_pi { __u16 flags; __be16 proto; }: the 4-byte packet-information header
TUN_PKT_STRIP = 0x0001  # set by the kernel on read when the buffer was too small
PI_HEADER = struct.Struct("!HH")
PI_SIZE = PI_HEADER.size

VIRTIO_NET_HDR_SIZE = 10  # struct virtio_net_hdr; 12 with num_buffers (mrg_rxbuf)

_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name + ifr_flags, 40 bytes in all
_INT = struct.Struct("i")
_UINT = struct.Struct("I")


class Mode(enum.Enum):
    TUN = "tun"  # L3: IP packets
    TAP = "tap"  # L2: Ethernet frames


@dataclass(frozen=True)
class TunFlags:
    """The flags of a device as the kernel reports them (TUNGETIFF)."""

    mode: Mode
    pi: bool
    vnet_hdr: bool
    multi_queue: bool
    persist: bool
    napi: bool = False
    napi_frags: bool = False

    @classmethod
    def from_raw(cls, raw: int, pi: bool | None = None) -> TunFlags:
        """Decode ifr_flags. TUNGETIFF ORs IFF_NOFILTER into its answer, which is the
        same bit as IFF_NO_PI, so a TUNGETIFF answer cannot tell PI: pass ``pi``."""
        return cls(
            mode=Mode.TAP if raw & IFF_TAP else Mode.TUN,
            pi=(not raw & IFF_NO_PI) if pi is None else pi,
            vnet_hdr=bool(raw & IFF_VNET_HDR),
            multi_queue=bool(raw & IFF_MULTI_QUEUE),
            persist=bool(raw & IFF_PERSIST),
            napi=bool(raw & IFF_NAPI),
            napi_frags=bool(raw & IFF_NAPI_FRAGS),
        )

    def names(self) -> list[str]:
        out = [self.mode.value]
        for name in ("pi", "vnet_hdr", "multi_queue", "persist", "napi", "napi_frags"):
            if getattr(self, name):
                out.append(name)
        return out


def _flag_text(raw: int) -> str:
    return ",".join(TunFlags.from_raw(raw).names())


def features() -> int:
    """The IFF_* flags this kernel's tun driver supports (TUNGETFEATURES)."""
    fd = _open_clone(CLONE_PATH, "")
    try:
        buf = bytearray(_UINT.size)
        fcntl.ioctl(fd, TUNGETFEATURES, buf)
        return int(_UINT.unpack(buf)[0])
    finally:
        os.close(fd)


def _open_clone(path: str, name: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KernelError(
            f"{path} does not exist: the tun driver is not available (try 'modprobe tun')",
            errno.ENOENT,
        ) from None
    except PermissionError as e:
        raise KernelError(
            f"cannot open {path}: permission denied (run as root or with CAP_NET_ADMIN)",
            e.errno,
        ) from None
    except OSError as e:
        raise KernelError(
            f"cannot open {path} for {name or 'a new device'}: {e.strerror}", e.errno
        ) from None


def ifname_exists(name: str) -> bool:
    """Whether a link of that name exists in this thread's namespace."""
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


class TunQueue:
    """One file descriptor of a TUN/TAP device: one queue of a multi-queue device."""

    def __init__(self, fd: int, name: str, mode: Mode, pi: bool, vnet_hdr: bool) -> None:
        self._fd = fd
        self.name = name
        self.mode = mode
        self.pi = pi
        self.vnet_hdr = vnet_hdr

    # --- plumbing --------------------------------------------------------

    def fileno(self) -> int:
        if self._fd < 0:
            raise KernelError(f"{self.name}: queue is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    @property
    def inheritable(self) -> bool:
        return os.get_inheritable(self.fileno())

    @inheritable.setter
    def inheritable(self, value: bool) -> None:
        """Let a child process keep this fd (QEMU's ``-netdev tap,fd=N``)."""
        os.set_inheritable(self.fileno(), value)

    @property
    def nonblocking(self) -> bool:
        return not os.get_blocking(self.fileno())

    @nonblocking.setter
    def nonblocking(self, value: bool) -> None:
        os.set_blocking(self.fileno(), not value)

    # --- data --------------------------------------------------------------

    def read(self, size: int = 65536 + VIRTIO_NET_HDR_SIZE + PI_SIZE) -> bytes:
        """One packet (TUN) or frame (TAP), with the PI/vnet headers if enabled.

        Raises BlockingIOError when non-blocking and nothing is queued.
        """
        try:
            return os.read(self.fileno(), size)
        except BlockingIOError:
            raise
        except OSError as e:
            raise self._io_error("read", e) from None

    def readinto(self, buf: bytearray | memoryview) -> int:
        try:
            return os.readv(self.fileno(), [buf])
        except BlockingIOError:
            raise
        except OSError as e:
            raise self._io_error("read", e) from None

    def write(self, packet: bytes | bytearray | memoryview) -> int:
        """Hand one packet/frame to the kernel, as if it arrived on the wire."""
        try:
            return os.write(self.fileno(), packet)
        except BlockingIOError:
            raise
        except OSError as e:
            raise self._io_error("write", e, packet) from None

    def writev(self, parts: Sequence[bytes | bytearray | memoryview]) -> int:
        """``write`` of the parts as one packet/frame (a virtio_net_hdr and a super-packet
        without joining them first)."""
        try:
            return os.writev(self.fileno(), parts)
        except BlockingIOError:
            raise
        except OSError as e:
            raise self._io_error("write", e, b"".join(parts)) from None

    async def read_async(self, size: int = 65536 + VIRTIO_NET_HDR_SIZE + PI_SIZE) -> bytes:
        """Await one packet on the running asyncio loop (sets the fd non-blocking)."""
        self.nonblocking = True
        loop = asyncio.get_running_loop()
        while True:
            try:
                return self.read(size)
            except BlockingIOError:
                pass
            ready: asyncio.Future[None] = loop.create_future()
            fd = self.fileno()
            loop.add_reader(fd, _set_done, ready)
            try:
                await ready
            finally:
                loop.remove_reader(fd)

    async def write_async(self, packet: bytes | bytearray | memoryview) -> int:
        self.nonblocking = True
        loop = asyncio.get_running_loop()
        while True:
            try:
                return self.write(packet)
            except BlockingIOError:
                pass
            ready: asyncio.Future[None] = loop.create_future()
            fd = self.fileno()
            loop.add_writer(fd, _set_done, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)

    def _io_error(
        self, op: str, e: OSError, packet: bytes | bytearray | memoryview | None = None
    ) -> KernelError:
        code = e.errno
        if op == "write" and code == errno.EINVAL and packet is not None:
            reason = self._why_rejected(bytes(packet[:64]), len(packet))
            return KernelError(
                f"{self.name}: the kernel rejected a {len(packet)}-byte packet: {reason}", code
            )
        if code == errno.EIO:
            return KernelError(f"{self.name}: {op} failed: the device is down or detached", code)
        if code == errno.EBADFD:
            return KernelError(f"{self.name}: {op} failed: this queue is detached", code)
        if code == errno.EFAULT:
            return KernelError(f"{self.name}: {op} failed: bad buffer", code)
        return KernelError(f"{self.name}: {op} failed: {e.strerror}", code)

    def _why_rejected(self, head: bytes, length: int) -> str:
        offset = 0
        if self.pi:
            if length < PI_SIZE:
                return f"shorter than the {PI_SIZE}-byte packet-information header"
            offset += PI_SIZE
        if self.vnet_hdr:
            if length < offset + VIRTIO_NET_HDR_SIZE:
                return "shorter than the virtio_net_hdr"
            offset += VIRTIO_NET_HDR_SIZE
        body = head[offset:]
        if self.mode is Mode.TUN and not self.pi:
            if not body:
                return "empty packet"
            version = body[0] >> 4
            if version not in (4, 6):
                return f"IP version {version} is neither 4 nor 6"
        if self.mode is Mode.TAP and length - offset < 14:
            return "shorter than an Ethernet header"
        return "malformed packet"

    # --- per-queue ioctls ---------------------------------------------------

    @property
    def detached(self) -> bool:
        """True when this queue is detached (TUNGETIFF reports IFF_DETACH_QUEUE)."""
        return bool(_getiff(self.fileno())[1] & IFF_DETACH_QUEUE)

    def detach(self) -> None:
        """Stop this queue from receiving traffic (multi-queue devices only)."""
        self._setqueue(IFF_DETACH_QUEUE)

    def attach(self) -> None:
        self._setqueue(IFF_ATTACH_QUEUE)

    def _setqueue(self, flag: int) -> None:
        what = "attach" if flag == IFF_ATTACH_QUEUE else "detach"
        try:
            fcntl.ioctl(self.fileno(), TUNSETQUEUE, _IFREQ.pack(b"", flag))
        except OSError as e:
            hint = ""
            if e.errno == errno.EINVAL:
                hint = " (only multi-queue devices have queues to detach, and not the last one)"
            raise KernelError(
                f"{self.name}: cannot {what} queue: {e.strerror}{hint}", e.errno
            ) from None


def _set_done(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class TunDevice(TunQueue):
    """A TUN or TAP device, opened (created if absent) on ``/dev/net/tun``.

    >>> with TunDevice("vtun0", Mode.TUN) as dev:   # doctest: +SKIP
    ...     packet = dev.read()
    """

    def __init__(
        self,
        name: str = "",
        mode: Mode = Mode.TUN,
        *,
        pi: bool = False,
        vnet_hdr: bool = False,
        multi_queue: bool = False,
        napi: bool = False,
        exclusive: bool = False,
        nonblocking: bool = False,
        clone_path: str = CLONE_PATH,
    ) -> None:
        raw_name = validate_ifname(name)
        flags = IFF_TUN if mode is Mode.TUN else IFF_TAP
        if not pi:
            flags |= IFF_NO_PI
        if vnet_hdr:
            flags |= IFF_VNET_HDR
        if multi_queue:
            flags |= IFF_MULTI_QUEUE
        if napi:
            flags |= IFF_NAPI
        if exclusive:
            flags |= IFF_TUN_EXCL
        self._request_flags = flags
        self._clone_path = clone_path
        fd = self._open_queue(raw_name, name, flags)
        actual, _ = _getiff(fd)
        super().__init__(fd, actual, mode, pi, vnet_hdr)
        self.queues: list[TunQueue] = [self]
        if nonblocking:
            self.nonblocking = True

    def _open_queue(self, raw_name: bytes, name: str, flags: int) -> int:
        fd = _open_clone(self._clone_path, name)
        try:
            fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(raw_name, flags))
        except OSError as e:
            os.close(fd)
            raise _setiff_error(name, flags, e) from None
        return fd

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every queue; a non-persistent device then disappears."""
        for queue in self.queues[1:]:
            queue.close()
        super().close()

    # --- queues ----------------------------------------------------------------

    def add_queue(self) -> TunQueue:
        """Open one more queue of a multi-queue device (another TUNSETIFF, same name)."""
        if not self._request_flags & IFF_MULTI_QUEUE:
            raise ConfigError(f"{self.name}: add_queue needs a device opened with multi_queue")
        fd = self._open_queue(self.name.encode(), self.name, self._request_flags)
        queue = TunQueue(fd, self.name, self.mode, self.pi, self.vnet_hdr)
        self.queues.append(queue)
        return queue

    # --- device ioctls -----------------------------------------------------------

    @property
    def flags(self) -> TunFlags:
        """The flags as the kernel reports them now (TUNGETIFF; PI as set by TUNSETIFF,
        which the kernel applied to the device, see ``TunFlags.from_raw``)."""
        return TunFlags.from_raw(_getiff(self.fileno())[1], pi=self.pi)

    def set_persist(self, persist: bool = True) -> None:
        """Keep the device after the last fd closes (``ip tuntap add``)."""
        self._ioctl_value(TUNSETPERSIST, int(persist), "persist")

    def set_owner(self, uid: int) -> None:
        """Let this (non-root) user attach to the device; -1 removes the owner."""
        self._ioctl_value(TUNSETOWNER, uid, f"owner {uid}")

    def set_group(self, gid: int) -> None:
        self._ioctl_value(TUNSETGROUP, gid, f"group {gid}")

    def set_offload(self, offloads: int) -> None:
        """TUNSETOFFLOAD: TUN_F_* bits; needs vnet_hdr for anything but 0."""
        unknown = offloads & ~sum(OFFLOAD_NAMES.values())
        if unknown:
            raise ConfigError(f"{self.name}: unknown offload bits {unknown:#x}")
        names = [n for n, bit in OFFLOAD_NAMES.items() if offloads & bit] or ["none"]
        self._ioctl_value(TUNSETOFFLOAD, offloads, "offload " + "|".join(names))

    def set_carrier(self, up: bool) -> None:
        self._ioctl_ptr(TUNSETCARRIER, _INT.pack(int(up)), "carrier")

    def set_sndbuf(self, size: int) -> None:
        self._ioctl_ptr(TUNSETSNDBUF, _INT.pack(size), f"sndbuf {size}")

    def get_sndbuf(self) -> int:
        return self._ioctl_get(TUNGETSNDBUF, "sndbuf")

    def set_vnet_hdr_size(self, size: int) -> None:
        """TUNSETVNETHDRSZ: 10 (virtio_net_hdr) or 12 (with num_buffers)."""
        self._ioctl_ptr(TUNSETVNETHDRSZ, _INT.pack(size), f"vnet_hdr size {size}")

    def get_vnet_hdr_size(self) -> int:
        return self._ioctl_get(TUNGETVNETHDRSZ, "vnet_hdr size")

    def set_vnet_le(self, little_endian: bool) -> None:
        """TUNSETVNETLE: virtio 1.0 little-endian headers on big-endian hosts."""
        self._ioctl_ptr(TUNSETVNETLE, _INT.pack(int(little_endian)), "vnet_le")

    def get_vnet_le(self) -> bool:
        return bool(self._ioctl_get(TUNGETVNETLE, "vnet_le"))

    def set_link_type(self, arphrd: int) -> None:
        """TUNSETLINK: the ARPHRD_* type (device must be down)."""
        self._ioctl_value(TUNSETLINK, arphrd, f"link type {arphrd}")

    @property
    def ifindex(self) -> int:
        try:
            return socket.if_nametoindex(self.name)
        except OSError as e:
            raise KernelError(
                f"{self.name}: no such interface in this namespace", e.errno
            ) from None

    def _ioctl_value(self, request: int, value: int, what: str) -> None:
        try:
            fcntl.ioctl(self.fileno(), request, value)
        except OSError as e:
            raise KernelError(
                f"{self.name}: the kernel refused {what}: {e.strerror}", e.errno
            ) from None

    def _ioctl_ptr(self, request: int, arg: bytes, what: str) -> None:
        try:
            fcntl.ioctl(self.fileno(), request, arg)
        except OSError as e:
            raise KernelError(
                f"{self.name}: the kernel refused {what}: {e.strerror}", e.errno
            ) from None

    def _ioctl_get(self, request: int, what: str) -> int:
        buf = bytearray(_INT.size)
        try:
            fcntl.ioctl(self.fileno(), request, buf)
        except OSError as e:
            raise KernelError(f"{self.name}: cannot read {what}: {e.strerror}", e.errno) from None
        return int(_INT.unpack(buf)[0])


def _getiff(fd: int) -> tuple[str, int]:
    buf = bytearray(_IFREQ.size)
    fcntl.ioctl(fd, TUNGETIFF, buf)
    raw_name, flags = _IFREQ.unpack(buf)
    return raw_name.rstrip(b"\0").decode(), int(flags)


def _setiff_error(name: str, flags: int, e: OSError) -> KernelError:
    label = f"'{name}'" if name else "a new device"
    code = e.errno
    if code in (errno.EPERM, errno.EACCES):
        return KernelError(
            f"permission denied creating tun/tap device {label}: run as root or with "
            "CAP_NET_ADMIN (or be its owner/group)",
            code,
        )
    if code == errno.EBUSY:
        return KernelError(
            f"device {label} is busy: another program has it open (see 'vnet show {name}')", code
        )
    if code == errno.EINVAL:
        if name and ifname_exists(name):
            return KernelError(
                f"device {label} already exists but is not a tun/tap device with flags "
                f"{_flag_text(flags)}",
                code,
            )
        return KernelError(
            f"the kernel refused tun/tap flags {_flag_text(flags)} for {label}", code
        )
    if code == errno.EEXIST:
        return KernelError(f"device {label} already exists", code)
    return KernelError(f"cannot create tun/tap device {label}: {e.strerror}", code)


def pi_header(proto: int, flags: int = 0) -> bytes:
    """The 4-byte packet-information header (IFF_NO_PI off): flags, EtherType."""
    return PI_HEADER.pack(flags, proto)


def offloads_from_names(names: list[str]) -> int:
    bits = 0
    for name in names:
        key = name.strip().lower()
        if key not in OFFLOAD_NAMES:
            raise ConfigError(f"unknown offload {name!r}; choose from {', '.join(OFFLOAD_NAMES)}")
        bits |= OFFLOAD_NAMES[key]
    return bits
