"""vnet: Linux virtual networking in Python, built on TUN/TAP."""

from vnet import libcrypto  # noqa: F401  # first: libcrypto reads its CPU choice on load

__version__ = "0.1.0"
