"""vnet: Linux virtual networking in Python, built on TUN/TAP."""

__version__ = "0.1.0"
