"""`vnet switch` with GRE (gretap) segments: two switches, each with two tenants' "VMs" in
their own namespaces, carry both tenants between hosts over GRE keys 100 and 200.

    s1 (vnet switch, 198.18.0.1)                       s2 (vnet switch, 198.18.0.2)
    vmA1 198.19.100.1 ─ VLAN 10 ─┐  key 100  ┌─ VLAN 10 ─ vmA2 198.19.100.2
    vmB1 198.19.200.1 ─ VLAN 20 ─┴── veth ───┴─ VLAN 20 ─ vmB2 198.19.200.2
                                    key 200                   + 198.19.100.3 (tenant 200!)

This machine's kernel has no GRE (CONFIG_NET_IPGRE_DEMUX is off: `ip link add type gretap`
answers "Unknown device type"), so the kernel's gretap cannot be the far end here; the
wire format is checked byte for byte against the kernel's in tests/switch and
tests/packet/test_gre.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import IS_ROOT, run_vnet, unique
from tests.runtime.test_switch_interop import _ns, iperf_bytes, ping, start_switch, stop
from tests.runtime.wg_env import make_underlay
from vnet.kernel.netlink import Netlink

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces, TAP, raw sockets")


@dataclass
class GreTopo:
    s1: str
    s2: str
    vm_a1: str
    vm_b1: str
    vm_a2: str
    vm_b2: str
    names: tuple[str, str]


@pytest.fixture(params=["offload", "no-offload"])
def gre_topo(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[GreTopo]:
    made: list[str] = []
    procs = []
    try:
        s1, s2, vm_a1, vm_b1, vm_a2, vm_b2 = (_ns() for _ in range(6))
        made += [s1, s2, vm_a1, vm_b1, vm_a2, vm_b2]
        for ns in made:
            with Netlink(ns) as nl:
                nl.set_up("lo")
        make_underlay(s1, s2)  # s1 198.18.0.1, s2 198.18.0.2
        names = (unique("gre")[:12], unique("gre")[:12])
        offload = str(request.param == "offload").lower()
        for i, (ns, vm_a, vm_b, remote) in enumerate(
            ((s1, vm_a1, vm_b1, "198.18.0.2"), (s2, vm_a2, vm_b2, "198.18.0.1"))
        ):
            config = os.path.join(tmp_path, f"s{i}.yaml")
            with open(config, "w") as f:
                f.write(f"name: {names[i]}\noffload: {offload}\nports:\n"
                        f"  - {{name: ta{i}, vlan: 10, netns: {vm_a}}}\n"
                        f"  - {{name: tb{i}, vlan: 20, netns: {vm_b}}}\n"
                        "segments:\n"
                        f"  - {{type: gre, key: 100, vlan: 10, remotes: [{remote}]}}\n"
                        f"  - {{type: gre, key: 200, vlan: 20, remotes: [{remote}]}}\n")
            procs.append(start_switch(ns, config, names[i]))
        for ns, tap, addresses in (
            (vm_a1, "ta0", ["198.19.100.1/24"]),
            (vm_b1, "tb0", ["198.19.200.1/24"]),
            (vm_a2, "ta1", ["198.19.100.2/24"]),
            (vm_b2, "tb1", ["198.19.200.2/24", "198.19.100.3/24"]),  # other tenant
        ):
            with Netlink(ns) as nl:
                for address in addresses:
                    nl.add_address(tap, address)
        yield GreTopo(s1, s2, vm_a1, vm_b1, vm_a2, vm_b2, names)
    finally:
        for proc in procs:
            stop(proc, [])
        stop(None, made)


def test_two_tenants_over_gre_keys_stay_apart(gre_topo: GreTopo) -> None:
    t = gre_topo
    assert ping(t.vm_a1, "198.19.100.2")  # key 100
    assert ping(t.vm_b1, "198.19.200.2")  # key 200
    assert not ping(t.vm_a1, "198.19.100.3", count=2)  # tenant 200's address: unreachable
    assert iperf_bytes(t.vm_a1, t.vm_a2, "198.19.100.2") > 1_000_000
    assert iperf_bytes(t.vm_b2, t.vm_b1, "198.19.200.1") > 1_000_000
    fdb = json.loads(run_vnet(t.s1, "switch", "fdb", t.names[0], "--json").stdout)["fdb"]
    behind = {e["vlan"] for e in fdb if e["remote"] == "198.18.0.2"}
    assert behind == {10, 20}  # s2's MACs learned behind its address, per tenant
    stats = json.loads(run_vnet(t.s2, "switch", "stats", t.names[1], "--json").stdout)
    assert stats["ports"]["gre:100"]["rx_frames"] > 100
    assert stats["ports"]["gre:200"]["rx_frames"] > 100
