"""The error families of rbipsec.

Two families are kept apart (STYLE.md lesson 4):
- `PeerError` and its children: the peer or the network sent something wrong.  Protocol
  errors carry the notify they map to on the wire.
- `UsageError`: we were misused (bad config, bad command, wrong state for a call).
"""

from __future__ import annotations


class RbipsecError(Exception):
    """Base of every error rbipsec raises on purpose."""


class PeerError(RbipsecError):
    """Something received from the network was wrong."""


class DecodeError(PeerError):
    """Bytes that do not parse: truncated, wrong lengths, bad values."""


class UsageError(RbipsecError):
    """The caller (operator, config, command) asked for something invalid."""


class ConfigError(UsageError):
    """A configuration could not be loaded; `problems` holds every line found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class IntegrityError(PeerError):
    """An ICV or HMAC did not verify (wrong keys, tampering, corruption)."""
