"""The agent's view of the other hosts: their leases, and the entries that reach them.

Fed by a snapshot (after a read of every lease, or a resync when etcd returns) and by
watch events; answers with what to install and what to remove, so that the kernel state
follows the leases exactly, whatever order events come in. Its own subnet is never
routed to (that is the host's bridge); a lease that the backend cannot use is counted
and left out.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from vnet.overlay.backends import Entry, entries
from vnet.overlay.config import Backend
from vnet.overlay.lease import Lease, LeaseError


@dataclass
class Changes:
    add: list[Entry] = field(default_factory=list)
    remove: list[Entry] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


class Mesh:
    def __init__(self, backend: Backend, own: ipaddress.IPv4Network, ipv6: bool = False) -> None:
        self.backend = backend
        self.own = own
        self.ipv6 = ipv6  # the network has IPv6: reach the leases' IPv6 subnets too
        self.leases: dict[ipaddress.IPv4Network, Lease] = {}
        self.installed: dict[ipaddress.IPv4Network, list[Entry]] = {}
        self.rejected: dict[ipaddress.IPv4Network, str] = {}  # subnet -> why

    def _set(self, subnet: ipaddress.IPv4Network, wanted: list[Entry], changes: Changes) -> None:
        have = self.installed.get(subnet, [])
        changes.remove += [e for e in have if e not in wanted]
        changes.add += [e for e in wanted if e not in have]
        if wanted:
            self.installed[subnet] = wanted
        else:
            self.installed.pop(subnet, None)

    def put(self, lease: Lease, changes: Changes | None = None) -> Changes:
        """A lease was created or changed."""
        changes = Changes() if changes is None else changes
        if lease.subnet == self.own:
            return changes
        self.leases[lease.subnet] = lease
        try:
            wanted = entries(self.backend, lease, self.ipv6)
            self.rejected.pop(lease.subnet, None)
        except LeaseError as e:
            wanted = []
            self.rejected[lease.subnet] = str(e)
        self._set(lease.subnet, wanted, changes)
        return changes

    def delete(self, subnet: ipaddress.IPv4Network, changes: Changes | None = None) -> Changes:
        """A lease expired or was deleted: that host is no longer reachable through us."""
        changes = Changes() if changes is None else changes
        self.leases.pop(subnet, None)
        self.rejected.pop(subnet, None)
        self._set(subnet, [], changes)
        return changes

    def reset(self, leases: list[Lease]) -> Changes:
        """Every lease as read at one revision: what changed since, as events would say."""
        changes = Changes()
        current = {lease.subnet for lease in leases}
        for subnet in list(self.leases):
            if subnet not in current:
                self.delete(subnet, changes)
        for lease in leases:
            self.put(lease, changes)
        return changes
