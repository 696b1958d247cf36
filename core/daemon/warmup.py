"""One-time costs of the crypto library, paid while the daemon is idle after its start.

The first X25519 key in a process imports cryptography's OpenSSL backend, which binds
some 600 library symbols, and the first AES-GCM and HMAC fetch their algorithms from
OpenSSL's provider: 3-60 ms measured here in the bench's responder (the high end on a
busy host), against ~0.3 ms for every later IKE_SA_INIT.  Left alone, the first peer's
IKE_SA_INIT pays it; a responder started before its peers has the time to spare.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("rbipsec.daemon")


def warm_up_crypto() -> None:
    started = time.perf_counter()
    from cryptography.hazmat.primitives import hashes, hmac
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    ours, theirs = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ours.exchange(theirs.public_key())
    AESGCM(bytes(32)).encrypt(bytes(12), b"", None)
    mac = hmac.HMAC(bytes(32), hashes.SHA256())
    mac.update(b"")
    mac.finalize()
    log.debug("crypto warmed up in %.1f ms", (time.perf_counter() - started) * 1e3)
