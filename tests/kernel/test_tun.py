"""TUN/TAP devices against the real kernel, inside a namespace per test."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import unique
from vnet.errors import ConfigError, KernelError
from vnet.kernel import tun
from vnet.kernel.netlink import Netlink
from vnet.kernel.procfs import tun_holders
from vnet.kernel.tun import Mode, TunDevice
from vnet.kernel.tun import ifname_exists as exists
from vnet.packet.ethernet import ETH_P_IP
from vnet.packet.virtio import VirtioNetHdr

from .helpers import KERNEL, echo_request, is_echo_reply, read_until


def name() -> str:
    return unique("vt")[:15]


def bring_up(dev: TunDevice, addr: str = f"{KERNEL}/24") -> None:
    with Netlink() as nl:
        nl.add_address(dev.name, addr)
        nl.set_up(dev.name)


@pytest.fixture
def tun_dev(inside: str) -> Iterator[TunDevice]:
    with TunDevice(name(), Mode.TUN) as dev:
        bring_up(dev)
        yield dev


def test_kernel_answers_a_packet_written_to_the_tun(tun_dev: TunDevice) -> None:
    tun_dev.write(echo_request(seq=1))
    reply = read_until(tun_dev, lambda p: is_echo_reply(p, 1))
    assert reply[12:16] == bytes([198, 18, 0, 1])


def test_flags_read_back_from_kernel_and_netlink(inside: str) -> None:
    with TunDevice(name(), Mode.TAP, pi=True, vnet_hdr=True, multi_queue=True) as dev:
        flags = dev.flags
        assert (flags.mode, flags.pi, flags.vnet_hdr, flags.multi_queue, flags.persist) == (
            Mode.TAP, True, True, True, False)
        with Netlink() as nl:
            info = nl.link(dev.name).tun
        assert info is not None
        assert (info.mode, info.pi, info.vnet_hdr, info.multi_queue) == ("tap", True, True, True)


def test_packet_information_header(inside: str) -> None:
    with TunDevice(name(), Mode.TUN, pi=True) as dev:
        bring_up(dev)
        dev.write(tun.pi_header(ETH_P_IP) + echo_request(seq=2))
        data = read_until(dev, lambda p: is_echo_reply(p[4:], 2))
        flags, proto = struct.unpack("!HH", data[:4])
        assert (flags, proto) == (0, ETH_P_IP)


def test_vnet_hdr_sizes_and_offloads(inside: str) -> None:
    with TunDevice(name(), Mode.TUN, vnet_hdr=True) as dev:
        bring_up(dev)
        assert dev.get_vnet_hdr_size() == 10
        dev.set_vnet_hdr_size(12)
        assert dev.get_vnet_hdr_size() == 12
        dev.write(bytes(12) + echo_request(seq=3))
        data = read_until(dev, lambda p: is_echo_reply(p[12:], 3))
        hdr, _ = VirtioNetHdr.decode(data, 12)
        assert not hdr.gso
        dev.set_offload(tun.TUN_F_CSUM | tun.TUN_F_TSO4 | tun.TUN_F_TSO6)
        dev.set_offload(0)
        with pytest.raises(ConfigError, match="unknown offload"):
            dev.set_offload(0x1000)
        with pytest.raises(KernelError, match="vnet_hdr size 4"):
            dev.set_vnet_hdr_size(4)  # below sizeof(struct virtio_net_hdr)


def test_multi_queue_attach_detach(inside: str) -> None:
    with TunDevice(name(), Mode.TAP, multi_queue=True) as dev:
        q1 = dev.add_queue()
        dev.add_queue()
        with Netlink() as nl:
            info = nl.link(dev.name).tun
            assert info is not None and info.queues == 3 and info.disabled_queues == 0
            q1.detach()
            assert q1.detached and not dev.detached
            info = nl.link(dev.name).tun
            assert info is not None and info.queues == 2 and info.disabled_queues == 1
            q1.attach()
            info = nl.link(dev.name).tun
            assert info is not None and info.queues == 3
        q1.close()
        assert len(dev.queues) == 3
    assert not exists(dev.name)


def test_add_queue_needs_multi_queue(tun_dev: TunDevice) -> None:
    with pytest.raises(ConfigError, match="multi_queue"):
        tun_dev.add_queue()
    with pytest.raises(KernelError, match="cannot detach"):
        tun_dev.detach()


def test_persist_owner_group_then_delete(inside: str) -> None:
    ifname = name()
    with TunDevice(ifname, Mode.TAP) as dev:
        dev.set_owner(65534)
        dev.set_group(65534)
        dev.set_persist(True)
        assert dev.flags.persist
    assert exists(ifname)  # outlives its fd
    with Netlink() as nl:
        info = nl.link(ifname).tun
    assert info is not None and (info.persist, info.owner, info.group) == (True, 65534, 65534)
    with TunDevice(ifname, Mode.TAP) as dev:
        dev.set_persist(False)
    assert not exists(ifname)


def test_closing_last_fd_removes_device(inside: str) -> None:
    dev = TunDevice(name(), Mode.TUN)
    assert exists(dev.name)
    dev.close()
    assert dev.closed and not exists(dev.name)
    dev.close()  # idempotent
    with pytest.raises(KernelError, match="closed"):
        dev.read()


def test_sndbuf_and_features(tun_dev: TunDevice) -> None:
    tun_dev.set_sndbuf(1 << 20)
    assert tun_dev.get_sndbuf() == 1 << 20
    feats = tun.features()
    for flag in (tun.IFF_TUN, tun.IFF_TAP, tun.IFF_NO_PI, tun.IFF_VNET_HDR,
                 tun.IFF_MULTI_QUEUE):
        assert feats & flag
    assert tun_dev.ifindex == socket.if_nametoindex(tun_dev.name)


def test_kernel_picks_the_name(inside: str) -> None:
    with TunDevice("", Mode.TAP) as dev:
        assert dev.name.startswith("tap") and exists(dev.name)
    with TunDevice("vnt%d", Mode.TUN) as dev:
        assert dev.name == "vnt0"


def test_fd_handed_to_another_program(tun_dev: TunDevice) -> None:
    """As libvirt hands QEMU its TAP: the child writes through the inherited fd."""
    tun_dev.inheritable = True
    fd = tun_dev.fileno()
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import os, sys, time; os.write(int(sys.argv[1]), bytes.fromhex(sys.argv[2])); "
         "time.sleep(30)", str(fd), echo_request(seq=7).hex()],
        pass_fds=[fd],
    )
    try:
        read_until(tun_dev, lambda p: is_echo_reply(p, 7))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            holders = {h.pid: h for h in tun_holders().get(tun_dev.name, [])}
            if child.pid in holders:
                break
            time.sleep(0.05)
        assert holders[child.pid].fd == fd and os.getpid() in holders
    finally:
        child.kill()
        child.wait()


def test_asyncio_helpers(tun_dev: TunDevice) -> None:
    async def exchange() -> bytes:
        await tun_dev.write_async(echo_request(seq=9))
        for _ in range(50):
            data = await asyncio.wait_for(tun_dev.read_async(), 3)
            if is_echo_reply(data, 9):
                return data
        raise AssertionError("no reply")

    assert is_echo_reply(asyncio.run(exchange()), 9)
    assert tun_dev.nonblocking
    with pytest.raises(BlockingIOError):  # non-blocking: once drained, reads do not wait
        for _ in range(100):  # the kernel may still queue its own chatter (IPv6 RS, MLD)
            tun_dev.read()


# --- bad input -------------------------------------------------------------


def test_name_too_long_or_invalid() -> None:
    with pytest.raises(ConfigError, match="at most 15"):
        TunDevice("x" * 16)
    for bad in ("a/b", "a b", "a:b", "..", "."):
        with pytest.raises(ConfigError):
            TunDevice(bad)


def test_busy_name(tun_dev: TunDevice) -> None:
    with pytest.raises(KernelError, match="is busy") as info:
        TunDevice(tun_dev.name, Mode.TUN)
    assert info.value.errno == errno.EBUSY


def test_name_taken_by_another_kind_of_link(inside: str) -> None:
    veth = name()
    with Netlink() as nl:
        nl.add_veth(veth, name())
    with pytest.raises(KernelError, match="already exists but is not a tun/tap"):
        TunDevice(veth, Mode.TUN)


def test_flags_the_kernel_refuses(inside: str) -> None:
    ifname = name()
    with TunDevice(ifname, Mode.TUN) as dev:
        dev.set_persist(True)
    try:
        # a single-queue device cannot be reopened multi-queue, nor as a TAP
        with pytest.raises(KernelError, match="tun,multi_queue"):
            TunDevice(ifname, Mode.TUN, multi_queue=True)
        with pytest.raises(KernelError, match="flags tap"):
            TunDevice(ifname, Mode.TAP)
    finally:
        with TunDevice(ifname, Mode.TUN) as dev:
            dev.set_persist(False)
    assert not exists(ifname)


def test_parts_written_together_are_one_packet(inside: str) -> None:
    with TunDevice(name(), Mode.TUN, vnet_hdr=True) as dev:
        bring_up(dev)
        request = echo_request(seq=4)
        dev.writev([bytes(10), request[:20], memoryview(request)[20:]])
        assert read_until(dev, lambda p: is_echo_reply(p[10:], 4))
        with pytest.raises(KernelError, match="IP version 1 is neither 4 nor 6"):
            dev.writev([bytes(10), b"\x15not an ", b"ip packet"])


def test_malformed_packet_written(tun_dev: TunDevice, inside: str) -> None:
    with pytest.raises(KernelError, match="IP version 1 is neither 4 nor 6"):
        tun_dev.write(b"\x15not an ip packet")
    with TunDevice(name(), Mode.TAP) as tap:
        with Netlink() as nl:
            nl.set_up(tap.name)
        with pytest.raises(KernelError, match="shorter than an Ethernet header"):
            tap.write(b"\x01\x02\x03")


def test_missing_clone_device() -> None:
    with pytest.raises(KernelError, match="does not exist: the tun driver"):
        TunDevice("vt0", clone_path="/nonexistent/net/tun")


def test_carrier_and_link_type(tun_dev: TunDevice, inside: str) -> None:
    with Netlink() as nl:
        assert nl.link(tun_dev.name).operstate != "DOWN"
        tun_dev.set_carrier(False)
        deadline = time.monotonic() + 3
        while nl.link(tun_dev.name).operstate != "DOWN" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert nl.link(tun_dev.name).operstate == "DOWN"
        tun_dev.set_carrier(True)
    with TunDevice(name(), Mode.TUN) as dev:
        dev.set_link_type(65534)  # ARPHRD_NONE, the TUN default; the device is down
        with pytest.raises(KernelError, match="link type"):
            tun_dev.set_link_type(1)  # refused while the device is up (EBUSY)
