"""Tunnel endpoints without I/O: what goes in and out of a tunnel, packet by packet."""
