"""Echo responders: the userspace end of a TUN/TAP that answers ping."""
