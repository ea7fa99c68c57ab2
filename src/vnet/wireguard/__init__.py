"""WireGuard, wire-compatible: the sans-IO protocol core.

Modules hold one concern each: ``crypto`` (the primitives' composition from
the whitepaper §5.4), ``messages`` (wire formats), ``noise`` (the handshake),
``cookie`` (mac1/mac2 and cookie replies), ``replay`` (the counter window),
``allowedips`` (cryptokey routing), ``keys`` (transport keypairs), ``peer``
and ``device`` (state machines and timers), ``uapi`` and ``config`` (text
formats). None of them does I/O or reads a clock: ``now`` is passed in.
"""
