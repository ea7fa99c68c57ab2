"""`vnet demo overlay`: examples/flannel-udp.yaml brought up, checked, shown, taken down.

Three hosts lease a subnet each from etcd and run `vnet overlay` with the udp backend
(flannel0 + UDP 8285); two containers per host sit on a docker0 configured from the
subnet.env the agent wrote. The demo shows the leases as etcd holds them, one host's
subnet.env and routes, and pings between containers across hosts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vnet.errors import ConfigError
from vnet.kernel import netns
from vnet.lab import state as lab_state
from vnet.lab.build import up
from vnet.lab.check import Result, run_checks
from vnet.lab.load import load
from vnet.lab.schema import Etcd, Lab, VnetOverlay
from vnet.overlay.lease import LeaseError, decode
from vnet.runtime.etcd import Registry

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "flannel-udp.yaml"


@dataclass
class OverlayReport:
    lab: str
    leases: list[dict[str, str]] = field(default_factory=list)
    subnet_env: str = ""
    routes: str = ""
    checks: list[Result] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)


def _leases(lab: Lab) -> list[dict[str, str]]:
    member = next(p for p in lab.processes if isinstance(p, Etcd))
    registry = Registry([(member.address, 2379)], "/coreos.com/network")
    with netns.entered(lab.namespace(member.host)):
        kvs, _ = registry.get_prefix(registry.subnets_prefix)
    rows = []
    for kv in kvs:
        try:
            lease = decode(kv.key, kv.value)
        except LeaseError:
            continue
        rows.append({"key": kv.key, "public_ip": str(lease.public_ip),
                     "value": kv.value.decode(), "ttl": "reservation" if not kv.lease else "24 h"})
    return rows


def run_demo(path: Path = EXAMPLE) -> OverlayReport:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None
    lab = load(text, str(path))
    report = OverlayReport(lab.name)
    up(lab, str(path), text, lambda line: None)
    try:
        report.checks = run_checks(lab)
        report.leases = _leases(lab)
        agent = next(p for p in lab.processes if isinstance(p, VnetOverlay))
        env = lab_state.State.directory(lab.name) / f"{agent.name}.subnet.env"
        report.subnet_env = env.read_text()
        routes = netns.run(lab.namespace(agent.host), ["ip", "route"], capture_output=True,
                           text=True, timeout=10)
        report.routes = routes.stdout
    finally:
        lab_state.teardown(lab.name)
    return report

