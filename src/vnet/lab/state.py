"""What a lab made, written before and after each step so that `down` (or the next `up`
after a crash) removes exactly that: /run/vnet/lab/NAME/state.json, mode 0600.

Ownership is proven, never assumed: a namespace is the lab's only if its ``lo``
carries the alias ``vnet-lab:NAME``; a process only if its PID still has the
start time recorded when the lab started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vnet.kernel import netns
from vnet.kernel.files import write_file
from vnet.kernel.netlink import Netlink
from vnet.paths import LAB_STATE_DIR

STATE_ROOT = Path(LAB_STATE_DIR)


def tag(lab: str) -> str:
    return f"vnet-lab:{lab}"


@dataclass
class ProcessRecord:
    name: str
    pid: int
    start: int  # /proc/PID/stat field 22: start time in clock ticks since boot
    log: str


@dataclass
class State:
    name: str
    source: str = ""
    digest: str = ""
    status: str = "building"  # "building" until every step is done, then "up"
    namespaces: list[str] = field(default_factory=list)
    processes: list[ProcessRecord] = field(default_factory=list)

    @staticmethod
    def directory(name: str) -> Path:
        return STATE_ROOT / name

    @classmethod
    def load(cls, name: str) -> State | None:
        try:
            data = json.loads((cls.directory(name) / "state.json").read_text())
        except (OSError, ValueError):
            return None
        procs = [ProcessRecord(**p) for p in data.pop("processes", [])]
        return cls(**data, processes=procs)

    def save(self) -> None:
        d = self.directory(self.name)
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(d, 0o700)
        write_file(d / "state.json", json.dumps(asdict(self), indent=1), 0o600)


def start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def alive(record: ProcessRecord) -> bool:
    return start_time(record.pid) == record.start


def owned(name: str, namespace: str) -> bool:
    if not netns.exists(namespace):
        return False
    try:
        with Netlink(namespace) as nl:
            return nl.alias("lo") == tag(name)
    except Exception:  # a namespace we cannot read is not one we can prove is ours
        return False


def stop_processes(records: list[ProcessRecord], timeout: float = 5.0) -> None:
    """SIGTERM what is provably ours, SIGKILL what is still there after ``timeout``."""
    mine = [r for r in records if alive(r)]
    for r in mine:
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(r) for r in mine):
        time.sleep(0.05)
    for r in mine:
        if alive(r):
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.pid, signal.SIGKILL)
    for r in mine:  # reap our own children so they do not linger as zombies
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(r.pid, os.WNOHANG)


def leftovers(name: str) -> list[str]:
    """Namespaces tagged for lab ``name`` (after a crash the state file may lag behind)."""
    return [ns for ns in netns.list_namespaces() if ns.startswith(f"{name}-") and owned(name, ns)]


def teardown(name: str) -> list[str]:
    """Remove what lab ``name`` owns; returns the namespaces deleted."""
    state = State.load(name)
    if state is not None:
        stop_processes(state.processes)
    candidates = set(leftovers(name))
    if state is not None:
        candidates |= {ns for ns in state.namespaces if owned(name, ns)}
    for ns in sorted(candidates):
        netns.delete(ns)
    shutil.rmtree(State.directory(name), ignore_errors=True)
    return sorted(candidates)
