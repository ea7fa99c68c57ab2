"""libcrypto's code choice: made once on import, the user's variable wins, never inherited."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = (
    "import os, subprocess, sys, vnet.libcrypto as l; "
    "child = subprocess.run([sys.executable, '-c', "
    "'import os; print(os.environ.get(\"OPENSSL_ia32cap\"))'], capture_output=True, text=True); "
    "print(l.AVX2_CHOSEN, os.environ.get('OPENSSL_ia32cap'), child.stdout.strip())"
)


def probe(**extra: str) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENSSL_ia32cap", "VNET_OPENSSL_AVX512")}
    env.update(extra)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, check=True)
    return done.stdout.strip()


def test_avx2_is_chosen_and_not_inherited() -> None:
    assert probe() == "True None None"


def test_the_users_variable_wins_and_is_left_alone() -> None:
    assert probe(OPENSSL_ia32cap="~0x0") == "False ~0x0 ~0x0"


def test_avx512_can_be_kept() -> None:
    assert probe(VNET_OPENSSL_AVX512="1") == "False None None"


def test_too_late_when_libcrypto_was_loaded_first() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENSSL_ia32cap"}
    done = subprocess.run(
        [sys.executable, "-c", "import _hashlib, vnet.libcrypto as l; print(l.AVX2_CHOSEN)"],
        env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
