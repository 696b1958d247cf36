"""IKEv1 protocol errors that know their ISAKMP notify (RFC 2408 3.14.1).

The codecs and the state machine raise these; one boundary (the ISAKMP SA, the endpoint)
turns an `IsakmpError` into the notify it names plus an `ExchangeFailed` event.  An error
whose `notify` is None is answered with silence.  All are `core.errors.PeerError`s; those
raised while parsing are also `core.errors.DecodeError`s.
"""

from __future__ import annotations

from core.errors import DecodeError, PeerError
from core.ike.v1.constants import NotifyType


class IsakmpError(PeerError):
    """Base of the IKEv1 protocol errors; `notify` is the wire error (None: stay silent)."""

    notify: NotifyType | None = None

    def __init__(self, message: str = "", *, notify: NotifyType | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        if notify is not None:
            self.notify = notify


class MalformedMessage(IsakmpError, DecodeError):
    """Bytes that do not parse: bad lengths, counts or field values."""

    notify = NotifyType.PAYLOAD_MALFORMED


class InvalidPayloadType(MalformedMessage):
    notify = NotifyType.INVALID_PAYLOAD_TYPE


class UnequalPayloadLengths(MalformedMessage):
    notify = NotifyType.UNEQUAL_PAYLOAD_LENGTHS


class InvalidMajorVersion(MalformedMessage):
    notify = NotifyType.INVALID_MAJOR_VERSION


class InvalidExchangeType(MalformedMessage):
    notify = NotifyType.INVALID_EXCHANGE_TYPE


class InvalidFlags(MalformedMessage):
    notify = NotifyType.INVALID_FLAGS


class DoiNotSupported(MalformedMessage):
    notify = NotifyType.DOI_NOT_SUPPORTED


class SituationNotSupported(MalformedMessage):
    notify = NotifyType.SITUATION_NOT_SUPPORTED


class BadProposalSyntax(MalformedMessage):
    notify = NotifyType.BAD_PROPOSAL_SYNTAX


class InvalidKeyInformation(MalformedMessage):
    """A KE payload of the wrong size or not a group element."""

    notify = NotifyType.INVALID_KEY_INFORMATION


class EncryptedBodyError(MalformedMessage):
    """The encrypted part is not a whole number of cipher blocks."""


class MissingKeys(IsakmpError):
    """An encrypted message arrived before (or without) the keys to open it."""

    notify = None


class NoProposalChosen(IsakmpError):
    notify = NotifyType.NO_PROPOSAL_CHOSEN


class InvalidIdInformation(IsakmpError):
    """The peer's identity (phase 1) or its IDci/IDcr (quick mode) are unacceptable."""

    notify = NotifyType.INVALID_ID_INFORMATION


class InvalidHashInformation(IsakmpError):
    """A HASH payload is missing, misplaced or does not verify."""

    notify = NotifyType.INVALID_HASH_INFORMATION


class AuthenticationFailed(IsakmpError):
    """HASH_I / HASH_R did not verify: most likely the pre-shared keys differ."""

    notify = NotifyType.AUTHENTICATION_FAILED


class InvalidSpi(IsakmpError):
    notify = NotifyType.INVALID_SPI


class InvalidMessageId(IsakmpError):
    notify = NotifyType.INVALID_MESSAGE_ID


class UnexpectedMessage(IsakmpError):
    """A message that does not fit the exchange's state: dropped without an answer."""

    notify = None


class PeerRefused(IsakmpError):
    """The peer answered with an error notify; `notify` is what it sent."""

    def __init__(self, notify: NotifyType | int, message: str = "") -> None:
        kind = NotifyType(notify) if notify in NotifyType._value2member_map_ else None
        name = kind.name if kind is not None else str(notify)
        super().__init__(message or f"peer refused: {name}")
        self.notify = kind
        self.notify_value = int(notify)
