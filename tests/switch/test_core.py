"""The switch core in memory: learning, ageing, flooding, VLANs, VXLAN, bad frames."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vnet.errors import ConfigError
from vnet.packet import gre, vxlan
from vnet.packet.ethernet import BROADCAST, Ethernet
from vnet.switch.core import Output, Switch
from vnet.switch.fdb import Fdb

A, B, C = (bytes([2, 0, 0, 0, 0, n]) for n in (0xA, 0xB, 0xC))
VTEP = ("198.18.0.9", 4789)


def frame(dst: bytes, src: bytes, vlan: int | None = None, size: int = 46) -> bytes:
    return Ethernet(dst, src, 0x0800, vlan).encode(bytes(size))


def targets(out: list[Output]) -> list[str]:
    return sorted(name for name, _, _ in out)


def basic() -> Switch:
    sw = Switch()
    for name in ("p1", "p2", "p3"):
        sw.add_port(name)
    return sw


def test_learn_then_unicast() -> None:
    sw = basic()
    assert targets(sw.handle_frame("p1", frame(B, A), 0)) == ["p2", "p3"]  # unknown: flood
    assert targets(sw.handle_frame("p2", frame(A, B), 1)) == ["p1"]  # A was learned on p1
    assert targets(sw.handle_frame("p1", frame(B, A), 2)) == ["p2"]
    assert targets(sw.handle_frame("p3", frame(BROADCAST, C), 3)) == ["p1", "p2"]
    assert sw.handle_frame("p1", frame(A, B), 4) == []  # B moved to p1: same port, filtered
    assert sw.fdb.moved == 1
    assert sw.ports["p1"].stats.rx_frames == 3 and sw.ports["p1"].stats.tx_frames == 2


def test_ageing() -> None:
    sw = Switch(Fdb(ageing=300))
    for name in ("p1", "p2", "p3"):
        sw.add_port(name)
    sw.handle_frame("p1", frame(B, A), 0)
    assert targets(sw.handle_frame("p2", frame(A, B), 299)) == ["p1"]
    assert targets(sw.handle_frame("p2", frame(A, B), 700)) == ["p1", "p3"]  # aged: flood
    assert sw.fdb.expire(2000) == 1 and len(sw.fdb) == 0  # A went at the 700 s lookup


def test_mac_flood_is_capped_and_counted() -> None:
    sw = Switch(Fdb(capacity=100))
    sw.add_port("p1")
    sw.add_port("p2")
    for n in range(1000):
        sw.handle_frame("p1", frame(BROADCAST, bytes([2, 1, 0, 0, n >> 8, n & 0xFF])), n)
    assert len(sw.fdb) == 100 and sw.fdb.evicted == 900


def test_storm_control_limits_floods_not_known_unicast() -> None:
    sw = Switch()
    sw.add_port("p1", storm_limit=100)  # bursts of 10 flooded frames
    sw.add_port("p2")
    sw.add_port("p3")
    sw.handle_frame("p2", frame(A, B), 0)  # B is known, on p2
    floods = [sw.handle_frame("p1", frame(BROADCAST, A), 0) for _ in range(30)]
    assert sum(1 for out in floods if out) == 10
    assert sw.ports["p1"].stats.drops == {"storm-control": 20}
    assert sw.ports["p1"].storm is not None and sw.ports["p1"].storm.storming(0)
    for _ in range(100):  # to a known MAC: never limited
        assert targets(sw.handle_frame("p1", frame(B, A), 0)) == ["p2"]
    assert sw.handle_frame("p1", frame(C, A), 0) == []  # unknown unicast is a flood too
    assert targets(sw.handle_frame("p1", frame(C, A), 1)) == ["p2", "p3"]  # refilled
    assert targets(sw.handle_frame("p2", frame(BROADCAST, B), 0)) == ["p1", "p3"]  # no limit


def test_storm_control_on_a_vxlan_segment() -> None:
    sw = Switch()
    sw.add_port("p1")
    sw.add_segment(100, 1, [VTEP], storm_limit=10)  # a burst of 1
    datagram = vxlan.encode(100) + frame(BROADCAST, A)
    assert targets(sw.handle_vxlan(datagram, VTEP, 0)) == ["p1"]
    assert sw.handle_vxlan(datagram, VTEP, 0) == []
    assert sw.segments[100].stats.drops == {"storm-control": 1}
    with pytest.raises(ConfigError, match="negative"):
        sw.add_port("p9", storm_limit=-1)


def test_gre_keys_replication_learning_and_isolation() -> None:
    sw = Switch()
    sw.add_port("t1", vlan=10)
    sw.add_port("t2", vlan=20)
    sw.add_segment(100, 10, [("198.18.0.1", 0), ("198.18.0.3", 0)], kind="gre")
    sw.add_segment(200, 20, [("198.18.0.1", 0)], kind="gre")
    out = sw.handle_frame("t1", frame(BROADCAST, A), 0)  # to both remotes of key 100 only
    assert [(n, a) for n, a, _ in out] == [("gre:100", ("198.18.0.1", 0)),
                                          ("gre:100", ("198.18.0.3", 0))]
    assert out[0][2] == gre.encode(gre.PROTO_TEB, 100) + frame(BROADCAST, A)
    # B answers from behind 198.18.0.3 on key 100: learned there, delivered to t1 only
    reply = gre.encode(gre.PROTO_TEB, 100) + frame(A, B)
    assert targets(sw.handle_gre(reply, "198.18.0.3", 1)) == ["t1"]
    out = sw.handle_frame("t1", frame(B, A), 2)
    assert [(n, a) for n, a, _ in out] == [("gre:100", ("198.18.0.3", 0))]
    # the same frame on key 200 reaches tenant 200's port, never t1; split horizon
    assert targets(sw.handle_gre(gre.encode(gre.PROTO_TEB, 200) + frame(BROADCAST, C),
                                 "198.18.0.1", 3)) == ["t2"]
    assert sw.segments == {} and set(sw.gre_segments) == {100, 200}
    # bad input: counted and dropped
    for packet, reason in (
        (gre.encode(gre.PROTO_TEB, 999) + frame(A, B), "gre-unknown-key"),
        (gre.encode(gre.PROTO_TEB) + frame(A, B), "gre-unknown-key"),
        (gre.encode(gre.PROTO_IPV4, 100) + bytes(40), "gre-not-ethernet"),
        (bytes.fromhex("a000655800000064") + frame(A, B), "gre-malformed"),  # C and K
        (bytes.fromhex("3000655800000064") + frame(A, B), "gre-malformed"),  # S and K
        (b"\x20", "gre-malformed"),
    ):
        assert sw.handle_gre(packet, "198.18.0.1", 4) == []
        assert sw.stats.drops[reason] >= 1
    assert sw.handle_gre(gre.encode(gre.PROTO_TEB, 100) + bytes(5), "198.18.0.1", 4) == []
    assert sw.gre_segments[100].stats.drops == {"malformed": 1}


def test_a_vni_and_a_gre_key_of_the_same_number_are_different_segments() -> None:
    sw = Switch()
    sw.add_port("t1", vlan=10)
    sw.add_port("t2", vlan=20)
    sw.add_segment(100, 10, [VTEP])
    sw.add_segment(100, 20, [("198.18.0.1", 0)], kind="gre")
    assert targets(sw.handle_vxlan(vxlan.encode(100) + frame(BROADCAST, A), VTEP, 0)) == ["t1"]
    assert targets(sw.handle_gre(gre.encode(gre.PROTO_TEB, 100) + frame(BROADCAST, B),
                                 "198.18.0.1", 0)) == ["t2"]
    with pytest.raises(ConfigError, match="GRE key 100 or VLAN 30 is already mapped"):
        sw.add_segment(100, 30, [], kind="gre")
    with pytest.raises(ConfigError, match="out of range"):
        sw.add_segment(1 << 32, 40, [], kind="gre")
    with pytest.raises(ConfigError, match="neither vxlan nor gre"):
        sw.add_segment(5, 50, [], kind="geneve")


def test_vlans_access_and_trunk() -> None:
    sw = Switch()
    sw.add_port("a10", vlan=10)
    sw.add_port("a20", vlan=20)
    sw.add_port("t", mode="trunk", vlan=0, allowed=[10, 20])
    out = sw.handle_frame("a10", frame(BROADCAST, A), 0)
    assert targets(out) == ["t"]
    eth, _ = Ethernet.decode(out[0][2])
    assert eth.vlan_id == 10  # tagged on the trunk
    out = sw.handle_frame("t", frame(BROADCAST, B, vlan=20), 1)
    assert targets(out) == ["a20"] and Ethernet.decode(out[0][2])[0].vlan_tci is None
    # a tag on an access port, a VLAN the trunk does not carry, untagged with no native VLAN
    assert sw.handle_frame("a10", frame(BROADCAST, A, vlan=10), 2) == []
    assert sw.handle_frame("t", frame(BROADCAST, B, vlan=30), 3) == []
    assert sw.handle_frame("t", frame(BROADCAST, B), 4) == []
    drops = {**sw.ports["a10"].stats.drops, **sw.ports["t"].stats.drops}
    assert drops == {"tagged-on-access": 1, "vlan-not-allowed": 1, "untagged-on-trunk": 1}
    # isolation: the same MAC in two VLANs is two entries
    sw.handle_frame("a20", frame(BROADCAST, A), 5)
    assert targets(sw.handle_frame("t", frame(A, C, vlan=10), 6)) == ["a10"]


def test_vxlan_head_end_replication_learning_and_split_horizon() -> None:
    sw = Switch()
    sw.add_port("vm1", vlan=10)
    sw.add_port("vm2", vlan=20)
    sw.add_segment(100, 10, [VTEP, ("198.18.0.8", 4789)])
    out = sw.handle_frame("vm1", frame(BROADCAST, A), 0)
    assert sorted(addr for _, addr, _ in out if addr) == [("198.18.0.8", 4789), VTEP]
    vni, inner = vxlan.decode(out[0][2])
    assert vni == 100 and bytes(inner) == frame(BROADCAST, A)
    # a reply from behind one VTEP: delivered locally, MAC learned behind that VTEP
    reply = vxlan.encode(100) + frame(A, B)
    assert targets(sw.handle_vxlan(reply, ("198.18.0.9", 51234), 1)) == ["vm1"]
    out = sw.handle_frame("vm1", frame(B, A), 2)
    assert [(name, addr) for name, addr, _ in out] == [("vxlan:100", VTEP)]
    # from VXLAN, unknown unicast floods locally only (never back to VXLAN)
    out = sw.handle_vxlan(vxlan.encode(100) + frame(C, B), VTEP, 3)
    assert targets(out) == ["vm1"]
    # unknown VNI and garbage: dropped and counted
    assert sw.handle_vxlan(vxlan.encode(999) + frame(A, B), VTEP, 4) == []
    assert sw.handle_vxlan(b"\x00" * 4, VTEP, 5) == []
    assert sw.stats.drops == {"unknown-vni": 1, "vxlan-malformed": 1}
    # tenant isolation: VLAN 20 has no VNI, its broadcasts stay local
    assert targets(sw.handle_frame("vm2", frame(BROADCAST, C), 6)) == []


def test_bad_frames_are_counted() -> None:
    sw = basic()
    assert sw.handle_frame("p1", b"short", 0) == []
    assert sw.handle_frame("p1", bytes(20000), 0) == []
    assert sw.handle_frame("p1", frame(BROADCAST, BROADCAST), 0) == []
    assert sw.handle_frame("nope", frame(BROADCAST, A), 0) == []
    assert sw.ports["p1"].stats.drops == {"runt": 1, "oversized": 1, "multicast-source": 1}


def test_config_errors() -> None:
    sw = basic()
    with pytest.raises(ConfigError):
        sw.add_port("p1")
    with pytest.raises(ConfigError):
        sw.add_port("x", vlan=5000)
    with pytest.raises(ConfigError):
        sw.add_port("y", mode="hybrid")
    sw.add_segment(1, 1, [])
    with pytest.raises(ConfigError):
        sw.add_segment(2, 1, [])
    with pytest.raises(ConfigError):
        sw.add_segment(1 << 24, 3, [])


@given(st.binary(max_size=120), st.binary(max_size=120))
def test_never_raises_on_garbage(data: bytes, datagram: bytes) -> None:
    sw = basic()
    sw.add_segment(5, 1, [VTEP])
    sw.handle_frame("p1", data, 0)
    sw.handle_vxlan(datagram, VTEP, 0)
    sw.handle_vxlan(vxlan.encode(5) + data, VTEP, 0)
    sw.add_segment(7, 2, [("198.18.0.1", 0)], kind="gre")
    sw.handle_gre(datagram, "198.18.0.1", 0)
    sw.handle_gre(gre.encode(gre.PROTO_TEB, 7) + data, "198.18.0.1", 0)


def vxlan_switch() -> Switch:
    sw = Switch()
    sw.add_port("p1", vlan=10)
    sw.add_port("t1", mode="trunk", vlan=0, allowed=[10])
    sw.add_segment(42, 10, [VTEP])
    return sw


datagram_choices = st.sampled_from(
    [
        vxlan.encode(42) + frame(A, B, size=100),
        vxlan.encode(42) + frame(A, B, size=200),
        vxlan.encode(42) + frame(C, B),
        vxlan.encode(42) + frame(BROADCAST, C),
        vxlan.encode(42) + frame(A, B, vlan=10),  # tagged inside VXLAN: dropped
        vxlan.encode(43) + frame(A, B),  # unknown VNI
        vxlan.encode(42) + b"\x02" * 10,  # runt
        b"garbage",
    ]
)


@given(st.lists(datagram_choices, max_size=20), st.booleans())
def test_vxlan_batch_decides_like_one_by_one(datagrams: list[bytes], learn_a: bool) -> None:
    """A GRO batch's fast path gives the outputs, FDB and counters of handling each
    datagram on its own."""
    one, batch = vxlan_switch(), vxlan_switch()
    if learn_a:
        for sw in (one, batch):
            sw.handle_frame("p1", frame(BROADCAST, A), 0)
    expected = [o for d in datagrams for o in one.handle_vxlan(d, VTEP, 1.0)]
    assert batch.handle_vxlan_batch(datagrams, VTEP, 1.0) == expected
    assert batch.stats == one.stats
    assert batch.segments[42].stats == one.segments[42].stats
    assert {n: p.stats for n, p in batch.ports.items()} == {
        n: p.stats for n, p in one.ports.items()
    }
    assert [(v, m, e.port) for v, m, e in batch.fdb.entries()] == [
        (v, m, e.port) for v, m, e in one.fdb.entries()
    ]


@given(st.integers(2, 20), st.booleans(), st.sampled_from([A, C, BROADCAST]))
def test_a_vxlan_run_decided_once_counts_like_the_batch(count: int, learn_a: bool,
                                                        dst: bytes) -> None:
    """handle_vxlan_run on a run of one header: the first frame's outputs, and when the
    rest follow it, the counters and FDB that handle_vxlan_batch leaves; when they do not
    follow (a flood to several ports), nothing is counted for the rest."""
    datagrams = [vxlan.encode(42) + frame(dst, B, size=100)] * count
    run, batch = vxlan_switch(), vxlan_switch()
    if learn_a:
        for sw in (run, batch):
            sw.handle_frame("p1", frame(BROADCAST, A), 0)
    expected = batch.handle_vxlan_batch(datagrams, VTEP, 1.0)
    rest = sum(len(d) - vxlan.HEADER_LENGTH for d in datagrams[1:])
    outputs, ports = run.handle_vxlan_run(datagrams[0], count, rest, VTEP, 1.0)
    assert outputs == expected[: len(outputs)]
    if ports:
        assert outputs + [(p, None, d[vxlan.HEADER_LENGTH:]) for d in datagrams[1:]
                          for p in ports] == expected
        assert run.segments[42].stats == batch.segments[42].stats
        assert {n: p.stats for n, p in run.ports.items()} == {
            n: p.stats for n, p in batch.ports.items()}
    else:
        assert run.segments[42].stats.rx_frames == 1
    assert [(v, m, e.port) for v, m, e in run.fdb.entries()] == [
        (v, m, e.port) for v, m, e in batch.fdb.entries()]


def mixed_switch(capacity: int) -> Switch:
    """Access ports on two VLANs, trunks with and without a native VLAN, a VXLAN segment."""
    sw = Switch(Fdb(ageing=5.0, capacity=capacity))
    sw.add_port("a1")
    sw.add_port("a2")
    sw.add_port("a3", vlan=20)
    sw.add_port("t1", mode="trunk", vlan=1, allowed=[1, 20])
    sw.add_port("t2", mode="trunk", vlan=0)
    sw.add_segment(42, 1, [VTEP])
    return sw


port_frames = st.tuples(
    st.sampled_from(["a1", "a2", "a3", "t1", "t2", "gone"]),
    st.sampled_from([A, B, C, BROADCAST, bytes([1, 0, 0x5E, 0, 0, 1])]),
    st.sampled_from([A, B, C, bytes([3, 0, 0, 0, 0, 1])]),
    st.sampled_from([None, 1, 20]),
    st.sampled_from([0, 46, 9300, 60000]),
    st.booleans(),
    st.floats(0, 2),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(port_frames, max_size=30), st.sampled_from([2, 3, 1000]), st.booleans())
@example(  # learning A fills the FDB and evicts B, the destination: flooded, not sent on
    [("a2", BROADCAST, B, None, 46, False, 0.1), ("a2", BROADCAST, C, None, 46, False, 0.1),
     ("a1", B, A, None, 46, False, 0.1)], 2, False
)
def test_between_ports_then_handle_frame_is_handle_frame(
    frames: list[tuple[str, bytes, bytes, int | None, int, bool, float]],
    capacity: int,
    view: bool,
) -> None:
    """The runtime asks between_ports first and handle_frame when it says None: outputs,
    counters and FDB (order included) are those of handle_frame alone, for any mix of
    ports, MACs, tags, sizes, super-frames, ageing and a full FDB; a frame may be a view
    of a read buffer."""
    fast, plain = mixed_switch(capacity), mixed_switch(capacity)
    fast.handle_vxlan(vxlan.encode(42) + frame(C, bytes([2, 0, 0, 0, 0, 0xD])), VTEP, 0)
    plain.handle_vxlan(vxlan.encode(42) + frame(C, bytes([2, 0, 0, 0, 0, 0xD])), VTEP, 0)
    now = 0.0
    for port, dst, src, vlan, size, super_frame, step in frames:
        now += step
        data = Ethernet(dst, src, 0x0800, vlan).encode(bytes(size))
        given_frame: bytes | memoryview = memoryview(bytearray(data)) if view else data
        out = fast.between_ports(port, given_frame, now, super_frame)
        got = (
            [(out, None, given_frame)]
            if out is not None
            else fast.handle_frame(port, given_frame, now, super_frame=super_frame)
        )
        want = plain.handle_frame(port, data, now, super_frame=super_frame)
        assert [(n, a, bytes(d)) for n, a, d in got] == want
    assert {n: p.stats for n, p in fast.ports.items()} == {
        n: p.stats for n, p in plain.ports.items()
    }
    assert [(v, m, e.port, e.last_seen) for v, m, e in fast.fdb.entries()] == [
        (v, m, e.port, e.last_seen) for v, m, e in plain.fdb.entries()
    ]
    assert (fast.fdb.moved, fast.fdb.evicted) == (plain.fdb.moved, plain.fdb.evicted)


def test_between_ports_takes_the_common_case_only() -> None:
    sw = mixed_switch(100)
    sw.handle_frame("a2", frame(BROADCAST, B), 0)
    sw.handle_frame("t1", frame(BROADCAST, C, vlan=20), 0)
    assert sw.between_ports("a1", frame(B, A), 1) == "a2"  # known, same VLAN, untagged
    assert sw.between_ports("a1", frame(BROADCAST, A), 1) is None  # a flood
    assert sw.between_ports("a1", frame(C, A), 1) is None  # C is on VLAN 20 only
    assert sw.between_ports("a3", frame(C, A), 1) is None  # to a trunk off its native VLAN
    assert sw.between_ports("a1", frame(B, A, vlan=1), 1) is None  # tagged
    assert sw.between_ports("a1", frame(B, A, size=60000), 1) is None  # too big unless TSO
    assert sw.between_ports("a1", frame(B, A, size=60000), 1, super_frame=True) == "a2"
