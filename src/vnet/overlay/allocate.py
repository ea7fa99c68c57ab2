"""Which subnet a host takes: its previous one when it is still free (a restart keeps
its address plan), else one picked at random among the free ones, as flanneld does (a
random pick makes two hosts starting at once unlikely to race for the same key; the
etcd transaction settles it when they do)."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from random import Random

from vnet.overlay.config import NetworkConfig


def pick(
    config: NetworkConfig,
    taken: Collection[ipaddress.IPv4Network],
    rng: Random,
    previous: ipaddress.IPv4Network | None = None,
) -> ipaddress.IPv4Network | None:
    """A free subnet of the pool, or None when the pool is exhausted."""
    if previous is not None and config.contains(previous) and previous not in taken:
        return previous
    used = {int(s.network_address) for s in taken if s.prefixlen == config.subnet_len}
    pool = config.subnets()
    free = len(pool) - sum(1 for address in used if address in pool)
    if free <= 0:
        return None
    # at most a few tries on a sparse pool; a full scan on a nearly full one
    for _ in range(16):
        address = pool[rng.randrange(len(pool))]
        if address not in used:
            return config.subnet_at(address)
    choices = [address for address in pool if address not in used]
    return config.subnet_at(rng.choice(choices))
