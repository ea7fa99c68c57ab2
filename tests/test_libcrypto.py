"""libcrypto's code choice: measured once per CPU and kept, the user's variable wins, the
choice is never inherited by the programs vnet starts."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vnet import libcrypto

CPU = "model name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {extra}\n\nmodel name\t: Some CPU\n"

PROBE = (
    "import os, subprocess, sys, vnet.libcrypto as l; "
    "child = subprocess.run([sys.executable, '-c', "
    "'import os; print(os.environ.get(\"OPENSSL_ia32cap\"))'], capture_output=True, text=True); "
    "print(l.CHOICE.avx2, os.environ.get('OPENSSL_ia32cap'), child.stdout.strip(), "
    "'|', l.CHOICE.reason)"
)


def probe(**extra: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in (libcrypto.VARIABLE, libcrypto.CHOICE_VARIABLE)}
    env.update(extra)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def test_avx2_only_when_clearly_faster() -> None:
    assert libcrypto.decide(own_us=1.16, avx2_us=0.92)
    assert not libcrypto.decide(own_us=0.80, avx2_us=1.03)
    assert not libcrypto.decide(own_us=1.00, avx2_us=0.97)  # within the margin: OpenSSL's


def test_the_cpu_key_holds_model_and_flags() -> None:
    key, avx512 = libcrypto.cpu_key(CPU.format(extra="avx512f avx512vl"))
    assert key == "Some CPU | fpu sse2 avx2 avx512f avx512vl" and avx512
    assert not libcrypto.cpu_key(CPU.format(extra="avx512fake"))[1]


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """choose() in this process as on a first import each time: no variables, libcrypto
    not yet loaded (a C module's second import is a no-op), measure() counted."""
    for name in (libcrypto.VARIABLE, libcrypto.CHOICE_VARIABLE, "VNET_DATAPATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "_hashlib", raising=False)
    choose = libcrypto.choose

    def first_import(cache: str, cpuinfo: str) -> libcrypto.Choice:
        sys.modules.pop("_hashlib", None)
        return choose(cache, cpuinfo)

    monkeypatch.setattr(libcrypto, "choose", first_import)
    calls: list[int] = []

    def measure() -> tuple[float, float]:
        calls.append(1)
        return 1.16, 0.92

    monkeypatch.setattr(libcrypto, "measure", measure)
    (tmp_path / "cpuinfo").write_text(CPU.format(extra="avx512f"))
    return calls


def test_measured_once_then_kept(fresh: list[int], tmp_path: Path) -> None:
    cache, cpu = str(tmp_path / "run" / "code.json"), str(tmp_path / "cpuinfo")
    first = libcrypto.choose(cache, cpu)
    assert first == libcrypto.Choice(True, "measured", 1.16, 0.92) and fresh == [1]
    assert os.environ.get(libcrypto.VARIABLE) is None  # set only while libcrypto loaded
    assert libcrypto.choose(cache, cpu) == first and fresh == [1]  # from the file
    assert "AVX2 code (measured: 0.92 us" in first.describe()


def test_another_cpu_or_a_broken_file_is_measured_again(fresh: list[int],
                                                          tmp_path: Path) -> None:
    cache, cpu = tmp_path / "code.json", str(tmp_path / "cpuinfo")
    cache.write_text(json.dumps({"cpu": "Other CPU | avx512f", "own_us": 1, "avx2_us": 9}))
    assert libcrypto.choose(str(cache), cpu).avx2 and fresh == [1]
    cache.write_text("{not json")
    assert libcrypto.choose(str(cache), cpu).avx2 and fresh == [1, 1]


def test_no_avx512_nothing_to_measure(fresh: list[int], tmp_path: Path) -> None:
    cpu = tmp_path / "cpuinfo"
    cpu.write_text(CPU.format(extra=""))
    choice = libcrypto.choose(str(tmp_path / "code.json"), str(cpu))
    assert choice == libcrypto.Choice(False, "no AVX-512") and not fresh


def test_the_measurement_runs_both_codes() -> None:
    own, avx2 = libcrypto.measure()
    assert 0 < own < 50 and 0 < avx2 < 50  # microseconds per 1,424-byte message


def test_avx2_asked_for_and_not_inherited() -> None:
    assert probe(VNET_OPENSSL_CODE="avx2") == "True None None | VNET_OPENSSL_CODE=avx2"


def test_openssls_own_code_asked_for() -> None:
    assert probe(VNET_OPENSSL_CODE="openssl") == "False None None | VNET_OPENSSL_CODE=openssl"


def test_a_bad_choice_is_named() -> None:
    assert probe(VNET_OPENSSL_CODE="fast").endswith(
        "| VNET_OPENSSL_CODE='fast' is neither avx2 nor openssl")


def test_the_users_variable_wins_and_is_left_alone() -> None:
    assert probe(OPENSSL_ia32cap=":~0x0") == ":~0x0".join(
        ["False ", " ", " | the user's OPENSSL_ia32cap"])


def test_too_late_when_libcrypto_was_loaded_first() -> None:
    env = {k: v for k, v in os.environ.items() if k != libcrypto.VARIABLE}
    done = subprocess.run(
        [sys.executable, "-c", "import _hashlib, vnet.libcrypto as l; print(l.CHOICE.reason)"],
        env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "libcrypto was loaded before vnet"


def test_one_measures_while_the_others_wait_for_its_figures(fresh: list[int],
                                                            tmp_path: Path) -> None:
    cache, cpu = tmp_path / "code.json", str(tmp_path / "cpuinfo")
    key = libcrypto.cpu_key((tmp_path / "cpuinfo").read_text())[0]
    holder = os.open(f"{cache}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process, measuring
    result: list[libcrypto.Choice] = []
    waiter = threading.Thread(target=lambda: result.append(libcrypto.choose(str(cache), cpu)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not result  # waits for the lock
    libcrypto.write_cache(str(cache), key, 0.80, 1.03)
    os.close(holder)
    waiter.join(10)
    assert result == [libcrypto.Choice(False, "measured", 0.80, 1.03)] and not fresh
