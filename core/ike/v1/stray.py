"""What IKEv1 answers to a message no SA and no peer here can take (sans-IO).

`IkeEngines` creates the IKEv1 endpoint only for the first IKEv1 peer (importing it costs
a daemon's start a noticeable time).  Until then an ISAKMP message gets what an endpoint
holding no SA and no peer would give it: a first phase 1 message is refused with a
NO_PROPOSAL_CHOSEN notify (RFC 2408 5.5), anything else is dropped; each is logged.  The
endpoint builds its refusals with `refusal` too.
"""

from __future__ import annotations

from core.crypto.random import RandomSource
from core.errors import DecodeError
from core.ike.datagram import Datagram, on_wire
from core.ike.events import Address, LogMessage
from core.ike.v1.constants import ExchangeType, NotifyType, PayloadType, ProtocolId
from core.ike.v1.errors import IsakmpError
from core.ike.v1.message import Header, Message, encode_message, peek_header
from core.ike.v1.payloads import NotifyPayload

NO_COOKIE = bytes(8)


def opens_phase1(header: Header) -> bool:
    """A main or aggressive mode message with no responder cookie yet: the first one."""
    return header.cky_r == NO_COOKIE and header.exchange in (ExchangeType.MAIN,
                                                              ExchangeType.AGGRESSIVE)


def refusal(header: Header, kind: NotifyType, local: Address, remote: Address,
            rng: RandomSource) -> Datagram:
    """An unprotected informational notify of `kind` for the initiator of `header`."""
    message = Message(header.cky_i, NO_COOKIE, ExchangeType.INFORMATIONAL,
                      int.from_bytes(rng.bytes(4), "big"),
                      [(PayloadType.NOTIFY, NotifyPayload(kind, ProtocolId.ISAKMP))])
    return Datagram(on_wire(encode_message(message), local), local, remote)


def receive_without_peers(data: bytes, local: Address, remote: Address,
                          rng: RandomSource) -> tuple[list[Datagram], list[LogMessage]]:
    """(datagrams to send, log lines) for an ISAKMP message when no IKEv1 peer exists."""
    try:
        header = peek_header(data)
    except (IsakmpError, DecodeError) as error:
        return [], [LogMessage("", "debug", f"dropped a malformed ISAKMP message from "
                               f"{remote}: {error}")]
    if not opens_phase1(header):
        return [], [LogMessage("", "debug", f"dropped a message for unknown cookies "
                               f"{header.cky_i.hex()}/{header.cky_r.hex()} from {remote}")]
    if header.encrypted or header.message_id != 0:
        return [], [LogMessage("", "debug", f"dropped a malformed phase 1 request from "
                               f"{remote}")]
    return ([refusal(header, NotifyType.NO_PROPOSAL_CHOSEN, local, remote, rng)],
            [LogMessage("", "info", f"phase 1 request from {remote}: no peer configured "
                        "for it")])
