"""The float link's DNS traffic: RFC 2136 UPDATEs and address queries, signed with TSIG.

Everything goes to one authoritative server, UDP first (TCP when an answer is truncated),
each exchange bounded by `timeout`.  Both the UPDATE and the query are signed with the
TSIG key (RFC 8945), so an answer that is not signed by the server with the same key is
rejected like any other garbage.  dnspython builds, signs, sends and parses the messages.

Every failure is a `DnsError` with a short `kind` (for status and tests) and a message an
operator can act on.

DNS has no leases, so beside the address each node publishes a `Stamp`: a TXT record at
the same name saying which node published which address when, and for how long it holds
(`ttl`).  A resolver treats an address whose stamp is older than that as expired.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
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

from core.config.floatlink import MAX_TTL
from core.config.schema import FloatFamily, TsigKey
from core.errors import PeerError

log = logging.getLogger(__name__)
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


STAMP_PREFIX = "rbipsec-stamp"
MAX_PUBLISHED = 1 << 33  # Unix seconds: beyond the year 2242


@dataclass(frozen=True)
class Stamp:
    """Who published which address when (wall clock, Unix seconds), valid for `ttl` s.

    On the wire one TXT string: `rbipsec-stamp v=1 node=branch1 family=ipv4
    address=198.51.100.5 published=1795777777 ttl=900`.
    """

    node: str
    family: FloatFamily
    address: IPAddress
    published: int
    ttl: int

    def text(self) -> str:
        return (
            f"{STAMP_PREFIX} v=1 node={self.node} family={self.family.value} "
            f"address={self.address} published={self.published} ttl={self.ttl}"
        )

    @classmethod
    def now(cls, node: str, family: FloatFamily, address: IPAddress, ttl: int) -> Stamp:
        return cls(node, family, address, int(time.time()), ttl)

    @classmethod
    def parse(cls, text: str) -> Stamp | None:
        """The stamp in one TXT string; None for any other TXT (not ours, or malformed)."""
        words = text.split()
        if not words or words[0] != STAMP_PREFIX:
            return None
        fields = dict(word.partition("=")[::2] for word in words[1:])
        try:
            stamp = cls(fields["node"], FloatFamily(fields["family"]),
                        ipaddress.ip_address(fields["address"]), int(fields["published"]),
                        int(fields["ttl"]))  # fmt: skip
        except (KeyError, ValueError):
            return None
        if fields.get("v") != "1" or not stamp._plausible():
            return None
        return stamp

    def _plausible(self) -> bool:
        """Within what a node can publish: a time before 2242 and a ttl of the config's
        range; any other value (a 400-digit ttl) would break arithmetic on it later."""
        return 0 <= self.published < MAX_PUBLISHED and 0 < self.ttl <= MAX_TTL


class DnsClient(Protocol):
    """What the float link needs from DNS (a fake in unit tests)."""

    async def publish(
        self,
        zone: str,
        name: str,
        family: FloatFamily,
        address: IPAddress,
        ttl: int,
        stamp: Stamp | None = None,
    ) -> bool:
        """Replace the A/AAAA records of `name` in `zone` by `address`, and its TXT records
        by `stamp`.  False: the server refused the stamp but took the address alone."""
        ...

    async def lookup(self, name: str, family: FloatFamily) -> list[IPAddress]:
        """The A/AAAA addresses of `name` (at least one)."""
        ...

    async def lookup_stamps(self, name: str) -> list[Stamp]:
        """The stamps among the TXT records of `name` (none: an empty list)."""
        ...


class TsigDnsClient:
    """`DnsClient` speaking to one server with one TSIG key."""

    def __init__(self, server: DnsServer, key: TsigKey, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.server = server
        self.timeout = timeout
        self._key = dns.tsig.Key(key.name, key.secret.value, key.algorithm)

    async def publish(
        self,
        zone: str,
        name: str,
        family: FloatFamily,
        address: IPAddress,
        ttl: int,
        stamp: Stamp | None = None,
    ) -> bool:
        """RFC 2136 3.4.2.2: delete the RRset of the type, then add the one record; the
        stamp's TXT RRset likewise, in the same (atomic) UPDATE.  A server whose update
        policy allows only A/AAAA refuses the whole UPDATE: then the address goes alone."""
        _check_family(address, family)
        what = f"{name} {_RECORD[family]}"
        if stamp is not None:
            update = self._update(zone, name, family, address, ttl)
            update.replace(dns.name.from_text(name), ttl, dns.rdatatype.TXT,
                           f'"{stamp.text()}"')  # fmt: skip
            response = await self._exchange(update, f"UPDATE {what} + TXT")
            if response.rcode() != dns.rcode.REFUSED:
                _check_rcode(response, f"UPDATE of {what} + TXT")
                return True
        update = self._update(zone, name, family, address, ttl)
        response = await self._exchange(update, f"UPDATE {what}")
        _check_rcode(response, f"UPDATE of {what}")
        return stamp is None

    def _update(
        self, zone: str, name: str, family: FloatFamily, address: IPAddress, ttl: int
    ) -> dns.update.UpdateMessage:
        update = dns.update.UpdateMessage(zone, keyring=self._key)
        update.replace(dns.name.from_text(name), ttl, _RDTYPE[family], str(address))
        return update

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

    async def lookup_stamps(self, name: str) -> list[Stamp]:
        qname = dns.name.from_text(name)
        query = dns.message.make_query(qname, dns.rdatatype.TXT)
        query.use_tsig(self._key)
        query.flags &= ~dns.flags.RD
        response = await self._exchange(query, f"query {name} TXT")
        if response.rcode() == dns.rcode.NXDOMAIN:
            return []
        _check_rcode(response, f"query {name} TXT")
        rrset = response.get_rrset(response.answer, qname, dns.rdataclass.IN, dns.rdatatype.TXT)
        stamps = []
        for rdata in rrset or ():
            text = b"".join(rdata.strings).decode("ascii", errors="replace")
            stamp = Stamp.parse(text)
            if stamp is not None:
                stamps.append(stamp)
            elif text.startswith(STAMP_PREFIX):
                log.debug("%s: ignoring a malformed or implausible stamp: %.200s", name, text)
        return stamps

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
        except dns.exception.FormError as error:
            if message.had_tsig and _UNSIGNED in str(error):  # dnspython's own check
                raise DnsError(
                    "tsig", f"{what}: the answer from {self.server} is not signed"
                ) from None
            raise DnsError(
                "garbage", f"{what}: unusable answer from {self.server}: {_describe(error)}"
            ) from None
        except dns.exception.DNSException as error:
            raise DnsError(
                "garbage", f"{what}: unusable answer from {self.server}: {_describe(error)}"
            ) from None
        # Whatever the rcode: an unsigned NXDOMAIN or REFUSED, which anyone who can spoof
        # the server's address can send, would make a registration look absent or our
        # stamp refused.  (Newer dnspython rejects these itself, as a FormError.)
        if message.had_tsig and not response.had_tsig:
            raise DnsError("tsig", f"{what}: the answer from {self.server} is not signed")
        return response


_UNSIGNED = "requires a TSIG but does not have one"  # dnspython's FormError for it


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
