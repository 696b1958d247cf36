"""When to try a failed rekey again (RFC 7296 2.8; IKEv1 alike).

An SA whose rekey failed keeps carrying traffic, so it is rekeyed again after a short,
growing, jittered backoff, and always before its hard lifetime runs out: an SA that
merely expires would leave the tunnel down until something else brought it back.
"""

from __future__ import annotations

from collections.abc import Callable

from core.crypto.random import RandomSource

# Seconds before the next try, by the failures so far (each +-20 %), but never later than
# halfway to the hard expiry.
REKEY_RETRY_STEPS = (2.0, 4.0, 8.0, 16.0, 30.0)
MIN_REKEY_ROOM = 1.0  # closer to the hard expiry than this, the expiry replaces the SA


def rekey_retry_time(rng: RandomSource, failures: int, expire_at: float,
                     now: float) -> float | None:
    """When to try again after `failures` failed rekeys of an SA that expires at
    `expire_at`, or None when it is too close to the expiry (which replaces it)."""
    room = expire_at - now
    if room <= MIN_REKEY_ROOM:
        return None
    step = REKEY_RETRY_STEPS[min(failures, len(REKEY_RETRY_STEPS) - 1)]
    return now + min(step * rng.uniform(0.8, 1.2), room / 2)


def next_try_after_failure(rng: RandomSource, failures: int, expire_at: float, now: float,
                           log: Callable[[str, str], None], what: str) -> float | None:
    """The next rekey try of `what` (e.g. "Child SA 1a2b3c4d") after its `failures`-th
    failure in a row, logged; None (also logged) when the expiry will replace it."""
    at = rekey_retry_time(rng, failures - 1, expire_at, now)
    if at is not None:
        log("info", f"rekey of {what} failed ({failures} in a row): trying again in "
            f"{at - now:.1f} s")
    else:
        log("info", f"rekey of {what} failed: no time left to retry the rekey; the expiry "
            "will replace it")
    return at
