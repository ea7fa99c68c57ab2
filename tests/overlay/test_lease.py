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
        WgPeer("A" * 43 + "=", ("198.18.0.5", 51820), "198.19.36.0/24")]
    hostgw = Lease(ipaddress.IPv4Network("198.19.37.0/24"),
                   ipaddress.IPv4Address("198.18.0.6"), "host-gw")
    assert entries(parse_config(network % "host-gw").backend, hostgw) == [
        Route("198.19.37.0/24", via="198.18.0.6")]
    with pytest.raises(LeaseError, match="backend 'vxlan'"):
        entries(parse_config(network % "host-gw").backend, vxlan)
    broken = Lease(vxlan.subnet, vxlan.public_ip, "vxlan", {"VtepMAC": "zz"})
    with pytest.raises(LeaseError, match="VtepMAC"):
        entries(parse_config(network % "vxlan").backend, broken)


@given(st.text(max_size=30), st.binary(max_size=60) | st.text(max_size=60).map(str.encode))
def test_any_key_and_value_decode_or_raise_lease_error(key: str, value: bytes) -> None:
    try:
        lease = decode(PREFIX + key, value)
    except LeaseError:
        return
    assert decode(PREFIX + lease.key, lease.encode()) == lease
