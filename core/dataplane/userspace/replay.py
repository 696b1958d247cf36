"""ESP anti-replay window (RFC 4303 section 3.4.3 and Appendix A).

The receiver keeps the highest authenticated sequence number T and a bitmap of the W
numbers at and below it.  A packet is *checked* before its ICV is verified (cheap
rejection of duplicates and stale packets) and the window is *updated* only after the ICV
passed, so forged packets cannot move the window.

With Extended Sequence Numbers only the low 32 bits travel on the wire; the high 32 bits
are inferred from the window position (Appendix A2.2) and then confirmed by the ICV,
which covers them.
"""

from __future__ import annotations

_MASK32 = 0xFFFFFFFF
_MAX64 = (1 << 64) - 1
# The window used to infer ESN high bits when anti-replay is switched off (window 0).
_INFERENCE_WINDOW_WITHOUT_REPLAY = 64


class ReplayWindow:
    """Highest sequence number seen, a bitmap below it, and ESN inference."""

    __slots__ = ("_bitmap", "_esn", "_mask", "_size", "_top")

    def __init__(self, size: int = 128, *, esn: bool = False) -> None:
        if size < 0:
            raise ValueError("replay window size must be >= 0")
        self._size = size
        self._mask = (1 << size) - 1
        self._esn = esn
        self._top = 0  # T: highest sequence number authenticated so far (0 = none)
        self._bitmap = 0  # bit i set = T - i was received

    @property
    def size(self) -> int:
        return self._size

    @property
    def highest(self) -> int:
        """The highest authenticated (full, 64-bit with ESN) sequence number, 0 = none."""
        return self._top

    def infer(self, seq_low: int) -> int:
        """The full sequence number for the 32 bits on the wire (RFC 4303 Appendix A2.2).

        Without ESN this is `seq_low` itself.  Returns -1 when the inferred number would
        lie below zero (a packet "before" the first sub-space): it can only be a replay.
        """
        if not self._esn:
            return seq_low
        window = self._size or _INFERENCE_WINDOW_WITHOUT_REPLAY
        top_low = self._top & _MASK32
        top_high = self._top >> 32
        bottom_low = (top_low - window + 1) & _MASK32
        if top_low >= window - 1:  # Case A: the window lies within one sub-space
            high = top_high if seq_low >= bottom_low else top_high + 1
        else:  # Case B: the window spans two sub-spaces
            high = top_high - 1 if seq_low >= bottom_low else top_high
        if high < 0 or high > _MASK32:
            return -1
        return (high << 32) | seq_low

    def check(self, seq: int) -> bool:
        """True if `seq` (full) is new and inside the window: worth verifying its ICV."""
        if seq <= 0 or seq > _MAX64 or (not self._esn and seq > _MASK32):
            return False  # sequence numbers start at 1 (RFC 4303 section 3.3.3)
        if self._size == 0 or seq > self._top:
            return True
        offset = self._top - seq
        if offset >= self._size:
            return False  # too old: left of the window
        return not (self._bitmap >> offset) & 1

    def update(self, seq: int) -> None:
        """Record `seq` as received; call only after its ICV verified."""
        if seq > self._top:
            shift = seq - self._top
            self._bitmap = ((self._bitmap << shift) | 1) & self._mask if shift < self._size else 1
            self._top = seq
        elif self._size:
            self._bitmap |= 1 << (self._top - seq)
