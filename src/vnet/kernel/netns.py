"""Network namespaces: create, delete, list, enter, run a program inside.

Named namespaces are bind mounts under /run/netns, as iproute2 makes them, so
``ip netns exec NAME`` and vnet see the same ones. Entering uses setns(2) on
the calling thread only and always returns to where it was.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from pyroute2 import netns as _pr_netns

from vnet.errors import ConfigError, KernelError

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def validate_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name or len(name) > 200:
        raise ConfigError(f"invalid network namespace name {name!r}")
    return name


def path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, validate_name(name))


def exists(name: str) -> bool:
    return os.path.exists(path(name))


def list_namespaces() -> list[str]:
    return sorted(_pr_netns.listnetns())


def create(name: str) -> None:
    """Create a named namespace; fails if it already exists."""
    if exists(name):
        raise KernelError(f"network namespace {name!r} already exists", errno.EEXIST)
    try:
        _pr_netns.create(name)
    except OSError as e:
        raise KernelError(
            f"cannot create network namespace {name!r}: {e.strerror}", e.errno
        ) from None


def delete(name: str) -> None:
    """Delete a named namespace; links inside it go with it (veth peers too)."""
    if not exists(name):
        raise KernelError(f"network namespace {name!r} does not exist", errno.ENOENT)
    try:
        _pr_netns.remove(name)
    except OSError as e:
        raise KernelError(
            f"cannot delete network namespace {name!r}: {e.strerror}", e.errno
        ) from None


def setns(fd: int) -> None:
    """setns(2) the calling thread into the network namespace behind ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise KernelError(f"setns failed: {os.strerror(err)}", err)


def inode(pid: int | str = "thread-self") -> int:
    """The inode that identifies a process's network namespace."""
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def inode_of(name: str) -> int:
    return os.stat(path(name)).st_ino


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with this thread inside namespace ``name``, then come back.

    Sockets and TUN devices opened inside stay in that namespace after leaving.
    """
    target = path(name)
    try:
        target_fd = os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise KernelError(f"network namespace {name!r} does not exist", errno.ENOENT) from None
    home_fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target_fd)
        try:
            yield
        finally:
            setns(home_fd)
    finally:
        os.close(target_fd)
        os.close(home_fd)


def _enter_in_child(name: str) -> Callable[[], None]:
    target = path(name)

    def enter() -> None:
        fd = os.open(target, os.O_RDONLY)
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            os._exit(127)
        os.close(fd)

    return enter


def popen(name: str | None, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` inside namespace ``name`` (or here if None)."""
    if name is not None:
        if not exists(name):
            raise KernelError(f"network namespace {name!r} does not exist", errno.ENOENT)
        kwargs["preexec_fn"] = _enter_in_child(name)
    try:
        return subprocess.Popen(list(argv), **kwargs)
    except FileNotFoundError:
        raise ConfigError(f"program not found: {argv[0]}") from None


def stop(procs: Sequence[subprocess.Popen[Any]], timeout: float = 10.0) -> None:
    """Stop children started with ``popen``: SIGTERM to all, SIGKILL to any still there
    after ``timeout`` seconds; reaps them all."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(
    name: str | None, argv: Sequence[str], *, timeout: float | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[Any]:
    """Run ``argv`` to completion inside namespace ``name``."""
    if name is not None:
        if not exists(name):
            raise KernelError(f"network namespace {name!r} does not exist", errno.ENOENT)
        kwargs["preexec_fn"] = _enter_in_child(name)
    try:
        return subprocess.run(list(argv), timeout=timeout, check=False, **kwargs)
    except FileNotFoundError:
        raise ConfigError(f"program not found: {argv[0]}") from None
