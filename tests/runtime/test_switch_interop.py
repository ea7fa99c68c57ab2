"""`vnet switch` against the kernel's vxlan driver, with "VMs" in their own namespaces.

    h1 (kernel VTEP 198.18.0.1)            sw (vnet switch, VTEP 198.18.0.2)
    vx100 VNI 100 198.19.100.1  ─┐       ┌─ VLAN 10 ── tapA → ns vmA 198.19.100.2
    vx200 VNI 200 198.19.200.1  ─┴─veth──┴─ VLAN 20 ── tapB → ns vmB 198.19.200.2
                                                                  + 198.19.100.3 (tenant 200!)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import IS_ROOT, run_vnet, unique
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces, TAP, vxlan")


@dataclass
class Topo:
    h1: str
    sw: str
    vm_a: str
    vm_b: str
    name: str
    proc: subprocess.Popen[str]


def _ns() -> str:
    name = unique("vnet-sw")
    netns.create(name)
    return name


def start_switch(ns: str, config: str, name: str, *extra: str) -> subprocess.Popen[str]:
    """`vnet switch run CONFIG` in ``ns``, returned once its control socket is up."""
    proc = netns.popen(ns, [sys.executable, "-m", "vnet", "switch", "run", config, *extra],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    while not os.path.exists(f"/run/vnet/switch/{name}.sock"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"switch did not start: {proc.communicate()[1]}")
        time.sleep(0.05)
    return proc


def _uid(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split()[1] for line in f if line.startswith("Uid:"))


def stop(proc: subprocess.Popen[str] | None, namespaces: list[str]) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)
    for ns in namespaces:
        netns.delete(ns)


@pytest.fixture(params=["offload", "no-offload", "offload-as-nobody"])
def topo(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[Topo]:
    """With offloads (vnet_hdr TAPs, UDP GSO/GRO) and without: both paths must interoperate;
    and with offloads, the switch run as nobody once its ports are open (--user)."""
    made: list[str] = []
    proc = None
    try:
        h1, sw, vm_a, vm_b = (_ns() for _ in range(4))
        made += [h1, sw, vm_a, vm_b]
        for ns in made:
            with Netlink(ns) as nl:
                nl.set_up("lo")
        with Netlink(h1) as nl:
            nl.add_veth("u1", "u2", peer_netns=sw)
            nl.add_address("u1", "198.18.0.1/24")
            nl.set_up("u1")
        # veth "hardware" never fills in checksums the stack left to it, and the kernel's vxlan
        # passes inner TCP checksums on partial: a userspace VTEP would receive them unfinished.
        # A real NIC computes them; here the underlay must do it in software.
        off = netns.run(h1, ["ethtool", "-K", "u1", "tx", "off"], capture_output=True)
        assert off.returncode == 0, "ethtool is missing: run `make setup`"
        with Netlink(h1) as nl:
            for vni, addr in ((100, "198.19.100.1/24"), (200, "198.19.200.1/24")):
                nl.add_vxlan(f"vx{vni}", vni, remote="198.18.0.2", local="198.18.0.1",
                             dev="u1", port=4789)
                nl.add_address(f"vx{vni}", addr)
                nl.set_up(f"vx{vni}")
        with Netlink(sw) as nl:
            nl.add_address("u2", "198.18.0.2/24")
            nl.set_up("u2")
        name = unique("sw")
        tap_a, tap_b = unique("tapa")[:15], unique("tapb")[:15]
        config = os.path.join(tmp_path, "sw.yaml")
        with open(config, "w") as f:
            offload = request.param.startswith("offload")
            f.write(f"name: {name}\noffload: {str(offload).lower()}\n"
                    "ports:\n"
                    f"  - {{name: {tap_a}, vlan: 10, netns: {vm_a}}}\n"
                    f"  - {{name: {tap_b}, vlan: 20, netns: {vm_b}}}\n"
                    "segments:\n"
                    "  - {vni: 100, vlan: 10, remotes: [198.18.0.1]}\n"
                    "  - {vni: 200, vlan: 20, remotes: [198.18.0.1]}\n")
        nobody = request.param.endswith("nobody")
        proc = start_switch(sw, config, name, *(("--user", "nobody") if nobody else ()))
        if nobody:
            # the control socket is up before the drop: wait for it (bounded)
            deadline = time.monotonic() + 10
            while (uid := _uid(proc.pid)) != "65534" and time.monotonic() < deadline:
                time.sleep(0.02)
            assert uid == "65534"
        with Netlink(vm_a) as nl:
            nl.add_address(tap_a, "198.19.100.2/24")
        with Netlink(vm_b) as nl:
            nl.add_address(tap_b, "198.19.200.2/24")
            nl.add_address(tap_b, "198.19.100.3/24")  # same subnet, other tenant
        yield Topo(h1, sw, vm_a, vm_b, name, proc)
    finally:
        stop(proc, made)


def ping(ns: str, target: str, count: int = 3) -> bool:
    done = netns.run(ns, ["ping", "-c", str(count), "-i", "0.2", "-W", "1", target],
                     capture_output=True, timeout=30)
    return done.returncode == 0


def iperf_bytes(client: str, server: str, address: str, seconds: int = 2) -> int:
    srv = netns.popen(server, ["iperf3", "-s", "-1", "-B", address, "-p", "5301"],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if netns.run(server, ["ss", "-Htln", "sport = :5301"], capture_output=True,
                         text=True).stdout.strip():
                break
            time.sleep(0.05)
        done = netns.run(client, ["iperf3", "-c", address, "-p", "5301", "-t", str(seconds), "-J"],
                         capture_output=True, text=True, timeout=60)
        return int(json.loads(done.stdout)["end"]["sum_received"]["bytes"])
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def test_kernel_vxlan_interop_and_tenant_isolation(topo: Topo) -> None:
    assert ping(topo.h1, "198.19.100.2")  # kernel vxlan VNI 100 -> vnet switch -> vmA
    assert ping(topo.vm_a, "198.19.100.1")
    assert ping(topo.h1, "198.19.200.2")  # VNI 200 -> vmB
    assert not ping(topo.h1, "198.19.100.3", count=2)  # vmB is tenant 200: unreachable
    assert iperf_bytes(topo.h1, topo.vm_a, "198.19.100.2") > 1_000_000
    assert iperf_bytes(topo.vm_a, topo.h1, "198.19.100.1") > 1_000_000
    fdb = json.loads(run_vnet(topo.sw, "switch", "fdb", topo.name, "--json").stdout)["fdb"]
    behind_vtep = [e for e in fdb if e["remote"] == "198.18.0.1:4789"]
    assert {e["vlan"] for e in behind_vtep} == {10, 20}  # h1's MACs learned per tenant
    stats = json.loads(run_vnet(topo.sw, "switch", "stats", topo.name, "--json").stdout)
    assert stats["ports"]["vxlan:100"]["rx_frames"] > 100
    table = run_vnet(topo.sw, "switch", "fdb", topo.name).stdout
    assert "198.18.0.1:4789" in table


def test_clean_shutdown_removes_taps(topo: Topo) -> None:
    topo.proc.terminate()
    topo.proc.wait(timeout=10)
    assert not os.path.exists(f"/run/vnet/switch/{topo.name}.sock")
    for ns in (topo.vm_a, topo.vm_b):
        with Netlink(ns) as nl:
            assert [link.name for link in nl.links()] == ["lo"]


def test_switch_bad_input(ns: str, tmp_path: os.PathLike[str]) -> None:
    bad = os.path.join(tmp_path, "bad.yaml")
    with open(bad, "w") as f:
        f.write("name: s1\nports:\n  - {name: t1, vlan: 5000}\n")
    done = run_vnet(ns, "switch", "run", bad)
    assert done.returncode == 1 and "ports.0.vlan" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    done = run_vnet(ns, "switch", "run", "--name", "s2", "--segment", "100")
    assert done.returncode == 1 and "VNI:VLAN" in done.stderr
    done = run_vnet(ns, "switch", "fdb", "nope")
    assert done.returncode == 1 and "not running" in done.stderr
    with open(bad, "w") as f:
        f.write("name: s3\nports:\n  - {name: t3, storm_limit: -5}\n")
    done = run_vnet(ns, "switch", "run", bad)
    assert done.returncode == 1 and "ports.0.storm_limit" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    done = run_vnet(ns, "switch", "run", "--name", "s4", "--port", "t4", "--storm-limit", "-1")
    assert done.returncode == 2 and "--storm-limit" in done.stderr
    assert "Traceback" not in done.stderr
    with Netlink(ns) as nl:
        assert [link.name for link in nl.links()] == ["lo"]


def test_tap_to_tap_super_frames(tmp_path: os.PathLike[str]) -> None:
    """Two vnet_hdr TAPs: TSO super-frames cross the switch as one unit both ways (the
    tag-moving variant is tested in memory: this kernel has no 802.1Q to terminate it)."""
    made: list[str] = []
    proc = None
    try:
        sw, vm_a, vm_b = (_ns() for _ in range(3))
        made += [sw, vm_a, vm_b]
        name = unique("sw")
        config = os.path.join(tmp_path, "sw.yaml")
        with open(config, "w") as f:
            f.write(f"name: {name}\nports:\n"
                    f"  - {{name: ta, vlan: 10, netns: {vm_a}}}\n"
                    f"  - {{name: tb, vlan: 10, netns: {vm_b}}}\n")
        proc = start_switch(sw, config, name)
        for ns, dev, addr in ((vm_a, "ta", "198.19.10.1/24"), (vm_b, "tb", "198.19.10.2/24")):
            with Netlink(ns) as nl:
                nl.set_up("lo")
                nl.add_address(dev, addr)
        assert ping(vm_a, "198.19.10.2")
        assert iperf_bytes(vm_a, vm_b, "198.19.10.2", seconds=1) > 1_000_000
        assert iperf_bytes(vm_b, vm_a, "198.19.10.1", seconds=1) > 1_000_000
        ports = json.loads(run_vnet(sw, "switch", "stats", name, "--json").stdout)["ports"]
        for port in ("ta", "tb"):
            s = ports[port]
            assert s["rx_bytes"] / s["rx_frames"] > 3000, f"{port}: no super-frames: {s}"
            assert not s["drops"], s
    finally:
        stop(proc, made)


@pytest.mark.parametrize("offload", [True, False])
def test_a_super_frame_fits_one_vxlan_send(tmp_path: os.PathLike[str], offload: bool) -> None:
    """With a VXLAN segment, a vnet_hdr TAP's TSO is limited to what one VXLAN GSO send
    carries (44 frames at MTU 1450), so that it crosses as one send and one GRO run; a
    TAP without vnet_hdr is left as the kernel made it."""
    made: list[str] = []
    proc = None
    try:
        sw, vm = _ns(), _ns()
        made += [sw, vm]
        name = unique("sw")
        config = os.path.join(tmp_path, "sw.yaml")
        with open(config, "w") as f:
            f.write(f"name: {name}\noffload: {str(offload).lower()}\nports:\n"
                    f"  - {{name: tv, vlan: 10, netns: {vm}}}\n"
                    "segments:\n  - {vni: 100, vlan: 10, remotes: [198.18.0.9]}\n")
        proc = start_switch(sw, config, name)
        with Netlink(vm) as nl:
            link = nl.link("tv")
        assert link.mtu == 1450
        assert link.gso_max_segs == (44 if offload else 65535)
    finally:
        stop(proc, made)
