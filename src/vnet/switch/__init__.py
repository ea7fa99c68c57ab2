"""The L2 switch: a sans-IO core (MAC learning, VLANs, VXLAN segments) and its FDB."""
