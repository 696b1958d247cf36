"""Answers to signed requests must be signed, whatever their rcode: an unsigned NXDOMAIN
or REFUSED from anyone who can spoof the server's address would otherwise make a
registration look absent (expiry failing open) or have the stamp dropped.  A fake server
on loopback answers without TSIG."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import dns.asyncquery
import dns.message
import dns.rcode
import pytest

from core.config.schema import FloatFamily
from core.daemon.dns import DnsError, DnsServer, Stamp, TsigDnsClient
from tests.floatlink.test_floatlink_unit import HERE, peer


class UnsignedServer(asyncio.DatagramProtocol):
    """Answers every request with `rcode` and no TSIG."""

    def __init__(self, rcode: dns.rcode.Rcode) -> None:
        self.rcode = rcode
        self.requests = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.requests += 1
        request = dns.message.from_wire(data, keyring=False)  # the signature is not checked
        response = dns.message.make_response(request)
        response.set_rcode(self.rcode)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


def with_server(
    tmp_path: Path, rcode: dns.rcode.Rcode,
    exchange: Callable[[TsigDnsClient], Awaitable[object]],
) -> tuple[DnsError, int]:  # fmt: skip
    config = peer(tmp_path).float_link
    assert config is not None

    async def scenario() -> tuple[DnsError, int]:
        loop = asyncio.get_running_loop()
        server = UnsignedServer(rcode)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: server, local_addr=("127.0.0.1", 0)
        )
        port = transport.get_extra_info("sockname")[1]
        client = TsigDnsClient(DnsServer(ipaddress.ip_address("127.0.0.1"), port),
                               config.tsig_key, timeout=1.0)  # fmt: skip
        try:
            with pytest.raises(DnsError) as raised:
                await exchange(client)
        finally:
            transport.close()
        return raised.value, server.requests

    return asyncio.run(scenario())


def stamp() -> Stamp:
    return Stamp("branch1", FloatFamily.IPV4, HERE, 1_800_000_000, 60)


@pytest.mark.parametrize(
    "rcode", [dns.rcode.NXDOMAIN, dns.rcode.REFUSED, dns.rcode.SERVFAIL, dns.rcode.NOERROR]
)
def test_an_unsigned_answer_to_a_stamp_query_is_a_tsig_error(
    tmp_path: Path, rcode: dns.rcode.Rcode
) -> None:
    error, _ = with_server(tmp_path, rcode, lambda c: c.lookup_stamps("hq.vpn.example."))
    assert error.kind == "tsig" and "not signed" in str(error)


@pytest.mark.parametrize("rcode", [dns.rcode.NXDOMAIN, dns.rcode.REFUSED])
def test_an_unsigned_answer_to_an_address_query_is_a_tsig_error(
    tmp_path: Path, rcode: dns.rcode.Rcode
) -> None:
    error, _ = with_server(tmp_path, rcode, lambda c: c.lookup("hq.vpn.example.", FloatFamily.IPV4))
    assert error.kind == "tsig"


def test_an_unsigned_refusal_of_the_stamped_update_is_not_taken_for_a_policy(
    tmp_path: Path,
) -> None:
    def publish(client: TsigDnsClient) -> Awaitable[bool]:
        return client.publish("vpn.example.", "branch1.vpn.example.", FloatFamily.IPV4,
                              HERE, 60, stamp())  # fmt: skip

    error, requests = with_server(tmp_path, dns.rcode.REFUSED, publish)
    assert error.kind == "tsig" and requests == 1  # no second UPDATE without the stamp


def test_an_unsigned_answer_passed_through_by_an_older_dnspython_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dnspython before its own check handed unsigned answers over; ours catches them."""
    config = peer(tmp_path).float_link
    assert config is not None

    async def unsigned_nxdomain(query: dns.message.Message, *args: Any, **kw: Any) -> Any:
        response = dns.message.make_response(dns.message.from_wire(query.to_wire(), keyring=False))
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response, False

    monkeypatch.setattr(dns.asyncquery, "udp_with_fallback", unsigned_nxdomain)
    client = TsigDnsClient(DnsServer(ipaddress.ip_address("127.0.0.1")), config.tsig_key)
    with pytest.raises(DnsError) as raised:
        asyncio.run(client.lookup_stamps("hq.vpn.example."))
    assert raised.value.kind == "tsig"
