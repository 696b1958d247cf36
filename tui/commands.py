"""Command palette entries (ctrl+p): every action on every tunnel, and its detail screen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING

from textual.command import DiscoveryHit, Hit, Hits, Provider

if TYPE_CHECKING:
    from tui.app import ConsoleApp

# action: (palette title, help)
PALETTE_ACTIONS = (
    ("details", "Details", "IKE SA, Child SAs, DPD and events"),
    ("up", "Up", "initiate the tunnel"),
    ("down", "Down", "delete its SAs and keep it down (asks first)"),
    ("rekey", "Rekey", "rekey its Child SAs now"),
    ("rekey-ike", "Rekey IKE SA", "rekey its IKE SA now"),
    ("reset", "Reset", "delete and renegotiate (asks first)"),
)


class TunnelCommands(Provider):
    def _entries(self) -> Iterator[tuple[str, str, Callable[[], None]]]:
        app: ConsoleApp = self.app  # type: ignore[assignment]
        snapshot = app.snapshot
        if snapshot is None:
            return
        selected = getattr(app.screen, "selected_peer", None)
        names = [tunnel.name for tunnel in snapshot.tunnels]
        if isinstance(selected, str) and selected in names:
            names.remove(selected)
            names.insert(0, selected)
        for name in names:
            for action, title, help_text in PALETTE_ACTIONS:
                if action == "details":
                    run: Callable[[], None] = partial(app.show_details, name)
                else:
                    run = partial(app.tunnel_action, action, name)
                yield f"{title}: {name}", help_text, run

    async def discover(self) -> Hits:
        for index, (text, help_text, run) in enumerate(self._entries()):
            if index >= len(PALETTE_ACTIONS):  # the selected (or first) tunnel only
                return
            yield DiscoveryHit(text, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, help_text, run in self._entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), run, text=text, help=help_text)
