"""Differential fuzzing of the native data path (atheris): every entry point that takes
bytes from the network - open_run, coalesce_one_flow, coalesce_datagrams, split_tcp -
- and wireguard_datagrams, which screens a received run, and seal_tso and seal_message,
which seal what the TUN gives -
gets the same input as its reference, and the two must agree (the same result, or both a ValueError
for sizes no caller passes). Anything else is a finding.

    python fuzz/datapath.py [-runs=N] [corpus dir]   (make fuzz)
"""

from __future__ import annotations

import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports():
    from vnet import _datapath
    from vnet.errors import PacketError
    from vnet.packet import gro, gso
    from vnet.packet.rows import PacketRows
    from vnet.wireguard import aead, messages

KEY = bytes(range(32))
NATIVE_OPEN, REFERENCE_OPEN = _datapath.Opener(KEY), aead.PyOpener(KEY)
SEALER, REFERENCE_SEAL = _datapath.Sealer(KEY), aead.PySealer(KEY)


def _open_run(fdp: atheris.FuzzedDataProvider) -> None:
    size = fdp.ConsumeIntInRange(0, 200)
    stride = fdp.ConsumeIntInRange(0, 200)
    prefix = fdp.ConsumeIntInRange(0, 2**64 - 1)
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 600))
    if fdp.ConsumeBool() and len(data) >= 48:  # real messages, then damaged: reach the tags
        plain = bytes(len(data) - 32)
        out = bytearray(len(data))
        SEALER.seal_run(plain, len(plain), 1, len(plain), len(plain), 7, 1, out)
        data = bytes(out[:8]) + data[8:] if fdp.ConsumeBool() else bytes(out)
        prefix = int.from_bytes(data[:8], "little")
        size = max(size, len(data))
        stride = max(stride, size)
    answers = []
    for opener in (NATIVE_OPEN, REFERENCE_OPEN):
        rows = bytearray(4 * max(stride, 0) + 600)
        try:
            answers.append((opener.open_run(data, size, prefix, rows, stride), bytes(rows)))
        except ValueError:
            answers.append(("ValueError", b""))  # type: ignore[arg-type]
    if answers[0] != answers[1]:
        raise AssertionError(f"open_run disagrees: {answers[0][0]!r} vs {answers[1][0]!r}")


def _coalesce(fdp: atheris.FuzzedDataProvider) -> None:
    count = fdp.ConsumeIntInRange(2, 6)
    stride = 64 + 4 * fdp.ConsumeIntInRange(0, 100)
    buf = bytearray(fdp.ConsumeBytes(count * stride).ljust(count * stride, b"\0"))
    lengths = [fdp.ConsumeIntInRange(0, stride) for _ in range(count)]
    rows = PacketRows(buf, stride, lengths)
    python = gro._one_flow(rows)
    done = _datapath.coalesce_one_flow(buf, stride, lengths)
    native = None
    if done is not None:
        packet, iph, headers, size = done
        native = (gro._super_header(iph, headers, size), packet)
    if native != python:
        raise AssertionError("coalesce_one_flow disagrees with gro._one_flow")


def _datagrams(fdp: atheris.FuzzedDataProvider) -> None:
    """coalesce_datagrams against coalesce_one_flow on the same packets laid out in rows."""
    size = fdp.ConsumeIntInRange(0, 300)
    skip = fdp.ConsumeIntInRange(0, 40)
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000))
    keep = fdp.ConsumeIntInRange(0, 40)
    done = _datapath.coalesce_datagrams(data, size, skip)
    kept = _datapath.coalesce_datagrams(data, size, skip, keep)
    if kept != (None if done is None or keep > skip
                else (data[skip - keep : skip] + done[0], *done[1:])):
        raise AssertionError("coalesce_datagrams with keep disagrees with it without")
    if size <= skip or len(data) <= size:
        if done is not None:
            raise AssertionError("coalesce_datagrams merged what is not a run")
        return
    datagrams = [data[i : i + size] for i in range(0, len(data), size)]
    same = all(d[:skip] == data[:skip] for d in datagrams) and len(datagrams[-1]) > skip
    expected = None
    if same and len(datagrams) <= gro.MAX_SEGMENTS:
        rows = PacketRows.from_packets([d[skip:] for d in datagrams], 64)
        expected = _datapath.coalesce_one_flow(rows.buf, rows.stride, rows.lengths)
    if done != expected:
        raise AssertionError("coalesce_datagrams disagrees with coalesce_one_flow")


def _split(fdp: atheris.FuzzedDataProvider) -> None:
    v4 = fdp.ConsumeBool()
    mss = fdp.ConsumeIntInRange(-2, 2000)
    align = fdp.PickValueInList([1, 4, 16])
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000))
    native = _datapath.split_tcp(data, v4, mss, align)
    try:
        reference = gso.reference_split_tcp(data, v4, mss, align)
    except PacketError:
        if native is not None:
            raise AssertionError("split_tcp accepted what the reference refuses") from None
        return
    if native is None or native != (reference.buf, reference.stride, reference.lengths):
        raise AssertionError("split_tcp disagrees with gso.reference_split_tcp")


def _seal_tso(fdp: atheris.FuzzedDataProvider) -> None:
    v4 = fdp.ConsumeBool()
    mss = fdp.ConsumeIntInRange(-2, 2000)
    mtu = fdp.ConsumeIntInRange(0, 2000)
    max_count = fdp.ConsumeIntInRange(0, 100)
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000))
    native = SEALER.seal_tso(data, v4, mss, mtu, 7, 1, max_count)
    if native != REFERENCE_SEAL.seal_tso(data, v4, mss, mtu, 7, 1, max_count):
        raise AssertionError("seal_tso disagrees with its reference")


def _seal_message(fdp: atheris.FuzzedDataProvider) -> None:
    mtu = fdp.ConsumeIntInRange(-1, 2000)
    remote = fdp.ConsumeIntInRange(0, 2**32)
    counter = fdp.ConsumeIntInRange(0, 2**64 - 1)
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000))
    answers = []
    for sealer in (SEALER, REFERENCE_SEAL):
        try:
            answers.append(sealer.seal_message(data, mtu, remote, counter))
        except ValueError:
            answers.append(b"ValueError")
    if answers[0] != answers[1]:
        raise AssertionError("seal_message disagrees with its reference")


def _messages(fdp: atheris.FuzzedDataProvider) -> None:
    size = fdp.ConsumeIntInRange(1, 300)
    data = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 3000))
    if _datapath.wireguard_datagrams(data, size) != messages.wireguard_datagrams(data, size):
        raise AssertionError("wireguard_datagrams disagrees with its reference")


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    targets = (_open_run, _coalesce, _split, _datagrams, _messages, _seal_tso,
               _seal_message)
    targets[fdp.ConsumeIntInRange(0, len(targets) - 1)](fdp)


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
