"""Drives the console with the real core embedded, inside the lab's hub namespace.

Run by test_tui_embedded_core.py as `ip netns exec HUB python embedded_pilot.py HUB.TOML
STATE.JSON`; prints one JSON object with what it saw (or the step that failed) and exits
0 or 1.  Every screen and action is exercised on real tunnels with the userspace dataplane.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from textual.pilot import Pilot  # noqa: E402

from core.config import load, set_peer_value  # noqa: E402
from tui.app import ConsoleApp  # noqa: E402
from tui.embedded import EmbeddedSource  # noqa: E402
from tui.screens.apply_preview import ApplyPreviewScreen  # noqa: E402
from tui.screens.confirm import ConfirmScreen  # noqa: E402
from tui.screens.detail import DetailScreen  # noqa: E402
from tui.screens.editor import EditorScreen  # noqa: E402
from tui.screens.events import EventLogScreen  # noqa: E402
from tui.screens.help import HelpScreen  # noqa: E402
from tui.widgets.keyed_table import KeyedTable  # noqa: E402
from tui.widgets.tunnel_table import TunnelTable  # noqa: E402

NAMES = ("branch", "hq", "kiosk", "shop")


class StepFailed(Exception):
    pass


async def until(pilot: Pilot[int], check: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise StepFailed(f"{what}: not within {timeout} s")
        await pilot.pause(0.1)
    return round(time.monotonic() - start, 2)


def states(app: ConsoleApp) -> dict[str, str]:
    snapshot = app.snapshot
    return {t.name: t.state for t in snapshot.tunnels} if snapshot else {}


def tunnel(app: ConsoleApp, name: str) -> Any:
    assert app.snapshot is not None
    return app.snapshot.tunnel(name)


async def scenario(app: ConsoleApp, pilot: Pilot[int], seen: dict[str, Any]) -> None:
    seen["step"] = "all up"
    seen["all_up_after"] = await until(
        pilot, lambda: set(states(app).values()) == {"up"} and len(states(app)) == 4, 45,
        "every tunnel up",
    )  # fmt: skip
    table = app.screen.query_one(TunnelTable)
    seen["rows"] = sorted(table.row_keys)
    seen["nat"] = tunnel(app, "shop").nat.remote_behind_nat
    seen["shop_remote_port"] = tunnel(app, "shop").remote.port
    seen["branch_ike"] = tunnel(app, "branch").ike_label

    seen["step"] = "detail"
    app.show_details("hq")
    await pilot.pause(0.3)
    detail = app.screen
    assert isinstance(detail, DetailScreen)
    children = detail.query_one("#children", KeyedTable)
    await until(pilot, lambda: children.row_count >= 1, 10, "a Child SA row")
    first_spi = tunnel(app, "hq").child_sas[0].spi_in
    await until(pilot, lambda: (app.meter.rates("hq") or _zero()).bytes_in > 0, 15, "traffic")
    seen["hq_rate_in"] = app.meter.rates("hq").bytes_in  # type: ignore[union-attr]

    seen["step"] = "rekey"
    await pilot.press("r")
    seen["rekey_after"] = await until(
        pilot, lambda: first_spi not in [c.spi_in for c in tunnel(app, "hq").child_sas], 20,
        "a new Child SA after rekey",
    )  # fmt: skip
    seen["hq_state_after_rekey"] = tunnel(app, "hq").state

    seen["step"] = "down and up"
    await pilot.press("d")
    assert isinstance(app.screen, ConfirmScreen)
    await pilot.press("y")
    await until(pilot, lambda: states(app)["hq"] == "down", 15, "hq down")
    seen["hq_link_when_down"] = tunnel(app, "hq").link_up
    await pilot.press("u")
    seen["up_again_after"] = await until(pilot, lambda: states(app)["hq"] == "up", 20, "hq up")
    await pilot.press("escape")

    seen["step"] = "reset"
    ike_spi = tunnel(app, "branch").ike_sa.spi_i
    table.move_cursor(row=table.get_row_index("branch"))
    await pilot.press("x", "y")
    await until(
        pilot,
        lambda: states(app)["branch"] == "up" and tunnel(app, "branch").ike_sa.spi_i != ike_spi,
        25, "branch renegotiated",
    )  # fmt: skip

    seen["step"] = "editor"
    await pilot.press("e")
    editor = app.screen
    assert isinstance(editor, EditorScreen)
    await until(pilot, lambda: editor.validated_text == editor.area.text, 10, "validated")
    edited = set_peer_value(editor.area.text, "kiosk", "mtu", 1380)
    editor.area.replace(edited, (0, 0), editor.area.document.end)
    await until(pilot, lambda: editor.validated_text == edited, 10, "edit validated")
    await pilot.press("ctrl+s")
    await until(pilot, lambda: isinstance(app.screen, ApplyPreviewScreen), 10, "preview")
    seen["preview_restarted"] = [name for name, _keys in app.screen.change.restarted]  # type: ignore[attr-defined]
    await pilot.press("y")
    await until(pilot, lambda: editor.saved_text == edited, 15, "applied")
    await pilot.press("escape")
    await pilot.pause(2.0)
    seen["kiosk_after_apply"] = states(app)["kiosk"]

    seen["step"] = "event log and help"
    await pilot.press("l")
    log = app.screen
    assert isinstance(log, EventLogScreen)
    seen["events_shown"] = log.shown
    seen["event_types"] = sorted({record.type for record in app.events})
    await pilot.press("escape", "question_mark")
    seen["help"] = isinstance(app.screen, HelpScreen)
    await pilot.press("escape")
    seen["step"] = "done"


def _zero() -> Any:
    from tui.traffic import Rates

    return Rates()


async def main(hub: str, state: str) -> int:
    seen: dict[str, Any] = {}
    app = ConsoleApp(EmbeddedSource(load(hub)), state_path=Path(state))
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            await scenario(app, pilot, seen)
    except (StepFailed, AssertionError) as error:
        seen["error"] = f"{type(error).__name__}: {error}"
        seen["states"] = states(app)
    seen["notifications"] = [f"{n.title}: {n.message}" for n in app._notifications][-10:]
    print(json.dumps(seen))
    return 0 if "error" not in seen else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
