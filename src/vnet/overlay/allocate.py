"""Which subnet a host takes: its previous one when it is still free (a restart keeps
its address plan), else one picked at random among the free ones, as flanneld does (a
random pick makes two hosts starting at once unlikely to race for the same key; the
etcd transaction settles it when they do). The same for each family's pool."""

from __future__ import annotations

from collections.abc import Collection
from random import Random

from vnet.overlay.config import NetT, Pool

SCAN_LIMIT = 1 << 16  # a pool that large is never scanned: random picks find a free one


def pick(
    pool: Pool[NetT],
    taken: Collection[NetT],
    rng: Random,
    previous: NetT | None = None,
) -> NetT | None:
    """A free subnet of the pool, or None when the pool is exhausted."""
    if previous is not None and pool.contains(previous) and previous not in taken:
        return previous
    used = {i for i in (pool.index(s) for s in taken) if i is not None}
    if len(used) >= pool.size:
        return None
    # at most a few tries on a sparse pool; a full scan on a nearly full one
    for _ in range(16 if pool.size <= SCAN_LIMIT else 1024):
        i = rng.randrange(pool.size)
        if i not in used:
            return pool.at(i)
    return pool.at(rng.choice([i for i in range(pool.size) if i not in used]))
