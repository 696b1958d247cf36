"""`rbipsec status` for humans: the table, float links and last errors from a status answer."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from core.daemon.control.render import duration, float_link_lines, print_status


def _peer(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "interface": "ipsec1", "state": "up",
        "remote": {"address": "203.0.113.2", "port": 4500},
        "nat": {"in_use": True, "forced": True}, "dpd": {"state": "ok", "last_heard_ago": 3},
        "child_sas": [{"outbound": True, "spi_in": "c1", "spi_out": "c2", "rekey_in": 3000,
                       "expire_in": 3500}],
        "ike_sa": {"rekey_in": 10000, "expire_in": 12000},
        "traffic": {"bytes_in": 12_345, "packets_in": 10, "bytes_out": 2_000_000,
                    "packets_out": 20},
        "last_error": None, "float_link": None, **extra,
    }  # fmt: skip


def _link(**extra: Any) -> dict[str, Any]:
    return {
        "name": "branch1.vpn.example.", "peer_name": "hq.vpn.example.",
        "published_state": "published", "published": {"address": "198.51.100.1", "ago": 65},
        "resolved_state": "resolved", "resolved": {"address": "203.0.113.2", "ago": 5},
        "registration": {"state": "current", "expires_in": 830}, "last_error": None, **extra,
    }  # fmt: skip


def _printed(status: dict[str, Any]) -> str:
    out = io.StringIO()
    print_status(status, Console(file=out, width=200, color_system=None))
    return out.getvalue()


def test_table_shows_each_peer_and_the_last_errors() -> None:
    failing = _peer("shop7", state="error", child_sas=[], ike_sa=None,
                    last_error={"message": "AUTHENTICATION_FAILED", "at": "10:00:00"})  # fmt: skip
    text = _printed({"daemon": {"peers_up": 1, "peers": 2, "dataplane": "userspace",
                                "enabled": True}, "peers": [_peer("hq"), failing]})  # fmt: skip
    assert "rbipsec: 1/2 up, dataplane userspace" in text
    assert "203.0.113.2:4500" in text and "c1/c2" in text and "50m00s" in text
    assert "12KB 10p" in text and "2MB 20p" in text and "forced" in text
    assert "shop7: AUTHENTICATION_FAILED (at 10:00:00)" in text
    assert "float links:" not in text


def test_float_links_say_what_is_published_resolved_and_when_it_expires() -> None:
    lines = float_link_lines({"peers": [_peer("hq", float_link=_link()), _peer("plain")]})
    assert lines == ["hq: branch1.vpn.example. = 198.51.100.1 (1m05s ago); hq.vpn.example. -> "
                     "203.0.113.2, resolved, registration expires in 13m50s"]  # fmt: skip


def test_an_expired_registration_and_a_dns_error_are_spelled_out() -> None:
    link = _link(published=None, published_state="not published",
                 resolved_state="not resolved (registration expired)",
                 registration={"state": "expired", "expires_in": None},
                 last_error={"kind": "timeout",
                             "message": "no answer from 198.51.100.53"})  # fmt: skip
    text = _printed({"daemon": {}, "peers": [_peer("hq", float_link=link)]})
    assert ("hq: branch1.vpn.example. not published; hq.vpn.example. -> 203.0.113.2, "
            "not resolved (registration expired); DNS timeout: no answer from 198.51.100.53"
            ) in text  # fmt: skip


def test_durations() -> None:
    assert [duration(v) for v in (None, 7, 306, 11040, 93600)] == [
        "-", "7s", "5m06s", "3h04m", "1d02h"]  # fmt: skip
