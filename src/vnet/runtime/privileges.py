"""Running unprivileged once the devices are open, like OpenVPN's ``--user``/``--group``.

A daemon opens its TUN/TAP devices, sockets and control socket as root, then ``drop``
switches to the user and group for good (real, effective and saved IDs; no supplementary
groups) and keeps no capability, or, with ``keep``, only those named: CAP_NET_ADMIN (a
fwmark, socket buffers past the sysctl limits) and CAP_NET_BIND_SERVICE (a listen port
below 1024) are what `wg set` may still ask for. The bounding set loses everything else,
and no_new_privs is set, so nothing executed later regains more.

The control socket sits in a root-owned directory (/var/run/wireguard) that the user may
not write; a root helper forked before the drop waits for the daemon to end and removes
the socket then, as OpenVPN's down-root plugin runs its down script. It does nothing else.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass

from vnet.errors import ConfigError, KernelError

CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
NEEDED = (CAP_NET_ADMIN, CAP_NET_BIND_SERVICE)  # what --keep-caps keeps

_LINUX_CAPABILITY_VERSION_3 = 0x20080522
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@dataclass(frozen=True)
class Identity:
    user: str
    uid: int
    gid: int


def resolve(user: str, group: str | None = None) -> Identity:
    """The user (name or number) and group (default: the user's own); ConfigError names
    what does not exist."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise ConfigError(f"no such user {user!r}") from None
    gid = entry.pw_gid
    if group is not None:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except (KeyError, OverflowError):
            raise ConfigError(f"no such group {group!r}") from None
    return Identity(entry.pw_name, entry.pw_uid, gid)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(libc: ctypes.CDLL, option: int, arg: int = 0) -> int:
    zero = ctypes.c_ulong(0)  # unused arguments must be 0, at full width
    return int(libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), zero, zero, zero))


def _fail(what: str) -> KernelError:
    code = ctypes.get_errno()
    return KernelError(f"cannot drop privileges: {what}: {os.strerror(code)}", code)


def _root_helper(paths: list[str]) -> None:
    """Fork a process that stays root, waits for this one to end (its pipe closes) and
    then removes ``paths`` if they are still the files that exist now."""
    stamps = {}
    for path in paths:
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            stamps[path] = (st.st_dev, st.st_ino)
    read_end, _write_end = os.pipe()  # the write end stays open until this process ends
    if os.fork() == 0:  # the helper
        try:
            # none of the daemon's devices or sockets: the TUN must go when the daemon does
            os.closerange(0, read_end)
            os.closerange(read_end + 1, os.sysconf("SC_OPEN_MAX"))
            os.setsid()  # no terminal's signals; it ends when the daemon does
            os.read(read_end, 1)  # EOF: the daemon has exited
            for path, stamp in stamps.items():
                with contextlib.suppress(OSError):
                    st = os.lstat(path)
                    if (st.st_dev, st.st_ino) == stamp:
                        os.unlink(path)
        finally:
            os._exit(0)
    os.close(read_end)


def drop(identity: Identity, keep: Iterable[int] = (), cleanup: Iterable[str] = ()) -> None:
    """Become ``identity`` for good, keeping only the capabilities ``keep`` names.
    ``cleanup``: files a root helper removes when this process ends. KernelError when a
    step fails (nothing is then half-dropped that matters: the process should exit)."""
    keep = sorted(set(keep))
    libc = _libc()
    paths = list(cleanup)
    if paths:
        _root_helper(paths)
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        if cap not in keep and _prctl(libc, PR_CAPBSET_DROP, cap) != 0:
            raise _fail(f"dropping capability {cap} from the bounding set")
    if _prctl(libc, PR_SET_KEEPCAPS, 1) != 0:
        raise _fail("PR_SET_KEEPCAPS")
    try:
        os.setgroups([])
        os.setresgid(identity.gid, identity.gid, identity.gid)
        os.setresuid(identity.uid, identity.uid, identity.uid)
    except OSError as e:
        raise KernelError(f"cannot become {identity.user}: {e.strerror}", e.errno) from None
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
        data[i].inheritable = 0
    if libc.capset(ctypes.byref(header), data) != 0:
        raise _fail("capset")
    _prctl(libc, PR_SET_KEEPCAPS, 0)
    _prctl(libc, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    if _prctl(libc, PR_SET_NO_NEW_PRIVS, 1) != 0:
        raise _fail("PR_SET_NO_NEW_PRIVS")
    if os.getresuid() != (identity.uid,) * 3 or effective_capabilities() != mask:
        raise KernelError("cannot drop privileges: the kernel did not take the change")


def effective_capabilities() -> int:
    """This process's effective capability set, as /proc/self/status shows it."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0
