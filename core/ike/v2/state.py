"""IKE SA states (kept apart so the task modules can import them freely)."""

from __future__ import annotations

import enum


class IkeState(enum.Enum):
    CONNECTING = "connecting"
    ESTABLISHED = "established"
    REKEYING = "rekeying"  # our IKE SA rekey is in flight
    REKEYED = "rekeyed"  # replaced by a successor; only its DELETE is left
    DELETING = "deleting"
    DESTROYED = "destroyed"
