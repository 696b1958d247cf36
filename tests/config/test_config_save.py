"""Saving: edits keep comments and unknown keys; invalid text is never written; writes are
atomic."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from core.config import (
    add_peer,
    atomic_write_text,
    edit_file,
    load_text,
    peer_values,
    remove_peer,
    remove_peer_value,
    save_text,
    set_global_value,
    set_peer_value,
)
from core.errors import ConfigError, UsageError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.toml"

TEXT = """\
# rbipsec test config
[global]
enabled = false   # keep off

# Peers section (a blank line keeps this with nobody).

# first peer
[[peer]]
name = "b1"   # branch one
interface = "ipsec1"
local_address = "198.51.100.1"
remote_address = "203.0.113.2"
psk = "s1"
mtu = 1400  # the mtu comment
x_operator_note = "kept"   # unknown key
# passive = true

# second peer, attached to its header
[[peer]]
name = "b2"
interface = "ipsec2"
local_address = "198.51.100.1"
remote_address = "203.0.113.3"
psk = "s2"
routes = [
  "10.2.0.0/24",  # first
]

# trailing comment
"""


def without(text: str, *fragments: str) -> str:
    for fragment in fragments:
        assert fragment in text
        text = text.replace(fragment, "", 1)
    return text


def test_setting_an_existing_value_changes_only_that_value() -> None:
    edited = set_peer_value(TEXT, "b1", "mtu", 1380)
    assert edited == TEXT.replace("mtu = 1400  # the mtu comment", "mtu = 1380  # the mtu comment")


def test_setting_a_multi_line_value_replaces_all_its_lines() -> None:
    edited = set_peer_value(TEXT, "b2", "routes", ["10.2.0.0/24", "10.3.0.0/24"])
    assert 'routes = ["10.2.0.0/24", "10.3.0.0/24"]\n\n# trailing comment\n' in edited
    assert tomllib.loads(edited)["peer"][1]["routes"] == ["10.2.0.0/24", "10.3.0.0/24"]


def test_a_new_key_goes_after_the_peers_last_key() -> None:
    edited = set_peer_value(TEXT, "b1", "passive", True)
    assert edited == TEXT.replace(
        '"kept"   # unknown key\n', '"kept"   # unknown key\npassive = true\n'
    )
    edited = set_peer_value(TEXT, "b2", "mtu", 1300)
    assert edited == TEXT.replace(
        '  "10.2.0.0/24",  # first\n]\n', '  "10.2.0.0/24",  # first\n]\nmtu = 1300\n'
    )


def test_removing_a_key_removes_its_lines_only() -> None:
    assert remove_peer_value(TEXT, "b1", "mtu") == without(TEXT, "mtu = 1400  # the mtu comment\n")
    assert remove_peer_value(TEXT, "b2", "routes") == without(
        TEXT, 'routes = [\n  "10.2.0.0/24",  # first\n]\n'
    )
    assert remove_peer_value(TEXT, "b1", "absent") == TEXT


def test_removing_a_peer_keeps_the_others_comments() -> None:
    first_removed = remove_peer(TEXT, "b1")
    assert first_removed == without(
        TEXT,
        '# first peer\n[[peer]]\nname = "b1"   # branch one\ninterface = "ipsec1"\n'
        'local_address = "198.51.100.1"\nremote_address = "203.0.113.2"\npsk = "s1"\n'
        'mtu = 1400  # the mtu comment\nx_operator_note = "kept"   # unknown key\n'
        "# passive = true\n\n",
    )
    last_removed = remove_peer(TEXT, "b2")
    assert last_removed.endswith('x_operator_note = "kept"   # unknown key\n# passive = true\n')
    assert "# Peers section" in last_removed and "b2" not in last_removed


def test_adding_a_peer_appends_a_rendered_table() -> None:
    values = {
        "name": "b3",
        "interface": "ipsec3",
        "local_address": "198.51.100.1",
        "remote_address": "203.0.113.4",
        "psk": "s3",
        "routes": ["10.3.0.0/24"],
    }
    edited = add_peer(TEXT, values)
    assert edited.startswith(TEXT.removesuffix("\n# trailing comment\n"))
    config = load_text(without(edited, 'x_operator_note = "kept"   # unknown key\n'))
    assert config.peer_names == ("b1", "b2", "b3")
    assert [str(route) for route in config.peers[2].routes] == ["10.3.0.0/24"]
    assert "# trailing comment" in edited and "# the mtu comment" in edited


def test_adding_a_peer_before_a_later_table() -> None:
    text = '[[peer]]\nname = "a"\n\n# global at the end\n[global]\nenabled = true\n'
    edited = add_peer(text, {"name": "b"})
    assert edited == (
        '[[peer]]\nname = "a"\n\n[[peer]]\nname = "b"\n\n# global at the end\n'
        "[global]\nenabled = true\n"
    )
    assert add_peer("", {"name": "a"}) == '[[peer]]\nname = "a"\n'


def test_global_values() -> None:
    assert set_global_value(TEXT, "enabled", True) == TEXT.replace(
        "enabled = false   # keep", "enabled = true   # keep"
    )
    created = set_global_value('# top\n\n# peer comment\n[[peer]]\nname = "a"\n', "enabled", True)
    assert created == '# top\n\n[global]\nenabled = true\n\n# peer comment\n[[peer]]\nname = "a"\n'


def test_peer_values_round_trip_through_add_peer() -> None:
    config = load_text(REPO_CONFIG.read_text(), str(REPO_CONFIG))
    for peer in config.peers:
        text = add_peer("", peer_values(peer))
        assert load_text(text).peers[0] == peer
        full = add_peer("", peer_values(peer, with_defaults=True))
        assert load_text(full).peers[0] == peer


def test_unknown_peer_and_bad_text_are_refused() -> None:
    with pytest.raises(UsageError, match='no peer named "nope"'):
        set_peer_value(TEXT, "nope", "mtu", 1)
    with pytest.raises(ConfigError):
        set_peer_value("[[peer]\n", "b1", "mtu", 1)
    with pytest.raises(UsageError, match="must be written as"):
        remove_peer('peer = [{name = "a"}]\n', "a")


def test_edits_of_the_shipped_config_keep_every_comment(tmp_path: Path) -> None:
    original = REPO_CONFIG.read_text()
    target = tmp_path / "config.toml"
    target.write_text(original)
    edit_file(target, lambda text: set_peer_value(text, "branch1", "mtu", 1380))
    edit_file(target, lambda text: set_peer_value(text, "shop7", "dpd_interval", 30))
    edited = target.read_text()
    comments = [line for line in original.splitlines() if line.lstrip().startswith("#")]
    assert comments == [line for line in edited.splitlines() if line.lstrip().startswith("#")]
    assert edited.count("\n") == original.count("\n") + 1  # only the new dpd_interval line


def test_an_invalid_edit_is_refused_and_the_file_untouched(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    target.write_text(REPO_CONFIG.read_text())
    before = target.read_bytes()
    with pytest.raises(ConfigError) as raised:
        edit_file(target, lambda text: set_peer_value(text, "branch1", "interface", "ipsec7"))
    line = before.decode().splitlines().index('interface = "ipsec7"') + 1
    assert raised.value.problems == [
        f'{target}:{line}: peer[1].interface: "ipsec7" is already used by peer "branch1"'
    ]
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["config.toml"]


def test_atomic_write_keeps_the_mode_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "config.toml"
    target.write_text("old\n")
    target.chmod(0o640)
    atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["config.toml"]
    fresh = tmp_path / "fresh.toml"
    atomic_write_text(fresh, "x = 1\n")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600


def test_atomic_write_renames_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "config.toml"
    target.write_text("old\n")
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def recording_replace(source: str, destination: str) -> None:
        renames.append((os.fspath(source), os.fspath(destination)))
        assert Path(source).read_text() == "new\n" and target.read_text() == "old\n"
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", recording_replace)
    atomic_write_text(target, "new\n")
    ((source, destination),) = renames
    assert Path(source).parent == tmp_path and Path(source).name.startswith(".config.toml.")
    assert destination == str(target)


def test_a_failure_mid_write_keeps_the_original(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "config.toml"
    target.write_text("old\n")

    def failing_fsync(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["config.toml"]


def test_save_text_follows_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.toml"
    real.write_text("[global]\n")
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    save_text(link, "[global]\nenabled = true\n")
    assert link.is_symlink() and real.read_text() == "[global]\nenabled = true\n"
