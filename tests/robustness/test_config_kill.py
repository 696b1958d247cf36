"""Config edits are never lossy: a writer killed (SIGKILL) at any point of `save_text`
leaves the file with either the old or the new text, never a mix or a truncation.

A forked child saves two valid configs in turn as fast as it can; the parent kills it
after a random delay, checks the file, and starts the next child.  Readers running meanwhile
must never see anything else either.  RBIPSEC_KILLS sets the number of kills (default 150).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

from core.config.save import save_text

KILLS = int(os.environ.get("RBIPSEC_KILLS", "150"))
HEAD = """[global]
enabled = true
socket = "/run/rbipsec-test/control.sock"

[[peer]]
name = "b1"
interface = "ipsec1"
local_address = "198.51.100.1"
remote_address = "198.51.100.2"
psk = "config kill test"
"""
OLD = HEAD + "mtu = 1400\n" + "# old comment line, kept by every edit\n" * 2000
NEW = HEAD + "mtu = 1300\n" + "# new comment\n" * 2500  # another size: a mix would show


def _writer(path: Path, first: str) -> None:  # pragma: no cover - the forked child
    second = OLD if first == NEW else NEW
    try:
        while True:
            save_text(path, first)
            save_text(path, second)
    finally:
        os._exit(1)


def _temp_files(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_a_killed_writer_leaves_the_old_or_the_new_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save_text(path, OLD)
    seen: dict[str, int] = {"old": 0, "new": 0}
    bad: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            text = path.read_text()
            if text not in (OLD, NEW):
                bad.append(f"a reader saw {len(text)} characters")

    readers = [threading.Thread(target=reader) for _ in range(2)]
    for thread in readers:
        thread.start()
    rng = random.Random(11)
    try:
        for _ in range(KILLS):
            first = rng.choice((OLD, NEW))
            child = os.fork()
            if child == 0:  # pragma: no cover
                _writer(path, first)
            time.sleep(rng.uniform(0.0, 0.04))
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            text = path.read_text()
            if text == OLD:
                seen["old"] += 1
            elif text == NEW:
                seen["new"] += 1
            else:
                bad.append(f"after a kill the file has {len(text)} characters")
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    print(
        f"kills {KILLS}: old {seen['old']}, new {seen['new']}, "
        f"temporary files left {len(_temp_files(tmp_path))}"
    )
    assert not bad, bad[:5]
    # The kills landed on both sides of the rename (the test can tell the two apart).
    assert seen["old"] > KILLS // 10 and seen["new"] > KILLS // 10, seen
    assert os.stat(path).st_mode & 0o777 == 0o600


def _kill_before_rename(path: Path) -> None:  # pragma: no cover - forked child
    """Save, dying by SIGKILL just before the rename (the worst moment)."""
    real_replace = os.replace

    def replace_then_die(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        os.kill(os.getpid(), signal.SIGKILL)
        real_replace(source, target)

    os.replace = replace_then_die  # type: ignore[assignment]
    try:
        save_text(path, NEW)
    finally:
        os._exit(1)


def test_a_writer_killed_before_the_rename_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save_text(path, OLD)
    child = os.fork()
    if child == 0:  # pragma: no cover
        _kill_before_rename(path)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert path.read_text() == OLD
    (leftover,) = _temp_files(tmp_path)  # the dead writer's temporary file, complete
    assert leftover.read_text() == NEW


def test_temporary_files_of_killed_writers_do_not_pile_up(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    save_text(path, OLD)
    for _ in range(3):
        child = os.fork()
        if child == 0:  # pragma: no cover
            _kill_before_rename(path)
        os.waitpid(child, 0)
    save_text(path, OLD)  # the next good save
    assert _temp_files(tmp_path) == []
