from __future__ import annotations

import os
import sys

import pytest

from tests.conftest import IS_ROOT, unique
from vnet.errors import ConfigError, KernelError
from vnet.kernel import netns

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: creates network namespaces")


def test_create_list_delete() -> None:
    name = unique("vnet-t")
    netns.create(name)
    try:
        assert netns.exists(name) and name in netns.list_namespaces()
        with pytest.raises(KernelError, match="already exists"):
            netns.create(name)
    finally:
        netns.delete(name)
    assert not netns.exists(name)
    with pytest.raises(KernelError, match="does not exist"):
        netns.delete(name)


def test_entered_switches_and_returns(ns: str) -> None:
    home = netns.inode()
    with netns.entered(ns):
        assert netns.inode() == netns.inode_of(ns) != home
        assert [n for _, n in __import__("socket").if_nameindex()] == ["lo"]
    assert netns.inode() == home


def test_entered_returns_on_error(ns: str) -> None:
    home = netns.inode()
    with pytest.raises(RuntimeError), netns.entered(ns):
        raise RuntimeError("boom")
    assert netns.inode() == home


def test_run_and_popen_inside(ns: str) -> None:
    code = "import os; print(os.stat('/proc/self/ns/net').st_ino)"
    done = netns.run(ns, [sys.executable, "-c", code], capture_output=True, text=True,
                     timeout=10)
    assert int(done.stdout) == netns.inode_of(ns)
    proc = netns.popen(ns, [sys.executable, "-c", code], stdout=-1, text=True)
    out, _ = proc.communicate(timeout=10)
    assert int(out) == netns.inode_of(ns) != os.stat("/proc/self/ns/net").st_ino


def test_bad_names() -> None:
    for bad in ("", "a/b", "..", "x" * 300):
        with pytest.raises(ConfigError):
            netns.create(bad)
    with pytest.raises(KernelError, match="does not exist"):
        netns.run("vnet-nope-nope", ["true"])
    with pytest.raises(KernelError, match="does not exist"), netns.entered("vnet-nope-nope"):
        pass
