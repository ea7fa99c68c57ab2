"""Leases as flanneld writes them: keys, values, and what each backend makes of one."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vnet.overlay.backends import Fdb, Neighbor, Route, UdpPeer, WgPeer, entries
from vnet.overlay.config import parse_config
from vnet.overlay.lease import Lease, LeaseError, decode, parse_key, subnet_key

PREFIX = "/coreos.com/network/subnets/"
# values as flanneld writes them (flannel's Documentation/reservations.md, backends.md)
FLANNEL_VXLAN = ('{"PublicIP":"198.18.0.3","PublicIPv6":null,"BackendType":"vxlan",'
                 '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')
FLANNEL_UDP = '{"PublicIP":"198.18.0.4","PublicIPv6":null}'
FLANNEL_WG = ('{"PublicIP":"198.18.0.5","PublicIPv6":null,"BackendType":"wireguard",'
              '"BackendData":{"PublicKey":"' + "A" * 43 + '=","Port":51820}}')
# a dual-stack host (EnableIPv6): key "<v4>-<len>&<v6>-<len>", PublicIPv6, BackendV6Data
DUAL_KEY = PREFIX + "198.19.34.0-24&fd00:1:0:22::-64"
FLANNEL_VXLAN_DUAL = ('{"PublicIP":"198.18.0.3","PublicIPv6":"fd00::3","BackendType":"vxlan",'
                     '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"},'
                     '"BackendV6Data":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:66"}}')
FLANNEL_WG_DUAL = ('{"PublicIP":"198.18.0.5","PublicIPv6":"fd00::5","BackendType":"wireguard",'
                   '"BackendData":{"PublicKey":"' + "A" * 43 + '=","Port":51820},'
                   '"BackendV6Data":{"PublicKey":"' + "A" * 43 + '=","Port":51821}}')


def test_keys_round_trip() -> None:
    subnet = ipaddress.IPv4Network("198.19.34.0/24")
    assert subnet_key(subnet) == "198.19.34.0-24"
    assert parse_key(PREFIX + "198.19.34.0-24") == (subnet, None)
    both = parse_key(PREFIX + "198.19.34.0-24&fd00:1::-64")
    assert both == (subnet, ipaddress.IPv6Network("fd00:1::/64"))
    with pytest.raises(LeaseError):
        parse_key(PREFIX + "config")


def test_flanneld_values_are_read_and_ours_are_written_alike() -> None:
    vxlan = decode(PREFIX + "198.19.34.0-24", FLANNEL_VXLAN)
    assert vxlan.backend_type == "vxlan" and vxlan.backend_data["VtepMAC"] == "c6:d2:32:6f:8f:44"
    assert vxlan.encode() == FLANNEL_VXLAN  # byte for byte what flanneld writes
    udp = decode(PREFIX + "198.19.35.0-24", FLANNEL_UDP)
    assert udp.backend_type == "" and udp.encode() == FLANNEL_UDP
    wg = decode(PREFIX + "198.19.36.0-24", FLANNEL_WG)
    assert wg.encode() == FLANNEL_WG


def test_what_each_backend_installs() -> None:
    network = '{"Network":"198.19.0.0/16","Backend":{"Type":"%s"}}'
    vxlan = decode(PREFIX + "198.19.34.0-24", FLANNEL_VXLAN)
    assert entries(parse_config(network % "vxlan").backend, vxlan) == [
        Neighbor("flannel.1", "198.19.34.0", "c6:d2:32:6f:8f:44"),
        Fdb("flannel.1", "c6:d2:32:6f:8f:44", "198.18.0.3"),
        Route("198.19.34.0/24", via="198.19.34.0", dev="flannel.1", onlink=True),
    ]
    udp = decode(PREFIX + "198.19.35.0-24", FLANNEL_UDP)
    assert entries(parse_config(network % "udp").backend, udp) == [
        UdpPeer("198.19.35.0/24", ("198.18.0.4", 8285))]
    wg = decode(PREFIX + "198.19.36.0-24", FLANNEL_WG)
    assert entries(parse_config(network % "wireguard").backend, wg) == [
        WgPeer("flannel-wg", "A" * 43 + "=", ("198.18.0.5", 51820), ("198.19.36.0/24",))]
    hostgw = Lease(ipaddress.IPv4Network("198.19.37.0/24"),
                   ipaddress.IPv4Address("198.18.0.6"), "host-gw")
    assert entries(parse_config(network % "host-gw").backend, hostgw) == [
        Route("198.19.37.0/24", via="198.18.0.6")]
    with pytest.raises(LeaseError, match="backend 'vxlan'"):
        entries(parse_config(network % "host-gw").backend, vxlan)
    broken = Lease(vxlan.subnet, vxlan.public_ip, "vxlan", {"VtepMAC": "zz"})
    with pytest.raises(LeaseError, match="VtepMAC"):
        entries(parse_config(network % "vxlan").backend, broken)


def test_dual_stack_leases() -> None:
    dual = '{"Network":"198.19.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:1::/48",' \
        '"Backend":{"Type":"%s"}}'
    vxlan = decode(DUAL_KEY, FLANNEL_VXLAN_DUAL)
    assert vxlan.ipv6_subnet == ipaddress.IPv6Network("fd00:1:0:22::/64")
    assert str(vxlan.public_ipv6) == "fd00::3"
    assert vxlan.encode() == FLANNEL_VXLAN_DUAL and vxlan.key == DUAL_KEY.rsplit("/", 1)[1]
    assert entries(parse_config(dual % "vxlan").backend, vxlan, ipv6=True)[3:] == [
        Neighbor("flannel-v6.1", "fd00:1:0:22::", "c6:d2:32:6f:8f:66"),
        Fdb("flannel-v6.1", "c6:d2:32:6f:8f:66", "fd00::3"),
        Route("fd00:1:0:22::/64", via="fd00:1:0:22::", dev="flannel-v6.1", onlink=True),
    ]
    hostgw = Lease(vxlan.subnet, vxlan.public_ip, "host-gw", {}, vxlan.ipv6_subnet,
                   vxlan.public_ipv6)
    assert entries(parse_config(dual % "host-gw").backend, hostgw, ipv6=True) == [
        Route("198.19.34.0/24", via="198.18.0.3"), Route("fd00:1:0:22::/64", via="fd00::3")]
    # a host without IPv6 in a dual-stack network: its IPv4 subnet is still reached
    v4only = Lease(vxlan.subnet, vxlan.public_ip, "host-gw")
    assert entries(parse_config(dual % "host-gw").backend, v4only, ipv6=True) == [
        Route("198.19.34.0/24", via="198.18.0.3")]
    no_public6 = Lease(vxlan.subnet, vxlan.public_ip, "host-gw", {}, vxlan.ipv6_subnet)
    with pytest.raises(LeaseError, match="no PublicIPv6"):
        entries(parse_config(dual % "host-gw").backend, no_public6, ipv6=True)
    wg = decode(DUAL_KEY, FLANNEL_WG_DUAL)
    key = "A" * 43 + "="
    assert entries(parse_config(dual % "wireguard").backend, wg, ipv6=True) == [
        WgPeer("flannel-wg", key, ("198.18.0.5", 51820), ("198.19.34.0/24",)),
        WgPeer("flannel-wg-v6", key, ("fd00::5", 51821), ("fd00:1:0:22::/64",)),
    ]  # flannel's default "separate" mode
    one = dual.replace('"%s"', '"wireguard","Mode":"%s"')
    assert entries(parse_config(one % "ipv6").backend, wg, ipv6=True) == [
        WgPeer("flannel-wg", key, ("fd00::5", 51821), ("198.19.34.0/24", "fd00:1:0:22::/64"))]
    assert entries(parse_config(one % "auto").backend, wg, ipv6=True) == [
        WgPeer("flannel-wg", key, ("198.18.0.5", 51820), ("198.19.34.0/24", "fd00:1:0:22::/64"))
    ]  # both addresses private: over IPv4
    bad = decode(DUAL_KEY, FLANNEL_VXLAN_DUAL.replace("c6:d2:32:6f:8f:66", "x"))
    with pytest.raises(LeaseError, match="BackendV6Data has no valid VtepMAC"):
        entries(parse_config(dual % "vxlan").backend, bad, ipv6=True)
    with pytest.raises(LeaseError, match="PublicIPv6 'x' is not IPv6"):
        decode(DUAL_KEY, FLANNEL_VXLAN_DUAL.replace('"fd00::3"', '"x"'))


@given(st.text(max_size=30), st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
def test_any_key_and_value_decode_or_raise_lease_error(key: str, value: bytes) -> None:
    try:
        lease = decode(PREFIX + key, value)
    except LeaseError:
        return
    assert decode(PREFIX + lease.key, lease.encode()) == lease
