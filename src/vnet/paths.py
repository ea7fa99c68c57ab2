"""Where vnet's daemons keep their sockets and state (pure: paths only, nothing opened).

The WireGuard UAPI directory is wireguard-go's and wg(8)'s convention; it is one
directory for every network namespace, so two daemons serving the same
interface name collide there.
"""

from __future__ import annotations

import os

WG_SOCKET_DIR = "/var/run/wireguard"  # what wg(8) and wg-quick look in
SWITCH_CONTROL_DIR = "/run/vnet/switch"
LAB_STATE_DIR = "/run/vnet/lab"


def wg_socket(ifname: str, directory: str = WG_SOCKET_DIR) -> str:
    """The UAPI socket of the vnet-wg daemon serving ``ifname``."""
    return os.path.join(directory, f"{ifname}.sock")


def switch_socket(name: str, directory: str = SWITCH_CONTROL_DIR) -> str:
    """The control socket of the switch called ``name``."""
    return os.path.join(directory, f"{name}.sock")
