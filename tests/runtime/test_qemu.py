"""A real QEMU guest whose NIC is a TAP fd that vnet opened (as libvirt does).

The guest is Debian's cloud kernel plus a busybox initramfs built by
scripts/build_vm.py from Debian packages; software emulation (TCG).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IS_ROOT, ROOT, run_vnet, unique, vnet_cmd
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces, TAP")
VM_DIR = ROOT / ".cache" / "vm"


@pytest.fixture(scope="module")
def vm_image() -> Path:
    for tool in ("qemu-system-x86_64", "apt-get", "dpkg-deb"):
        assert subprocess.run(["which", tool], capture_output=True, check=False).returncode == 0, (
            f"{tool} missing: run `make setup`")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_vm.py"), str(VM_DIR)],
                   check=True, capture_output=True, timeout=600)
    return VM_DIR


def qemu_argv(image: Path, ip: str, target: str, hold: int = 0) -> list[str]:
    append = f"console=ttyS0 quiet panic=-1 vnet.ip={ip} vnet.target={target}"
    if hold:
        append += f" vnet.hold={hold}"
    return ["qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-nodefaults", "-nographic",
            "-serial", "stdio", "-no-reboot", "-kernel", str(image / "vmlinuz"),
            "-initrd", str(image / "initrd.img"), "-append", append,
            "-netdev", "tap,fd={fd},id=n0", "-device", "virtio-net-pci,netdev=n0,romfile="]


def run_guest(ns: str, tap_args: list[str], argv: list[str], tap: str) -> tuple[str, list[str]]:
    """Start the guest via `vnet tap run`, read `vnet show` while it runs, return its console."""
    proc = netns.popen(ns, vnet_cmd("tap", "run", "--name", tap, *tap_args, "--", *argv),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    holders: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline and not any(
                h.startswith("qemu-system") for h in holders):
            shown = run_vnet(ns, "show", tap, "--json")
            if shown.returncode == 0:
                holders = [h["comm"] for h in json.loads(shown.stdout)[0]["holders"]]
            time.sleep(0.2)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out.decode(errors="replace"), holders


def test_guest_pings_through_kernel_bridge(ns: str, vm_image: Path) -> None:
    with Netlink(ns) as nl:
        nl.set_up("lo")
        nl.add_bridge("br0")
        nl.add_address("br0", "198.18.50.1/24")
        nl.set_up("br0")
    console, holders = run_guest(ns, ["--vnet-hdr", "--bridge", "br0"],
                                 qemu_argv(vm_image, "198.18.50.2/24", "198.18.50.1", hold=3),
                                 "vnet0")
    assert "VNET-PING-OK" in console, console[-2000:]
    assert any(h.startswith("qemu-system") for h in holders)  # `vnet show` saw QEMU hold it
    with Netlink(ns) as nl:
        assert not nl.exists("vnet0")  # gone with its last fd


@pytest.fixture
def switch_ns(ns: str, ns2: str, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A persistent TAP vm0 attached to a running `vnet switch`, whose other port is a TAP
    moved into ns2 (the host the guest pings)."""
    name = unique("qsw")
    host_tap = unique("hp")[:15]
    assert run_vnet(ns, "tuntap", "add", "vm0", "--mode", "tap", "--vnet-hdr").returncode == 0
    config = tmp_path / "sw.yaml"
    config.write_text(f"name: {name}\nports:\n  - {{name: vm0, kind: netdev}}\n"
                      f"  - {{name: {host_tap}, netns: {ns2}}}\n")
    proc = netns.popen(ns, vnet_cmd("switch", "run", str(config)), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(f"/run/vnet/switch/{name}.sock"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        with Netlink(ns2) as nl:
            nl.add_address(host_tap, "198.18.51.1/24")
        yield ns, ns2, name
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        run_vnet(ns, "tuntap", "del", "vm0")


def test_guest_pings_through_vnet_switch(switch_ns: tuple[str, str, str],
                                         vm_image: Path) -> None:
    ns, _, name = switch_ns
    console, _ = run_guest(ns, ["--vnet-hdr"],
                           qemu_argv(vm_image, "198.18.51.2/24", "198.18.51.1"), "vm0")
    assert "VNET-PING-OK" in console, console[-2000:]
    stats = json.loads(run_vnet(ns, "switch", "stats", name, "--json").stdout)
    assert stats["ports"]["vm0"]["rx_frames"] >= 2  # ARP + the echo request(s) from the guest


def test_kernel_gretap_in_a_guest_and_vnet_switch_gre(ns: str, tmp_path: Path,
                                                      vm_image: Path) -> None:
    """The kernel's gretap - in the guest, as this host's kernel has no GRE - against
    `vnet switch`'s GRE segments, keys 100 and 200: ping and iperf3 both ways, and
    tenant 200's address unreachable from key 100."""
    made = [unique("vnet-vma"), unique("vnet-vmb")]
    for vm in made:
        netns.create(vm)
    name = unique("qgre")
    config = tmp_path / "sw.yaml"
    config.write_text(
        f"name: {name}\nports:\n  - {{name: ga, vlan: 10, netns: {made[0]}}}\n"
        f"  - {{name: gb, vlan: 20, netns: {made[1]}}}\nsegments:\n"
        "  - {type: gre, key: 100, vlan: 10, remotes: [198.18.52.2]}\n"
        "  - {type: gre, key: 200, vlan: 20, remotes: [198.18.52.2]}\n")
    switch = netns.popen(ns, vnet_cmd("switch", "run", str(config)), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    # and IP over GRE (key 7) with the guest's `ip tunnel add gre7 mode gre`
    tun = netns.popen(ns, vnet_cmd("tun", "gre", "gre7", "--remote", "198.18.52.2", "--key", "7",
                                   "--address", "198.19.7.10/30"),
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    guest = None
    try:
        deadline = time.monotonic() + 15
        while not os.path.exists(f"/run/vnet/switch/{name}.sock"):
            assert switch.poll() is None and time.monotonic() < deadline, switch.communicate()
            time.sleep(0.05)
        for vm, tap, addresses in ((made[0], "ga", ["198.19.100.2/24"]),
                                   (made[1], "gb", ["198.19.200.2/24", "198.19.100.3/24"])):
            with Netlink(vm) as nl:
                nl.set_up("lo")
                for address in addresses:
                    nl.add_address(tap, address)
        servers = [netns.popen(made[0], ["iperf3", "-s", "-1", "-B", "198.19.100.2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        argv = qemu_argv(vm_image, "198.18.52.2/24", "198.18.52.1", hold=20)
        argv[argv.index("-append") + 1] += " vnet.mode=gre vnet.remote=198.18.52.1 vnet.tries=10"
        guest = netns.popen(ns, vnet_cmd("tap", "run", "--name", "gt0", "--address",
                                         "198.18.52.1/24", "--", *argv),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert guest.stdout is not None
        console = []
        deadline = time.monotonic() + 150
        for line in guest.stdout:  # the guest's checks, up to its iperf3 server
            console.append(line)
            if "VNET-GRE-SERVER-UP" in line or time.monotonic() > deadline:
                break
        text = "".join(console)
        assert "VNET-GRE-100-OK" in text and "VNET-GRE-200-OK" in text, text[-3000:]
        assert "VNET-GRE-ISOLATED" in text, text[-3000:]
        assert "VNET-GRE-IP-OK" in text, text[-3000:]  # kernel gre -> vnet tun gre, and back
        assert netns.run(ns, ["ping", "-c", "2", "-W", "2", "198.19.7.9"],
                         capture_output=True, timeout=30).returncode == 0
        tun.terminate()
        counters = tun.communicate(timeout=10)[1]  # its line at exit
        assert "gre7: sent" in counters and "received 0 " not in counters, counters
        sent = int(text.split("VNET-GRE-IPERF ")[1].split()[0])
        assert sent > 100_000, text[-3000:]  # guest -> vnet switch -> vmA, through key 100
        # the other way: vmB -> the guest's iperf3 server through key 200, and a ping
        done = netns.run(made[1], ["iperf3", "-c", "198.19.200.9", "-t", "2", "-J"],
                         capture_output=True, text=True, timeout=60)
        assert json.loads(done.stdout)["end"]["sum_received"]["bytes"] > 100_000
        assert netns.run(made[0], ["ping", "-c", "2", "-W", "2", "198.19.100.9"],
                         capture_output=True, timeout=30).returncode == 0
        stats = json.loads(run_vnet(ns, "switch", "stats", name, "--json").stdout)
        assert stats["ports"]["gre:100"]["rx_frames"] > 50
        assert stats["ports"]["gre:200"]["rx_frames"] > 50
        for server in servers:
            server.wait(timeout=10)
    finally:
        if guest is not None and guest.poll() is None:
            guest.kill()
            guest.wait()
        switch.terminate()
        switch.wait(timeout=10)
        if tun.poll() is None:
            tun.kill()
            tun.wait()
        for vm in made:
            netns.delete(vm)
