"""Protocol constants, named as in the WireGuard whitepaper (§5.4, §6.1) and wireguard-go."""

from __future__ import annotations

# §5.4: the construction and identifier hashed into the initial chaining key
CONSTRUCTION = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
IDENTIFIER = b"WireGuard v1 zx2c4 Jason@zx2c4.com"
LABEL_MAC1 = b"mac1----"
LABEL_COOKIE = b"cookie--"

# §5.4: message types
MESSAGE_INITIATION = 1
MESSAGE_RESPONSE = 2
MESSAGE_COOKIE_REPLY = 3
MESSAGE_TRANSPORT = 4

# §6.1 (table of timers and limits)
REKEY_AFTER_MESSAGES = 1 << 60
REJECT_AFTER_MESSAGES = (1 << 64) - (1 << 13) - 1
REKEY_AFTER_TIME = 120.0
REJECT_AFTER_TIME = 180.0
REKEY_ATTEMPT_TIME = 90.0
REKEY_TIMEOUT = 5.0
KEEPALIVE_TIMEOUT = 10.0
REKEY_TIMEOUT_JITTER_MAX = 0.334  # wireguard-go: up to 333 ms added to REKEY_TIMEOUT
MAX_TIMER_HANDSHAKES = int(REKEY_ATTEMPT_TIME / REKEY_TIMEOUT)  # 18 retries
COOKIE_REFRESH_TIME = 120.0  # §5.4.7: the cookie secret and received cookies expire
HANDSHAKE_INITIATION_RATE = 1 / 50  # wireguard-go: one accepted initiation per 20 ms per peer

# §5.4.6: transport data padding
PADDING_MULTIPLE = 16
MAX_STAGED_PACKETS = 128  # packets queued per peer while a handshake is under way

DEFAULT_PORT = 51820
DEFAULT_MTU = 1420
KEY_LEN = 32
