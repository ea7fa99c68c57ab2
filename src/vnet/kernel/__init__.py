"""Everything that touches the kernel: TUN/TAP ioctls, netlink, namespaces, /proc."""
