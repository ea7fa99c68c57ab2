"""Cryptokey routing (whitepaper §2): which peer owns which source/destination address.

Longest-prefix match over IPv4 and IPv6. Where the kernel uses a bit trie,
Python is faster with one hash table per prefix length, probed from the
longest length in use down: at most 33 (v4) or 129 (v6) dict look-ups, each
in C, and in practice a handful because configurations use few lengths.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Generic, TypeVar

from vnet.errors import ConfigError

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_prefix(text: str) -> IPNetwork:
    """An allowed-ip as `wg` accepts it: host bits are masked off, no prefix means /32 or /128."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ConfigError(f"invalid allowed IP {text!r}") from None


class AllowedIPs(Generic[T]):
    def __init__(self) -> None:
        # per family: prefix length -> {network as int -> owner}
        self._tables: dict[int, dict[int, dict[int, T]]] = {4: {}, 6: {}}
        self._lengths: dict[int, list[int]] = {4: [], 6: []}  # descending
        self._owner_prefixes: dict[int, dict[IPNetwork, None]] = {}  # id(owner) -> ordered set

    def insert(self, prefix: IPNetwork, owner: T) -> None:
        """Give ``prefix`` to ``owner`` (taking it from any previous owner)."""
        table = self._tables[prefix.version].setdefault(prefix.prefixlen, {})
        key = int(prefix.network_address)
        previous = table.get(key)
        if previous is not None:
            self._owner_prefixes.get(id(previous), {}).pop(prefix, None)
        table[key] = owner
        self._owner_prefixes.setdefault(id(owner), {})[prefix] = None
        lengths = self._lengths[prefix.version]
        if prefix.prefixlen not in lengths:
            lengths.append(prefix.prefixlen)
            lengths.sort(reverse=True)

    def remove(self, prefix: IPNetwork, owner: T) -> None:
        table = self._tables[prefix.version].get(prefix.prefixlen, {})
        key = int(prefix.network_address)
        if table.get(key) is owner:
            del table[key]
            self._owner_prefixes.get(id(owner), {}).pop(prefix, None)
            if not table:
                del self._tables[prefix.version][prefix.prefixlen]
                self._lengths[prefix.version].remove(prefix.prefixlen)

    def remove_owner(self, owner: T) -> None:
        for prefix in list(self._owner_prefixes.get(id(owner), {})):
            self.remove(prefix, owner)
        self._owner_prefixes.pop(id(owner), None)

    def prefixes(self, owner: T) -> list[IPNetwork]:
        return list(self._owner_prefixes.get(id(owner), {}))

    def lookup(self, address: bytes | bytearray | memoryview) -> T | None:
        """The owner of the longest prefix containing a 4- or 16-byte address."""
        if len(address) == 4:
            version, bits = 4, 32
        elif len(address) == 16:
            version, bits = 6, 128
        else:
            return None
        value = int.from_bytes(address, "big")
        tables = self._tables[version]
        for length in self._lengths[version]:
            owner = tables[length].get(value >> (bits - length) << (bits - length))
            if owner is not None:
                return owner
        return None

    def __iter__(self) -> Iterator[tuple[IPNetwork, T]]:
        for version, cls in ((4, ipaddress.IPv4Network), (6, ipaddress.IPv6Network)):
            for length, table in self._tables[version].items():
                for key, owner in table.items():
                    yield cls((key, length)), owner
