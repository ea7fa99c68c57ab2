"""`vnet capture DEV`: a TUN's packets as raw IP, a veth's as Ethernet, read by tcpdump."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import IS_ROOT, run_vnet, vnet_cmd
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces, AF_PACKET")


def tcpdump(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["tcpdump", "-n", *extra, "-r", str(path)], capture_output=True,
                          text=True, timeout=30, check=False)


def capture_while_pinging(ns: str, device: str, target: str, path: Path) -> str:
    """4 pings while `vnet capture` runs for 4 s (no count limit: a new device's own IPv6
    neighbour discovery may come first)."""
    proc = netns.popen(ns, vnet_cmd("capture", device, "-w", str(path), "--duration", "4"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # the socket is bound before the first ping
    netns.run(ns, ["ping", "-c", "4", "-i", "0.2", "-W", "1", target], capture_output=True,
              timeout=30)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return str(err)


def test_a_tun_as_raw_ip(ns: str, tmp_path: Path) -> None:
    """A TUN a vnet program runs (`vnet tun echo`, which answers pings): both ways."""
    echo = netns.popen(ns, vnet_cmd("tun", "echo", "tun7", "--address", "198.19.7.1/24",
                                    "--duration", "30"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            with Netlink(ns) as nl:
                if nl.exists("tun7") and nl.addresses("tun7"):
                    break
            assert time.monotonic() < deadline and echo.poll() is None, "no echo responder"
            time.sleep(0.05)
        path = tmp_path / "tun.pcap"
        err = capture_while_pinging(ns, "tun7", "198.19.7.2", path)
    finally:
        echo.terminate()
        echo.wait(10)
    assert int(err.split("tun7: ")[1].split()[0]) >= 8
    done = tcpdump(path)
    assert "link-type RAW" in done.stderr
    assert done.stdout.count("198.19.7.1 > 198.19.7.2: ICMP echo request") == 4
    assert done.stdout.count("198.19.7.2 > 198.19.7.1: ICMP echo reply") == 4


def test_a_veth_as_ethernet_and_bad_input(ns: str, ns2: str, tmp_path: Path) -> None:
    with Netlink(ns) as nl:
        nl.add_veth("cap0", "cap1", peer_netns=ns2)
        nl.add_address("cap0", "198.18.7.1/24")
        nl.set_up("cap0")
    with Netlink(ns2) as nl:
        nl.add_address("cap1", "198.18.7.2/24")
        nl.set_up("cap1")
    path = tmp_path / "veth.pcap"
    capture_while_pinging(ns, "cap0", "198.18.7.2", path)
    done = tcpdump(path, "-e")
    assert "link-type EN10MB" in done.stderr
    assert done.stdout.count("198.18.7.1 > 198.18.7.2: ICMP echo request") == 4
    assert done.stdout.count("198.18.7.2 > 198.18.7.1: ICMP echo reply") == 4
    assert "ARP" in done.stdout
    bad = run_vnet(ns, "capture", "nosuch0", "-w", str(tmp_path / "x.pcap"))
    assert bad.returncode == 1 and "no device 'nosuch0'" in bad.stderr
    bad = run_vnet(ns, "capture", "cap0", "-w", str(tmp_path / "none" / "x.pcap"))
    assert bad.returncode == 1 and "cannot write the capture" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1
