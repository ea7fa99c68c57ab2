"""`vnet overlay` end to end: agents in host namespaces, a real etcd, containers on a
docker0 bridge configured from subnet.env; every container reaches every other."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import needs_root
from tests.runtime.overlay_env import Overlay

pytestmark = [pytest.mark.root, needs_root]


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[Overlay]:
    env = Overlay(tmp_path)
    try:
        env.build(3)
        yield env
    finally:
        env.teardown()


@pytest.mark.parametrize("backend", ["udp", "vxlan", "host-gw", "wireguard"])
def test_every_container_reaches_every_other(overlay: Overlay, backend: str) -> None:
    overlay.start({"Type": backend})
    subnets = {h.env["FLANNEL_SUBNET"] for h in overlay.hosts}
    assert len(subnets) == 3
    for a in overlay.hosts:
        for b in overlay.hosts:
            if a is not b:
                assert overlay.ping(a, b), overlay.logs()
