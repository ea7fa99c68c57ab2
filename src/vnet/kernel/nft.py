"""nftables rule sets, loaded whole with `nft -f -` (one transaction: all or nothing)."""

from __future__ import annotations

import shutil

from vnet.errors import ConfigError, KernelError
from vnet.kernel import netns


def load(script: str, namespace: str | None = None, what: str = "nft") -> None:
    """Apply ``script`` in ``namespace`` (here if None); KernelError with nft's words."""
    if shutil.which("nft") is None:
        raise ConfigError(f"{what} needs nft (nftables): run `make setup`")
    done = netns.run(namespace, ["nft", "-f", "-"], input=script, text=True,
                     capture_output=True, timeout=30)
    if done.returncode != 0:
        raise KernelError(f"{what}: nft refused the rules: {done.stderr.strip()}")


def masquerade_leaving(table: str, network: str) -> str:
    """Source NAT for traffic from ``network`` to anywhere outside it but multicast, as
    flanneld's --ip-masq does; traffic within the network keeps its addresses. The table
    is in the network's family (``ip`` or ``ip6``)."""
    family, multicast = ("ip6", "ff00::/8") if ":" in network else ("ip", "224.0.0.0/4")
    rule = f"add rule {family} {table} post {family} saddr {network}"
    return "\n".join([
        f"add table {family} {table}",
        f"flush table {family} {table}",
        f"add chain {family} {table} post {{ type nat hook postrouting priority 100 ; }}",
        f"{rule} {family} daddr {network} return",
        f"{rule} {family} daddr {multicast} return",
        f"{rule} masquerade",
    ]) + "\n"
