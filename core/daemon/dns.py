"""The float link's DNS traffic: RFC 2136 UPDATEs and address queries, signed with TSIG.

Everything goes to one authoritative server, UDP first (TCP when an answer is truncated),
each exchange bounded by `timeout`.  Both the UPDATE and the query are signed with the
TSIG key (RFC 8945), so an answer that is not signed by the server with the same key is
rejected like any other garbage.  dnspython builds, signs, sends and parses the messages.

Every failure is a `DnsError` with a short `kind` (for status and tests) and a message an
operator can act on.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.update

from core.config.schema import FloatFamily, TsigKey
from core.errors import PeerError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_TIMEOUT = 5.0  # seconds for one exchange with the server

_RDTYPE = {FloatFamily.IPV4: dns.rdatatype.A, FloatFamily.IPV6: dns.rdatatype.AAAA}
_RECORD = {FloatFamily.IPV4: "A", FloatFamily.IPV6: "AAAA"}


class DnsError(PeerError):
    """The server could not be reached or refused, or its answer was unusable.

    `kind`: "timeout", "unreachable", "refused", "notauth", "nxdomain", "nodata",
    "servfail", "tsig" (the answer's signature is bad) or "garbage".
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class DnsServer:
    address: IPAddress
    port: int = 53

    def __str__(self) -> str:
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


class DnsClient(Protocol):
    """What the float link needs from DNS (a fake in unit tests)."""

    async def publish(
        self, zone: str, name: str, family: FloatFamily, address: IPAddress, ttl: int
    ) -> None:
        """Replace the A/AAAA records of `name` in `zone` by `address`."""
        ...

    async def lookup(self, name: str, family: FloatFamily) -> list[IPAddress]:
        """The A/AAAA addresses of `name` (at least one)."""
        ...


class TsigDnsClient:
    """`DnsClient` speaking to one server with one TSIG key."""

    def __init__(self, server: DnsServer, key: TsigKey, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.server = server
        self.timeout = timeout
        self._key = dns.tsig.Key(key.name, key.secret.value, key.algorithm)

    async def publish(
        self, zone: str, name: str, family: FloatFamily, address: IPAddress, ttl: int
    ) -> None:
        """RFC 2136 3.4.2.2: delete the RRset of the type, then add the one record."""
        _check_family(address, family)
        update = dns.update.UpdateMessage(zone, keyring=self._key)
        update.replace(dns.name.from_text(name), ttl, _RDTYPE[family], str(address))
        response = await self._exchange(update, f"UPDATE {name} {_RECORD[family]}")
        _check_rcode(response, f"UPDATE of {name} {_RECORD[family]}")

    async def lookup(self, name: str, family: FloatFamily) -> list[IPAddress]:
        qname = dns.name.from_text(name)
        query = dns.message.make_query(qname, _RDTYPE[family])
        query.use_tsig(self._key)
        query.flags &= ~dns.flags.RD  # an authoritative server: no recursion wanted
        what = f"{name} {_RECORD[family]}"
        response = await self._exchange(query, f"query {what}")
        _check_rcode(response, f"query {what}")
        rrset = response.get_rrset(response.answer, qname, dns.rdataclass.IN, _RDTYPE[family])
        if rrset is None or len(rrset) == 0:
            raise DnsError("nodata", f"{self.server} has no {_RECORD[family]} record for {name}")
        return _usable_addresses([rdata.to_text() for rdata in rrset], family, what)

    async def _exchange(self, message: dns.message.Message, what: str) -> dns.message.Message:
        where, port = str(self.server.address), self.server.port
        try:
            async with asyncio.timeout(self.timeout + 1.0):
                response, _tcp = await dns.asyncquery.udp_with_fallback(
                    message, where, timeout=self.timeout, port=port, ignore_unexpected=True
                )
        except (TimeoutError, dns.exception.Timeout):
            raise DnsError(
                "timeout", f"{what}: no answer from {self.server} within {self.timeout:g} s"
            ) from None
        except dns.tsig.PeerError as error:
            raise DnsError("notauth", f"{what}: {self.server} refused our TSIG key "
                           f"{self._key.name} ({_tsig_reason(error)})") from None  # fmt: skip
        except (dns.tsig.BadSignature, dns.tsig.BadTime, dns.message.UnknownTSIGKey) as error:
            raise DnsError("tsig", f"{what}: the answer from {self.server} is not signed "
                           f"with our key ({_describe(error)})") from None  # fmt: skip
        except OSError as error:
            raise DnsError(
                "unreachable", f"{what}: {self.server}: {error.strerror or error}"
            ) from None
        except dns.exception.DNSException as error:
            raise DnsError(
                "garbage", f"{what}: unusable answer from {self.server}: {_describe(error)}"
            ) from None
        if message.had_tsig and not response.had_tsig and response.rcode() == dns.rcode.NOERROR:
            raise DnsError("tsig", f"{what}: the answer from {self.server} is not signed")
        return response


def _tsig_reason(error: dns.tsig.PeerError) -> str:
    names = {
        dns.tsig.PeerBadKey: "BADKEY: the server does not know the key",
        dns.tsig.PeerBadSignature: "BADSIG: the secret differs",
        dns.tsig.PeerBadTime: "BADTIME: the clocks differ by more than 5 minutes",
        dns.tsig.PeerBadTruncation: "BADTRUNC",
    }
    return names.get(type(error), _describe(error))


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


def _check_rcode(response: dns.message.Message, what: str) -> None:
    rcode = response.rcode()
    if rcode == dns.rcode.NOERROR:
        return
    text = dns.rcode.to_text(rcode)
    kinds = {
        dns.rcode.REFUSED: ("refused", "the server refused it (zone or update policy?)"),
        dns.rcode.NOTAUTH: ("notauth", "the server is not authoritative or refused our key"),
        dns.rcode.NXDOMAIN: ("nxdomain", "no such name"),
        dns.rcode.SERVFAIL: ("servfail", "the server failed"),
    }
    kind, meaning = kinds.get(rcode, ("garbage", "unexpected answer"))
    raise DnsError(kind, f"{what}: {text} ({meaning})")


def _usable_addresses(texts: Sequence[str], family: FloatFamily, what: str) -> list[IPAddress]:
    addresses: list[IPAddress] = []
    for text in texts:
        address = ipaddress.ip_address(text)
        if address.is_unspecified or address.is_multicast or address.is_loopback:
            raise DnsError("garbage", f"{what}: {address} is not a usable peer address")
        addresses.append(address)
    _check_family(addresses[0], family)
    return sorted(addresses)


def _check_family(address: IPAddress, family: FloatFamily) -> None:
    if (address.version == 4) != (family is FloatFamily.IPV4):
        raise DnsError("garbage", f"{address} is not an {family.value} address")
