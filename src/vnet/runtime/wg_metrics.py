"""Prometheus metrics for vnet-wg: per-peer traffic and handshakes, device event counters."""

from __future__ import annotations

import base64
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vnet.wireguard.device import Device


class WgCollector(Collector):
    def __init__(self, ifname: str, device: Device) -> None:
        self.ifname = ifname
        self.device = device

    def collect(self) -> Iterator[Metric]:
        labels = ["interface", "public_key"]
        rx = CounterMetricFamily(
            "vnet_wg_peer_receive_bytes", "Bytes received from the peer", labels=labels
        )
        tx = CounterMetricFamily(
            "vnet_wg_peer_transmit_bytes", "Bytes sent to the peer", labels=labels
        )
        hs = GaugeMetricFamily(
            "vnet_wg_peer_last_handshake_seconds",
            "Unix time of the last completed handshake (0: none)",
            labels=labels,
        )
        peers = list(self.device.peers.values())  # a copy: the loop thread may change it
        for peer in peers:
            key = base64.b64encode(peer.public_key).decode()
            rx.add_metric([self.ifname, key], peer.rx_bytes)
            tx.add_metric([self.ifname, key], peer.tx_bytes)
            hs.add_metric([self.ifname, key], peer.last_handshake_unix or 0)
        yield rx
        yield tx
        yield hs
        count = GaugeMetricFamily("vnet_wg_peers", "Configured peers", labels=["interface"])
        count.add_metric([self.ifname], len(peers))
        yield count
        events = CounterMetricFamily(
            "vnet_wg_events",
            "Device events (drops, handshakes, ...)",
            labels=["interface", "event"],
        )
        for name, value in self.device.stats.as_dict().items():
            events.add_metric([self.ifname, name], value)
        yield events
