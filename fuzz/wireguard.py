"""Fuzzing the WireGuard receive path (atheris): arbitrary datagrams and GRO runs into a
device that has a peer and a live session (through the latency path too), and each
message decoder alone. The device takes anything; a decoder may raise only MessageError
(the project's own). Anything else escaping is a finding.

    python fuzz/wireguard.py [-runs=N] [corpus dir]   (make fuzz)
"""

from __future__ import annotations

import contextlib
import random
import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from vnet.wireguard import crypto, messages
    from vnet.wireguard.allowedips import parse_prefix
    from vnet.wireguard.device import Device
    from vnet.wireguard.messages import MessageError
    from vnet.wireguard.peer import Endpoint

A, B = Endpoint("198.18.0.1", 51820), Endpoint("198.18.0.2", 51820)


def _pair() -> tuple[Device, Device]:
    """Two devices with a session up, so transport data reaches the open path."""
    rng = random.Random(1)
    a, b = Device(random=rng.randbytes), Device(random=rng.randbytes)
    a_key, b_key = (crypto.generate_private_key(rng.randbytes(32)) for _ in range(2))
    a.set_private_key(a_key)
    b.set_private_key(b_key)
    pa, pb = a.add_peer(crypto.public_key(b_key)), b.add_peer(crypto.public_key(a_key))
    pa.endpoint, pb.endpoint = B, A
    a.allowed_ips.insert(parse_prefix("198.19.0.2/32"), pa)
    b.allowed_ips.insert(parse_prefix("198.19.0.1/32"), pb)
    a.on_tun_packet(bytes([0x45]) + bytes(15) + bytes([198, 19, 0, 2]), 0.0)
    for _ in range(4):  # initiation, response, then the staged packet
        for data, _ in a.datagrams_to_send():
            b.on_datagram(data, A, 0.0)
        for data, _ in b.datagrams_to_send():
            a.on_datagram(data, B, 0.0)
    return a, b


DEVICE, _ = _pair()
DECODERS = (messages.Initiation.decode, messages.Response.decode, messages.CookieReply.decode,
            messages.decode_transport, messages.message_type)


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    choice = fdp.ConsumeIntInRange(0, 3)
    if choice == 0:
        DEVICE.on_datagram(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300)), B, 1.0)
    elif choice == 3:  # the latency path: takes it, ends it, or leaves it to on_datagram
        data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
        if DEVICE.receive_one(data, B, 1.0) is None:
            DEVICE.on_datagram(data, B, 1.0)
    elif choice == 1:
        size = fdp.ConsumeIntInRange(0, 200)
        DEVICE.on_datagram_run(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000)), size, B, 1.0)
    else:
        decode = DECODERS[fdp.ConsumeIntInRange(0, len(DECODERS) - 1)]
        with contextlib.suppress(MessageError):
            decode(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 200)))
    DEVICE.runs_to_send()
    DEVICE.deliveries()


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
