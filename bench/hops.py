"""Where an idle ping's time goes: each hop of one `make bench` mode, traced by the kernel.

Sets a mode up as `bench/run.py` does, sends pings 50 ms apart (each finds the daemons
asleep) and records the kernel's tracepoints `net:net_dev_queue` and
`net:netif_receive_skb` with `perf`. Per ping, from the timestamps of the packet on each
device: A's hop (inner device -> underlay), B's (underlay -> inner device), the kernel's
echo reply on B, B's hop back and A's. Prints the median of each. Tracing adds its own
cost, so the RTT here is above the bench's; compare modes traced alike (root; `perf`).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import run  # bench/run.py, beside this script

from vnet.kernel import netns

EVENTS = "net:net_dev_queue,net:netif_receive_skb"
UNDERLAY_A, UNDERLAY_B = "vha", "vhb"
_EVENT = re.compile(
    r"^\s*(?P<comm>.+?)\s+\d+\s+\[\d+\]\s+(?P<t>[\d.]+):\s+(?P<name>\S+):.*dev=(?P<dev>\S+)"
)
HOPS = (
    "A: inner -> underlay (asleep)",
    "B: underlay -> inner (asleep)",
    "B: the kernel's echo reply",
    "B: inner -> underlay",
    "A: underlay -> inner",
    "the whole RTT",
)


@dataclass(frozen=True)
class Event:
    t: float
    comm: str
    name: str  # "net_dev_queue" or "netif_receive_skb"
    dev: str


def parse(text: str) -> list[Event]:
    events = []
    for line in text.splitlines():
        m = _EVENT.match(line)
        if m:
            name = m["name"].split(":")[-1]
            events.append(Event(float(m["t"]), m["comm"], name, m["dev"]))
    return events


def _first(events: list[Event], name: str, dev: str) -> float | None:
    return next((e.t for e in events if e.name == name and e.dev == dev), None)


def hops(events: list[Event], inner_a: str, inner_b: str) -> list[list[float]]:
    """Microseconds of each hop (HOPS) for every ping whose five marks were all seen."""
    starts = [i for i, e in enumerate(events)
              if e.comm == "ping" and e.name == "net_dev_queue" and e.dev == inner_a]
    out: list[list[float]] = [[] for _ in HOPS]
    for n, i in enumerate(starts):
        end = events[starts[n + 1]].t if n + 1 < len(starts) else float("inf")
        ping = [e for e in events[i:] if e.t < end]
        marks = [
            ping[0].t,
            _first(ping, "net_dev_queue", UNDERLAY_A),
            _first(ping, "netif_receive_skb", inner_b),
            _first(ping, "net_dev_queue", inner_b),
            _first(ping, "net_dev_queue", UNDERLAY_B),
            _first(ping, "netif_receive_skb", inner_a),
        ]
        if any(m is None for m in marks):
            continue
        times = [m for m in marks if m is not None]
        for k in range(5):
            out[k].append((times[k + 1] - times[k]) * 1e6)
        out[5].append((times[5] - times[0]) * 1e6)
    return out


def inner_device(ns: str, command: list[str]) -> str:
    done = netns.run(ns, command, capture_output=True, text=True)
    m = re.search(r"\bdev (\S+)", done.stdout)
    if m is None:
        raise RuntimeError(f"hops: no device in {' '.join(command)!r}: {done.stdout.strip()}")
    return m[1]


def trace(mode: str, pings: int, tmp: Path) -> list[list[float]]:
    env = run.Env(tag=f"{os.getpid() % 10000}", tmp=tmp)
    data = tmp / "perf.data"
    try:
        run.underlay(env)
        target = run.MODES[mode](env)
        run.wait_path(env, mode, target)
        inner_a = inner_device(env.ns_a, ["ip", "-o", "route", "get", target])
        inner_b = inner_device(env.ns_b, ["ip", "-o", "route", "get", run.IA])
        recorder = subprocess.Popen(
            ["perf", "record", "-q", "-a", "-e", EVENTS, "-o", str(data)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1)  # perf is recording
            netns.run(env.ns_a, ["ping", "-q", "-c", str(pings), "-i", "0.05", target],
                      capture_output=True, timeout=pings + 30)
        finally:
            recorder.send_signal(2)
            recorder.wait(30)
        text = subprocess.run(["perf", "script", "-i", str(data)], capture_output=True,
                              text=True, check=True).stdout
        return hops(parse(text), inner_a, inner_b)
    finally:
        run.teardown(env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default="vnet-wg,wireguard-go")
    parser.add_argument("--pings", type=int, default=40)
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in run.MODES]
    if unknown:
        print(f"hops: unknown modes {unknown}; choose from {', '.join(run.MODES)}",
              file=sys.stderr)
        return 1
    if shutil.which("perf") is None:
        print("hops: needs perf (apt-get install linux-perf)", file=sys.stderr)
        return 1
    results = {}
    with run.congestion_allowed(), tempfile.TemporaryDirectory(prefix="vnet-hops-") as tmp:
        for mode in modes:
            results[mode] = trace(mode, args.pings, Path(tmp))
    print(f"median us over {args.pings} pings 50 ms apart (pings with every mark seen):")
    print(f"{'hop':32}" + "".join(f"{m:>16}" for m in modes))
    for k, hop in enumerate(HOPS):
        cells = [f"{statistics.median(r[k]):.0f} (n={len(r[k])})" if r[k] else "-"
                 for r in results.values()]
        print(f"{hop:32}" + "".join(f"{c:>16}" for c in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
