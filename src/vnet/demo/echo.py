"""The foundation demo: ping through a userspace TUN and TAP host in a namespace."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from vnet.errors import ConfigError, KernelError
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink

PING_COUNT = 5
# (device, mode, kernel-side addresses, targets answered by the userspace responder)
DEVICES = [
    ("vdemo-tun", "tun", ["198.18.1.1/24", "fd00:1::1/64"], ["198.18.1.2", "fd00:1::2"]),
    ("vdemo-tap", "tap", ["198.18.2.1/24", "fd00:2::1/64"], ["198.18.2.2", "fd00:2::2"]),
]

_LOSS = re.compile(r"(\d+) packets transmitted, (\d+) received")
_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms")


@dataclass
class PingResult:
    device: str
    target: str
    sent: int
    received: int
    rtt_min: float | None
    rtt_avg: float | None
    rtt_max: float | None


def parse_ping(device: str, target: str, output: str) -> PingResult:
    loss = _LOSS.search(output)
    rtt = _RTT.search(output)
    sent, received = (int(loss.group(1)), int(loss.group(2))) if loss else (0, 0)
    if rtt:
        return PingResult(
            device,
            target,
            sent,
            received,
            float(rtt.group(1)),
            float(rtt.group(2)),
            float(rtt.group(3)),
        )
    return PingResult(device, target, sent, received, None, None, None)


@dataclass
class DemoReport:
    namespace: str
    pings: list[PingResult]
    responders: list[dict[str, Any]]
    show: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(p.sent > 0 and p.received == p.sent for p in self.pings)


def _wait_up(
    ns: str, names: list[str], procs: list[subprocess.Popen[str]], timeout: float = 15.0
) -> None:
    deadline = time.monotonic() + timeout
    with Netlink(ns) as nl:
        while time.monotonic() < deadline:
            for proc in procs:
                if proc.poll() is not None:
                    _, err = proc.communicate()
                    raise KernelError(f"echo responder exited early: {err.strip()}")
            if all(nl.exists(n) and nl.link(n).up for n in names):
                return
            time.sleep(0.05)
    raise KernelError(f"devices {', '.join(names)} did not come up within {timeout:.0f} s")


def run_demo() -> DemoReport:
    if os.geteuid() != 0:
        raise ConfigError("the demo needs root (it creates a network namespace and TUN/TAP)")
    if shutil.which("ping") is None:
        raise ConfigError("ping not found: install iputils-ping (make setup does)")
    ns = f"vnet-demo-{os.getpid()}"
    netns.create(ns)
    procs: list[subprocess.Popen[str]] = []
    try:
        for name, mode, addrs, _ in DEVICES:
            argv = [sys.executable, "-m", "vnet", mode, "echo", name, "--json"]
            for a in addrs:
                argv += ["--address", a]
            procs.append(
                netns.popen(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        _wait_up(ns, [d[0] for d in DEVICES], procs)
        pings = []
        for name, _, _, targets in DEVICES:
            for target in targets:
                done = netns.run(
                    ns,
                    ["ping", "-c", str(PING_COUNT), "-i", "0.2", "-W", "2", target],
                    capture_output=True,
                    text=True,
                    timeout=30,
                )
                pings.append(parse_ping(name, target, done.stdout))
        shown = netns.run(
            ns,
            [sys.executable, "-m", "vnet", "show", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        show = json.loads(shown.stdout) if shown.returncode == 0 else []
        responders = []
        for proc in procs:
            proc.terminate()
            out, err = proc.communicate(timeout=10)
            if proc.returncode != 0:
                raise KernelError(f"echo responder failed: {err.strip()}")
            responders.append(json.loads(out.strip().splitlines()[-1]))
        return DemoReport(ns, pings, responders, show)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        netns.delete(ns)
