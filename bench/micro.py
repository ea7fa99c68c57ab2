"""Per-segment cost of each stage of the vnet-wg data path, in process (no kernel).

A TCP super-packet of 44 segments (as TUN TSO hands it over with gso_max_segs 44)
goes through: split into MSS segments, the sender's WireGuard core (encrypt +
frame), the receiver's core (decrypt, replay, allowed-ips), and GRO coalescing -
once packet by packet (lists of bytes, as before the batch path) and once as the
daemon does it now (PacketRows, one GSO buffer, one GRO run). Prints microseconds
per segment for each stage and for the bare AEAD call, so the Python overhead
around the cipher can be read off directly.

Then one ping-sized packet each way, warm (back to back) and cold (after 50 ms
asleep, as an idle ping finds the daemon): the cost that idle RTT is made of.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from vnet.packet import gro, gso
from vnet.packet.ipv4 import IPPROTO_TCP, IPv4
from vnet.packet.rows import PacketRows
from vnet.packet.tcp import ACK, TCP
from vnet.packet.virtio import VIRTIO_NET_HDR_GSO_TCPV4, VirtioNetHdr
from vnet.wireguard.allowedips import parse_prefix
from vnet.wireguard.peer import Endpoint

MSS = 1368  # MTU 1420 - 20 (IPv4) - 32 (TCP with timestamps)
SEGMENTS = 44
ROUNDS = 200


def super_packet() -> tuple[VirtioNetHdr, bytes]:
    src, dst = IPv4Address("198.19.0.1"), IPv4Address("198.19.0.2")
    payload = random.Random(1).randbytes(MSS * SEGMENTS)
    tcp = TCP(40000, 5201, 1, 1, ACK, 502, options=bytes([1, 1, 8, 10]) + bytes(8))
    packet = IPv4(src, dst, IPPROTO_TCP, flags=2).encode(tcp.encode(payload, src, dst))
    hdr = VirtioNetHdr(
        flags=1,
        gso_type=VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len=52,
        gso_size=MSS,
        csum_start=20,
        csum_offset=16,
    )
    return hdr, packet


def per_segment(label: str, fn: Callable[[], object], segments: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(ROUNDS):
        fn()
    us = (time.perf_counter() - start) / ROUNDS / segments * 1e6
    print(f"{label:<42} {us:7.2f} us/segment")
    return us


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.wireguard.harness import make_pair

    pair = make_pair()
    pair.send_a()
    pair.settle()  # handshake done
    a, b = pair.a, pair.b
    a.allowed_ips.insert(parse_prefix("198.19.0.2/32"), pair.peer_ab)
    hdr, sp = super_packet()
    segments = gso.split(hdr, sp)
    src = Endpoint("198.18.0.1", 51820)
    kp = pair.peer_ba.current
    assert kp is not None

    print("packet by packet (lists of bytes):")
    total = per_segment("  TSO split (gso.split)", lambda: gso.split(hdr, sp), SEGMENTS)

    def send() -> list[tuple[bytes, Endpoint]]:
        a.on_tun_packets(segments, pair.now)
        return a.datagrams_to_send()

    total += per_segment("  sender core (encrypt, frame)", send, SEGMENTS)
    datagrams = send()
    b.packets_to_deliver()

    def receive() -> list[bytes]:
        kp.replay.reset()
        for data, _ in datagrams:
            b.on_datagram(data, src, pair.now)
        return b.packets_to_deliver()

    total += per_segment("  receiver core (decrypt, replay, route)", receive, SEGMENTS)
    packets = receive()
    assert len(packets) == SEGMENTS
    total += per_segment("  GRO coalesce (gro.coalesce)", lambda: gro.coalesce(packets), SEGMENTS)
    summary("  whole path, both ends", total)

    print("batch path (the daemon's):")
    rows = gso.split_rows(hdr, sp, 16)

    def send_rows() -> list[tuple[bytes | bytearray, int, Endpoint]]:
        a.on_tun_segments(rows, pair.now)
        return a.runs_to_send()

    view = memoryview(sp)

    def send_super() -> list[tuple[bytes | bytearray, int, Endpoint]]:
        assert a.on_tun_super(view, True, MSS, pair.now)
        return a.runs_to_send()

    per_segment("  (split into rows, gso.split_rows", lambda: gso.split_rows(hdr, sp, 16), SEGMENTS)
    per_segment("   then seal the rows into one buffer)", send_rows, SEGMENTS)
    batch = per_segment("  sender core (split + seal in one call)", send_super, SEGMENTS)
    run, size, _ = send_super()[0]

    def receive_run() -> list[bytes | PacketRows]:
        kp.replay.reset()
        b.on_datagram_run(run, size, src, pair.now)
        return b.deliveries()

    batch += per_segment("  receiver core (open run into rows)", receive_run, SEGMENTS)
    opened = receive_run()[0]
    assert isinstance(opened, PacketRows) and opened.packets() == segments
    batch += per_segment(
        "  GRO coalesce (gro.coalesce_rows)", lambda: gro.coalesce_rows(opened), SEGMENTS
    )
    summary("  whole path, both ends", batch)
    aead = ChaCha20Poly1305(bytes(32))
    plain = bytes(MSS + 52)
    per_segment("for reference: one AEAD encrypt", lambda: aead.encrypt(bytes(12), plain, None), 1)

    print("one ping-sized packet (84 bytes), warm / cold after 50 ms asleep:")
    ping = IPv4(IPv4Address("198.19.0.1"), IPv4Address("198.19.0.2"), 1).encode(bytes(64))

    def send_one() -> list[tuple[bytes | bytearray, int, Endpoint]]:
        a.on_tun_packet(ping, pair.now)
        return a.runs_to_send()

    sent = bytes(send_one()[0][0])

    def receive_one() -> list[bytes | PacketRows]:
        kp.replay.reset()
        b.on_datagram(sent, src, pair.now)
        return b.deliveries()

    small = bytes(96)
    for label, fn in (
        ("  sender core (Device.on_tun_packet)", send_one),
        ("  receiver core (Device.on_datagram)", receive_one),
        ("  one AEAD encrypt of 96 bytes", lambda: aead.encrypt(bytes(12), small, None)),
        ("  an empty Python call", lambda: None),
    ):
        print(f"{label:<42} {cold_and_warm(fn)}")


def cold_and_warm(fn: Callable[[], object], times: int = 30) -> str:
    """Median microseconds of one call, back to back and after 50 ms of sleep."""
    out = []
    for gap in (0.0, 0.05):
        samples = []
        for _ in range(times):
            if gap:
                time.sleep(gap)
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        out.append(statistics.median(samples) * 1e6)
    return f"{out[0]:7.2f} us warm {out[1]:7.2f} us cold"


def summary(label: str, total: float) -> None:
    print(
        f"{label:<42} {total:7.2f} us/segment "
        f"=> {MSS * 8 / total / 1000:.2f} Gb/s of TCP payload per core at best"
    )


if __name__ == "__main__":
    main()
