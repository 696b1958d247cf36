"""The config editor against the fake core: validation, problems, form, preview, apply."""

from __future__ import annotations

import tomllib

from textual.pilot import Pilot
from textual.widgets import Input, OptionList, TextArea

from tests.tui.helpers import AppFactory, settle, shown
from tui.app import ConsoleApp
from tui.fake import FakeSource
from tui.screens.apply_preview import ApplyPreviewScreen
from tui.screens.confirm import ConfirmScreen
from tui.screens.editor import EditorScreen
from tui.screens.peer_form import PeerFormScreen


async def _open_editor(pilot: Pilot[int]) -> EditorScreen:
    await settle(pilot)
    await pilot.press("e")
    app = pilot.app
    screen = app.screen
    assert isinstance(screen, EditorScreen)
    for _ in range(100):
        await pilot.pause(0.02)
        if screen.validated_text is not None and screen.validated_text == screen.area.text:
            break
    return screen


async def _wait_validated(pilot: Pilot[int], screen: EditorScreen) -> None:
    for _ in range(100):
        await pilot.pause(0.05)
        if screen.validated_text == screen.area.text:
            return
    raise AssertionError("the editor never validated its text")


def _applies(fake: FakeSource) -> list[str]:
    return [str(args["text"]) for cmd, args in fake.requests if cmd == "config-apply"]


def _set_text(screen: EditorScreen, text: str) -> None:
    area = screen.area
    area.replace(text, (0, 0), area.document.end)


async def test_the_editor_shows_the_config_of_the_core(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open_editor(pilot)
        assert screen.area.text == fake.text
        assert screen.area.language == "toml"
        assert not screen.problems
        status = shown(screen.query_one("#editor-status"))
        assert "/etc/rbipsec/config.toml" in status and "saved" in status and "✔ valid" in status


async def test_problems_are_listed_with_lines_and_apply_is_refused(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open_editor(pilot)
        broken = fake.text.replace('interface = "ipsec3"', 'interface = "ipsec99"')
        broken = broken.replace('address = "10.0.0.1/30"', 'address = "10.0.0.1/33"')
        _set_text(screen, broken)
        await _wait_validated(pilot, screen)
        lines = sorted(problem.line or 0 for problem in screen.problems)
        numbered = broken.split("\n")
        expected = [numbered.index('address = "10.0.0.1/33"') + 1,
                    numbered.index('interface = "ipsec99"') + 1]  # fmt: skip
        assert lines == expected
        problems = screen.query_one("#problems", OptionList)
        assert problems.option_count == 2 and problems.display
        assert "✖ 2 problems - Apply is blocked" in shown(screen.query_one("#editor-status"))
        await pilot.press("f8")
        assert screen.area.cursor_location[0] + 1 == screen.problems[0].line
        problems.focus()
        problems.highlighted = 0
        await pilot.press("down", "enter")
        assert screen.area.cursor_location == ((screen.problems[1].line or 0) - 1, 0)
        assert screen.area.has_focus
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert not isinstance(app.screen, ApplyPreviewScreen)
        assert _applies(fake) == []
        assert any(n.title == "not applied" for n in app._notifications)


async def test_apply_previews_the_change_and_keeps_comments(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open_editor(pilot)
        edited = fake.text.replace('remote_address = "203.0.113.10"',
                                   'remote_address = "203.0.113.99"')  # fmt: skip
        _set_text(screen, edited)
        await _wait_validated(pilot, screen)
        assert "modified" in shown(screen.query_one("#editor-status"))
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        preview = app.screen
        assert isinstance(preview, ApplyPreviewScreen)
        text = shown(preview.query_one("#preview"))
        assert "~ restarted (1)" in text and "hq: remote_address" in text
        assert "+ added (0)" in text and "- removed (0)" in text
        assert "= left alone (7)" in text
        await pilot.press("y")
        await settle(pilot)
        assert _applies(fake) == [edited]
        assert "# up tunnel" in fake.text and "203.0.113.99" in fake.text
        assert screen.saved_text == edited
        assert "saved" in shown(screen.query_one("#editor-status"))
        assert any(n.title == "config applied" for n in app._notifications)


async def test_cancelled_preview_applies_nothing(make_app: AppFactory, fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = await _open_editor(pilot)
        _set_text(screen, fake.text + "\n# a note\n")
        await _wait_validated(pilot, screen)
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert "Nothing changes for the tunnels" in shown(app.screen.query_one("#preview"))
        await pilot.press("n")
        assert _applies(fake) == []


async def test_add_a_peer_with_the_form(make_app: AppFactory, fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(100, 50)) as pilot:
        screen = await _open_editor(pilot)
        await pilot.press("ctrl+n")
        form = app.screen
        assert isinstance(form, PeerFormScreen)
        assert form.query_one("#field-interface", Input).value == "ipsec8"
        values = {"name": "newsite", "local_address": "198.51.100.1",
                  "remote_address": "203.0.113.77", "psk": "a new secret",
                  "routes": "10.77.0.0/24, 10.78.0.0/24"}  # fmt: skip
        for key, value in values.items():
            form.query_one(f"#field-{key}", Input).value = value
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, EditorScreen)
        text = screen.area.text
        assert text.startswith(fake.text.rstrip("\n"))  # appended; nothing else touched
        added = tomllib.loads(text)["peer"][-1]
        assert added == {
            "name": "newsite", "interface": "ipsec8", "local_address": "198.51.100.1",
            "remote_address": "203.0.113.77", "psk": "a new secret",
            "routes": ["10.77.0.0/24", "10.78.0.0/24"],
        }  # fmt: skip
        await _wait_validated(pilot, screen)
        assert not screen.problems
        await pilot.press("ctrl+s")
        await pilot.pause(0.2)
        assert "newsite" in shown(app.screen.query_one("#preview"))
        await pilot.press("y")
        await settle(pilot)
        assert fake.config.peer("newsite") is not None


async def test_the_form_refuses_a_peer_with_problems(make_app: AppFactory) -> None:
    app = make_app()
    async with app.run_test(size=(100, 50)) as pilot:
        screen = await _open_editor(pilot)
        before = screen.area.text
        await pilot.press("ctrl+n")
        form = app.screen
        assert isinstance(form, PeerFormScreen)
        form.query_one("#field-name", Input).value = "dup"
        form.query_one("#field-interface", Input).value = "ipsec0"  # hq has it
        form.query_one("#field-local_address", Input).value = "198.51.100.1"
        form.query_one("#field-remote_address", Input).value = "203.0.113.5"
        await pilot.click("#save")
        await pilot.pause()
        assert app.screen is form
        assert "ipsec0" in shown(form.query_one("#form-problems"))
        await pilot.press("escape")
        assert isinstance(app.screen, EditorScreen) and screen.area.text == before


async def test_edit_the_peer_under_the_cursor(make_app: AppFactory, fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(100, 50)) as pilot:
        screen = await _open_editor(pilot)
        screen.area.cursor_location = (10, 0)  # inside hq's table
        await pilot.press("f2")
        form = app.screen
        assert isinstance(form, PeerFormScreen) and form.original == "hq"
        assert form.query_one("#field-mtu", Input).value == "1400"
        form.query_one("#field-mtu", Input).value = "1380"
        form.query_one("#field-address", Input).value = ""
        await pilot.press("ctrl+s")
        await pilot.pause()
        text = screen.area.text
        hq_block = text.split("[[peer]]")[1]
        assert "mtu = 1380" in hq_block and "\naddress =" not in hq_block
        assert "# up tunnel" in text and text.count("[[peer]]") == 8
        await pilot.press("ctrl+z")  # the form's edit is one undoable change
        assert screen.area.text == fake.text


async def test_remove_a_peer_from_the_form(make_app: AppFactory, fake: FakeSource) -> None:
    app = make_app(fake)
    async with app.run_test(size=(100, 50)) as pilot:
        screen = await _open_editor(pilot)
        screen.area.cursor_location = (30, 0)  # inside shop-passive's table
        await pilot.press("f2")
        await pilot.click("#remove")
        await pilot.pause()
        assert 'name = "shop-passive"' not in screen.area.text
        assert "# waiting tunnel" not in screen.area.text  # its comment went with it


async def test_revert_asks_then_restores_the_saved_text(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app = make_app(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open_editor(pilot)
        _set_text(screen, "garbage = [")
        await _wait_validated(pilot, screen)
        assert screen.problems[0].message.startswith("syntax error")
        await pilot.press("ctrl+r")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await _wait_validated(pilot, screen)
        assert screen.area.text == fake.text and not screen.problems


async def test_the_draft_survives_leaving_the_editor(
    make_app: AppFactory, fake: FakeSource
) -> None:
    app: ConsoleApp = make_app(fake)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await _open_editor(pilot)
        _set_text(screen, fake.text + "# draft\n")
        await pilot.press("escape")
        assert not isinstance(app.screen, EditorScreen)
        screen = await _open_editor(pilot)
        assert screen.area.text.endswith("# draft\n")
        assert "modified" in shown(screen.query_one("#editor-status"))
        assert isinstance(screen.query_one(TextArea), TextArea)
