"""Names the kernel accepts, checked without asking it (pure: no syscall here)."""

from __future__ import annotations

from vnet.errors import ConfigError

IFNAMSIZ = 16  # include/uapi/linux/if.h: 15 bytes and the terminating NUL


def validate_ifname(name: str) -> bytes:
    """Check a name the way the kernel's dev_valid_name() does; return it encoded.

    The empty name is allowed: the kernel then picks tunN/tapN. ``%d`` is a
    kernel template too (``tun%d``).
    """
    raw = name.encode()
    if len(raw) >= IFNAMSIZ:
        raise ConfigError(
            f"interface name {name!r} is {len(raw)} bytes; the kernel allows at most {IFNAMSIZ - 1}"
        )
    if name in (".", ".."):
        raise ConfigError(f"interface name {name!r} is not allowed")
    for ch in name:
        if ch in "/:" or ch.isspace() or ch == "\0":
            raise ConfigError(f"interface name {name!r} contains {ch!r}, which the kernel forbids")
    return raw
