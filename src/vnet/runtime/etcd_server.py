"""Debian's etcd started for demos, labs, tests and benchmarks: a member or a cluster on
addresses and ports of our choosing, its data on tmpfs (etcd preallocates ~62 MB of WAL
per member), stopped by PID. Never the system's etcd service."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from vnet.errors import ConfigError, KernelError
from vnet.kernel import netns

CLIENT_PORT = 2379
PEER_PORT = 2380
TMPFS = "/dev/shm"


@dataclass(frozen=True)
class Member:
    name: str
    address: str  # the member's IPv4 address (in its namespace, if any)
    netns: str | None = None
    client_port: int = CLIENT_PORT
    peer_port: int = PEER_PORT

    @property
    def client_url(self) -> str:
        return f"http://{self.address}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.address}:{self.peer_port}"


def binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise ConfigError("etcd is not installed: run `make setup` (Debian's etcd-server)")
    return path


def data_root() -> Path:
    """A fresh directory for members' data, on tmpfs where there is one."""
    base = TMPFS if Path(TMPFS).is_dir() else None
    return Path(tempfile.mkdtemp(prefix="vnet-etcd-", dir=base))


def argv(member: Member, cluster: list[Member], data: Path) -> list[str]:
    """The command line of one member of ``cluster`` (which includes it), its data under
    ``data``."""
    initial = ",".join(f"{m.name}={m.peer_url}" for m in cluster)
    return [
        binary(), "--name", member.name, "--data-dir", str(data / member.name),
        "--listen-client-urls", member.client_url,
        "--advertise-client-urls", member.client_url,
        "--listen-peer-urls", member.peer_url,
        "--initial-advertise-peer-urls", member.peer_url,
        "--initial-cluster", initial,
        "--initial-cluster-state", "new",
        "--initial-cluster-token", "vnet-" + "-".join(sorted(m.name for m in cluster)),
    ]


def start(
    member: Member, cluster: list[Member], data: Path, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start one member (in its namespace), its output appended to ``log``."""
    out = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    try:
        return netns.popen(member.netns, argv(member, cluster, data), stdout=out,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def healthy(member: Member) -> bool:
    """The member answers /health with true (the cluster has a leader)."""
    try:
        with netns.entered(member.netns) if member.netns else contextlib.nullcontext():
            answer = requests.get(member.client_url + "/health", timeout=1)
        return bool(answer.ok and answer.json().get("health") == "true")
    except (requests.RequestException, ValueError):
        return False


def wait_healthy(members: list[Member], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    waiting = list(members)
    while waiting:
        waiting = [m for m in waiting if not healthy(m)]
        if not waiting:
            return
        if time.monotonic() > deadline:
            names = ", ".join(m.name for m in waiting)
            raise KernelError(f"etcd {names}: not healthy after {timeout:.0f} s")
        time.sleep(0.2)
