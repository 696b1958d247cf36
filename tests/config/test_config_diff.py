"""diff(old, new): peers added, removed, changed (with their keys) and unchanged."""

from __future__ import annotations

from pathlib import Path

from core.config import diff, load_text, set_global_value, set_peer_value
from core.config.save import add_peer, remove_peer

BASE = """\
[global]
enabled = true

[[peer]]
name = "a"
interface = "ipsec1"
local_address = "198.51.100.1"
remote_address = "203.0.113.1"
psk = "sa"

[[peer]]
name = "b"
interface = "ipsec2"
local_address = "198.51.100.1"
remote_address = "203.0.113.2"
psk = "sb"

[[peer]]
name = "c"
interface = "ipsec3"
local_address = "198.51.100.1"
remote_address = "203.0.113.3"
psk = "sc"
"""


def test_identical_configs_have_an_empty_diff() -> None:
    result = diff(load_text(BASE), load_text(BASE))
    assert result.is_empty and not result.global_changed
    assert result.unchanged == ("a", "b", "c")
    assert result.added == result.removed == ()
    assert result.changed == ()


def test_added_removed_changed_and_unchanged_at_once() -> None:
    text = remove_peer(BASE, "b")
    text = set_peer_value(text, "c", "mtu", 1300)
    text = set_peer_value(text, "c", "routes", ["10.3.0.0/24"])
    text = add_peer(
        text,
        {
            "name": "d",
            "interface": "ipsec4",
            "local_address": "198.51.100.1",
            "remote_address": "203.0.113.4",
            "psk": "sd",
        },
    )
    old, new = load_text(BASE), load_text(text)
    result = diff(old, new)
    assert result.added == ("d",)
    assert result.removed == ("b",)
    assert result.unchanged == ("a",)
    (change,) = result.changed
    assert (change.name, change.keys) == ("c", ("mtu", "routes"))
    assert change.old is old.peers[2] and change.new is new.peers[1]
    assert result.change("c") is change and result.change("a") is None
    assert not result.global_changed and not result.is_empty


def test_a_changed_psk_and_a_renamed_interface_count_as_changes() -> None:
    text = set_peer_value(BASE, "a", "psk", "new-secret")
    text = set_peer_value(text, "b", "interface", "ipsec9")
    result = diff(load_text(BASE), load_text(text))
    assert [(change.name, change.keys) for change in result.changed] == [
        ("a", ("psk",)),
        ("b", ("interface",)),
    ]
    assert result.unchanged == ("c",)


def test_psk_file_content_change_is_a_change(tmp_path: Path) -> None:
    secret = tmp_path / "a.psk"
    secret.write_text("one")
    secret.chmod(0o600)
    text = set_peer_value(BASE, "a", "psk_file", "a.psk").replace('psk = "sa"\n', "")
    old = load_text(text, str(tmp_path / "config.toml"))
    secret.write_text("two")
    new = load_text(text, str(tmp_path / "config.toml"))
    assert diff(old, new).change("a") is not None
    assert diff(old, new).change("a").keys == ("psk",)  # type: ignore[union-attr]


def test_global_changes_are_listed_by_key() -> None:
    text = set_global_value(BASE, "log_level", "debug")
    text = set_global_value(text, "enabled", False)
    result = diff(load_text(BASE), load_text(text))
    assert result.global_changed and result.global_keys == ("enabled", "log_level")
    assert result.unchanged == ("a", "b", "c") and not result.changed
