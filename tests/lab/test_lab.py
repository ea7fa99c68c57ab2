"""`vnet lab` for real: every example goes up, passes its checks and goes down; up is
idempotent, rolls back on failure and on Ctrl-C; down removes the lab's and nothing else.

Each test renames the lab it brings up (a unique prefix), so its namespaces
(LAB-HOST) never clash with anything else; `down` runs in ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IS_ROOT, ROOT, run_vnet, vnet_cmd
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces, veth, TAP")
EXAMPLES = ROOT / "examples"


def renamed(path: Path, tmp: Path) -> tuple[Path, str]:
    """A copy of an example under a unique lab name (<= 12 characters)."""
    text = path.read_text()
    old = re.search(r"^name: (\S+)$", text, re.M)
    assert old is not None
    name = f"t{uuid.uuid4().hex[:4]}{old.group(1)[:7]}"
    out = tmp / path.name
    out.write_text(text.replace(old.group(0), f"name: {name}", 1))
    return out, name


def lab_namespaces(name: str) -> list[str]:
    return [n for n in netns.list_namespaces() if n.startswith(f"{name}-")]


def root_links() -> list[str]:
    with Netlink() as nl:
        return sorted(link.name for link in nl.links())


@pytest.fixture
def lab_file(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    path, name = renamed(EXAMPLES / request.param, tmp_path)
    before = root_links()
    try:
        yield path, name
    finally:
        run_vnet(None, "lab", "down", str(path), timeout=60)
        for ns in lab_namespaces(name):  # only if down failed: the test fails below anyway
            netns.delete(ns)
        assert root_links() == before, "the lab touched the root namespace"


@pytest.fixture(scope="module")
def vm_image() -> Path:
    image = ROOT / ".cache" / "vm"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_vm.py"), str(image)],
                   check=True, capture_output=True, timeout=600)
    return image


def up_check_down(path: Path, name: str) -> str:
    done = run_vnet(None, "lab", "up", str(path), timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"lab {name}: up" in done.stdout
    again = run_vnet(None, "lab", "up", str(path), timeout=60)
    assert again.returncode == 0 and "already up" in again.stdout, again.stderr
    status = json.loads(run_vnet(None, "lab", "status", str(path), "--json").stdout)
    assert status["status"] == "up"
    assert all(h["present"] for h in status["hosts"])
    assert all(p["running"] for p in status["processes"])
    check = run_vnet(None, "lab", "check", str(path), timeout=600)
    assert check.returncode == 0, check.stdout + check.stderr
    total = len(re.findall(r"^  - \{(from|process):", path.read_text(), re.M))
    assert f"{total}/{total} checks passed" in check.stderr
    down = run_vnet(None, "lab", "down", str(path))
    assert down.returncode == 0, down.stderr
    assert lab_namespaces(name) == []
    for p in status["processes"]:
        assert not os.path.exists(f"/proc/{p['pid']}") or b"zombie" in Path(
            f"/proc/{p['pid']}/status").read_bytes().lower()
    assert not Path(f"/run/vnet/lab/{name}").exists()
    return check.stdout


@pytest.mark.parametrize(
    "lab_file",
    ["docker-bridge.yaml", "openvpn-style.yaml", "neutron-vxlan.yaml", "neutron-vxlan-vnet.yaml",
     "neutron-gre-vnet.yaml",
     "flannel-udp.yaml", "flannel-wireguard.yaml"],
    indirect=True,
)
def test_example(lab_file: tuple[Path, str]) -> None:
    out = up_check_down(*lab_file)
    assert "FAIL" not in out


@pytest.mark.parametrize("lab_file", ["kvm-bridge.yaml"], indirect=True)
def test_kvm_example(lab_file: tuple[Path, str], vm_image: Path) -> None:
    out = up_check_down(*lab_file)
    assert "FAIL" not in out


@pytest.mark.parametrize("lab_file", ["docker-bridge.yaml"], indirect=True)
def test_two_labs_coexist_and_down_takes_only_its_own(
    lab_file: tuple[Path, str], tmp_path: Path
) -> None:
    first, name1 = lab_file
    (tmp_path / "second").mkdir()
    second, name2 = renamed(EXAMPLES / "docker-bridge.yaml", tmp_path / "second")
    foreign = f"{name1}-extra"  # shares the prefix, but not the tag
    try:
        assert run_vnet(None, "lab", "up", str(first)).returncode == 0
        assert run_vnet(None, "lab", "up", str(second)).returncode == 0
        netns.create(foreign)
        assert run_vnet(None, "lab", "down", name1).returncode == 0  # by name works too
        assert lab_namespaces(name1) == [foreign]
        assert run_vnet(None, "lab", "check", str(second), timeout=120).returncode == 0
    finally:
        run_vnet(None, "lab", "down", str(second))
        if netns.exists(foreign):
            netns.delete(foreign)
    assert lab_namespaces(name2) == []


@pytest.mark.parametrize("lab_file", ["docker-bridge.yaml"], indirect=True)
def test_failed_up_rolls_back(lab_file: tuple[Path, str]) -> None:
    path, name = lab_file
    # the last step (routes) fails: everything made before it must go
    path.write_text(path.read_text().replace(
        "  outside: {}", "  outside:\n    routes: [{to: 198.18.99.0/24, via: 198.18.98.1}]"))
    done = run_vnet(None, "lab", "up", str(path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith(
        "vnet: error: host outside: add route 198.18.99.0/24: gateway is not reachable")
    assert "Traceback" not in done.stderr
    assert lab_namespaces(name) == [] and not Path(f"/run/vnet/lab/{name}").exists()


@pytest.mark.parametrize("lab_file", ["docker-bridge.yaml"], indirect=True)
def test_foreign_namespace_in_the_way_changes_nothing(lab_file: tuple[Path, str]) -> None:
    path, name = lab_file
    foreign = f"{name}-c1"
    netns.create(foreign)
    try:
        done = run_vnet(None, "lab", "up", str(path))
        assert done.returncode == 1
        expected = f"network namespace '{foreign}' exists and does not belong to lab '{name}'"
        assert expected in done.stderr
        assert lab_namespaces(name) == [foreign]
    finally:
        netns.delete(foreign)


@pytest.mark.parametrize("lab_file", ["docker-bridge.yaml"], indirect=True)
def test_up_after_a_crash_clears_provable_leftovers(lab_file: tuple[Path, str]) -> None:
    path, name = lab_file
    assert run_vnet(None, "lab", "up", str(path)).returncode == 0
    # a crash that lost the state file: the namespaces are still tagged as the lab's
    os.remove(f"/run/vnet/lab/{name}/state.json")
    done = run_vnet(None, "lab", "up", str(path))
    assert done.returncode == 0, done.stderr
    assert "removed what an earlier run" in done.stderr and f"{name}-c1" in done.stderr
    assert run_vnet(None, "lab", "check", str(path), timeout=120).returncode == 0


def test_ctrl_c_during_up_leaves_nothing(tmp_path: Path) -> None:
    name = f"t{uuid.uuid4().hex[:4]}big"
    hosts = "".join(f"  h{i}: {{}}\n" for i in range(40))
    links = "".join(
        f"  - a: {{host: h{i}, name: e0}}\n    b: {{host: h{i + 1}, name: e1}}\n"
        for i in range(39)
    )
    path = tmp_path / "big.yaml"
    path.write_text(f"name: {name}\nhosts:\n{hosts}links:\n{links}")
    proc = subprocess.Popen(vnet_cmd("lab", "up", str(path)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while len(lab_namespaces(name)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        assert lab_namespaces(name) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for ns in lab_namespaces(name):
            netns.delete(ns)


def test_bad_file_changes_nothing(tmp_path: Path) -> None:
    before = netns.list_namespaces()
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nhosts:\n  a: {}\nlinks:\n  - a: {host: a, name: x}\n"
                    "    b: {host: nowhere, name: y}\n")
    done = run_vnet(None, "lab", "up", str(path))
    assert done.returncode == 1
    assert done.stderr == f"vnet: error: {path}:6: links.0.b.host: no host 'nowhere' in hosts\n"
    assert netns.list_namespaces() == before
    assert run_vnet(None, "lab", "check", str(path)).returncode == 1
    missing = run_vnet(None, "lab", "up", str(tmp_path / "none.yaml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
