"""Capture files: what tcpdump reads back, rotation, permissions, bad input."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import dpkt  # type: ignore[import-untyped]
import pytest

from tests.wireguard.harness import packet
from vnet.capture.writer import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapWriter
from vnet.errors import ConfigError
from vnet.packet.ethernet import BROADCAST, Ethernet


def read(path: Path) -> tuple[int, list[bytes]]:
    with open(path, "rb") as f:
        reader = dpkt.pcap.Reader(f)
        return reader.datalink(), [bytes(data) for _, data in reader]


def tcpdump(path: Path) -> str:
    if shutil.which("tcpdump") is None:
        pytest.fail("tcpdump is missing: run `make setup`")
    done = subprocess.run(["tcpdump", "-n", "-r", str(path)], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_raw_ip_and_ethernet_files_that_tcpdump_reads(tmp_path: Path) -> None:
    ping = packet("198.19.0.1", "198.19.0.2", seq=7)
    raw = tmp_path / "tun.pcap"
    writer = PcapWriter(str(raw), LINKTYPE_RAW)
    writer.write(ping, ts=1_700_000_000.25)
    writer.close()
    assert read(raw) == (LINKTYPE_RAW, [ping])
    out = tcpdump(raw)
    assert "198.19.0.1 > 198.19.0.2: ICMP echo request" in out and "seq 7" in out
    assert stat.S_IMODE(os.stat(raw).st_mode) == 0o600  # a capture holds traffic in clear
    eth = tmp_path / "tap.pcap"
    writer = PcapWriter(str(eth), LINKTYPE_ETHERNET)
    frame = Ethernet(BROADCAST, bytes([2, 0, 0, 0, 0, 1]), 0x0800).encode(ping)
    writer.write(frame)
    writer.close()
    assert "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff" in subprocess.run(
        ["tcpdump", "-n", "-e", "-r", str(eth)], capture_output=True, text=True, timeout=30,
        check=False).stdout


def test_rotation_keeps_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "c.pcap"
    writer = PcapWriter(str(path), LINKTYPE_RAW, max_bytes=1000, files=3)
    pings = [packet("198.19.0.1", "198.19.0.2", seq=i) for i in range(40)]
    for ping in pings:
        writer.write(ping)
    writer.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["c.pcap", "c.pcap.1", "c.pcap.2"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    kept = read(Path(f"{path}.2"))[1] + read(Path(f"{path}.1"))[1] + read(path)[1]
    assert kept == pings[-len(kept):]  # the newest, in order, none twice
    assert writer.rotations >= 2 and writer.packets == 40


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot write the capture"):
        PcapWriter(str(tmp_path / "no" / "such" / "dir.pcap"), LINKTYPE_RAW)
    with pytest.raises(ConfigError, match="holds no packet"):
        PcapWriter(str(tmp_path / "x.pcap"), LINKTYPE_RAW, max_bytes=10)
    with pytest.raises(ConfigError, match="at least one file"):
        PcapWriter(str(tmp_path / "x.pcap"), LINKTYPE_RAW, files=0)
