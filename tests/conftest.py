"""Shared fixtures. Kernel tests run as root inside namespaces they create and
always delete (names unique per test, so parallel runs and leftovers never clash)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vnet.kernel import netns

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(
    not IS_ROOT, reason="needs root: creates network namespaces and TUN/TAP devices"
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _fresh_namespace(prefix: str) -> Iterator[str]:
    if not IS_ROOT:
        pytest.skip("needs root: creates network namespaces")
    name = unique(prefix)
    netns.create(name)
    try:
        yield name
    finally:
        if netns.exists(name):
            netns.delete(name)


@pytest.fixture
def ns() -> Iterator[str]:
    """A fresh network namespace, deleted afterwards whatever happens."""
    yield from _fresh_namespace("vnet-test")


@pytest.fixture
def ns2() -> Iterator[str]:
    """A second one, for links that cross namespaces."""
    yield from _fresh_namespace("vnet-test2")


@pytest.fixture
def inside(ns: str) -> Iterator[str]:
    """Run the test body with this thread inside the fresh namespace."""
    with netns.entered(ns):
        yield ns


def vnet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "vnet", *args]


def run_vnet(
    ns_name: str | None, *args: str, timeout: float = 60, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, inside ``ns_name``."""
    return netns.run(ns_name, vnet_cmd(*args), capture_output=True, text=True, timeout=timeout,
                     **kwargs)


ROOT = Path(__file__).resolve().parent.parent
