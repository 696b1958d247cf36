"""What changed between two configs: reload uses it to leave unchanged tunnels untouched."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from core.config.schema import Config, GlobalSettings, PeerConfig


@dataclass(frozen=True)
class PeerChange:
    name: str
    keys: tuple[str, ...]  # the PeerConfig fields that differ, in field order
    old: PeerConfig
    new: PeerConfig


@dataclass(frozen=True)
class ConfigDiff:
    """Peers matched by name; every tuple is in the order of the new (or, for removed, old)
    config.  `global_keys` lists the [global] settings that differ."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[PeerChange, ...]
    unchanged: tuple[str, ...]
    global_keys: tuple[str, ...]

    @property
    def global_changed(self) -> bool:
        return bool(self.global_keys)

    @property
    def is_empty(self) -> bool:
        return not (self.added or self.removed or self.changed or self.global_keys)

    def change(self, name: str) -> PeerChange | None:
        for change in self.changed:
            if change.name == name:
                return change
        return None


def diff(old: Config, new: Config) -> ConfigDiff:
    old_peers = {peer.name: peer for peer in old.peers}
    new_names = {peer.name for peer in new.peers}
    added: list[str] = []
    changed: list[PeerChange] = []
    unchanged: list[str] = []
    for peer in new.peers:
        before = old_peers.get(peer.name)
        if before is None:
            added.append(peer.name)
            continue
        keys = _changed_fields(before, peer)
        if keys:
            changed.append(PeerChange(peer.name, keys, before, peer))
        else:
            unchanged.append(peer.name)
    removed = tuple(peer.name for peer in old.peers if peer.name not in new_names)
    return ConfigDiff(
        added=tuple(added),
        removed=removed,
        changed=tuple(changed),
        unchanged=tuple(unchanged),
        global_keys=_changed_fields(old.global_, new.global_),
    )


def _changed_fields(
    old: PeerConfig | GlobalSettings, new: PeerConfig | GlobalSettings
) -> tuple[str, ...]:
    return tuple(
        field.name
        for field in dataclasses.fields(old)
        if getattr(old, field.name) != getattr(new, field.name)
    )
