"""Who holds a TUN/TAP device open: /proc/PID/fd links to /dev/net/tun whose
/proc/PID/fdinfo/FD carries ``iff:\tNAME`` (what ``lsof`` cannot tell you).

Interface names are per network namespace, so each holder carries the inode
of its process's namespace; callers filter on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vnet.kernel.tun import CLONE_PATH


@dataclass(frozen=True)
class Holder:
    pid: int
    fd: int
    comm: str
    cmdline: str
    netns_inode: int | None


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:  # the process exited or hides itself: skip it
        return None


def tun_holders(proc: str = "/proc") -> dict[str, list[Holder]]:
    """Map interface name -> processes with a queue of it open."""
    found: dict[str, list[Holder]] = {}
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        netns_inode: int | None = None
        comm = cmdline = None
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") != CLONE_PATH:
                    continue
            except OSError:
                continue
            info = _read(f"{proc}/{pid}/fdinfo/{fd}")
            if info is None:
                continue
            name = ""
            for line in info.splitlines():
                if line.startswith("iff:"):
                    name = line[4:].strip()
            if not name:  # opened but not (or no longer) attached to a device
                continue
            if comm is None:
                comm = (_read(f"{proc}/{pid}/comm") or "?").strip()
                raw = _read(f"{proc}/{pid}/cmdline") or ""
                cmdline = " ".join(raw.split("\0")).strip()
                try:
                    netns_inode = os.stat(f"{proc}/{pid}/ns/net").st_ino
                except OSError:
                    netns_inode = None
            found.setdefault(name, []).append(
                Holder(int(pid), int(fd), comm, cmdline or "", netns_inode)
            )
    return found
