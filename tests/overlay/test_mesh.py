"""The mesh follows the leases whatever order events come in, and allocation."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from vnet.overlay import allocate
from vnet.overlay.backends import Route, entries
from vnet.overlay.config import parse_config
from vnet.overlay.lease import Lease
from vnet.overlay.mesh import Mesh
from vnet.overlay.subnetenv import format_env, parse_env, previous_subnets

CONFIG = parse_config('{"Network":"198.19.0.0/16","Backend":{"Type":"host-gw"}}')
OWN = ipaddress.IPv4Network("198.19.1.0/24")


def lease(n: int, host: int) -> Lease:
    return Lease(ipaddress.IPv4Network(f"198.19.{n}.0/24"),
                 ipaddress.IPv4Address(f"198.18.0.{host}"), "host-gw")


def test_put_change_delete() -> None:
    mesh = Mesh(CONFIG.backend, OWN)
    changes = mesh.put(lease(2, 2))
    assert changes.add == [Route("198.19.2.0/24", via="198.18.0.2")] and not changes.remove
    assert not mesh.put(lease(2, 2))  # the same again: nothing to do
    moved = mesh.put(lease(2, 9))
    assert moved.remove == [Route("198.19.2.0/24", via="198.18.0.2")]
    assert moved.add == [Route("198.19.2.0/24", via="198.18.0.9")]
    assert not mesh.put(lease(1, 1))  # our own subnet is never routed
    gone = mesh.delete(ipaddress.IPv4Network("198.19.2.0/24"))
    assert gone.remove == [Route("198.19.2.0/24", via="198.18.0.9")]
    assert not mesh.installed


ops = st.lists(st.tuples(st.booleans(), st.integers(1, 6), st.integers(2, 4)), max_size=30)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_applied_changes_always_equal_the_leases(events: list[tuple[bool, int, int]]) -> None:
    """Replay put/delete events and apply the changes to a set standing in for the
    kernel: it always holds exactly the entries of the leases the mesh knows; a reset
    to the same leases then changes nothing."""
    mesh = Mesh(CONFIG.backend, OWN)
    kernel: set[object] = set()
    for put, n, host in events:
        changes = mesh.put(lease(n, host)) if put else mesh.delete(lease(n, host).subnet)
        for entry in changes.remove:
            kernel.discard(entry)
        kernel.update(changes.add)
        expected = {e for x in mesh.leases.values() for e in entries(CONFIG.backend, x)}
        assert kernel == expected
    assert not mesh.reset(list(mesh.leases.values()))


def test_allocation_keeps_the_previous_subnet_and_fills_the_pool() -> None:
    config = parse_config('{"Network":"198.19.0.0/24","SubnetLen":26}')  # subnets .64-.192
    rng = random.Random(1)
    taken: list[ipaddress.IPv4Network] = []
    previous = ipaddress.IPv4Network("198.19.0.128/26")
    assert allocate.pick(config.pool, taken, rng, previous) == previous
    while (subnet := allocate.pick(config.pool, taken, rng)) is not None:
        assert subnet not in taken and config.pool.contains(subnet)
        taken.append(subnet)
    assert len(taken) == 3  # the first subnet is never handed out
    assert allocate.pick(config.pool, taken, rng, previous) is None  # exhausted, even for it


def test_ipv6_allocation_in_a_pool_too_large_to_list() -> None:
    config = parse_config('{"Network":"198.19.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/8",'
                          '"Backend":{"Type":"host-gw"}}')
    assert config.ipv6 is not None
    rng = random.Random(2)
    taken: list[ipaddress.IPv6Network] = []
    for _ in range(50):
        subnet = allocate.pick(config.ipv6, taken, rng)
        assert subnet is not None and subnet not in taken and config.ipv6.contains(subnet)
        taken.append(subnet)
    previous = ipaddress.IPv6Network("fd00:0:0:7::/64")
    assert allocate.pick(config.ipv6, taken, rng, previous) == previous


def test_subnet_env_is_flanneld_s() -> None:
    text = format_env(ipaddress.IPv4Network("198.19.0.0/16"),
                      ipaddress.IPv4Network("198.19.7.0/24"), 1472, False)
    assert text == ("FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.7.1/24\n"
                    "FLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n")
    assert parse_env(text)["FLANNEL_MTU"] == "1472"
    assert previous_subnets(text) == (ipaddress.IPv4Network("198.19.7.0/24"), None)
    assert previous_subnets("garbage") == (None, None)
    v6 = (ipaddress.IPv6Network("fd00:1::/48"), ipaddress.IPv6Network("fd00:1:0:7::/64"))
    dual = format_env(ipaddress.IPv4Network("198.19.0.0/16"),
                      ipaddress.IPv4Network("198.19.7.0/24"), 1450, True, v6)
    assert dual == ("FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.7.1/24\n"
                    "FLANNEL_IPV6_NETWORK=fd00:1::/48\nFLANNEL_IPV6_SUBNET=fd00:1:0:7::1/64\n"
                    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    assert previous_subnets(dual)[1] == ipaddress.IPv6Network("fd00:1:0:7::/64")
