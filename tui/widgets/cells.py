"""How one tunnel's values look in a cell: text, symbol and a colour from the theme.

Every colour comes from the current theme's variables through `Palette`; states always
carry a symbol as well, so nothing is told by colour alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.color import Color, ColorParseError

from tui import format as fmt
from tui.model import GLOBAL_OFF, DpdStatus, NatStatus, SaTimers, TunnelStatus
from tui.traffic import Rates

# state: (symbol, label, role); role names a Palette attribute.
STATE_LOOK: dict[str, tuple[str, str, str]] = {
    "up": ("▲", "up", "success"),
    "connecting": ("◐", "connecting", "warning"),
    "waiting": ("◇", "waiting", "accent"),
    "down": ("▼", "down", "muted"),
    "disabled": ("⊘", "disabled", "muted"),
    GLOBAL_OFF: ("⊘", "global off", "muted"),
    "error": ("✖", "error", "error"),
}
BAR_WIDTH = 4
REKEY_SOON = 300.0  # seconds: a lifetime bar turns to warning below this, or below 25 %


@dataclass(frozen=True)
class Palette:
    success: Style
    warning: Style
    error: Style
    accent: Style
    muted: Style
    plain: Style

    @staticmethod
    def from_variables(variables: Mapping[str, str]) -> Palette:
        """Rich styles from the theme's CSS variables; translucent colours (the muted
        foreground) are blended over the background, as the terminal would show them."""
        background = _colour(variables.get("background"), None) or Color(0, 0, 0)

        def style(name: str, fallback: str) -> Style:
            colour = _colour(variables.get(name), None)
            if colour is None:
                return Style.parse(fallback)
            if colour.a < 1.0:
                colour = background.blend(colour.with_alpha(1.0), colour.a)
            return Style(color=colour.rich_color)

        return Palette(
            success=style("success", "green"),
            warning=style("warning", "yellow"),
            error=style("error", "red"),
            accent=style("accent", "magenta"),
            muted=style("foreground-muted", "bright_black"),
            plain=Style(),
        )

    def role(self, name: str) -> Style:
        style: Style = getattr(self, name, self.plain)
        return style


def _colour(value: str | None, default: Color | None) -> Color | None:
    if not value:
        return default
    try:
        return Color.parse(value)
    except ColorParseError:
        return default


def state_cell(tunnel: TunnelStatus, palette: Palette) -> Text:
    symbol, label, role = STATE_LOOK.get(tunnel.state, ("?", tunnel.state, "muted"))
    return Text(f"{symbol} {label}", style=palette.role(role), no_wrap=True)


def lifetime_role(timers: SaTimers) -> str:
    left = timers.next_event_in
    fraction = timers.fraction_left
    if left is None or fraction is None:
        return "muted"
    if left <= 60 or fraction < 0.1:
        return "error"
    if left <= REKEY_SOON or fraction < 0.25:
        return "warning"
    return "success"


def lifetime_cell(timers: SaTimers | None, palette: Palette, width: int = BAR_WIDTH) -> Text:
    """A countdown bar to the next rekey (or expiry) plus the time left, e.g. "███▌· 2h05m"."""
    if timers is None or timers.next_event_in is None:
        return Text("-", style=palette.muted)
    style = palette.role(lifetime_role(timers))
    text = Text(no_wrap=True)
    text.append(fmt.bar(timers.fraction_left, width), style=style)
    text.append(" " + fmt.duration(max(0.0, timers.next_event_in)), style=style)
    return text


def dpd_cell(dpd: DpdStatus, palette: Palette) -> Text:
    if dpd.state == "ok":
        heard = fmt.duration(dpd.last_heard_ago) if dpd.last_heard_ago is not None else "-"
        return Text(f"✔ ok {heard}", style=palette.success, no_wrap=True)
    if dpd.state == "probing":
        return Text(
            f"? probing {dpd.probes_outstanding}/{dpd.retries}", style=palette.warning,
            no_wrap=True,
        )  # fmt: skip
    if dpd.state == "dead":
        return Text("✖ dead", style=palette.error, no_wrap=True)
    return Text(f"· {dpd.state}", style=palette.muted, no_wrap=True)


def nat_label(nat: NatStatus) -> str:
    if nat.forced:
        return "forced"
    if nat.in_use:
        where = "us" if nat.local_behind_nat else "peer" if nat.remote_behind_nat else "?"
        return f"NAT({where})"
    if nat.configured == "force":
        return "force"
    return "-" if nat.configured == "auto" else "off"


def remote_label(tunnel: TunnelStatus) -> str:
    return str(tunnel.remote) if tunnel.remote is not None else "-"


def traffic_cell(total: int, packets: int, per_second: float | None) -> str:
    return f"{fmt.size(total)} {fmt.si(packets)}p {fmt.rate(per_second)}"


def traffic_cells(tunnel: TunnelStatus, rates: Rates | None) -> tuple[str, str]:
    traffic = tunnel.traffic
    return (
        traffic_cell(traffic.bytes_in, traffic.packets_in, rates.bytes_in if rates else None),
        traffic_cell(traffic.bytes_out, traffic.packets_out, rates.bytes_out if rates else None),
    )
