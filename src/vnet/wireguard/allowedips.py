"""Cryptokey routing (whitepaper §2): which peer owns which source/destination address.

Longest-prefix match over IPv4 and IPv6. Where the kernel uses a bit trie,
Python is faster with one hash table per prefix length, probed from the
longest length in use down: at most 33 (v4) or 129 (v6) dict look-ups, each
in C, and in practice a handful because configurations use few lengths.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Generic, NamedTuple, TypeVar

from vnet.errors import ConfigError

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Prefix(NamedTuple):
    """An allowed-ip held as plain integers rather than an ipaddress object: a full
    routing table (~130,000 prefixes) then takes a third of the memory."""

    version: int
    length: int
    network: int  # host bits clear

    def __str__(self) -> str:
        if self.version == 4:  # the common case, formatted without an ipaddress object
            return f"{socket.inet_ntoa(self.network.to_bytes(4, 'big'))}/{self.length}"
        return str(self.network_object())

    def network_object(self) -> IPNetwork:
        if self.version == 4:
            return ipaddress.IPv4Network((self.network, self.length))
        return ipaddress.IPv6Network((self.network, self.length))

    @classmethod
    def of(cls, network: IPNetwork) -> Prefix:
        return cls(network.version, network.prefixlen, int(network.network_address))


def parse_prefix(text: str) -> Prefix:
    """An allowed-ip as `wg` accepts it: host bits are masked off, no prefix means /32 or
    /128. Raises ConfigError."""
    text = text.strip()
    address, _, length_text = text.partition("/")
    if ":" not in address and length_text.isdigit() and length_text[:1] != "0":
        # IPv4 with a length, the bulk of a big table: read without an ipaddress object
        length = int(length_text)
        try:
            raw = socket.inet_pton(socket.AF_INET, address)
        except OSError:
            raw = b""
        if raw and length <= 32:
            shift = 32 - length
            return Prefix(4, length, int.from_bytes(raw, "big") >> shift << shift)
    try:
        return Prefix.of(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise ConfigError(f"invalid allowed IP {text!r}") from None


CACHED = 4096  # addresses whose owner lookup() keeps


class AllowedIPs(Generic[T]):
    def __init__(self) -> None:
        # per family: prefix length -> {network as int -> owner}
        self._tables: dict[int, dict[int, dict[int, T]]] = {4: {}, 6: {}}
        self._lengths: dict[int, list[int]] = {4: [], 6: []}  # descending
        self._owner_prefixes: dict[int, dict[Prefix, None]] = {}  # id(owner) -> ordered set
        # address -> owner (or None) as last looked up, emptied by any change: a packet
        # to or from a known address costs one dict look-up. Bounded by CACHED.
        self._cache: dict[bytes, T | None] = {}

    def insert(self, prefix: Prefix, owner: T) -> None:
        """Give ``prefix`` to ``owner`` (taking it from any previous owner)."""
        self._cache.clear()
        version, length, network = prefix
        table = self._tables[version].setdefault(length, {})
        previous = table.get(network)
        if previous is not None:
            self._owner_prefixes.get(id(previous), {}).pop(prefix, None)
        table[network] = owner
        self._owner_prefixes.setdefault(id(owner), {})[prefix] = None
        lengths = self._lengths[version]
        if length not in lengths:
            lengths.append(length)
            lengths.sort(reverse=True)

    def remove(self, prefix: Prefix, owner: T) -> None:
        self._cache.clear()
        version, length, network = prefix
        table = self._tables[version].get(length, {})
        if table.get(network) is owner:
            del table[network]
            self._owner_prefixes.get(id(owner), {}).pop(prefix, None)
            if not table:
                del self._tables[version][length]
                self._lengths[version].remove(length)

    def remove_owner(self, owner: T) -> None:
        for prefix in list(self._owner_prefixes.get(id(owner), {})):
            self.remove(prefix, owner)
        self._owner_prefixes.pop(id(owner), None)

    def prefixes(self, owner: T) -> list[Prefix]:
        return list(self._owner_prefixes.get(id(owner), {}))

    def lookup(self, address: bytes | bytearray | memoryview) -> T | None:
        """The owner of the longest prefix containing a 4- or 16-byte address."""
        if not isinstance(address, bytes):
            return self._search(address)
        cache = self._cache
        try:
            return cache[address]
        except KeyError:
            pass
        owner = self._search(address)
        if len(cache) >= CACHED:
            cache.clear()
        cache[address] = owner
        return owner

    def _search(self, address: bytes | bytearray | memoryview) -> T | None:
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

    def __iter__(self) -> Iterator[tuple[Prefix, T]]:
        for version, tables in self._tables.items():
            for length, table in tables.items():
                for network, owner in table.items():
                    yield Prefix(version, length, network), owner
