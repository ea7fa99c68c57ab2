"""The registry against Debian's etcd on loopback: reads with their revision, create-if-
absent bound to a lease, renewal, and a watch from a revision that misses nothing."""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator

import pytest

from vnet.runtime import etcd_server
from vnet.runtime.etcd import EtcdUnavailableError, Registry, WatchEvent, parse_endpoints

PORT = 23791


@pytest.fixture(scope="module")
def member() -> Iterator[etcd_server.Member]:
    if shutil.which("etcd") is None:
        raise AssertionError("etcd is missing: run `make setup` (scripts/setup-system.sh)")
    member = etcd_server.Member("unit", "127.0.0.1", client_port=PORT, peer_port=PORT + 1)
    data = etcd_server.data_root()
    proc = etcd_server.start(member, [member], data)
    try:
        etcd_server.wait_healthy([member])
        yield member
    finally:
        proc.terminate()
        proc.wait(10)
        subprocess.run(["rm", "-rf", str(data)], check=False)


def test_reads_writes_leases_and_watch(member: etcd_server.Member) -> None:
    registry = Registry([("127.0.0.1", PORT)], "/test-a")
    registry.put(registry.config_key, '{"Network": "198.19.0.0/16"}')
    kv, revision = registry.get(registry.config_key)
    assert revision >= kv.mod_revision if kv else False
    assert kv is not None and kv.value == b'{"Network": "198.19.0.0/16"}'
    key = registry.subnets_prefix + "198.19.5.0-24"
    lease = registry.create(key, '{"PublicIP":"198.18.0.1"}', 60)
    assert lease
    assert registry.create(key, '{"PublicIP":"198.18.0.2"}', 60) is None  # never taken
    kvs, read_at = registry.get_prefix(registry.subnets_prefix)
    assert [(x.key, x.lease) for x in kvs] == [(key, lease)]
    assert 0 < registry.refresh(lease) <= 60
    # changes made after the read and before the watch starts are not missed
    registry.put(registry.subnets_prefix + "198.19.6.0-24", '{"PublicIP":"198.18.0.3"}')
    registry.delete(key)
    seen: list[WatchEvent] = []
    reached: list[int] = []  # the revisions a new watch would continue after
    done = threading.Event()

    def watch() -> None:
        for item in registry.watch(registry.subnets_prefix, read_at + 1):
            if isinstance(item, WatchEvent):
                seen.append(item)
            else:
                reached.append(item)
                if len(seen) == 2:
                    done.set()
                    return

    threading.Thread(target=watch, daemon=True).start()
    assert done.wait(10)
    assert [(e.kind, e.kv.key) for e in seen] == [
        ("put", registry.subnets_prefix + "198.19.6.0-24"), ("delete", key)]
    # the cursor is the last event's revision, never beyond an event not yet seen
    assert reached[-1] == seen[-1].kv.mod_revision > seen[0].kv.mod_revision
    registry.revoke(lease)
    assert registry.refresh(lease) == 0  # gone: the holder must create its key again


def test_unreachable_endpoints_say_so() -> None:
    registry = Registry([("127.0.0.1", 1), ("127.0.0.1", 2)], "/x")
    with pytest.raises(EtcdUnavailableError, match="etcd unreachable"):
        registry.get("/x/config")


def test_a_dead_endpoint_is_passed_over(member: etcd_server.Member) -> None:
    registry = Registry([("127.0.0.1", 1), ("127.0.0.1", PORT)], "/test-b")
    registry.put("/test-b/k", "v")
    assert registry.endpoint() == f"127.0.0.1:{PORT}"


def test_endpoint_syntax() -> None:
    assert parse_endpoints("http://198.18.0.1:2379, 198.18.0.2:2379") == [
        ("198.18.0.1", 2379), ("198.18.0.2", 2379)]
    from vnet.errors import ConfigError

    for bad in ("", "https://a:1", "a", "a:99999"):
        with pytest.raises(ConfigError):
            parse_endpoints(bad)


def test_the_agent_renews_and_puts_back_a_lost_lease(member: etcd_server.Member) -> None:
    """Renewal keeps the etcd lease; a lease that expired (etcd away too long) is created
    again; a subnet someone else took meanwhile is never taken back."""
    import ipaddress

    from vnet.overlay.lease import Lease
    from vnet.runtime.overlay import AgentOptions, OverlayAgent

    agent = OverlayAgent(AgentOptions(endpoints=[("127.0.0.1", PORT)], prefix="/test-c"))
    try:
        registry = agent.registry
        lease = Lease(ipaddress.IPv4Network("198.19.9.0/24"),
                      ipaddress.IPv4Address("198.18.0.9"), "host-gw")
        key = registry.subnets_prefix + lease.key
        first = registry.create(key, lease.encode(), 60)
        assert first
        agent.lease, agent.lease_id = lease, first
        agent._renew()
        assert agent.lease_id == first
        registry.revoke(first)  # expired: etcd deleted the key with it
        assert registry.get(key)[0] is None
        agent._renew()
        kv, _ = registry.get(key)
        assert kv is not None and kv.value == lease.encode().encode()
        assert kv.lease == agent.lease_id != first
        registry.revoke(agent.lease_id)
        other = Lease(lease.subnet, ipaddress.IPv4Address("198.18.0.10"), "host-gw")
        registry.put(key, other.encode())  # another host got the subnet meanwhile
        agent._renew()
        kv, _ = registry.get(key)
        assert kv is not None and kv.value == other.encode().encode()
    finally:
        agent.close()
