"""Allowed IPs and the replay window against simple reference models."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from vnet.errors import ConfigError
from vnet.wireguard.allowedips import CACHED, AllowedIPs, Prefix, parse_prefix
from vnet.wireguard.replay import WINDOW_SIZE, ReplayFilter

v4_prefixes = st.builds(lambda a, n: ipaddress.ip_network((a, n), strict=False),
                        st.integers(0, 2**32 - 1), st.integers(0, 32))
v6_prefixes = st.builds(lambda a, n: ipaddress.IPv6Network((a, n), strict=False),
                        st.integers(0, 2**128 - 1), st.integers(0, 128))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(v4_prefixes | v6_prefixes, st.integers(0, 4)), max_size=30),
       st.lists(st.integers(0, 2**32 - 1), max_size=20),
       st.lists(st.integers(0, 2**128 - 1), max_size=20))
def test_longest_prefix_match_against_brute_force(
    entries: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]],
    probes4: list[int], probes6: list[int],
) -> None:
    table: AllowedIPs[str] = AllowedIPs()
    owners = [f"peer{i}" for i in range(5)]
    model: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {}
    for prefix, who in entries:
        table.insert(Prefix.of(prefix), owners[who])
        model[prefix] = owners[who]
    for value, cls in [(p, ipaddress.IPv4Address) for p in probes4] + [
            (p, ipaddress.IPv6Address) for p in probes6]:
        addr = cls(value)
        matches = [n for n in model if n.version == addr.version and addr in n]
        expected = model[max(matches, key=lambda n: n.prefixlen)] if matches else None
        assert table.lookup(addr.packed) == expected
    for name in owners:
        assert {p.network_object() for p in table.prefixes(name)} == {
            n for n, o in model.items() if o == name}
        assert sorted(map(str, table.prefixes(name))) == sorted(
            str(n) for n, o in model.items() if o == name)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["insert", "remove", "remove_owner", "lookup"]),
                          st.integers(0, 7), st.integers(0, 2), st.integers(0, 32)),
                max_size=60))
def test_lookups_between_changes_see_every_change(
    ops: list[tuple[str, int, int, int]],
) -> None:
    """The table caches what it looked up: any insert or removal must show at once."""
    table: AllowedIPs[str] = AllowedIPs()
    model: dict[ipaddress.IPv4Network, str] = {}
    owners = ["peer0", "peer1", "peer2"]  # one object each: owners compare by identity
    # a few addresses in 198.18.0.0/29 probed again and again, so that answers are cached
    for op, host, who, length in ops:
        address = ipaddress.IPv4Address(0xC6120000 + host)
        network = ipaddress.IPv4Network((address, length), strict=False)
        owner = owners[who]
        if op == "insert":
            table.insert(Prefix.of(network), owner)
            model[network] = owner
        elif op == "remove":
            table.remove(Prefix.of(network), owner)
            if model.get(network) == owner:
                del model[network]
        elif op == "remove_owner":
            table.remove_owner(owner)
            model = {n: o for n, o in model.items() if o != owner}
        for probe in range(8):
            probed = ipaddress.IPv4Address(0xC6120000 + probe)
            matches = [n for n in model if probed in n]
            expected = model[max(matches, key=lambda n: n.prefixlen)] if matches else None
            assert table.lookup(probed.packed) == expected
            assert table.lookup(bytearray(probed.packed)) == expected  # not cached


def test_the_lookup_cache_is_bounded() -> None:
    table: AllowedIPs[str] = AllowedIPs()
    table.insert(parse_prefix("198.18.0.0/15"), "a")
    for i in range(CACHED + 10):
        assert table.lookup((0xC6120000 + i).to_bytes(4, "big")) == "a"
        assert table.lookup((0x01000000 + i).to_bytes(4, "big")) is None
    assert len(table._cache) <= CACHED


def test_remove_owner_and_moves() -> None:
    table: AllowedIPs[str] = AllowedIPs()
    table.insert(parse_prefix("198.19.0.0/24"), "a")
    table.insert(parse_prefix("198.19.0.7"), "b")
    table.insert(parse_prefix("198.19.0.0/24"), "b")  # moves from a to b
    assert table.prefixes("a") == []
    assert table.lookup(bytes([198, 19, 0, 9])) == "b"
    table.remove_owner("b")
    assert table.lookup(bytes([198, 19, 0, 9])) is None and list(table) == []
    assert parse_prefix("198.19.0.5/24") == Prefix.of(ipaddress.ip_network("198.19.0.0/24"))
    assert table.lookup(b"\x01\x02") is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 20000), max_size=300))
def test_replay_window_matches_model(counters: list[int]) -> None:
    f = ReplayFilter()
    seen: set[int] = set()
    newest = -1
    for c in counters:
        fresh = c not in seen and (newest < 0 or c > newest or newest - c <= WINDOW_SIZE)
        got = f.check(c, 1 << 64)
        if fresh:
            # inside the window the filter must accept anything new
            assert got
        elif c in seen:
            assert not got
        if got:
            seen.add(c)
            newest = max(newest, c)


def test_replay_window_edges() -> None:
    f = ReplayFilter()
    assert f.check(0, 100)
    assert not f.check(0, 100)
    assert f.check(WINDOW_SIZE + 10, 1 << 64)
    assert not f.check(5, 1 << 64)  # fell out of the window
    assert f.check(WINDOW_SIZE + 9, 1 << 64)
    assert not f.check(200, 100)  # at or past the limit


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 30000), max_size=60), st.integers(0, 30000),
       st.integers(0, 70), st.integers(0, 40000))
def test_a_replay_run_equals_checks_one_by_one(history: list[int], first: int, count: int,
                                               limit: int) -> None:
    batch, single = ReplayFilter(), ReplayFilter()
    for c in history:
        batch.check(c, 1 << 64)
        single.check(c, 1 << 64)
    before = (batch.last, list(batch.ring))
    if batch.check_run(first, count, limit):
        assert count > 0
        assert all(single.check(c, limit) for c in range(first, first + count))
        assert (batch.last, batch.ring) == (single.last, single.ring)
    else:  # refused: nothing changed
        assert (batch.last, batch.ring) == before


prefix_texts = st.one_of(
    st.builds(lambda a, n: f"{ipaddress.IPv4Address(a)}/{n}", st.integers(0, 2**32 - 1),
              st.integers(0, 40)),
    st.builds(lambda a, n: f"{ipaddress.IPv6Address(a)}/{n}", st.integers(0, 2**128 - 1),
              st.integers(0, 130)),
    st.text(alphabet="0123456789./: abcdef", max_size=24),
)


@settings(max_examples=2000, deadline=None)
@given(prefix_texts)
def test_parse_prefix_agrees_with_ipaddress(text: str) -> None:
    """The fast IPv4 reading takes exactly what ipaddress takes, to the same prefix."""
    try:
        expected = Prefix.of(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        try:
            parse_prefix(text)
        except ConfigError:
            return
        raise AssertionError(f"{text!r} was taken") from None
    assert parse_prefix(text) == expected
    assert str(parse_prefix(text)) == str(expected.network_object())
