"""Sources of randomness for keys, nonces, IVs, SPIs and timer jitter.

The protocol core takes a `RandomSource` instead of calling `os.urandom`, so that tests
can run two engines with fixed randomness and get the same bytes every run.
"""

from __future__ import annotations

import os
import random as _stdlib_random
import secrets
from typing import Protocol


class RandomSource(Protocol):
    def bytes(self, n: int) -> bytes:
        """`n` random bytes."""
        ...

    def uniform(self, low: float, high: float) -> float:
        """A random float in [low, high], for timer jitter."""
        ...


class SystemRandomSource:
    """The operating system's CSPRNG; the only source for production keys."""

    __slots__ = ()

    def bytes(self, n: int) -> bytes:
        return os.urandom(n)

    def uniform(self, low: float, high: float) -> float:
        # 53 random bits, like random.random(), but from the CSPRNG.
        return low + (high - low) * (secrets.randbits(53) / (1 << 53))


class SeededRandomSource:
    """Deterministic output from `seed`. For tests only: never use it for real keys."""

    __slots__ = ("_random",)

    def __init__(self, seed: int) -> None:
        self._random = _stdlib_random.Random(seed)

    def bytes(self, n: int) -> bytes:
        return self._random.randbytes(n)

    def uniform(self, low: float, high: float) -> float:
        return self._random.uniform(low, high)
