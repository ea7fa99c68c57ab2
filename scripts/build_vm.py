"""Build a tiny test VM from Debian packages: the cloud kernel and a busybox initramfs.

Output (cached, idempotent; rebuilt when the init script or the contents change):
OUT/vmlinuz and OUT/initrd.img. The guest loads the virtio-net and GRE modules, sets the
address given as ``vnet.ip=`` on the kernel command line, pings ``vnet.target=`` (up to
``vnet.tries=`` times), prints VNET-PING-OK or VNET-PING-FAIL, then with ``vnet.mode=gre``
runs the gretap checks below, waits ``vnet.hold=`` seconds if given, and powers off.
The kernel and busybox are fetched with `apt-get download` and unpacked with `dpkg-deb
-x` (nothing is installed to /boot); iproute2's `ip` (busybox's cannot make a gretap) and
iperf3 are copied from this host's Debian packages with the libraries they link.

GRE mode (the kernel's gretap as the far end of `vnet switch`'s GRE segments): gretap
devices for keys 100 and 200 to ``vnet.remote=``, with 198.19.100.9/24 and
198.19.200.9/24; pings 198.19.100.2 (VNET-GRE-100-OK), 198.19.200.2 (VNET-GRE-200-OK),
and 198.19.100.3, which must not answer (VNET-GRE-ISOLATED: tenant 200's address); an IP
GRE tunnel with key 7 (``ip tunnel add ... mode gre``), 198.19.7.9/30, pings 198.19.7.10
(VNET-GRE-IP-OK: `vnet tun gre` on the host);
iperf3 to 198.19.100.2 (VNET-GRE-IPERF <bytes>); then an iperf3 server for one test
(VNET-GRE-SERVER-UP) while it holds.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

MODULES = [
    "virtio",
    "virtio_ring",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "gre",
    "ip_tunnel",
    "ip_gre",
]
# host path -> guest path; iproute2's ip beside busybox's (it reads its name: keep "ip")
TOOLS = {"/usr/sbin/ip": "usr/local/sbin/ip", "/usr/bin/iperf3": "bin/iperf3"}

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
# no modules.dep here: retry until every module's dependencies are in
for pass in 1 2 3 4; do
  for m in {modules}; do
    [ -d /sys/module/$m ] || insmod /lib/modules/$m.ko 2>/dev/null
  done
done
for m in {modules}; do [ -d /sys/module/$m ] || echo "VNET-MODULE-MISSING $m"; done
arg() {{ sed -n "s/.*$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }}
IP=$(arg vnet.ip); TARGET=$(arg vnet.target)
ip link set lo up
ip link set eth0 up
ip addr add "$IP" dev eth0
echo VNET-GUEST-UP
# vnet.tries= pings (default 3) until one answers: a peer VM may still be booting
TRIES=$(arg vnet.tries); OK=
for i in $(seq 1 "${{TRIES:-3}}"); do ping -c 1 -W 2 "$TARGET" && OK=1 && break; done
if [ -n "$OK" ]; then echo VNET-PING-OK; else echo VNET-PING-FAIL; fi
if [ "$(arg vnet.mode)" = gre ]; then
  REMOTE=$(arg vnet.remote); LOCAL=${{IP%/*}}
  for key in 100 200; do
    /usr/local/sbin/ip link add gt$key type gretap local "$LOCAL" remote "$REMOTE" key $key
    ip addr add 198.19.$key.9/24 dev gt$key
    ip link set gt$key up
  done
  for key in 100 200; do
    OK=; for i in 1 2 3 4 5; do ping -c 1 -W 2 198.19.$key.2 && OK=1 && break; done
    [ -n "$OK" ] && echo VNET-GRE-$key-OK
  done
  ping -c 2 -W 2 -I gt100 198.19.100.3 || echo VNET-GRE-ISOLATED
  # IP over GRE, key 7, to `vnet tun gre` on the host
  /usr/local/sbin/ip tunnel add gre7 mode gre local "$LOCAL" remote "$REMOTE" key 7
  ip addr add 198.19.7.9/30 dev gre7
  ip link set gre7 up
  OK=; for i in 1 2 3 4 5; do ping -c 1 -W 2 198.19.7.10 && OK=1 && break; done
  [ -n "$OK" ] && echo VNET-GRE-IP-OK
  iperf3 -c 198.19.100.2 -t 2 -J > /tmp/iperf.json; grep '"error"' /tmp/iperf.json
  BYTES=$(awk -F'[:,]' '/"bytes"/ {{b = $2}} END {{print b + 0}}' /tmp/iperf.json)
  echo "VNET-GRE-IPERF ${{BYTES:-0}}"
  iperf3 -s -1 -B 198.19.200.9 &
  sleep 1; echo VNET-GRE-SERVER-UP
fi
HOLD=$(arg vnet.hold); [ -n "$HOLD" ] && sleep "$HOLD"
poweroff -f
"""


def copy_tools(root: Path) -> list[str]:
    """TOOLS into the initramfs, with every library ldd names at its own path."""
    names = []
    libraries: set[str] = set()
    for host, guest in TOOLS.items():
        real = os.path.realpath(host)
        (root / guest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real, root / guest)
        (root / guest).chmod(0o755)
        names.append(guest)
        out = subprocess.run(["ldd", real], check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if path.startswith("/"):
                libraries.add(path)
    for lib in sorted(libraries):
        target = root / lib.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.realpath(lib), target)
    return names


def run(*argv: str, cwd: Path) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout


def kernel_package() -> str:
    out = subprocess.run(
        ["apt-cache", "depends", "linux-image-cloud-amd64"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for raw in out.splitlines():
        line = raw.strip()
        if line.startswith("Depends: linux-image-"):
            return line.split()[1]
    raise SystemExit("build_vm: no linux-image-*-cloud-amd64 package (run apt-get update)")


def newc(root: Path) -> bytes:
    """A cpio archive in the 'newc' format the kernel unpacks as an initramfs."""
    out = bytearray()
    ino = 1

    def entry(name: str, mode: int, data: bytes) -> None:
        nonlocal ino
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0]
        head = "070701" + "".join(f"{f:08x}" for f in fields)
        out.extend(head.encode() + name.encode() + b"\0")
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))
        ino += 1

    for path in sorted(root.rglob("*")):
        name = str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISDIR(st.st_mode):
            entry(name, stat.S_IFDIR | 0o755, b"")
        elif stat.S_ISLNK(st.st_mode):
            entry(name, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        else:
            entry(name, stat.S_IFREG | (st.st_mode & 0o777), path.read_bytes())
    entry("TRAILER!!!", 0, b"")
    return bytes(out)


def build(out: Path) -> None:
    digest = hashlib.sha256((INIT + repr(MODULES) + repr(TOOLS)).encode()).hexdigest()
    stamp = out / "init.sha256"
    if (
        (out / "vmlinuz").is_file()
        and (out / "initrd.img").is_file()
        and stamp.is_file()
        and stamp.read_text() == digest
    ):
        return
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vnet-vm-") as tmp:
        work = Path(tmp)
        run("apt-get", "download", kernel_package(), "busybox-static", cwd=work)
        kdeb = next(work.glob("linux-image-*.deb"))
        bdeb = next(work.glob("busybox-static*.deb"))
        run("dpkg-deb", "-x", str(kdeb), "k", cwd=work)
        run("dpkg-deb", "-x", str(bdeb), "b", cwd=work)
        kver = next((work / "k/lib/modules").iterdir()).name
        root = work / "root"
        for d in ("bin", "proc", "sys", "dev", "lib/modules", "tmp"):  # iperf3 needs /tmp
            (root / d).mkdir(parents=True)
        shutil.copy(work / "b/bin/busybox", root / "bin/busybox")
        (root / "bin/busybox").chmod(0o755)
        found = []
        for mod in MODULES:
            for path in (work / "k/lib/modules" / kver).rglob(f"{mod}.ko*"):
                data = path.read_bytes()
                if path.suffix == ".xz":
                    data = lzma.decompress(data)
                (root / "lib/modules" / f"{mod}.ko").write_bytes(data)
                found.append(mod)
                break
        copy_tools(root)
        init = root / "init"
        init.write_text(INIT.format(modules=" ".join(found)))
        init.chmod(0o755)
        (out / "initrd.img").write_bytes(newc(root))
        shutil.copy(next((work / "k/boot").glob("vmlinuz-*")), out / "vmlinuz")
    stamp.write_text(digest)
    print(f"build_vm: {out}/vmlinuz, {out}/initrd.img (modules: {' '.join(found)})")


if __name__ == "__main__":
    build(Path(sys.argv[1] if len(sys.argv) > 1 else ".cache/vm"))
