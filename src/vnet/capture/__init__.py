"""Packet capture to pcap files that tcpdump and Wireshark open."""
