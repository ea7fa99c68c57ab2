"""A learning L2 switch with 802.1Q VLANs and VXLAN or GRE segments (sans-IO).

Local ports carry Ethernet frames (the runtime binds them to TAP devices).
Each VLAN is one broadcast domain; a VLAN mapped to a VXLAN VNI (RFC 7348) or a
GRE key (gretap: RFC 2784 with RFC 2890's key) also extends over that tunnel to
remote endpoints: broadcast, unknown unicast and multicast are copied to every
static remote of the segment (head-end replication), and MACs heard from a
remote are learned behind it. Frames from a tunnel are never sent back to a
tunnel (split horizon), and VLANs, VNIs and keys never leak into each other.

``handle_frame``, ``handle_vxlan`` and ``handle_gre`` return what to send: a list
of ``(port, address, bytes)``; ``address`` is None for local ports, the VTEP's
(host, port) for VXLAN datagrams, and (host, 0) for GRE packets (the bytes from
the GRE header on; the kernel adds the IP header).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vnet.errors import ConfigError, PacketError
from vnet.packet import gre, vxlan
from vnet.packet.ethernet import ETH_HLEN, ETH_P_8021Q, Ethernet
from vnet.switch.fdb import Fdb
from vnet.switch.storm import StormControl

MAX_FRAME = 9216 + 18  # jumbo payload + Ethernet header and one tag
_MACS_END = vxlan.HEADER_LENGTH + 12  # VXLAN header, inner destination and source MAC
_TAG_TYPE = ETH_P_8021Q.to_bytes(2, "big")
MAX_SUPER_FRAME = 65535 + 18  # a TSO super-frame from a vnet_hdr TAP (counted as one frame)
VXLAN_PREFIX = "vxlan:"
GRE_PREFIX = "gre:"
# a frame as read: a view of the runtime's read buffer is used before the next read and
# never kept (the FDB keeps MACs as bytes)
Frame = bytes | memoryview
Output = tuple[str, tuple[str, int] | None, Frame]


@dataclass
class PortStats:
    rx_frames: int = 0
    rx_bytes: int = 0
    tx_frames: int = 0
    tx_bytes: int = 0
    drops: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1


@dataclass
class Port:
    name: str
    mode: str = "access"  # "access" or "trunk"
    vlan: int = 1  # access VLAN, or the trunk's native VLAN (0: none)
    allowed: frozenset[int] | None = None  # trunk: VLANs carried (None: all)
    stats: PortStats = field(default_factory=PortStats)
    storm: StormControl | None = None  # a limit on the frames it may have flooded

    def carries(self, vlan: int) -> bool:
        if self.mode == "access":
            return vlan == self.vlan
        return self.allowed is None or vlan in self.allowed or vlan == self.vlan


@dataclass
class Segment:
    """A VLAN extended over VXLAN (``vni`` is the VNI) or GRE (``vni`` is the key)."""

    vni: int
    vlan: int
    remotes: list[tuple[str, int]] = field(default_factory=list)
    stats: PortStats = field(default_factory=PortStats)
    storm: StormControl | None = None
    kind: str = "vxlan"  # or "gre"
    name: str = ""  # its port name in the FDB and the stats: vxlan:VNI, gre:KEY
    header: bytes = b""  # what goes before each frame sent over it

    def __post_init__(self) -> None:
        if self.kind == "gre":
            self.name = GRE_PREFIX + str(self.vni)
            self.header = gre.encode(gre.PROTO_TEB, self.vni)
        else:
            self.name = VXLAN_PREFIX + str(self.vni)
            self.header = vxlan.encode(self.vni)


def _tunnelled_frame(inner: memoryview) -> Ethernet:
    if len(inner) < ETH_HLEN or len(inner) > MAX_FRAME:
        raise PacketError("inner frame of a bad size")
    return Ethernet.decode(inner)[0]


def _storm(limit: int, what: str) -> StormControl | None:
    if limit < 0:
        raise ConfigError(f"{what}: storm limit {limit} is negative")
    return StormControl(limit) if limit else None


def _check_vlan(vlan: int, what: str, allow_zero: bool = False) -> None:
    if not (0 if allow_zero else 1) <= vlan <= 4094:
        raise ConfigError(f"{what} VLAN {vlan} is out of range 1..4094")


class Switch:
    def __init__(self, fdb: Fdb | None = None, vxlan_port: int = vxlan.VXLAN_PORT) -> None:
        self.fdb = fdb if fdb is not None else Fdb()
        self.vxlan_port = vxlan_port
        self.ports: dict[str, Port] = {}
        self.segments: dict[int, Segment] = {}  # VXLAN, by VNI
        self.gre_segments: dict[int, Segment] = {}  # GRE, by key
        self._segment_of_vlan: dict[int, Segment] = {}
        self.stats = PortStats()  # switch-wide drops (unknown VNI, ...)

    # --- configuration --------------------------------------------------------

    def add_port(
        self,
        name: str,
        mode: str = "access",
        vlan: int = 1,
        allowed: list[int] | None = None,
        storm_limit: int = 0,
    ) -> Port:
        """``storm_limit``: flooded frames a second this port may cause (0: no limit)."""
        if name in self.ports or name.startswith(VXLAN_PREFIX):
            raise ConfigError(f"port {name!r} already exists or has a reserved name")
        if mode not in ("access", "trunk"):
            raise ConfigError(f"port mode {mode!r} is neither access nor trunk")
        _check_vlan(vlan, f"port {name}", allow_zero=mode == "trunk")
        for v in allowed or []:
            _check_vlan(v, f"port {name} allowed")
        port = Port(name, mode, vlan, frozenset(allowed) if allowed is not None else None)
        port.storm = _storm(storm_limit, f"port {name}")
        self.ports[name] = port
        return port

    def remove_port(self, name: str) -> None:
        if self.ports.pop(name, None) is not None:
            self.fdb.flush_port(name)

    def add_segment(
        self,
        vni: int,
        vlan: int,
        remotes: list[tuple[str, int]],
        storm_limit: int = 0,
        kind: str = "vxlan",
    ) -> Segment:
        """VLAN ``vlan`` over VXLAN VNI ``vni``, or with ``kind`` "gre" over GRE key ``vni``."""
        if kind == "gre":
            table, what = self.gre_segments, f"GRE key {vni}"
            if not 0 <= vni <= gre.MAX_KEY:
                raise ConfigError(f"GRE key {vni} is out of range 0..{gre.MAX_KEY}")
        elif kind == "vxlan":
            table, what = self.segments, f"VNI {vni}"
            if not 0 <= vni < 1 << 24:
                raise ConfigError(f"VNI {vni} is out of range 0..16777215")
        else:
            raise ConfigError(f"segment type {kind!r} is neither vxlan nor gre")
        _check_vlan(vlan, what)
        if vni in table or vlan in self._segment_of_vlan:
            raise ConfigError(f"{what} or VLAN {vlan} is already mapped")
        segment = Segment(vni, vlan, list(remotes), storm=_storm(storm_limit, what), kind=kind)
        table[vni] = segment
        self._segment_of_vlan[vlan] = segment
        return segment

    # --- frames from local ports ------------------------------------------------

    def handle_frame(
        self, port_name: str, frame: Frame, now: float, super_frame: bool = False
    ) -> list[Output]:
        """Forward a frame from a local port; ``super_frame``: a TSO frame up to 64 KiB
        that the runtime segments where it must."""
        port = self.ports.get(port_name)
        if port is None:
            return []
        stats = port.stats
        stats.rx_frames += 1
        stats.rx_bytes += len(frame)
        if len(frame) < ETH_HLEN:
            stats.drop("runt")
            return []
        if len(frame) > (MAX_SUPER_FRAME if super_frame else MAX_FRAME):
            stats.drop("oversized")
            return []
        try:
            eth, payload = Ethernet.decode(frame)
        except PacketError:
            stats.drop("malformed")
            return []
        if eth.vlan_tci is None:
            if port.mode == "access":
                vlan = port.vlan
            elif port.vlan:
                vlan = port.vlan  # native VLAN of a trunk
            else:
                stats.drop("untagged-on-trunk")
                return []
        else:
            if port.mode == "access":
                stats.drop("tagged-on-access")
                return []
            vlan = eth.vlan_tci & 0x0FFF
            if not port.carries(vlan):
                stats.drop("vlan-not-allowed")
                return []
        if eth.src[0] & 1:
            stats.drop("multicast-source")
            return []
        self.fdb.learn(vlan, eth.src, port_name, now)
        # the untagged form: an untagged frame as it came (a super-frame is not copied)
        inner = frame
        if eth.vlan_tci is not None:
            inner = Ethernet(eth.dst, eth.src, eth.ethertype).encode(payload)
        return self._forward(vlan, eth.dst, inner, port_name, now, port.stats, port.storm)

    def between_ports(
        self, port_name: str, frame: Frame, now: float, super_frame: bool = False
    ) -> str | None:
        """The common case decided without building outputs: an untagged frame to a unicast
        MAC learned on another local port of its VLAN that takes it as it is (untagged).
        Learned and counted as ``handle_frame`` would; the name of the port it goes to.
        None for anything else, which ``handle_frame`` then decides (having learned the
        source already changes nothing there: learning it again is the same)."""
        port = self.ports.get(port_name)
        size = len(frame)
        if (
            port is None
            or not port.vlan
            or not ETH_HLEN <= size <= (MAX_SUPER_FRAME if super_frame else MAX_FRAME)
            or frame[12:14] == _TAG_TYPE
        ):
            return None
        dst, src = bytes(frame[:6]), bytes(frame[6:12])
        if src[0] & 1 or dst[0] & 1:
            return None
        vlan = port.vlan  # an access port's VLAN or a trunk's native one
        self.fdb.learn(vlan, src, port_name, now)
        entry = self.fdb.lookup(vlan, dst, now)
        if entry is None or entry.remote is not None or entry.port == port_name:
            return None
        out = self.ports.get(entry.port)
        if out is None or not out.carries(vlan) or (out.mode == "trunk" and vlan != out.vlan):
            return None
        stats = port.stats
        stats.rx_frames += 1
        stats.rx_bytes += size
        stats = out.stats
        stats.tx_frames += 1
        stats.tx_bytes += size
        return out.name

    # --- datagrams from VXLAN -------------------------------------------------------

    def handle_vxlan(self, datagram: bytes, source: tuple[str, int], now: float) -> list[Output]:
        try:
            vni, inner = vxlan.decode(datagram)
            eth = _tunnelled_frame(inner)
        except PacketError:
            self.stats.drop("vxlan-malformed")
            return []
        segment = self.segments.get(vni)
        if segment is None:
            self.stats.drop("unknown-vni")
            return []
        return self._from_tunnel(segment, eth, bytes(inner), (source[0], self.vxlan_port), now)

    # --- packets from GRE -------------------------------------------------------------

    def handle_gre(self, packet: bytes | memoryview, source: str, now: float) -> list[Output]:
        """A GRE packet (from its GRE header on) that ``source`` sent: a frame of the
        segment its key names."""
        try:
            protocol, key, inner = gre.decode(packet)
        except PacketError:
            self.stats.drop("gre-malformed")
            return []
        if protocol != gre.PROTO_TEB:
            self.stats.drop("gre-not-ethernet")
            return []
        segment = self.gre_segments.get(key) if key is not None else None
        if segment is None:
            self.stats.drop("gre-unknown-key")
            return []
        try:
            eth = _tunnelled_frame(inner)
        except PacketError:
            segment.stats.drop("malformed")
            return []
        return self._from_tunnel(segment, eth, bytes(inner), (source, 0), now)

    def _from_tunnel(
        self, segment: Segment, eth: Ethernet, inner: bytes, remote: tuple[str, int], now: float
    ) -> list[Output]:
        stats = segment.stats
        stats.rx_frames += 1
        stats.rx_bytes += len(inner)
        if eth.vlan_tci is not None:
            stats.drop("tagged-in-tunnel")
            return []
        if eth.src[0] & 1:
            stats.drop("multicast-source")
            return []
        self.fdb.learn(segment.vlan, eth.src, segment.name, now, remote=remote)
        return self._forward(
            segment.vlan, eth.dst, inner, segment.name, now, stats, segment.storm, from_tunnel=True
        )

    def handle_vxlan_batch(
        self, datagrams: list[bytes], source: tuple[str, int], now: float
    ) -> list[Output]:
        """Datagrams of one receive (UDP GRO hands a flow's datagrams together). A run
        with the same VXLAN header and MAC pair is decided once: the first goes through
        ``handle_vxlan``; the others follow it when it went, unchanged, to local ports."""
        out: list[Output] = []
        prefix = b""
        ports: list[Port] = []
        stats: PortStats | None = None
        low = vxlan.HEADER_LENGTH + ETH_HLEN
        high = vxlan.HEADER_LENGTH + MAX_FRAME
        for datagram in datagrams:
            n = len(datagram)
            if (
                stats is not None
                and low <= n <= high
                and datagram[:_MACS_END] == prefix
                and datagram[_MACS_END : _MACS_END + 2] != _TAG_TYPE
            ):
                frame = datagram[vxlan.HEADER_LENGTH :]
                self._count_followers(stats, ports, 1, n - vxlan.HEADER_LENGTH)
                out.extend((port.name, None, frame) for port in ports)
                continue
            result = self.handle_vxlan(datagram, source, now)
            out.extend(result)
            stats = None
            followed = self._followed(datagram, result)
            if followed is not None:
                stats, ports = followed
                prefix = datagram[:_MACS_END]
        return out

    def handle_vxlan_run(
        self, first: bytes, count: int, rest_bytes: int, source: tuple[str, int], now: float
    ) -> tuple[list[Output], list[str]]:
        """A GRO run of ``count`` datagrams that all carry ``first``'s VXLAN header and
        untagged Ethernet header, in frames of a valid size (the caller checked): ``first``
        decided by ``handle_vxlan``. When it went, unchanged, to local ports, the other
        frames (``rest_bytes`` in all) are counted as following it, as handle_vxlan_batch
        counts them, and those ports are returned; else none, and nothing is counted for
        the rest, which the caller hands to handle_vxlan_batch."""
        result = self.handle_vxlan(first, source, now)
        followed = self._followed(first, result)
        if followed is None:
            return result, []
        stats, ports = followed
        self._count_followers(stats, ports, count - 1, rest_bytes)
        return result, [port.name for port in ports]

    def _followed(
        self, datagram: bytes, result: list[Output]
    ) -> tuple[PortStats, list[Port]] | None:
        """When ``datagram`` went, unchanged, to local ports only: its segment's counters
        and those ports, which the rest of its run follows."""
        inner = datagram[vxlan.HEADER_LENGTH :]
        if not result or not all(a is None and d == inner for _, a, d in result):
            return None
        segment = self.segments.get(int.from_bytes(datagram[4:7], "big"))
        if segment is None:
            return None
        return segment.stats, [self.ports[name] for name, _, _ in result]

    @staticmethod
    def _count_followers(stats: PortStats, ports: list[Port], frames: int, size: int) -> None:
        stats.rx_frames += frames
        stats.rx_bytes += size
        for port in ports:
            port.stats.tx_frames += frames
            port.stats.tx_bytes += size

    # --- forwarding -------------------------------------------------------------------

    def _forward(
        self,
        vlan: int,
        dst: bytes,
        frame: Frame,
        ingress: str,
        now: float,
        stats: PortStats,
        storm: StormControl | None,
        from_tunnel: bool = False,
    ) -> list[Output]:
        if not dst[0] & 1:
            entry = self.fdb.lookup(vlan, dst, now)
            if entry is not None:
                if entry.port == ingress:
                    return []  # already on the right segment: filter
                if entry.remote is not None:
                    segment = self._segment_of_vlan.get(vlan)
                    if from_tunnel or segment is None or segment.name != entry.port:
                        return []  # split horizon, or a segment since unmapped
                    return [self._to_tunnel(segment, entry.remote, frame)]
                port = self.ports.get(entry.port)
                if port is not None and port.carries(vlan):
                    return [self._to_port(port, vlan, frame)]
        # flood: broadcast, multicast, unknown unicast
        if storm is not None and not storm.allow(now):
            stats.drop("storm-control")
            return []
        out = [
            self._to_port(p, vlan, frame)
            for name, p in self.ports.items()
            if name != ingress and p.carries(vlan)
        ]
        segment = self._segment_of_vlan.get(vlan)
        if segment is not None and not from_tunnel:
            out.extend(self._to_tunnel(segment, remote, frame) for remote in segment.remotes)
        return out

    def _to_port(self, port: Port, vlan: int, frame: Frame) -> Output:
        if port.mode == "trunk" and vlan != port.vlan:
            eth, payload = Ethernet.decode(frame)
            frame = Ethernet(eth.dst, eth.src, eth.ethertype, vlan).encode(payload)
        port.stats.tx_frames += 1
        port.stats.tx_bytes += len(frame)
        return port.name, None, frame

    @staticmethod
    def _to_tunnel(segment: Segment, remote: tuple[str, int], frame: Frame) -> Output:
        stats = segment.stats
        stats.tx_frames += 1
        stats.tx_bytes += len(frame)
        return segment.name, remote, segment.header + frame
