"""Small bars every screen shows: the link to the core, and the tunnel summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from tui.messages import Link
from tui.model import GLOBAL_OFF, Snapshot
from tui.widgets.cells import STATE_LOOK, Palette

if TYPE_CHECKING:
    from tui.app import ConsoleApp


class LinkBanner(Static):
    """Hidden while the core answers; otherwise says plainly what is wrong and when the
    console tries again."""

    DEFAULT_CSS = """
    LinkBanner {
        display: none;
        height: auto;
        padding: 0 1;
        background: $error;
        color: $text;
        text-style: bold;
    }
    LinkBanner.-lost {
        display: block;
    }
    """

    def on_mount(self) -> None:
        app: ConsoleApp = self.app  # type: ignore[assignment]
        app.link_signal.subscribe(self, self.show_link)
        self.show_link(app.link)

    def show_link(self, link: Link) -> None:
        app: ConsoleApp = self.app  # type: ignore[assignment]
        lost = not link.connected and (link.attempts > 0 or app.polls > 0)
        self.set_class(lost, "-lost")
        if not lost:
            return
        retry = f" - retrying in {link.retry_in:.0f} s" if link.retry_in else ""
        tries = f" (attempt {link.attempts})" if link.attempts > 1 else ""
        shown = " - showing the last known state" if app.snapshot is not None else ""
        self.update(f"✖ No connection to the {app.source.description}: {link.message}"
                    f"{retry}{tries}{shown}")  # fmt: skip


def summary_text(snapshot: Snapshot | None, palette: Palette, source: str) -> Text:
    text = Text(no_wrap=False)
    text.append("rbipsec", style="bold")
    text.append(f" · {source} · ")
    if snapshot is None:
        text.append("waiting for the first status ...", style=palette.muted)
        return text
    up = snapshot.count("up")
    total = len(snapshot.tunnels)
    text.append(f"▲ {up} up  ", style=palette.success if up else palette.muted)
    text.append(f"▼ {total - up} down", style=palette.warning if total - up else palette.muted)
    parts = []
    for state in ("connecting", "waiting", "down", "error", "disabled", GLOBAL_OFF):
        count = snapshot.count(state)
        if count:
            parts.append(f"{count} {STATE_LOOK[state][1]}")
    if parts:
        text.append(f" ({', '.join(parts)})", style=palette.muted)
    text.append("  ")
    text.append(f"{total}/{snapshot.capacity} peers", style="bold")
    if not snapshot.enabled:
        text.append("  route-based IPsec is OFF ([global] enabled = false)",
                    style=palette.warning)  # fmt: skip
    return text


class SummaryBar(Static):
    DEFAULT_CSS = """
    SummaryBar {
        height: auto;
        padding: 0 1;
        background: $panel;
    }
    """
