"""`make bench`: tunnels between two namespaces over veth, measured in one run, as ratios.

Modes: veth (no tunnel), kernel vxlan, wireguard-go, OpenVPN (AES-256-GCM), vnet-wg;
for L2, a kernel bridge, `vnet switch` TAP <-> TAP and `vnet switch` VXLAN VTEPs.
Each round runs every mode once (round-robin, so drift hits all alike); the
table shows medians over the rounds. Per mode-run: idle ping RTT, iperf3 TCP
1 stream and 4 streams (cubic), and the tunnel daemons' CPU seconds per GB
during the single-stream run. Writes bench/RESULTS.md.

Cubic is each namespace's default congestion control, not only iperf3's `-C cubic`:
iperf3 names it after connect(), when the system default (bbr on some machines) has
already set the socket to pace itself, which the switch to cubic does not undo - one
pacing timer per TSO burst, measured as tens of thousands of timer interrupts a second
behind a userspace hop.

Addresses: underlay 198.18.0.1/2, tunnel 198.19.0.1/2. Everything this script
starts is stopped by PID; namespaces are deleted at the end of each mode-run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vnet.kernel import netns
from vnet.kernel.netlink import Netlink
from vnet.paths import wg_socket
from vnet.wireguard import crypto

ROOT = Path(__file__).resolve().parent.parent
VNET_WG = str(Path(sys.executable).with_name("vnet-wg"))
VNET = str(Path(sys.executable).with_name("vnet"))
HZ = os.sysconf("SC_CLK_TCK")
UA, UB = "198.18.0.1", "198.18.0.2"
IA, IB = "198.19.0.1", "198.19.0.2"
USERSPACE_ANCHORS = ("wireguard-go", "openvpn-aesgcm")
KERNEL_MODES = ("veth", "vxlan", "bridge")
CONGESTION = "cubic"
ALLOWED_CONGESTION = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


@dataclass
class Result:
    mode: str
    gbps1: float
    gbps4: float
    rtt_ms: float
    cpu_s_per_gb: float | None
    retr1: int


@dataclass
class Env:
    tag: str
    tmp: Path
    ns_a: str = ""
    ns_b: str = ""
    ns_extra: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tunnel_pids: list[int] = field(default_factory=list)

    def run(self, ns: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        done = netns.run(ns, list(argv), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
        return done

    def daemon(self, ns: str, name: str, argv: list[str],
               env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "wb")  # noqa: SIM115 - the child owns it
        proc = netns.popen(ns, argv, stdout=log, stderr=subprocess.STDOUT,
                           env={**os.environ, **env} if env else None)
        log.close()
        self.procs.append(proc)
        self.tunnel_pids.append(proc.pid)
        return proc


def ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


# --- modes -------------------------------------------------------------------------------


@contextlib.contextmanager
def congestion_allowed() -> Iterator[None]:
    """Let the namespaces default to CONGESTION: outside the initial namespace the kernel
    only allows a default from this list (reno and the system's default). Put back after."""
    before = ALLOWED_CONGESTION.read_text().split()
    if CONGESTION not in before:
        ALLOWED_CONGESTION.write_text(" ".join([*before, CONGESTION]))
    try:
        yield
    finally:
        if CONGESTION not in before:
            ALLOWED_CONGESTION.write_text(" ".join(before))


def underlay(env: Env) -> None:
    env.ns_a, env.ns_b = f"bench-a-{env.tag}", f"bench-b-{env.tag}"
    for ns in (env.ns_a, env.ns_b):
        netns.create(ns)
        with Netlink(ns) as nl:
            nl.set_up("lo")
        with netns.entered(ns), open("/proc/sys/net/ipv4/tcp_congestion_control", "w") as f:
            f.write(CONGESTION)
    with Netlink(env.ns_a) as nl:
        nl.add_veth("vha", "vhb", peer_netns=env.ns_b)
        nl.add_address("vha", f"{UA}/24")
        nl.set_up("vha")
    with Netlink(env.ns_b) as nl:
        nl.add_address("vhb", f"{UB}/24")
        nl.set_up("vhb")


def inner_addresses(env: Env, dev_a: str, dev_b: str, mtu: int | None = None) -> None:
    for ns, dev, addr in ((env.ns_a, dev_a, IA), (env.ns_b, dev_b, IB)):
        with Netlink(ns) as nl:
            if mtu:
                nl.set_mtu(dev, mtu)
            nl.add_address(dev, f"{addr}/24")
            nl.set_up(dev)


def up_veth(env: Env) -> str:
    return UB


def up_vxlan(env: Env) -> str:
    with Netlink(env.ns_a) as nl:
        nl.add_vxlan("vxa", 42, remote=UB, local=UA, dev="vha")
    with Netlink(env.ns_b) as nl:
        nl.add_vxlan("vxb", 42, remote=UA, local=UB, dev="vhb")
    inner_addresses(env, "vxa", "vxb")
    return IB


def _keys() -> tuple[tuple[str, str], tuple[str, str]]:
    out = []
    for _ in range(2):
        private = crypto.generate_private_key(os.urandom(32))
        out.append(
            (
                base64.b64encode(private).decode(),
                base64.b64encode(crypto.public_key(private)).decode(),
            )
        )
    return out[0], out[1]


def _wg_configure(env: Env, ifa: str, ifb: str) -> None:
    (pa, ka), (pb, kb) = _keys()
    for ns, ifname, private, peer_pub, endpoint, allowed in (
        (env.ns_a, ifa, pa, kb, UB, IB),
        (env.ns_b, ifb, pb, ka, UA, IA),
    ):
        key = env.tmp / f"{ifname}.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private + "\n")
        env.run(
            ns,
            "wg",
            "set",
            ifname,
            "listen-port",
            "51820",
            "private-key",
            str(key),
            "peer",
            peer_pub,
            "endpoint",
            f"{endpoint}:51820",
            "allowed-ips",
            f"{allowed}/32",
        )
    inner_addresses(env, ifa, ifb, mtu=1420)


def _wg_up(env: Env, argv_for: Callable[[str], list[str]], name: str,
           daemon_env: dict[str, str] | None = None) -> str:
    ifa, ifb = f"bwa{env.tag}", f"bwb{env.tag}"
    for ns, ifname in ((env.ns_a, ifa), (env.ns_b, ifb)):
        env.daemon(ns, f"{name}-{ifname}", argv_for(ifname), daemon_env)
    sockets = [wg_socket(i) for i in (ifa, ifb)]
    wait_for(lambda: all(os.path.exists(s) for s in sockets), 15, f"{name} sockets")
    _wg_configure(env, ifa, ifb)
    return IB


def up_wireguard_go(env: Env) -> str:
    return _wg_up(env, lambda i: ["wireguard-go", "-f", i], "wireguard-go")


def up_vnet_wg(env: Env) -> str:
    return _wg_up(env, lambda i: [VNET_WG, "-f", "--log-level", "warning", i], "vnet-wg")


def up_vnet_wg_python(env: Env) -> str:
    """vnet-wg on the Python reference data path (no native module)."""
    return _wg_up(env, lambda i: [VNET_WG, "-f", "--log-level", "warning", i], "vnet-wg",
                  {"VNET_DATAPATH": "python"})


def up_vnet_wg_no_offload(env: Env) -> str:
    return _wg_up(
        env, lambda i: [VNET_WG, "-f", "--no-offload", "--log-level", "warning", i], "vnet-wg"
    )


def up_vnet_wg_pcap(env: Env) -> str:
    """vnet-wg capturing its inner packets both ways (--pcap), 2 x 100 MB rotating files."""
    return _wg_up(env, lambda i: [VNET_WG, "-f", "--log-level", "warning", "--pcap",
                                  str(env.tmp / f"{i}.pcap"), "--pcap-size", "100",
                                  "--pcap-files", "2", i], "vnet-wg")


def _switch_ns(env: Env) -> str:
    ns = f"bench-s-{env.tag}"
    netns.create(ns)
    env.ns_extra.append(ns)
    return ns


def up_bridge(env: Env) -> str:
    """Kernel anchor for the switch: both namespaces on a bridge via veth pairs."""
    ns = _switch_ns(env)
    with Netlink(ns) as nl:
        nl.add_bridge("br0")
        nl.set_up("br0")
        for side, peer_ns in (("a", env.ns_a), ("b", env.ns_b)):
            nl.add_veth(f"p{side}", f"e{side}", peer_netns=peer_ns)
            nl.set_master(f"p{side}", "br0")
            nl.set_up(f"p{side}")
    inner_addresses(env, "ea", "eb")
    return IB


def _wait_switch(env: Env, ns: str, dev: str) -> None:
    def present() -> bool:
        with Netlink(ns) as nl:
            return nl.exists(dev)

    wait_for(present, 15, f"switch port {dev} in {ns}")


def up_vnet_switch(env: Env, extra: tuple[str, ...] = ()) -> str:
    """TAP <-> TAP through one `vnet switch`; each TAP is moved into its namespace."""
    ns = _switch_ns(env)
    config = env.tmp / "switch.yaml"
    config.write_text(
        f"name: bench{env.tag}\n"
        "ports:\n"
        f"  - {{name: ta, netns: {env.ns_a}}}\n"
        f"  - {{name: tb, netns: {env.ns_b}}}\n"
    )
    env.daemon(ns, "vnet-switch", [VNET, "switch", "run", str(config), *extra])
    _wait_switch(env, env.ns_a, "ta")
    _wait_switch(env, env.ns_b, "tb")
    inner_addresses(env, "ta", "tb")
    return IB


def up_vnet_vxlan(env: Env, extra: tuple[str, ...] = (),
                  daemon_env: dict[str, str] | None = None, tunnel: str = "--segment") -> str:
    """A `vnet switch` VTEP in each namespace, VXLAN VNI 42 (``tunnel`` "--gre-segment":
    GRE key 42) over the veth underlay."""
    for ns, side, local, remote in ((env.ns_a, "a", UA, UB), (env.ns_b, "b", UB, UA)):
        argv = [VNET, "switch", "run", "--name", f"bench{env.tag}{side}", "--port", f"t{side}"]
        argv += [tunnel, f"42:1:{remote}", "--local", local, *extra]
        env.daemon(ns, f"vnet-vxlan-{side}", argv, daemon_env)
        _wait_switch(env, ns, f"t{side}")
    inner_addresses(env, "ta", "tb")
    return IB


def _pki(tmp: Path) -> Path:
    pki = tmp / "pki"
    if (pki / "client.crt").exists():
        return pki
    pki.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=pki, check=True, capture_output=True)

    ssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=vnet-bench-ca",
    )
    for role, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (pki / f"{role}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n"
            f"extendedKeyUsage={usage}\n"
        )
        ssl("req", *ec, "-keyout", f"{role}.key", "-out", f"{role}.csr", "-subj", f"/CN={role}")
        ssl(
            "x509",
            "-req",
            "-in",
            f"{role}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{role}.ext",
            "-out",
            f"{role}.crt",
        )
    return pki


def up_openvpn_aesgcm(env: Env) -> str:
    pki = _pki(env.tmp)
    common = [
        "openvpn",
        "--dev-type",
        "tun",
        "--proto",
        "udp",
        "--lport",
        "1194",
        "--rport",
        "1194",
        "--data-ciphers",
        "AES-256-GCM",
        "--disable-dco",
        "--ca",
        str(pki / "ca.crt"),
        "--verb",
        "3",
    ]
    env.daemon(
        env.ns_b,
        "openvpn-b",
        [
            *common,
            "--dev",
            "ovb",
            "--local",
            UB,
            "--remote",
            UA,
            "--ifconfig",
            IB,
            IA,
            "--tls-server",
            "--dh",
            "none",
            "--cert",
            str(pki / "server.crt"),
            "--key",
            str(pki / "server.key"),
        ],
    )
    env.daemon(
        env.ns_a,
        "openvpn-a",
        [
            *common,
            "--dev",
            "ova",
            "--local",
            UA,
            "--remote",
            UB,
            "--ifconfig",
            IA,
            IB,
            "--tls-client",
            "--remote-cert-tls",
            "server",
            "--cert",
            str(pki / "client.crt"),
            "--key",
            str(pki / "client.key"),
        ],
    )
    log = env.tmp / "openvpn-a.log"
    wait_for(
        lambda: "Initialization Sequence Completed" in log.read_text(errors="replace"),
        20,
        "openvpn",
    )
    return IB


MODES: dict[str, Callable[[Env], str]] = {
    "veth": up_veth,
    "vxlan": up_vxlan,
    "wireguard-go": up_wireguard_go,
    "openvpn-aesgcm": up_openvpn_aesgcm,
    "vnet-wg": up_vnet_wg,
    "vnet-wg-python": up_vnet_wg_python,
    "vnet-wg-no-offload": up_vnet_wg_no_offload,
    "bridge": up_bridge,
    "vnet-switch": up_vnet_switch,
    "vnet-vxlan": up_vnet_vxlan,
    "vnet-vxlan-python": lambda env: up_vnet_vxlan(env, (), {"VNET_DATAPATH": "python"}),
    "vnet-vxlan-no-offload": lambda env: up_vnet_vxlan(env, ("--no-offload",)),
    "vnet-gre": lambda env: up_vnet_vxlan(env, tunnel="--gre-segment"),
    "vnet-wg-pcap": up_vnet_wg_pcap,
}


# --- measuring -----------------------------------------------------------------------------


def iperf(env: Env, target: str, streams: int, seconds: int) -> dict[str, object]:
    server = netns.popen(
        env.ns_b,
        ["iperf3", "-s", "-1", "-B", target, "-p", "5201"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: bool(
                netns.run(
                    env.ns_b, ["ss", "-Htln", "sport = :5201"], capture_output=True, text=True
                ).stdout.strip()
            ),
            10,
            "iperf3 server",
        )
        done = netns.run(
            env.ns_a,
            [
                "iperf3",
                "-c",
                target,
                "-p",
                "5201",
                "-t",
                str(seconds),
                "-P",
                str(streams),
                "-C",
                "cubic",
                "-J",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )
        data: dict[str, object] = json.loads(done.stdout)
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        return data
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


def wait_path(env: Env, mode: str, target: str) -> None:
    """Until ``mode``'s path from namespace A carries a ping to ``target``."""
    wait_for(
        lambda: (
            netns.run(
                env.ns_a, ["ping", "-c", "1", "-W", "1", target], capture_output=True
            ).returncode
            == 0
        ),
        30,
        f"{mode} path",
    )


def measure(env: Env, mode: str, target: str, seconds: int) -> Result:
    wait_path(env, mode, target)  # then warm it up
    netns.run(env.ns_a, ["ping", "-c", "5", "-i", "0.1", "-q", target], capture_output=True)
    ping = netns.run(
        env.ns_a, ["ping", "-c", "20", "-i", "0.05", "-q", target], capture_output=True, text=True
    )
    rtt = float(ping.stdout.split("=")[-1].split("/")[1])
    t0 = ticks(env.tunnel_pids)
    one = iperf(env, target, 1, seconds)
    cpu = (ticks(env.tunnel_pids) - t0) / HZ
    four = iperf(env, target, 4, seconds)
    end1 = one["end"]
    end4 = four["end"]
    assert isinstance(end1, dict) and isinstance(end4, dict)
    gb = end1["sum_received"]["bytes"] / 1e9
    return Result(
        mode,
        end1["sum_received"]["bits_per_second"] / 1e9,
        end4["sum_received"]["bits_per_second"] / 1e9,
        rtt,
        cpu / gb if env.tunnel_pids and gb else None,
        int(end1["sum_sent"].get("retransmits", 0)),
    )


def teardown(env: Env) -> None:
    netns.stop(env.procs)
    for ns in (env.ns_a, env.ns_b, *env.ns_extra):
        if ns and netns.exists(ns):
            netns.delete(ns)


def run_mode(mode: str, tmp: Path, seconds: int) -> Result:
    env = Env(tag=f"{os.getpid() % 10000}", tmp=tmp)
    try:
        underlay(env)
        target = MODES[mode](env)
        return measure(env, mode, target, seconds)
    finally:
        teardown(env)


# --- report ----------------------------------------------------------------------------------


def report(results: dict[str, list[Result]], seconds: int, rounds: int) -> str:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    rows = {}
    for mode, rs in results.items():
        cpus = [r.cpu_s_per_gb for r in rs if r.cpu_s_per_gb is not None]
        rows[mode] = (
            med([r.gbps1 for r in rs]),
            med([r.gbps4 for r in rs]),
            med([r.rtt_ms for r in rs]),
            med(cpus) if cpus else None,
            med([float(r.retr1) for r in rs]),
        )
    anchors = [rows[m][0] for m in USERSPACE_ANCHORS if m in rows]
    best = max(anchors) if anchors else None
    best_name = next((m for m in USERSPACE_ANCHORS if m in rows and rows[m][0] == best), "-")
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: "
        f"two namespaces over veth, iperf3 TCP (cubic, the namespaces' default) {seconds} s, "
        "idle ping RTT (20 x 50 ms), "
        f"medians of {rounds} round-robin rounds, all in one run on this machine "
        f"({os.cpu_count()} cores). CPU s/GB = user+system time of both tunnel daemons during "
        "the single-stream run per GB received. Ratio = single stream / best userspace anchor "
        f"of the same run ({best_name}).",
        "",
        "| mode | 1 stream Gb/s | 4 streams Gb/s | RTT ms | tunnel CPU s/GB "
        "| retransmits (1 stream) | ratio vs best userspace anchor |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, (g1, g4, rtt, cpu, retr) in rows.items():
        ratio = f"{g1 / best:.2f}x" if best and mode not in KERNEL_MODES else "-"
        cpu_text = f"{cpu:.1f}" if cpu is not None else "kernel"
        lines.append(
            f"| {mode} | {g1:.3f} | {g4:.3f} | {rtt:.3f} | {cpu_text} | {retr:.0f} | {ratio} |"
        )
    lines += ["", "Raw runs:", ""]
    for mode, rs in results.items():
        lines.append(
            f"- {mode}: "
            + "; ".join(f"{r.gbps1:.3f}/{r.gbps4:.3f} Gb/s, {r.rtt_ms:.3f} ms" for r in rs)
        )
    return "\n".join(lines) + "\n"


def kept_sections(old: str) -> str:
    """What other benchmarks wrote into RESULTS.md (bench/overlay.py's section)."""
    start = old.find("\n## vnet overlay")
    if start < 0:
        return ""
    end = old.find("\n## ", start + 1)
    return old[start + 1 : end + 1 if end >= 0 else len(old)].rstrip() + "\n"


def micro() -> str:
    """bench/micro.py's per-stage costs, measured in the same run as the table."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "micro.py")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    body = done.stdout.strip() if done.returncode == 0 else f"micro.py failed: {done.stderr}"
    return (
        "\n## Per-stage costs in process (`python bench/micro.py`, same run)\n\n"
        "One 44-segment TCP super-packet through each stage of the vnet-wg data path, packet "
        "by packet and as the daemon does it; then one ping-sized packet warm and cold (after "
        "50 ms asleep, as an idle ping finds a daemon).\n\n```\n" + body + "\n```\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench: needs root (namespaces, TUN devices)", file=sys.stderr)
        return 1
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        print(f"bench: unknown modes {unknown}; choose from {', '.join(MODES)}", file=sys.stderr)
        return 1
    for tool in ("iperf3", "ping", "wg", "wireguard-go", "openvpn", "openssl", "ss"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing (run `make setup`)", file=sys.stderr)
            return 1
    results: dict[str, list[Result]] = {m: [] for m in modes}
    with congestion_allowed(), tempfile.TemporaryDirectory(prefix="vnet-bench-") as tmp:
        for n in range(args.rounds):
            for mode in modes:
                r = run_mode(mode, Path(tmp), args.seconds)
                results[mode].append(r)
                print(
                    f"round {n + 1} {mode}: {r.gbps1:.3f} Gb/s (1), {r.gbps4:.3f} Gb/s (4), "
                    f"rtt {r.rtt_ms:.3f} ms, cpu/GB {r.cpu_s_per_gb}",
                    flush=True,
                )
    text = report(results, args.seconds, args.rounds) + micro()
    out = Path(args.out)
    kept = kept_sections(out.read_text() if out.exists() else "")
    out.write_text(text + ("\n" + kept if kept else ""))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
