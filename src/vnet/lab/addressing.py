"""Addresses a lab hands out from bridge pools (docker-style: the bridge is the gateway)."""

from __future__ import annotations

import ipaddress

from vnet.errors import ConfigError
from vnet.lab.schema import Device, Lab


def assign(lab: Lab) -> dict[int, list[str]]:
    """Addresses per device (keyed by ``id`` of its model object), pools resolved in file
    order: a pool bridge without addresses takes the first host address, each device with
    ``pool: BRIDGE`` (or ``HOST/BRIDGE`` where several hosts have a bridge of that name)
    the next free one."""
    out: dict[int, list[str]] = {}
    free: dict[str, list[str]] = {}
    for _, dev in lab.devices():
        out[id(dev)] = list(dev.addresses)
    for bridge in lab.bridges:
        if bridge.pool is None:
            continue
        net = ipaddress.ip_network(bridge.pool)
        taken = {
            str(ipaddress.ip_interface(a).ip)
            for _, d in lab.devices()
            for a in d.addresses
            if ipaddress.ip_interface(a).ip in net
        }
        hosts = [str(h) for h in net.hosts() if str(h) not in taken]
        if not bridge.addresses:
            out[id(bridge)] = [f"{hosts.pop(0)}/{net.prefixlen}"]
        free[bridge.name] = [f"{h}/{net.prefixlen}" for h in hosts]
        free[f"{bridge.host}/{bridge.name}"] = free[bridge.name]  # one list, two names
    for path, dev in lab.devices():
        if isinstance(dev, Device) and dev.pool is not None:
            pool = free[dev.pool]
            if not pool:
                raise ConfigError(f"{path}.pool: pool of bridge {dev.pool!r} is exhausted")
            out[id(dev)].append(pool.pop(0))
    return out

