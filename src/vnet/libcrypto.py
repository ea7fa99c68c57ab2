"""Which of OpenSSL's ChaCha20-Poly1305 code paths this process's libcrypto runs.

On CPUs with AVX-512, OpenSSL 3.0 picks its AVX-512 ChaCha20 and Poly1305. Whether they
beat its AVX2 code on a tunnel's messages (at most one MTU) depends on the CPU: a
1,424-byte message took 1.16 us with them and 0.92 us with AVX2 on one VM we measured,
0.80 and 1.03 us on another (docs/performance.md). So vnet measures rather than guesses:
two short child processes seal 1,424-byte messages, one with OpenSSL's own choice and
one with the AVX-512F bit cleared in ``OPENSSL_ia32cap`` (OpenSSL's documented switch,
read once when libcrypto is loaded), and AVX2 is chosen when it is clearly faster. The
verdict is kept in /run/vnet for this CPU, so a machine measures once a boot.

A user's own ``OPENSSL_ia32cap`` wins; ``VNET_OPENSSL_CODE=avx2`` or ``=openssl`` chooses
without measuring. The variable is set only while libcrypto loads, so processes vnet
starts do not inherit it. A process that loaded libcrypto before importing vnet keeps
what it loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from vnet.kernel.files import write_file  # os only: libcrypto stays unloaded

VARIABLE = "OPENSSL_ia32cap"  # OpenSSL spells it so
AVX512F_OFF = ":~0x10000"  # 2nd word, bit 16: CPUID leaf 7 EBX, AVX-512 Foundation
UNCHANGED = ":~0x0"  # both words as detected (without the colon the 2nd would be zeroed)
CHOICE_VARIABLE = "VNET_OPENSSL_CODE"
CACHE = "/run/vnet/openssl-code.json"
MARGIN = 0.95  # AVX2 must take at most this share of AVX-512's time to be chosen
PROBE = """
import sys, time
from vnet import _datapath
sealer, message, best = _datapath.Sealer(bytes(32)), bytes(1424), float("inf")
for _ in range(20):
    start = time.perf_counter()
    for counter in range(100):
        sealer.seal(counter, message)
    best = min(best, (time.perf_counter() - start) / 100)
print(best * 1e6)
"""


@dataclass(frozen=True)
class Choice:
    """What was chosen and why; ``own_us``/``avx2_us``: the measured cost of sealing one
    1,424-byte message with OpenSSL's own code and with AVX-512 masked."""

    avx2: bool
    reason: str
    own_us: float | None = None
    avx2_us: float | None = None

    def describe(self) -> str:
        """For the daemons' start-up line, e.g. "AVX-512 code (measured: 0.80 us a
        1,424-byte message, AVX2 1.03)"."""
        if self.own_us is None or self.avx2_us is None:
            return f"{'AVX2 code' if self.avx2 else 'its own code choice'} ({self.reason})"
        if self.avx2:
            return (f"AVX2 code ({self.reason}: {self.avx2_us:.2f} us a 1,424-byte message, "
                    f"AVX-512 {self.own_us:.2f})")
        return (f"AVX-512 code ({self.reason}: {self.own_us:.2f} us a 1,424-byte message, "
                f"AVX2 {self.avx2_us:.2f})")


def decide(own_us: float, avx2_us: float) -> bool:
    """AVX2 only when it is clearly faster: OpenSSL's own choice is the default."""
    return avx2_us <= own_us * MARGIN


def cpu_key(cpuinfo: str) -> tuple[str, bool]:
    """The CPU's model line and flags (what the verdict holds for), and whether it has
    AVX-512F at all."""
    model = flags = ""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        name = name.strip()
        if name == "model name" and not model:
            model = value.strip()
        elif name == "flags" and not flags:
            flags = value.strip()
    return f"{model} | {flags}", "avx512f" in flags.split()


def measure_once(mask: str) -> float:
    """Microseconds per 1,424-byte seal in a child whose libcrypto loads with ``mask``."""
    env = {**os.environ, VARIABLE: mask}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=30, check=True)
    return float(done.stdout.strip())


def measure() -> tuple[float, float]:
    """OpenSSL's own code and AVX2, alternated twice; the best of each."""
    own, avx2 = [], []
    for _ in range(2):
        own.append(measure_once(UNCHANGED))
        avx2.append(measure_once(AVX512F_OFF))
    return min(own), min(avx2)


def read_cache(path: str, key: str) -> tuple[float, float] | None:
    try:
        with open(path) as f:
            kept = json.load(f)
        if kept["cpu"] != key:
            return None
        return float(kept["own_us"]), float(kept["avx2_us"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, another CPU, or unreadable: measure again


def write_cache(path: str, key: str, own_us: float, avx2_us: float) -> None:
    """Best effort (root only: /run/vnet is root's, made by _measuring)."""
    with contextlib.suppress(OSError):
        write_file(path, json.dumps({"cpu": key, "own_us": own_us, "avx2_us": avx2_us}), 0o644)


@contextlib.contextmanager
def _measuring(cache: str) -> Iterator[None]:
    """One process measures at a time (50 daemons starting together would otherwise
    measure at once, slowly and against each other); without the lock (not root), alone."""
    try:
        os.makedirs(os.path.dirname(cache), mode=0o755, exist_ok=True)
        fd = os.open(f"{cache}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def choose(cache: str = CACHE, cpuinfo_path: str = "/proc/cpuinfo") -> Choice:
    """Decide, and load libcrypto accordingly when AVX2 is chosen."""
    if VARIABLE in os.environ:
        return Choice(False, f"the user's {VARIABLE}")
    if "_hashlib" in sys.modules:
        return Choice(False, "libcrypto was loaded before vnet")
    asked = os.environ.get(CHOICE_VARIABLE)
    if asked not in (None, "avx2", "openssl"):
        return Choice(False, f"{CHOICE_VARIABLE}={asked!r} is neither avx2 nor openssl")
    if asked == "openssl":
        return Choice(False, f"{CHOICE_VARIABLE}=openssl")
    if asked == "avx2":
        load_with(AVX512F_OFF)
        return Choice(True, f"{CHOICE_VARIABLE}=avx2")
    if os.environ.get("VNET_DATAPATH") == "python":
        return Choice(False, "the Python data path seals with no libcrypto of ours")
    try:
        with open(cpuinfo_path) as f:
            key, avx512 = cpu_key(f.read())
    except OSError:
        return Choice(False, "the CPU could not be read")
    if not avx512:
        return Choice(False, "no AVX-512")
    figures = read_cache(cache, key)
    if figures is None:
        with _measuring(cache):
            figures = read_cache(cache, key)  # measured meanwhile by whoever held the lock
            if figures is None:
                try:
                    figures = measure()
                except (OSError, ValueError, subprocess.SubprocessError):
                    return Choice(False, "not measured (no native data path)")
                write_cache(cache, key, *figures)
    if not decide(*figures):
        return Choice(False, "measured", *figures)
    load_with(AVX512F_OFF)
    return Choice(True, "measured", *figures)


def load_with(mask: str) -> None:
    os.environ[VARIABLE] = mask
    try:
        import _hashlib  # noqa: F401  # links the system libcrypto, whose start-up reads it
    except ImportError:
        pass
    finally:
        del os.environ[VARIABLE]


CHOICE = choose()
