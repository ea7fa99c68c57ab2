"""Binds the sans-IO cores to file descriptors."""
