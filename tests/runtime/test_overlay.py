"""`vnet overlay` end to end: agents in host namespaces, a real etcd, containers on a
docker0 bridge configured from subnet.env; every container reaches every other."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.runtime.overlay_env import Host, Overlay
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink
from vnet.overlay.lease import decode
from vnet.runtime import etcd_server

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Overlay]:
    env = Overlay(tmp_path, log_level="debug")  # a failure shows what each agent saw
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


@pytest.mark.parametrize("backend", [
    {"Type": "vxlan"},  # flannel.1 and flannel-v6.1
    {"Type": "host-gw"},
    {"Type": "wireguard"},  # flannel's "separate" mode: flannel-wg and flannel-wg-v6
    {"Type": "wireguard", "Mode": "ipv6"},  # one device, both families, over IPv6
], ids=["vxlan", "host-gw", "wireguard", "wireguard-ipv6"])
def test_dual_stack_containers_reach_each_other_over_both_families(
    overlay: Overlay, backend: dict[str, str]
) -> None:
    overlay.start(backend, dual_stack=True)
    for host in overlay.hosts:
        assert host.env["FLANNEL_IPV6_NETWORK"] == "fd00:19::/48"
        assert host.env["FLANNEL_IPV6_SUBNET"].endswith("::1/64")
    kvs = overlay.etcd_call(lambda r: r.get_prefix(r.subnets_prefix)[0])
    leases = [decode(kv.key, kv.value) for kv in kvs]
    assert sorted(str(x.public_ipv6) for x in leases) == ["fd00::1", "fd00::2", "fd00::3"]
    assert all("&fd00:19:" in kv.key for kv in kvs)  # flannel's dual-stack key
    for a in overlay.hosts:
        for b in overlay.hosts:
            if a is not b:
                assert overlay.ping(a, b), overlay.logs()
                assert overlay.ping(a, b, ipv6=True), overlay.logs()
    device = {"vxlan": "flannel-v6.1", "host-gw": "eth0"}.get(
        backend["Type"], "flannel-wg" if "Mode" in backend else "flannel-wg-v6")
    shown = overlay.ns_run(overlay.hosts[0].ns, "ip", "-6", "route", "show").stdout
    others = [b.env["FLANNEL_IPV6_SUBNET"].replace("::1/", "::/") for b in overlay.hosts[1:]]
    for subnet in others:  # each other host's subnet, or the whole network, on that device
        assert any(line.startswith((subnet, "fd00:19::/48")) and f"dev {device}" in line
                   for line in shown.splitlines()), shown
    if backend["Type"] == "wireguard":  # which underlay each device's peers are on
        devices = {"flannel-wg": "[fd00::" if backend.get("Mode") == "ipv6" else "198.18.0."}
        if "Mode" not in backend:
            devices["flannel-wg-v6"] = "[fd00::"
        for device, underlay in devices.items():
            endpoints = uapi_endpoints(overlay.hosts[0].dir / "wg" / f"{device}.sock")
            assert len(endpoints) == 2 and all(e.startswith(underlay) for e in endpoints)


def uapi_endpoints(path: Path) -> list[str]:
    """The peers' endpoints, as `wg show DEV endpoints` would read them over UAPI."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(b"get=1\n\n")
        reply = b""
        while not reply.endswith(b"\n\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return [line.split("=", 1)[1] for line in reply.decode().splitlines()
            if line.startswith("endpoint=")]


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

    def fdb() -> list[tuple[str, str]]:
        with Netlink(h2.ns) as nl:
            return sorted(nl.fdb_entries("flannel.1"))

    assert wait_for(lambda: len(fdb()) == 2)  # h2 has heard of both others
    fdb_before = fdb()
    overlay.stop_agent(h1)
    h1.subnet_file.unlink()  # not even subnet.env helps: the lease names its PublicIP
    overlay.start_agent(h1)
    overlay.wait_subnet(h1)
    assert h1.env["FLANNEL_SUBNET"] == before
    assert fdb() == fdb_before  # same VtepMAC: no change
    assert wait_for(lambda: overlay.ping(h2, h1, deadline=1))


def test_switching_ipv6_on_replaces_a_hosts_lease(overlay: Overlay) -> None:
    """flanneld's rule: a lease the config no longer fits (here: IPv6 switched on) is
    given up at restart and one with both subnets taken; the other hosts follow."""
    overlay.start({"Type": "host-gw"})
    h1, h2, _ = overlay.hosts
    old = subnet_of(h1)
    overlay.set_config({"Type": "host-gw"}, dual_stack=True)
    overlay.stop_agent(h1)
    h1.subnet_file.unlink()
    overlay.start_agent(h1)
    overlay.wait_subnet(h1)
    assert "FLANNEL_IPV6_SUBNET" in h1.env
    kvs = overlay.etcd_call(lambda r: r.get_prefix(r.subnets_prefix)[0])
    mine = [kv.key for kv in kvs if decode(kv.key, kv.value).public_ip == IPv4Address(h1.address)]
    assert len(mine) == 1 and "&fd00:19:" in mine[0], mine
    # h2 still runs the config it started with (as flanneld, it reads it once) and
    # follows h1's new lease over IPv4; restarted, it takes IPv6 too and routes h1's
    assert wait_for(lambda: subnet_of(h1) in routes(overlay, h2)
                    and (old == subnet_of(h1) or old not in routes(overlay, h2)))
    overlay.stop_agent(h2)
    overlay.start_agent(h2)
    v6 = h1.env["FLANNEL_IPV6_SUBNET"].replace("::1/", "::/")
    assert wait_for(lambda: v6 in overlay.ns_run(h2.ns, "ip", "-6", "route").stdout)


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
    through the masquerade that --ip-masq installs, over IPv4 and IPv6."""
    outside = overlay.namespace(f"ovo-{overlay.tag}")
    overlay.plug(outside, "198.18.0.200", f"vo-{overlay.tag}")
    h1, h2, _ = overlay.hosts
    overlay.set_config({"Type": "host-gw"}, dual_stack=True)
    overlay.start_agent(h1, "--ip-masq")
    overlay.start_agent(h2)
    for host in (h1, h2):
        overlay.wait_subnet(host)
        overlay.attach_container(host)
    assert h1.env["FLANNEL_IPMASQ"] == "true" and h2.env["FLANNEL_IPMASQ"] == "false"

    def reaches(host: Host, outside: str = "198.18.0.200") -> bool:
        done = overlay.ns_run(host.container, "ping", "-c", "1", "-W", "1", outside,
                              check=False)
        return done.returncode == 0

    assert wait_for(lambda: reaches(h1)), overlay.logs()
    assert reaches(h1, "fd00::200")
    assert not reaches(h2) and not reaches(h2, "fd00::200")  # no way back to its sources
    assert overlay.ping(h1, h2)  # within the network: not masqueraded, still routed
    overlay.stop_agent(h1)  # the rules go with the agent
    assert "vnet-overlay" not in overlay.ns_run(h1.ns, "nft", "list", "tables").stdout
