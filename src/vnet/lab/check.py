"""`vnet lab check`: the file's reachability and isolation assertions, run for real."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vnet.kernel import netns
from vnet.lab.schema import Check, Lab
from vnet.lab.state import State

REACH_TIMEOUT = 60.0  # a QEMU guest under software emulation takes a while to boot


@dataclass
class Result:
    check: str
    expect: str
    outcome: str
    ok: bool


def _ping(ns: str, target: str, wait: float) -> bool:
    argv = ["ping", "-c", "1", "-W", f"{wait:g}", target]
    return netns.run(ns, argv, capture_output=True, timeout=wait + 10).returncode == 0


def run_one(lab: Lab, check: Check, state: State | None) -> Result:
    if check.ping is not None and check.from_ is not None:
        ns = lab.namespace(check.from_)
        what = f"{check.from_} -> {check.ping}"
        if check.expect == "isolated":
            reached = _ping(ns, check.ping, 1) or _ping(ns, check.ping, 1)
            return Result(what, "isolated", "answered" if reached else "no answer", not reached)
        start = time.monotonic()
        deadline = start + REACH_TIMEOUT
        while True:
            if _ping(ns, check.ping, 1):
                took = time.monotonic() - start
                return Result(what, "reach", f"answered ({took:.1f} s)", True)
            if time.monotonic() > deadline:
                return Result(what, "reach", f"no answer in {REACH_TIMEOUT:.0f} s", False)
            time.sleep(0.2)
    assert check.process is not None and check.output is not None
    what = f"{check.process} prints {check.output!r}"
    record = next((p for p in state.processes if p.name == check.process), None) if state else None
    if record is None:
        return Result(what, "output", "process not running", False)
    deadline = time.monotonic() + REACH_TIMEOUT
    while True:
        text = Path(record.log).read_text(errors="replace")
        if check.output in text:
            return Result(what, "output", "seen", True)
        if time.monotonic() > deadline:
            return Result(what, "output", f"not seen in {REACH_TIMEOUT:.0f} s", False)
        time.sleep(0.5)


def run_checks(lab: Lab) -> list[Result]:
    state = State.load(lab.name)
    return [run_one(lab, check, state) for check in lab.checks]
