"""The CLI as a user runs it: subprocesses inside a namespace per test."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import time
from typing import Any

import pytest

from tests.conftest import IS_ROOT, run_vnet, unique, vnet_cmd
from vnet.kernel import netns
from vnet.kernel.netlink import Netlink
from vnet.paths import WG_SOCKET_DIR

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root: namespaces and TUN/TAP")

PR_CAPBSET_DROP = 24
CAP_NET_ADMIN = 12


def n() -> str:
    return unique("c")[:15]


def one_line_error(done: subprocess.CompletedProcess[str], needle: str) -> None:
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vnet: error: "), done.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in done.stderr


def links(ns: str) -> set[str]:
    with Netlink(ns) as nl:
        return {link.name for link in nl.links()}


def test_help_and_version() -> None:
    done = run_vnet(None, "--help")
    assert done.returncode == 0 and "tuntap" in done.stdout and "show" in done.stdout
    assert run_vnet(None, "--version").stdout.startswith("vnet, version")


def test_tuntap_add_list_show_del(ns: str) -> None:
    name = n()
    done = run_vnet(ns, "tuntap", "add", name, "--mode", "tap", "--vnet-hdr", "--multi-queue",
                    "--user", "nobody", "--group", "65534")
    assert done.returncode == 0, done.stderr
    listed = json.loads(run_vnet(ns, "tuntap", "list", "--json").stdout)
    assert listed == [{"name": name, "mode": "tap", "flags": ["vnet_hdr", "multi_queue",
                                                              "persist"],
                       "owner": 65534, "group": 65534, "up": False}]
    table = run_vnet(ns, "tuntap", "list").stdout
    assert name in table and "nobody" in table
    shown = json.loads(run_vnet(ns, "show", name, "--json").stdout)
    assert shown[0]["persist"] and shown[0]["holders"] == [] and shown[0]["queues"] == 0
    assert run_vnet(ns, "tuntap", "del", name).returncode == 0
    assert name not in links(ns)


def test_tuntap_bad_input(ns: str) -> None:
    name = n()
    assert run_vnet(ns, "tuntap", "add", name, "--mode", "tun").returncode == 0
    one_line_error(run_vnet(ns, "tuntap", "add", name, "--mode", "tun"), "already exists")
    one_line_error(run_vnet(ns, "tuntap", "add", "x" * 16, "--mode", "tun"), "at most 15")
    one_line_error(run_vnet(ns, "tuntap", "add", "bad/name", "--mode", "tun"), "forbids")
    other = n()
    one_line_error(run_vnet(ns, "tuntap", "add", other, "--mode", "tun", "--user", "nosuchuser"),
                   "no such user")
    one_line_error(run_vnet(ns, "tuntap", "del", "lo"), "not a TUN/TAP device")
    one_line_error(run_vnet(ns, "tuntap", "del", "nope0"), "does not exist")
    one_line_error(run_vnet(ns, "show", "nope0"), "does not exist")
    assert other not in links(ns)  # nothing half-created
    assert run_vnet(ns, "tuntap", "add", "--mode", "tun").returncode == 2  # usage error


def test_busy_device(ns: str) -> None:
    name = n()
    proc = start_echo(ns, "tun", name, ["198.18.3.1/24"])
    try:
        one_line_error(run_vnet(ns, "tun", "echo", name), "is busy")
    finally:
        stop(proc)


def _drop_net_admin(ns: str) -> Any:
    path = netns.path(ns)

    def enter() -> None:
        fd = os.open(path, os.O_RDONLY)
        netns.setns(fd)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_CAPBSET_DROP, CAP_NET_ADMIN, 0, 0, 0) != 0:
            os._exit(126)

    return enter


def test_without_cap_net_admin(ns: str) -> None:
    name = n()
    done = subprocess.run(vnet_cmd("tuntap", "add", name, "--mode", "tun"), capture_output=True,
                          text=True, timeout=30, preexec_fn=_drop_net_admin(ns), check=False)
    one_line_error(done, "permission denied")
    assert name not in links(ns)


def test_missing_dev_net_tun(ns: str) -> None:
    # hide /dev/net/tun in a private mount namespace, as on a machine without the driver
    name = n()
    script = 'mount -t tmpfs none /dev/net && exec "$@"'
    done = netns.run(ns, ["unshare", "--mount", "sh", "-c", script, "sh",
                          *vnet_cmd("tuntap", "add", name, "--mode", "tun")],
                     capture_output=True, text=True, timeout=30)
    one_line_error(done, "/dev/net/tun does not exist")
    assert name not in links(ns)


# --- echo --------------------------------------------------------------------


def start_echo(ns: str, mode: str, name: str, addrs: list[str], *extra: str) -> Any:
    argv = vnet_cmd(mode, "echo", name, "--json", *extra)
    for a in addrs:
        argv += ["--address", a]
    proc = netns.popen(ns, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 15
    with Netlink(ns) as nl:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"echo exited: {proc.communicate()[1]}")
            if nl.exists(name) and nl.link(name).up:
                return proc
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("echo device did not come up")


def stop(proc: Any) -> dict[str, Any]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def ping(ns: str, target: str, count: int = 3) -> bool:
    done = netns.run(ns, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", target],
                     capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and f"{count} received" in done.stdout


@pytest.mark.parametrize("mode", ["tun", "tap"])
@pytest.mark.parametrize("extra", [(), ("--pi",), ("--vnet-hdr",), ("--pi", "--vnet-hdr")],
                         ids=["plain", "pi", "vnet_hdr", "pi+vnet_hdr"])
def test_ping_through_echo(ns: str, mode: str, extra: tuple[str, ...]) -> None:
    name = n()
    proc = start_echo(ns, mode, name, ["198.18.5.1/24", "fd00:5::1/64"], *extra)
    try:
        assert ping(ns, "198.18.5.2")
        assert ping(ns, "fd00:5::77")
        shown = json.loads(run_vnet(ns, "show", name, "--json").stdout)[0]
        assert [h["pid"] for h in shown["holders"]] == [proc.pid]
        assert shown["pi"] == ("--pi" in extra) and shown["vnet_hdr"] == ("--vnet-hdr" in extra)
        assert "198.18.5.1/24" in shown["addresses"]
    finally:
        stats = stop(proc)
    assert stats["echo_v4"] == 3 and stats["echo_v6"] == 3 and stats["malformed"] == 0
    if mode == "tap":
        assert stats["arp_replies"] >= 1 and stats["ndp_replies"] >= 1
    assert name not in links(ns)  # the device went with its program


def test_echo_stops_after_count(ns: str) -> None:
    name = n()
    proc = start_echo(ns, "tap", name, ["198.18.6.1/24"], "--count", "2")
    ping(ns, "198.18.6.9", count=2)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert json.loads(out)["echo_v4"] == 2


def test_echo_bad_input(ns: str) -> None:
    name = n()
    one_line_error(run_vnet(ns, "tun", "echo", name, "--address", "198.18.7.1"), "prefix length")
    one_line_error(run_vnet(ns, "tun", "echo", name, "--address", "nonsense/24"),
                   "invalid address")
    one_line_error(run_vnet(ns, "tap", "echo", name, "--mac", "01:00:00:00:00:01"), "multicast")
    assert name not in links(ns)


def test_echo_demo() -> None:
    before = set(netns.list_namespaces())
    done = run_vnet(None, "demo", "echo", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: every ping answered" in done.stdout
    assert set(netns.list_namespaces()) == before  # cleaned up


def test_wg_demo() -> None:
    before = set(netns.list_namespaces())
    done = run_vnet(None, "demo", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: encrypted tunnel carried ping and TCP" in done.stdout
    assert "10/10 replies" in done.stdout
    assert set(netns.list_namespaces()) == before
    assert not [p for p in os.listdir(WG_SOCKET_DIR) if p.startswith("wgdemo")]


def test_overlay_demo() -> None:
    before = set(netns.list_namespaces())
    done = run_vnet(None, "demo", "overlay", timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: every container reached the others across hosts" in done.stdout
    assert "/coreos.com/network/subnets/198.19.1.0-24" in done.stdout
    assert "FLANNEL_SUBNET=198.19.1.1/24" in done.stdout
    assert set(netns.list_namespaces()) == before


def test_overlay_commands_refuse_bad_input() -> None:
    done = run_vnet(None, "overlay", "config", "--etcd-endpoints", "https://x:1",
                    '{"Network": "198.19.0.0/16"}')
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "vnet: error: etcd endpoint 'https://x:1': only http:// is supported")
    done = run_vnet(None, "overlay", "config", "--etcd-endpoints", "http://127.0.0.1:1",
                    '{"Network": "198.19.0.0/16", "SubnetLen": 33}')
    assert done.returncode == 1  # refused before etcd is asked
    assert done.stderr.strip() == "vnet: error: SubnetLen: 33 is out of range 1..30"
    done = run_vnet(None, "overlay", "leases", "--etcd-endpoints", "http://127.0.0.1:1")
    assert done.returncode == 1 and "etcd unreachable" in done.stderr
    assert "Traceback" not in done.stderr
