"""IKE protocol errors that know their wire meaning (STYLE.md lesson 4).

The codecs and the state machine raise these; one boundary turns an `IkeError` into the
notify it names (`notify`, with `data` as the notification data) and an event.  An error
whose `notify` is None is answered with silence (the RFC says to drop the message).

All of them are `core.errors.PeerError`s: the peer or the network sent something wrong.
Misuse of our own API raises `core.errors.UsageError` instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.errors import DecodeError, PeerError
from core.ike.constants import NotifyType

if TYPE_CHECKING:
    from core.ike.v2.header import IkeHeader


class IkeError(PeerError):
    """Base of the IKE protocol errors.

    `notify` is the notify this error maps to on the wire (None: answer nothing), `data`
    the notification data to send with it.  Subclasses set `notify` as a class attribute;
    the `notify` argument overrides it for one instance.
    """

    notify: NotifyType | None = None
    data: bytes = b""

    def __init__(
        self, message: str = "", *, notify: NotifyType | None = None, data: bytes = b""
    ) -> None:
        super().__init__(message or self.__class__.__name__)
        if notify is not None:
            self.notify = notify
        self.data = data


class InvalidSyntax(IkeError, DecodeError):
    """Malformed message: bad lengths, counts or field values (RFC 7296 3.10.1)."""

    notify = NotifyType.INVALID_SYNTAX


class UnsupportedCriticalPayload(IkeError):
    """A payload we do not understand had the critical bit set (RFC 7296 2.5).

    The notification data is the one-octet payload type."""

    notify = NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD

    def __init__(self, payload_type: int, message: str = "") -> None:
        super().__init__(
            message or f"unsupported critical payload type {payload_type}",
            data=bytes([payload_type & 0xFF]),
        )
        self.payload_type = payload_type


class InvalidMajorVersion(IkeError):
    """The header's major version is not 2 (RFC 7296 2.5).

    Answered (unencrypted, with our version in the header) only when the message was a
    request; `header` holds what was parsed so the caller can tell and can address it."""

    notify = NotifyType.INVALID_MAJOR_VERSION

    def __init__(self, message: str = "", *, header: IkeHeader | None = None) -> None:
        super().__init__(message)
        self.header = header


class InvalidIkeSpi(IkeError):
    """No IKE SA matches the SPIs of the message (RFC 7296 2.21.4)."""

    notify = NotifyType.INVALID_IKE_SPI


class InvalidMessageId(IkeError):
    """A message ID outside the window (RFC 7296 2.3)."""

    notify = NotifyType.INVALID_MESSAGE_ID


class NoProposalChosen(IkeError):
    """None of the proposals was acceptable (RFC 7296 2.7)."""

    notify = NotifyType.NO_PROPOSAL_CHOSEN


class InvalidKePayload(IkeError):
    """The KE payload's group is not the one we selected (RFC 7296 1.2, 1.3).

    The notification data is the two-octet group number we want instead."""

    notify = NotifyType.INVALID_KE_PAYLOAD

    def __init__(self, group: int, message: str = "") -> None:
        super().__init__(
            message or f"expected Diffie-Hellman group {group}",
            data=(group & 0xFFFF).to_bytes(2, "big"),
        )
        self.group = group


class AuthenticationFailed(IkeError):
    """The peer's AUTH payload did not verify, or its identity is not acceptable."""

    notify = NotifyType.AUTHENTICATION_FAILED


class TsUnacceptable(IkeError):
    """The proposed traffic selectors do not fit our policy (RFC 7296 2.9)."""

    notify = NotifyType.TS_UNACCEPTABLE


class TemporaryFailure(IkeError):
    """Try again later, e.g. a rekey collides with another exchange (RFC 7296 2.25)."""

    notify = NotifyType.TEMPORARY_FAILURE


class ChildSaNotFound(IkeError):
    """A rekey names a Child SA we do not have (RFC 7296 2.25)."""

    notify = NotifyType.CHILD_SA_NOT_FOUND


class InvalidSpi(IkeError):
    """ESP/AH traffic or a request names an SPI we do not know (RFC 7296 3.10.1)."""

    notify = NotifyType.INVALID_SPI


class MissingKeys(IkeError):
    """An encrypted (SK) payload arrived but no keys were given to open it.

    No notify: without keys nothing can be answered; the message is dropped."""

    notify = None
