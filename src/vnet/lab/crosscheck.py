"""`vnet lab` topology files, the cross-checks: references between parts of a lab that
the schema cannot see (hosts, bridges, devices, processes, checks named elsewhere)."""

from __future__ import annotations

from vnet.lab.schema import Device, Etcd, Lab, Qemu, VnetOverlay, VnetSwitch, VnetWg


def cross_check(lab: Lab) -> list[tuple[str, str]]:
    """References that pydantic cannot see: (path, message) for each problem."""
    problems: list[tuple[str, str]] = []
    hosts = set(lab.hosts)
    seen: dict[tuple[str, str], str] = {}
    bridges = {(b.host, b.name): b for b in lab.bridges}

    def host_ok(path: str, host: str) -> None:
        if host not in hosts:
            problems.append((f"{path}.host", f"no host {host!r} in hosts"))

    for path, dev in lab.devices():
        host_ok(path, dev.host)
        key = (dev.host, dev.name)
        if key in seen:
            problems.append((f"{path}.name", f"{dev.name!r} is already defined at {seen[key]}"))
        seen[key] = path
        if isinstance(dev, Device):
            if dev.bridge is not None and (dev.host, dev.bridge) not in bridges:
                problems.append((f"{path}.bridge", f"no bridge {dev.bridge!r} on {dev.host}"))
            if dev.pool is not None:
                owner = [b for b in lab.bridges
                         if b.pool and dev.pool in (b.name, f"{b.host}/{b.name}")]
                if not owner:
                    problems.append((f"{path}.pool", f"no bridge {dev.pool!r} with a pool"))
    for name, host in lab.hosts.items():
        for i, route in enumerate(host.routes):
            if route.dev is not None and (name, route.dev) not in seen and not any(
                isinstance(p, VnetWg) and p.host == name and p.interface == route.dev
                for p in lab.processes
            ):
                problems.append((f"hosts.{name}.routes.{i}.dev", f"no device {route.dev!r}"))
    names: dict[str, str] = {}
    for i, proc in enumerate(lab.processes):
        path = f"processes.{i}"
        host_ok(path, proc.host)
        if proc.name in names:
            problems.append((f"{path}.name", f"{proc.name!r} is also {names[proc.name]}"))
        names[proc.name] = path
        if isinstance(proc, VnetSwitch):
            for j, port in enumerate(proc.ports):
                if port.netns is not None and port.netns not in hosts:
                    problems.append((f"{path}.ports.{j}.netns", f"no host {port.netns!r}"))
        if isinstance(proc, Qemu) and proc.bridge is not None and (
            proc.host, proc.bridge
        ) not in bridges:
            problems.append((f"{path}.bridge", f"no bridge {proc.bridge!r} on {proc.host}"))
    wg = {p.name for p in lab.processes if isinstance(p, VnetWg)}
    for i, proc in enumerate(lab.processes):
        if isinstance(proc, VnetWg):
            for j, peer in enumerate(proc.peers):
                if peer.process not in wg or peer.process == proc.name:
                    problems.append(
                        (f"processes.{i}.peers.{j}.process", f"no other vnet-wg {peer.process!r}")
                    )
    etcds = {p.name for p in lab.processes if isinstance(p, Etcd)}
    for i, proc in enumerate(lab.processes):
        if isinstance(proc, Etcd):
            for j, other in enumerate(proc.cluster):
                if other not in etcds:
                    problems.append((f"processes.{i}.cluster.{j}", f"no etcd {other!r}"))
        if isinstance(proc, VnetOverlay):
            for j, other in enumerate(proc.etcd):
                if other not in etcds:
                    problems.append((f"processes.{i}.etcd.{j}", f"no etcd {other!r}"))
            if proc.bridge is not None and (proc.host, proc.bridge) not in bridges:
                problems.append((f"processes.{i}.bridge",
                                 f"no bridge {proc.bridge!r} on {proc.host}"))
            if (proc.host, proc.iface) not in seen:
                problems.append((f"processes.{i}.iface",
                                 f"no device {proc.iface!r} on {proc.host}"))
    for i, check in enumerate(lab.checks):
        if check.from_ is not None and check.from_ not in hosts:
            problems.append((f"checks.{i}.from", f"no host {check.from_!r} in hosts"))
        if check.process is not None and check.process not in names:
            problems.append((f"checks.{i}.process", f"no process {check.process!r}"))
    return problems
