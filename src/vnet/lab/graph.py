"""`vnet lab graph`: the topology as Graphviz DOT, rendered to SVG/PNG by `dot`.

One box (cluster) per host, a node per interface with its addresses, solid
edges for veth pairs and bridge ports, dashed edges for tunnels (vxlan,
vnet-wg, vnet switch segments) drawn to the host that owns the far address.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess

from vnet.errors import ConfigError
from vnet.lab.addressing import assign
from vnet.lab.schema import Bridge, Etcd, Lab, Qemu, VnetOverlay, VnetSwitch, VnetWg


def _q(text: str) -> str:
    """A DOT string; backslash sequences (the \\n line breaks of labels) pass through."""
    return '"' + text.replace('"', '\\"') + '"'


def dot(lab: Lab) -> str:
    assigned = assign(lab)
    nodes: dict[str, list[str]] = {h: [] for h in lab.hosts}
    edges: list[str] = []
    owner: dict[str, str] = {}  # IP -> node that holds it

    def node(host: str, name: str, label: str, shape: str = "ellipse") -> str:
        ident = f"{host}/{name}"
        nodes[host].append(f"{_q(ident)} [label={_q(label)}, shape={shape}];")
        return ident

    def claim(ident: str, addresses: list[str]) -> str:
        """Record the node holding these addresses (tunnels are drawn to it); label lines."""
        for a in addresses:
            owner[str(ipaddress.ip_interface(a).ip)] = ident
        return "".join(f"\\n{a}" for a in addresses)

    for bridge in lab.bridges:
        ident = f"{bridge.host}/{bridge.name}"
        node(bridge.host, bridge.name, bridge.name + claim(ident, assigned[id(bridge)]), "box")
    for _, dev in lab.devices():
        if isinstance(dev, Bridge):
            continue
        lines = claim(f"{dev.host}/{dev.name}", assigned[id(dev)])
        ident = node(dev.host, dev.name, dev.name + lines)
        master = getattr(dev, "bridge", None)
        if master:
            edges.append(f"{_q(ident)} -> {_q(f'{dev.host}/{master}')} [arrowhead=none];")
    for link in lab.links:
        a, b = f"{link.a.host}/{link.a.name}", f"{link.b.host}/{link.b.name}"
        edges.append(f"{_q(a)} -> {_q(b)} [arrowhead=none, penwidth=2, label=veth];")
    for proc in lab.processes:
        if isinstance(proc, VnetWg):
            lines = claim(f"{proc.host}/{proc.interface}", proc.addresses)
            node(proc.host, proc.interface, f"{proc.interface}{lines}\\n(vnet-wg)", "hexagon")
        elif isinstance(proc, VnetSwitch):
            sw = node(proc.host, proc.name, f"vnet switch {proc.name}", "box3d")
            for port in proc.ports:
                where = port.netns or proc.host
                lines = claim(f"{where}/{port.name}", port.addresses)
                tap = node(where, port.name, port.name + lines)
                vlan = _q(f"vlan {port.vlan}")
                edges.append(f"{_q(sw)} -> {_q(tap)} [arrowhead=none, label={vlan}];")
        elif isinstance(proc, Qemu):
            lines = claim(f"{proc.host}/{proc.name}", [proc.address])
            vm = node(proc.host, proc.name, f"QEMU {proc.name}{lines}", "component")
            tap = node(proc.host, proc.tap, proc.tap)
            edges.append(f"{_q(vm)} -> {_q(tap)} [arrowhead=none, label=fd];")
            if proc.bridge:
                edges.append(f"{_q(tap)} -> {_q(f'{proc.host}/{proc.bridge}')} [arrowhead=none];")
        elif isinstance(proc, Etcd):
            node(proc.host, proc.name, f"etcd {proc.name}\\n{proc.address}", "cylinder")
        elif isinstance(proc, VnetOverlay):
            agent = node(proc.host, proc.name,
                         f"vnet overlay {proc.name}\\n{proc.subnet or 'subnet from etcd'}",
                         "hexagon")
            for member in proc.etcd:
                etcd = next(p for p in lab.processes if p.name == member)
                edges.append(f"{_q(agent)} -> {_q(f'{etcd.host}/{member}')} "
                             "[style=dotted, label=lease];")
        else:
            node(proc.host, proc.name, f"{proc.name}\\n{proc.argv[0]}", "note")
    # tunnels, once every address has an owner
    for vx in lab.vxlans:
        far = owner.get(vx.remote)
        far_host = far.split("/", 1)[0] if far else None
        twin = [v for v in lab.vxlans if v.host == far_host and v.vni == vx.vni]
        if twin:
            if (vx.host, vx.name) < (twin[0].host, twin[0].name):
                edges.append(f"{_q(f'{vx.host}/{vx.name}')} -> "
                             f"{_q(f'{twin[0].host}/{twin[0].name}')} "
                             f"[style=dashed, dir=both, label={_q(f'VNI {vx.vni}')}];")
        elif far:
            edges.append(f"{_q(f'{vx.host}/{vx.name}')} -> {_q(far)} "
                         f"[style=dashed, label={_q(f'VNI {vx.vni}')}];")
    for proc in lab.processes:
        if isinstance(proc, VnetWg):
            for peer in proc.peers:
                other = next(p for p in lab.processes if p.name == peer.process)
                if isinstance(other, VnetWg) and proc.name < other.name:
                    edges.append(f"{_q(f'{proc.host}/{proc.interface}')} -> "
                                 f"{_q(f'{other.host}/{other.interface}')} "
                                 "[style=dashed, dir=both, label=WireGuard];")
        elif isinstance(proc, VnetSwitch):
            for seg in proc.segments:
                for remote in seg.remotes:
                    far = owner.get(remote)
                    if far:
                        edges.append(f"{_q(f'{proc.host}/{proc.name}')} -> {_q(far)} "
                                     f"[style=dashed, label={_q(seg.label)}];")
    out = [f"digraph {_q(lab.name)} {{", "  rankdir=LR; compound=true;",
           f"  label={_q(f'vnet lab {lab.name}: {lab.description}'.strip(': '))};",
           "  node [fontname=Helvetica, fontsize=10]; edge [fontname=Helvetica, fontsize=9];"]
    for i, (host, host_nodes) in enumerate(nodes.items()):
        out.append(f"  subgraph cluster_{i} {{")
        out.append(f"    label={_q(f'{host}  (netns {lab.namespace(host)})')}; style=rounded;")
        if not host_nodes:
            out.append(f"    {_q(f'{host}/lo')} [label=lo, shape=point];")
        out += [f"    {line}" for line in host_nodes]
        out.append("  }")
    out += [f"  {e}" for e in edges]
    out.append("}")
    return "\n".join(out) + "\n"


def render(lab: Lab, path: str) -> str:
    """Write DOT, SVG or PNG (by ``path``'s suffix); returns the format written."""
    fmt = path.rsplit(".", 1)[-1].lower() if "." in path else ""
    text = dot(lab)
    if fmt == "dot":
        with open(path, "w") as f:
            f.write(text)
        return fmt
    if fmt not in ("svg", "png"):
        raise ConfigError(f"{path}: choose a .svg, .png or .dot file")
    if shutil.which("dot") is None:
        raise ConfigError("graph needs Graphviz's dot: run `make setup`")
    done = subprocess.run(["dot", f"-T{fmt}", "-o", path], input=text.encode(),
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise ConfigError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
    return fmt
