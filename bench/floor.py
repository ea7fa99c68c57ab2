"""The idle-RTT floor of a daemon written in Python: a relay that does what a WireGuard
daemon's packet path must and nothing more, timed beside real modes in one run.

The relay (``--relay``) reads a TUN (with a virtio_net_hdr, as vnet-wg's), seals each
packet with the native module in one call (a fixed key: no handshake, no replay window,
no timers, no allowed-ips) and sends it from a dual-stack UDP socket with its source
address given, as vnet-wg sends; a datagram is opened and written to the TUN. Each mode
(`python-floor`, and any of `bench/run.py`) is set up in fresh namespaces as `make
bench` does and timed with the same idle ping (20 pings 50 ms apart) over several
rounds. What vnet-wg takes above the floor is its protocol core and runtime in Python.

`python-floor-core` is the same relay with vnet-wg's protocol core in it: each packet is
sealed by ``Device.send_one`` and each datagram opened by ``Device.receive_one`` (route,
session, counter, replay window, the §6 timers, roaming, accounting: the latency path),
under a session that both relays derive alike from one seed at start-up, in memory. It
splits what vnet-wg takes above the floor into the core's share and the runtime's.

    python bench/floor.py [--modes python-floor,vnet-wg,wireguard-go] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import socket
import statistics
import struct
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

import run  # bench/run.py, beside this script

from vnet.kernel import netns, udp
from vnet.kernel.tun import Mode, TunDevice
from vnet.packet.ipv4 import IPPROTO_ICMP, IPv4
from vnet.wireguard import crypto
from vnet.wireguard.allowedips import parse_prefix
from vnet.wireguard.device import Device
from vnet.wireguard.peer import Endpoint

PORT = 51820
KEY = bytes(32)
HDR = 10  # the TUN's virtio_net_hdr
MTU = 1420


def core_session(local: str, peer: str) -> tuple[Device, Endpoint]:
    """vnet-wg's core for the relay at ``local``, with a session up with ``peer``'s: both
    relays run the same in-memory handshake from one seed (as the tests' pairs do), so
    they derive the same keys and indices; and the endpoint of the other relay."""
    rng = random.Random(1)
    devices = {run.UA: Device(random=rng.randbytes), run.UB: Device(random=rng.randbytes)}
    other = {run.UA: run.UB, run.UB: run.UA}
    inner = {run.UA: run.IA, run.UB: run.IB}
    keys: dict[str, bytes] = {}
    for address, device in devices.items():
        private = crypto.generate_private_key(rng.randbytes(32))
        device.set_private_key(private)
        keys[address] = crypto.public_key(private)
    for address, device in devices.items():
        remote = device.add_peer(keys[other[address]])
        remote.endpoint = Endpoint(other[address], PORT)
        device.allowed_ips.insert(parse_prefix(inner[other[address]] + "/32"), remote)
    now = time.monotonic()
    first = IPv4(IPv4Address(run.IA), IPv4Address(run.IB), IPPROTO_ICMP).encode(b"")
    devices[run.UA].on_tun_packet(first, now)  # staged: starts the handshake
    for _ in range(4):  # initiation, response, then the staged packet's transport data
        for address, device in devices.items():
            for data, _ in device.datagrams_to_send():
                devices[other[address]].on_datagram(data, Endpoint(address, PORT), now)
    return devices[local], Endpoint(peer, PORT)


def relay(ifname: str, local: str, peer: str, core: bool = False) -> None:
    """The relay itself, until killed; with ``core``, vnet-wg's core seals and opens."""
    from vnet import _datapath

    tun = TunDevice(ifname, Mode.TUN, nonblocking=True, vnet_hdr=True)
    sock = udp.open_socket(PORT, dual_stack=True)
    udp.enable_pktinfo(sock)
    family = sock.family
    dest = ("::ffff:" + peer if family == socket.AF_INET6 else peer, PORT)
    control = udp.source_control(family, local, 0)
    sealer, opener = _datapath.Sealer(KEY), _datapath.Opener(KEY)
    device, source = core_session(local, peer) if core else (None, None)
    counter_of = struct.Struct("<8xQ")
    empty = bytes(HDR)
    tfd, sfd = tun.fileno(), sock.fileno()
    poll = select.epoll()
    poll.register(tfd, select.EPOLLIN)
    poll.register(sfd, select.EPOLLIN)
    buf = bytearray(65536)
    view = memoryview(buf)
    counter = 0
    print("ready", flush=True)
    while True:
        for fd, _ in poll.poll(1.0):
            while fd == tfd:
                try:
                    n = os.readv(tfd, [buf])
                except BlockingIOError:
                    break
                if device is None:
                    message = sealer.seal_message(view[HDR:n], MTU, 1, counter)
                    counter += 1
                else:
                    ready = device.send_one(bytes(view[HDR:n]), time.monotonic())
                    if ready is None:
                        continue
                    message = ready[0]
                sock.sendmsg([message], control, 0, dest)
            while fd == sfd:
                try:
                    n, _, _, _ = sock.recvmsg_into([buf], 256)
                except BlockingIOError:
                    break
                if device is None:
                    plain = opener.open(counter_of.unpack_from(buf)[0], view[16:n])
                    if plain is None or len(plain) < 4:
                        continue
                    packet = memoryview(plain)[: plain[2] << 8 | plain[3]]
                else:
                    assert source is not None
                    opened = device.receive_one(bytes(view[:n]), source, time.monotonic())
                    if not opened:
                        continue
                    packet = memoryview(opened)
                with contextlib.suppress(OSError):  # the link not up yet
                    os.writev(tfd, [empty, packet])


def up_python_floor(env: run.Env, core: bool = False) -> str:
    ifa, ifb = f"bfa{env.tag}", f"bfb{env.tag}"
    me = [sys.executable, str(Path(__file__).resolve()), "--relay-core" if core else "--relay"]
    env.daemon(env.ns_a, "floor-a", [*me, ifa, run.UA, run.UB])
    env.daemon(env.ns_b, "floor-b", [*me, ifb, run.UB, run.UA])
    run.wait_for(
        lambda: all(
            netns.run(ns, ["ip", "link", "show", dev], capture_output=True).returncode == 0
            for ns, dev in ((env.ns_a, ifa), (env.ns_b, ifb))
        ),
        15,
        "the relays' TUNs",
    )
    run.inner_addresses(env, ifa, ifb, mtu=MTU)
    return run.IB


def idle_rtt(mode: str, tag: str, tmp: Path) -> float:
    env = run.Env(tag=tag, tmp=tmp)
    try:
        run.underlay(env)
        target = MODES[mode](env)
        run.wait_path(env, mode, target)
        netns.run(env.ns_a, ["ping", "-c", "5", "-i", "0.1", "-q", target], capture_output=True)
        ping = netns.run(env.ns_a, ["ping", "-c", "20", "-i", "0.05", "-q", target],
                         capture_output=True, text=True)
        return float(ping.stdout.split("=")[-1].split("/")[1])
    finally:
        run.teardown(env)


MODES = {
    "python-floor": up_python_floor,
    "python-floor-core": lambda env: up_python_floor(env, core=True),
    **run.MODES,
}


def main() -> int:
    if sys.argv[1:2] in (["--relay"], ["--relay-core"]):
        ifname, local, peer = sys.argv[2:5]
        relay(ifname, local, peer, core=sys.argv[1] == "--relay-core")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="python-floor,vnet-wg,wireguard-go")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        print(f"floor: unknown modes {unknown}; choose from {', '.join(MODES)}",
              file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("floor: needs root (namespaces, TUN devices)", file=sys.stderr)
        return 1
    rtts: dict[str, list[float]] = {m: [] for m in modes}
    with run.congestion_allowed(), tempfile.TemporaryDirectory(prefix="vnet-floor-") as tmp:
        for n in range(args.rounds):
            for mode in modes:  # round-robin, so that drift hits every mode alike
                rtts[mode].append(idle_rtt(mode, f"{os.getpid() % 10000}{n}", Path(tmp)))
                print(f"round {n + 1} {mode}: {rtts[mode][-1]:.3f} ms", flush=True)
                time.sleep(0.2)
    print("\nidle ping RTT (20 x 50 ms), median of rounds:")
    for mode, values in rtts.items():
        print(f"  {mode:20} {statistics.median(values):.3f} ms   "
              f"({', '.join(f'{v:.3f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
