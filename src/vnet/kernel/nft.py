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
    flanneld's --ip-masq does; traffic within the network keeps its addresses."""
    return "\n".join([
        f"add table ip {table}",
        f"flush table ip {table}",
        f"add chain ip {table} post {{ type nat hook postrouting priority 100 ; }}",
        f"add rule ip {table} post ip saddr {network} ip daddr {network} return",
        f"add rule ip {table} post ip saddr {network} ip daddr 224.0.0.0/4 return",
        f"add rule ip {table} post ip saddr {network} masquerade",
    ]) + "\n"
