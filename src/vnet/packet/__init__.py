"""Pure packet codecs: no I/O, no kernel. Malformed input raises PacketError only."""
