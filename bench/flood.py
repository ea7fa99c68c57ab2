"""A bounded UDP flood for `make stress`, run as its own process inside a namespace.

    flood.py initiation HOST PORT PUBKEY RATE SECONDS   handshake initiations, valid mac1
    flood.py garbage HOST PORT - 0 SECONDS [SOURCE]     random datagrams, one per send call
    flood.py garbage-gso HOST PORT - 0 SECONDS          the same, 64 per send (UDP GSO)
    flood.py mac-flood IFACE 0 - 0 SECONDS              Ethernet frames, a new source MAC each
    flood.py broadcast IFACE 0 - 0 SECONDS              broadcast frames from one MAC

Initiations carry a valid mac1 for the responder's public key (the attacker knows it) and
random contents otherwise, so a responder under load answers each with a cookie reply
instead of its Diffie-Hellman work. Initiations and garbage-gso leave 64 per sendmsg (UDP
GSO): one core then sends tens of times what a loop of sendto does. Prints one JSON line:
what was sent, for how long, and how many datagrams came back.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
import time

from vnet.kernel import udp
from vnet.wireguard.cookie import CookieGenerator

BATCH = 64
INITIATION_SIZE = 148
MACS = 32  # mac1 and mac2 end the message


def initiations(responder_public: bytes, count: int) -> list[bytes]:
    macs = CookieGenerator(responder_public)
    out = []
    for i in range(count):
        head = bytes([1, 0, 0, 0]) + i.to_bytes(4, "little")
        body = head + os.urandom(INITIATION_SIZE - len(head) - MACS) + bytes(MACS)
        out.append(macs.add_macs(body, time.monotonic()))
    return out


def frames(iface: str, kind: str, seconds: float) -> dict[str, float]:
    """Raw frames into ``iface`` (AF_PACKET) as fast as one core builds and sends them."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    tail = bytes([0x08, 0x00]) + bytes(46)  # an IPv4 ethertype and a minimum payload
    broadcast, fixed = b"\xff" * 6, bytes([2, 0xEE, 0, 0, 0, 1])
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        for _ in range(256):
            if kind == "broadcast":
                frame = broadcast + fixed + tail
            else:  # unknown unicast from a new source each time: the FDB fills, frames flood
                frame = bytes([2, 0xDD, 0, 0, 0, 9]) + b"\x02\xcc" + sent.to_bytes(4, "big") + tail
            try:
                sock.send(frame)
                sent += 1
            except (BlockingIOError, OSError):
                pass
    return {"sent": sent, "seconds": time.monotonic() - start, "replies": 0}


def main() -> int:
    kind, host, port_text, key, rate_text, seconds_text = sys.argv[1:7]
    source = sys.argv[7] if len(sys.argv) > 7 else None  # our address to send from
    port, rate, seconds = int(port_text), float(rate_text), float(seconds_text)
    if kind in ("mac-flood", "broadcast"):
        print(json.dumps(frames(host, kind, seconds)))
        return 0
    if kind == "initiation":
        messages = initiations(base64.b64decode(key), BATCH)
    else:
        messages = [os.urandom(200) for _ in range(BATCH)]
    size = len(messages[0])
    run = b"".join(messages)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if source is not None:
        sock.bind((source, 0))
    sock.setblocking(False)
    sent = replies = 0
    start = time.monotonic()
    end = start + seconds
    while (now := time.monotonic()) < end:
        if rate and sent >= rate * (now - start):
            time.sleep(0.001)
        elif kind == "garbage":
            for message in messages:
                try:
                    sock.sendto(message, (host, port))
                    sent += 1
                except BlockingIOError:
                    pass
        else:
            try:
                udp.send_gso(sock, run, size, (host, port))
                sent += BATCH
            except BlockingIOError:
                pass
        while True:
            try:
                sock.recv(2048)
                replies += 1
            except (BlockingIOError, ConnectionRefusedError):
                break
    elapsed = time.monotonic() - start
    print(json.dumps({"sent": sent, "seconds": elapsed, "replies": replies}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
