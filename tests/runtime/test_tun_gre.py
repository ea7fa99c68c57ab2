"""`vnet tun gre` at both ends of an underlay: IP over GRE between two TUNs, with a key.

(This machine's kernel has no GRE: the kernel's `ip tunnel add ... mode gre` as the far end
runs in a QEMU guest, tests/runtime/test_qemu.py.)
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import IS_ROOT, run_vnet, vnet_cmd
from tests.runtime.test_switch_interop import iperf_bytes, ping
from tests.runtime.wg_env import make_underlay
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces, TUN, raw sockets")


def start(ns: str, local: str, remote: str, key: int, address: str) -> subprocess.Popen[str]:
    proc = netns.popen(ns, vnet_cmd("tun", "gre", "gre5", "--local", local, "--remote", remote,
                                    "--key", str(key), "--address", address),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while True:
        with Netlink(ns) as nl:
            if nl.exists("gre5") and any(a.link == "gre5" for a in nl.addresses()):
                return proc
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"vnet tun gre did not start: {proc.communicate()[1]}")
        time.sleep(0.05)


def stopped(proc: subprocess.Popen[str]) -> str:
    """Stop it; what it printed (its counters at exit)."""
    if proc.poll() is None:
        proc.terminate()
    return proc.communicate(timeout=10)[1]


@pytest.fixture
def underlay(ns: str, ns2: str) -> Iterator[tuple[str, str]]:
    make_underlay(ns, ns2)  # ns 198.18.0.1, ns2 198.18.0.2
    yield ns, ns2


def test_ip_over_gre_both_ways(underlay: tuple[str, str]) -> None:
    a_ns, b_ns = underlay
    a = start(a_ns, "198.18.0.1", "198.18.0.2", 5, "198.19.5.1/30")
    b = start(b_ns, "198.18.0.2", "198.18.0.1", 5, "198.19.5.2/30")
    try:
        assert ping(a_ns, "198.19.5.2") and ping(b_ns, "198.19.5.1")
        assert iperf_bytes(a_ns, b_ns, "198.19.5.2") > 1_000_000
        with Netlink(a_ns) as nl:
            assert next(k for k in nl.links() if k.name == "gre5").mtu == 1472  # keyed GRE
    finally:
        out_b, out_a = stopped(b), stopped(a)
    assert "dropped: none" in out_a and "received" in out_b
    with Netlink(a_ns) as nl:
        assert not nl.exists("gre5")  # the TUN went with the program


def test_a_wrong_key_is_counted_not_delivered(underlay: tuple[str, str]) -> None:
    a_ns, b_ns = underlay
    a = start(a_ns, "198.18.0.1", "198.18.0.2", 5, "198.19.5.1/30")
    b = start(b_ns, "198.18.0.2", "198.18.0.1", 6, "198.19.5.2/30")
    try:
        assert not ping(a_ns, "198.19.5.2", count=2)
    finally:
        out_b, _ = stopped(b), stopped(a)
    assert "wrong-key" in out_b and "received 0 (0 B)" in out_b


def test_bad_input_is_one_line(ns: str) -> None:
    for argv, problem in (
        (["--local", "198.18.0.1", "--remote", "nowhere"], "--remote 'nowhere' is not an IPv4"),
        (["--local", "fd00::1", "--remote", "198.18.0.2"], "--local 'fd00::1' is not an IPv4"),
        (["--local", "198.18.0.1", "--remote", "198.18.0.2", "--address", "x/99"],
         "--address 'x/99'"),
    ):
        done = run_vnet(ns, "tun", "gre", "gre9", *argv)
        assert done.returncode == 1 and problem in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    with Netlink(ns) as nl:
        assert [link.name for link in nl.links()] == ["lo"]
