"""The project's error types: every failure a user can cause is one of these.

The CLI turns a ``VnetError`` into one line on stderr and exit code 1; anything
else escaping is a bug.
"""


class VnetError(Exception):
    """Base of every error vnet raises on purpose."""


class ConfigError(VnetError):
    """A user-supplied value (name, address, flag, file) is not acceptable."""


class KernelError(VnetError):
    """The kernel refused a syscall, ioctl or netlink request."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class PacketError(VnetError):
    """Bytes that do not decode as the packet they claim to be."""


class ProtocolError(VnetError):
    """A peer broke the rules of a protocol."""
