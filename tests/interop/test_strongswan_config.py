"""Rendering of strongswan.conf and swanctl.conf from their descriptions (no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.strongswan_config import (
    CharonSettings,
    Child,
    ConfigProblem,
    Connection,
    quote,
    render_swanctl,
)


def test_strongswan_conf_orders_plugins_and_isolates_the_instance(tmp_path: Path) -> None:
    text = CharonSettings(retransmit_tries=2, log_levels={"ike": 4}).render(tmp_path)
    load = next(line.split("=", 1)[1].split() for line in text.splitlines() if "load =" in line)
    assert load.index("kernel-libipsec") < load.index("kernel-netlink")
    assert "vici" in load and "include" not in text
    assert f"socket = unix://{tmp_path}/charon.vici" in text
    assert f"path = {tmp_path}/charon.log" in text
    assert "fwmark = 0x4242" in text and "install_routes = no" in text
    assert "retransmit_tries = 2" in text and "ike = 4" in text
    assert "retransmit_base" not in text  # unset knobs keep strongSwan's defaults
    assert text.count("{") == text.count("}")


def test_swanctl_conf_renders_connection_child_and_secret() -> None:
    child = Child("net", esp_proposals=("aes128gcm16", "aes256-sha256"), rekey_time=30,
                  rand_time=0, dpd_action="restart")  # fmt: skip
    connection = Connection(
        "peer1", "198.51.100.1", "198.51.100.2", "s3cret psk", (child,), version=1,
        aggressive=True, local_id="@a.example", dpd_delay="5s", rekey_time=60,
    )  # fmt: skip
    text = render_swanctl([connection])
    for line in (
        "version = 1", "aggressive = yes", "dpd_delay = 5s", "rekey_time = 60s",
        "id = @a.example", "id = 198.51.100.2", "esp_proposals = aes128gcm16,aes256-sha256",
        "rekey_time = 30s", "rand_time = 0s", "dpd_action = restart", "ike-peer1 {",
        "id-local = @a.example", "id-remote = 198.51.100.2", 'secret = "s3cret psk"',
    ):  # fmt: skip
        assert line in text, line
    assert "life_time" not in text and "dpd_timeout" not in text
    assert text.count("{") == text.count("}")


def test_values_with_spaces_are_quoted_and_quotes_are_refused() -> None:
    assert quote("C=CH, O=strongSwan") == '"C=CH, O=strongSwan"'
    assert quote("10.0.0.0/8") == "10.0.0.0/8"
    with pytest.raises(ConfigProblem):
        quote('say "hi"')
    with pytest.raises(ConfigProblem):
        render_swanctl([Connection("c", "a", "b", 'p"sk', ())])


def test_duplicate_connection_names_are_refused() -> None:
    connection = Connection("same", "198.51.100.1", "198.51.100.2", "psk", ())
    with pytest.raises(ConfigProblem, match="unique"):
        render_swanctl([connection, connection])
