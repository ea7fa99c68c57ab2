"""Which of OpenSSL's ChaCha20-Poly1305 code paths this process's libcrypto runs.

On CPUs with AVX-512, OpenSSL 3.0 picks its AVX-512 ChaCha20 and Poly1305. Those win on
long inputs but carry a fixed cost per message: on the machines we measured, one message
of a tunnel's size (1,424 bytes) took 1.16 us with them and 0.92 us with the AVX2 code, a
96-byte one 0.76 us and 0.40 us (docs/performance.md). A tunnel seals and opens messages
of at most one MTU, so vnet asks libcrypto for its AVX2 code by clearing the AVX-512F bit
in ``OPENSSL_ia32cap``, OpenSSL's documented switch, which libcrypto reads once, when it
is loaded. A user's own ``OPENSSL_ia32cap`` wins; ``VNET_OPENSSL_AVX512=1`` keeps AVX-512.
The variable is set only while libcrypto loads, so processes vnet starts do not inherit it.
"""

from __future__ import annotations

import os
import sys

VARIABLE = "OPENSSL_ia32cap"  # OpenSSL spells it so
AVX512F_OFF = ":~0x10000"  # 2nd word, bit 16: CPUID leaf 7 EBX, AVX-512 Foundation


def prefer_avx2() -> bool:
    """Load libcrypto with AVX-512 masked; False when the choice is not ours to make:
    the user chose, or libcrypto was loaded before vnet was imported."""
    if VARIABLE in os.environ or os.environ.get("VNET_OPENSSL_AVX512") == "1":
        return False
    if "_hashlib" in sys.modules:
        return False
    os.environ[VARIABLE] = AVX512F_OFF
    try:
        import _hashlib  # noqa: F401  # links the system libcrypto, whose start-up reads it
    except ImportError:
        return False
    finally:
        del os.environ[VARIABLE]
    return True


AVX2_CHOSEN = prefer_avx2()
