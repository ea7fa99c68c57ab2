"""rtnetlink through pyroute2, in namespaces the tests create."""

from __future__ import annotations

import json
import socket

import pytest

from tests.conftest import unique
from vnet.errors import ConfigError, KernelError
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink


def n() -> str:
    return unique("l")[:15]


def test_veth_link_attributes(ns: str) -> None:
    a, b = n(), n()
    with Netlink(ns) as nl:
        nl.add_veth(a, b)
        link = nl.link(a)
        assert link.kind == "veth" and not link.up
        nl.set_mtu(a, 1400)
        nl.set_mac(a, "02:00:00:00:00:0a")
        nl.set_up(a)
        nl.set_up(b)
        link = nl.link(a)
        assert (link.mtu, link.mac, link.up) == (1400, "02:00:00:00:00:0a", True)
        nl.set_down(a)
        assert not nl.link(a).up
        nl.set_txqueuelen(a, 4096)
        shown = netns.run(ns, ["ip", "-j", "link", "show", a], capture_output=True,
                          text=True).stdout
        assert json.loads(shown)[0]["txqlen"] == 4096
        nl.delete_link(a)
        assert not nl.exists(a) and not nl.exists(b)  # a veth pair dies together


def test_veth_peer_in_another_namespace_and_ping(ns: str, ns2: str) -> None:
    a, b = n(), n()
    with Netlink(ns) as nl:
        nl.add_veth(a, b, peer_netns=ns2)
        assert nl.exists(a) and not nl.exists(b)
        nl.add_address(a, "198.18.10.1/24")
        nl.set_up(a)
    with Netlink(ns2) as nl2:
        assert nl2.exists(b)
        nl2.add_address(b, "198.18.10.2/24")
        nl2.set_up(b)
    done = netns.run(ns, ["ping", "-c", "1", "-W", "2", "198.18.10.2"], capture_output=True,
                     timeout=10)
    assert done.returncode == 0


def test_move_link_to_namespace(ns: str, ns2: str) -> None:
    a, b = n(), n()
    with Netlink(ns) as nl:
        nl.add_veth(a, b)
        nl.move_to_netns(b, ns2)
        assert not nl.exists(b)
    with Netlink(ns2) as nl2:
        assert nl2.link(b).kind == "veth"


def test_addresses_v4_v6(ns: str) -> None:
    a, b = n(), n()
    with Netlink(ns) as nl:
        nl.add_veth(a, b)
        nl.add_address(a, "198.18.20.1/24")
        nl.add_address(a, "fd00:20::1/64", nodad=True)
        got = {x.address for x in nl.addresses(a)}
        assert {"198.18.20.1/24", "fd00:20::1/64"} <= got
        with pytest.raises(KernelError, match="already exists"):
            nl.add_address(a, "198.18.20.1/24")
        nl.del_address(a, "198.18.20.1/24")
        assert "198.18.20.1/24" not in {x.address for x in nl.addresses(a)}
        assert all(x.link == a for x in nl.addresses(a))


def test_routes(ns: str) -> None:
    a, b = n(), n()
    with Netlink(ns) as nl:
        nl.add_veth(a, b)
        nl.add_address(a, "198.18.30.1/24")
        nl.add_address(a, "fd00:30::1/64", nodad=True)
        nl.set_up(a)
        nl.set_up(b)
        nl.add_route("198.19.0.0/16", via="198.18.30.2")
        nl.add_route("198.19.5.0/24", dev=a, metric=50)
        nl.add_route("fd00:99::/64", via="fd00:30::2")
        nl.add_route("default", via="198.18.30.2", table=100)
        routes = nl.routes()
        assert any(r.dst == "198.19.0.0/16" and r.gateway == "198.18.30.2" and r.dev == a
                   for r in routes)
        assert any(r.dst == "198.19.5.0/24" and r.metric == 50 for r in routes)
        assert any(r.dst == "fd00:99::/64" and r.gateway == "fd00:30::2" for r in routes)
        assert any(r.dst == "default" for r in nl.routes(table=100))
        nl.del_route("198.19.0.0/16", via="198.18.30.2")
        assert not any(r.dst == "198.19.0.0/16" for r in nl.routes(socket.AF_INET))
        with pytest.raises(KernelError, match="gateway is not reachable"):
            nl.add_route("198.19.7.0/24", via="198.18.99.1")
        with pytest.raises(ConfigError, match="needs a gateway"):
            nl.add_route("198.19.8.0/24")
        with pytest.raises(ConfigError, match="same family"):
            nl.add_route("198.19.8.0/24", via="fd00::1")
        with pytest.raises(ConfigError, match="invalid route destination"):
            nl.add_route("198.19.8.1/24", via="198.18.30.2")


def test_bridge_and_ports(ns: str) -> None:
    br, a, b = n(), n(), n()
    with Netlink(ns) as nl:
        nl.add_bridge(br)
        nl.add_veth(a, b)
        nl.set_master(a, br)
        assert nl.link(br).kind == "bridge"
        assert nl.link(a).master == nl.index(br)
        nl.set_master(a, None)
        assert nl.link(a).master is None


def test_vxlan(ns: str) -> None:
    a, b, vx, vx6 = n(), n(), n(), n()
    with Netlink(ns) as nl:
        nl.add_veth(a, b)
        nl.add_address(a, "198.18.40.1/24")
        nl.add_vxlan(vx, 42, remote="198.18.40.2", local="198.18.40.1", dev=a, port=8472)
        link = nl.link(vx)
        assert link.kind == "vxlan" and link.extra == {"vni": 42, "port": 8472}
        nl.add_vxlan(vx6, 43, group="ff05::100", dev=a)
        assert nl.link(vx6).extra["vni"] == 43
        with pytest.raises(ConfigError, match="VNI"):
            nl.add_vxlan(n(), 1 << 24, remote="198.18.40.2")
        with pytest.raises(ConfigError, match="not both"):
            nl.add_vxlan(n(), 1, remote="198.18.40.2", group="239.1.1.1")


def test_bad_input_is_one_clear_error(ns: str) -> None:
    with Netlink(ns) as nl:
        with pytest.raises(KernelError, match="'nope0' does not exist"):
            nl.set_up("nope0")
        with pytest.raises(ConfigError, match="invalid address"):
            nl.add_address("lo", "198.18.0.300/24")
        with pytest.raises(ConfigError, match="needs a prefix length"):
            nl.add_address("lo", "198.18.0.3")
        with pytest.raises(ConfigError, match="invalid MAC"):
            nl.set_mac("lo", "zz:00:00:00:00:00")
        with pytest.raises(ConfigError, match="multicast"):
            nl.set_mac("lo", "01:00:00:00:00:00")
        with pytest.raises(ConfigError, match="MTU"):
            nl.set_mtu("lo", 10)
        with pytest.raises(ConfigError, match="queue length 0"):
            nl.set_txqueuelen("lo", 0)
        with pytest.raises(ConfigError, match="at most 15"):
            nl.add_bridge("b" * 16)
    with pytest.raises(KernelError, match="does not exist"):
        Netlink("vnet-no-such-namespace")


def test_vxlan_neighbors_fdb_and_onlink_routes(ns: str) -> None:
    """What flannel's vxlan backend installs per remote host, added, replaced, removed."""
    dev = n()
    with Netlink(ns) as nl:
        nl.add_vxlan(dev, 1, port=8472, learning=False)
        nl.add_address(dev, "198.18.3.0/32")
        nl.set_up(dev)
        for _ in range(2):  # replace: the second time changes nothing and is no error
            nl.replace_neighbor(dev, "198.18.5.0", "02:aa:bb:cc:dd:ee")
            nl.replace_fdb(dev, "02:aa:bb:cc:dd:ee", "198.18.0.2")
            nl.replace_route("198.18.5.0/24", via="198.18.5.0", dev=dev, onlink=True)
        assert nl.neighbors(dev) == [("198.18.5.0", "02:aa:bb:cc:dd:ee")]
        assert ("02:aa:bb:cc:dd:ee", "198.18.0.2") in nl.fdb_entries(dev)
        route = [r for r in nl.routes(socket.AF_INET) if r.dst == "198.18.5.0/24"]
        assert [(r.gateway, r.dev) for r in route] == [("198.18.5.0", dev)]
        nl.replace_fdb(dev, "02:aa:bb:cc:dd:ee", "198.18.0.9")  # the host moved
        assert ("02:aa:bb:cc:dd:ee", "198.18.0.9") in nl.fdb_entries(dev)
        nl.del_route("198.18.5.0/24", via="198.18.5.0", dev=dev)
        nl.del_fdb(dev, "02:aa:bb:cc:dd:ee", "198.18.0.9")
        nl.del_neighbor(dev, "198.18.5.0")
        assert nl.neighbors(dev) == []
        assert not [e for e in nl.fdb_entries(dev) if e[0] == "02:aa:bb:cc:dd:ee"]
        with pytest.raises(ConfigError, match="invalid VTEP"):
            nl.replace_fdb(dev, "02:aa:bb:cc:dd:ee", "nowhere")
        with pytest.raises(ConfigError, match="invalid neighbour address 'x'"):
            nl.del_neighbor(dev, "x")
        with pytest.raises(ConfigError, match="invalid gateway address 'bogus'"):
            nl.add_route("default", via="bogus")


def test_pinned_index_is_forgotten_when_the_link_goes(ns: str) -> None:
    a, b = n(), n()
    with Netlink(ns) as nl:
        nl.add_veth(a, b)
        first = nl.pin(a)
        assert first == nl.index(a) == next(x.index for x in nl.links() if x.name == a)
        nl.set_mtu(a, 1400)  # through the pinned index
        assert nl.link(a).mtu == 1400
        nl.delete_link(a)
        nl.add_veth(a, b)  # same name, a new index
        assert nl.index(a) == next(x.index for x in nl.links() if x.name == a) != first
        nl.pin(a)
        nl.rename(a, n())
        with pytest.raises(KernelError, match="does not exist"):
            nl.index(a)
