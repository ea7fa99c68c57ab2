"""`vnet overlay` end to end: agents in host namespaces, a real etcd, containers on a
docker0 bridge configured from subnet.env; every container reaches every other."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.runtime.overlay_env import Host, Overlay
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink
from vnet.runtime import etcd_server

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Overlay]:
    env = Overlay(tmp_path)
    try:
        env.build(3)
        yield env
    finally:
        env.teardown()


@pytest.mark.parametrize("backend", ["udp", "vxlan", "host-gw", "wireguard"])
def test_every_container_reaches_every_other(overlay: Overlay, backend: str) -> None:
    overlay.start({"Type": backend})
    subnets = {h.env["FLANNEL_SUBNET"] for h in overlay.hosts}
    assert len(subnets) == 3
    for a in overlay.hosts:
        for b in overlay.hosts:
            if a is not b:
                assert overlay.ping(a, b), overlay.logs()


def routes(overlay: Overlay, host: Host) -> set[str]:
    with Netlink(host.ns) as nl:
        return {r.dst for r in nl.routes(socket.AF_INET) if r.dst.startswith("198.19.")}


def wait_for(condition: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def subnet_of(host: Host) -> str:
    return host.env["FLANNEL_SUBNET"].rsplit(".", 1)[0] + ".0/24"


def test_leases_come_and_go_and_etcd_may_go_away(overlay: Overlay) -> None:
    """host-gw: a deleted lease takes its routes away everywhere; with etcd stopped the
    network keeps working; when etcd is back, changes made meanwhile arrive (resync)."""
    overlay.start({"Type": "host-gw"}, SubnetMax="198.19.200.0")  # .250 stays free
    h1, h2, h3 = overlay.hosts
    assert wait_for(lambda: subnet_of(h3) in routes(overlay, h1))
    key = "/coreos.com/network/subnets/" + subnet_of(h3).replace("/", "-")
    overlay.stop_agent(h3)  # a stopped agent keeps its lease (24 h): routes stay
    assert subnet_of(h3) in routes(overlay, h1)
    overlay.etcd_call(lambda r: r.delete(key))
    assert wait_for(lambda: subnet_of(h3) not in routes(overlay, h1)
                    and subnet_of(h3) not in routes(overlay, h2)), overlay.logs()
    # etcd goes away: the data path goes on
    member = overlay.members[0]
    netns.stop([overlay.etcd_procs.pop(member.name)])
    assert overlay.ping(h1, h2)
    assert wait_for(lambda: "forwarding on the last known leases" in h1.log.read_text())
    # etcd comes back (same data); a lease written while the agents were cut off...
    overlay.start_member(member)
    etcd_server.wait_healthy([member])
    fake = '{"PublicIP":"198.18.0.99","PublicIPv6":null,"BackendType":"host-gw"}'
    overlay.etcd_call(lambda r: r.put("/coreos.com/network/subnets/198.19.250.0-24", fake))
    assert wait_for(lambda: "198.19.250.0/24" in routes(overlay, h1)
                    and "198.19.250.0/24" in routes(overlay, h2), 30), overlay.logs()
    assert overlay.ping(h1, h2)


def test_a_restarted_agent_keeps_its_subnet(overlay: Overlay) -> None:
    overlay.start({"Type": "vxlan"})
    h1, h2, _ = overlay.hosts
    before = h1.env["FLANNEL_SUBNET"]
    with Netlink(h2.ns) as nl:
        fdb_before = sorted(nl.fdb_entries("flannel.1"))
    overlay.stop_agent(h1)
    h1.subnet_file.unlink()  # not even subnet.env helps: the lease names its PublicIP
    overlay.start_agent(h1)
    overlay.wait_subnet(h1)
    assert h1.env["FLANNEL_SUBNET"] == before
    with Netlink(h2.ns) as nl:
        assert sorted(nl.fdb_entries("flannel.1")) == fdb_before  # same VtepMAC: no change
    assert wait_for(lambda: overlay.ping(h2, h1, deadline=1))


def test_a_lease_written_by_flanneld_is_used(overlay: Overlay) -> None:
    """A host that runs flanneld (played here by hand: its vxlan device, address and
    lease exactly as flanneld makes them) and vnet hosts reach each other."""
    overlay.start({"Type": "vxlan"})
    h1, h2, flannel_host = overlay.hosts
    overlay.stop_agent(flannel_host)  # this host becomes the flanneld one
    key = "/coreos.com/network/subnets/" + subnet_of(flannel_host).replace("/", "-")
    overlay.etcd_call(lambda r: r.delete(key))
    mac = "c6:d2:32:6f:8f:44"
    own = subnet_of(flannel_host)  # free again; any fixed subnet might be someone's
    first_own = own.split("/")[0]
    with Netlink(flannel_host.ns) as nl:  # what flanneld's vxlan backend sets up
        nl.add_vxlan("flannel.1", 1, local=flannel_host.address, dev="eth0", port=8472,
                     learning=False)
        nl.set_mac("flannel.1", mac)
        nl.add_address("flannel.1", f"{first_own}/32")
        nl.set_up("flannel.1")
        for other in (h1, h2):
            first = subnet_of(other).split("/")[0]
            other_mac = json.loads(overlay.etcd_call(
                lambda r, o=other: r.get("/coreos.com/network/subnets/"
                                         + subnet_of(o).replace("/", "-"))[0].value))
            nl.replace_neighbor("flannel.1", first, other_mac["BackendData"]["VtepMAC"])
            nl.replace_fdb("flannel.1", other_mac["BackendData"]["VtepMAC"], other.address)
            nl.replace_route(subnet_of(other), via=first, dev="flannel.1", onlink=True)
    value = (f'{{"PublicIP":"{flannel_host.address}","PublicIPv6":null,"BackendType":"vxlan",'
             f'"BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}')
    overlay.etcd_call(lambda r: r.put(key, value))
    assert wait_for(lambda: own in routes(overlay, h1)), overlay.logs()
    done = overlay.ns_run(h1.container, "ping", "-c", "1", "-W", "2", first_own,
                          check=False)
    assert done.returncode == 0, overlay.logs()


def test_bad_config_waits_and_a_full_pool_says_so(overlay: Overlay) -> None:
    h1, h2, _ = overlay.hosts
    overlay.etcd_call(lambda r: r.put(r.config_key, '{"Network": "198.19.0.0/16", '
                                      '"SubnetMax": "198.19.3.7"}'))
    overlay.start_agent(h1)
    assert wait_for(lambda: "SubnetMax: 198.19.3.7 is not on a /24 boundary; retrying"
                    in h1.log.read_text()), overlay.logs()
    # fixed: a pool of exactly one subnet (the first is never handed out)
    overlay.etcd_call(lambda r: r.put(r.config_key, '{"Network": "198.19.0.0/16", '
                                      '"SubnetMax": "198.19.1.0", "Backend": {"Type": "host-gw"}}'))
    overlay.wait_subnet(h1)
    assert h1.env["FLANNEL_SUBNET"] == "198.19.1.1/24"
    overlay.start_agent(h2)
    assert wait_for(lambda: "subnet pool exhausted: all 1 /24 subnets of 198.19.0.0/16 are "
                    "leased; retrying" in h2.log.read_text()), overlay.logs()
    assert not h2.subnet_file.exists()


def test_unreachable_etcd_at_start_is_retried(overlay: Overlay) -> None:
    h1 = overlay.hosts[0]
    member = overlay.members[0]
    netns.stop([overlay.etcd_procs.pop(member.name)])
    overlay.start_agent(h1)
    assert wait_for(lambda: "etcd unreachable" in h1.log.read_text()), overlay.logs()
    overlay.start_member(member)
    etcd_server.wait_healthy([member])
    overlay.set_config({"Type": "host-gw"})
    overlay.wait_subnet(h1)


def test_ip_masq_lets_containers_out(overlay: Overlay) -> None:
    """An outside host with no route to the overlay network answers a container only
    through the masquerade that --ip-masq installs."""
    outside = overlay.namespace(f"ovo-{overlay.tag}")
    overlay.plug(outside, "198.18.0.200", f"vo-{overlay.tag}")
    h1, h2, _ = overlay.hosts
    overlay.set_config({"Type": "host-gw"})
    overlay.start_agent(h1, "--ip-masq")
    overlay.start_agent(h2)
    for host in (h1, h2):
        overlay.wait_subnet(host)
        overlay.attach_container(host)
    assert h1.env["FLANNEL_IPMASQ"] == "true" and h2.env["FLANNEL_IPMASQ"] == "false"

    def reaches(host: Host) -> bool:
        done = overlay.ns_run(host.container, "ping", "-c", "1", "-W", "1", "198.18.0.200",
                              check=False)
        return done.returncode == 0

    assert wait_for(lambda: reaches(h1)), overlay.logs()
    assert not reaches(h2)  # its source address has no way back
    assert overlay.ping(h1, h2)  # within the network: not masqueraded, still routed
    overlay.stop_agent(h1)  # the rules go with the agent
    assert "vnet-overlay" not in overlay.ns_run(h1.ns, "nft", "list", "tables").stdout
