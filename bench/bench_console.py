"""The console's cost with 64 live tunnels: run `python -m bench.bench_console`.

The console runs in a child process on a pseudo-terminal (as in a real terminal: every
frame is written out and drained), fed by the fake core with 64 tunnels whose counters,
rates, uptimes and countdowns change every second.  Measured:

- time to the first full frame: from spawning the process (imports included) until all
  64 rows are on screen; goal < 1 s;
- CPU % of one core over ~20 s of one refresh a second; goal < 5 %.

The peer in the same run is the same dashboard on Textual's DataTable, also updated cell by
cell (update_cell on changed cells only); DataTable re-renders every visible cell when any
cell changes, which is why the console has its own grid (tui/widgets/grid.py).
Options: --seconds N, --child (internal).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS = 64
SIZE = (200, 80)  # columns, rows: every row visible


def run_child(spawned_at: float, seconds: float, rebuild: bool, out: str) -> None:
    sys.path.insert(0, str(REPO))
    from tui.app import ConsoleApp
    from tui.fake import FakeSource

    if rebuild:
        _use_datatable_peer()

    result: dict[str, float] = {}

    class BenchApp(ConsoleApp):
        def _mark_first_frame(self) -> None:
            super()._mark_first_frame()
            table = self.screen.query_one("#tunnels")
            result["first_frame"] = time.time() - spawned_at
            result["rows"] = getattr(table, "row_count", 0)
            self.set_timer(1.0, self._start_measuring)

        def _start_measuring(self) -> None:
            result["cpu_start"] = time.process_time()
            result["wall_start"] = time.monotonic()
            result["polls_start"] = self.polls
            self.set_timer(seconds, self._stop)

        def _stop(self) -> None:
            result["cpu"] = time.process_time() - result["cpu_start"]
            result["wall"] = time.monotonic() - result["wall_start"]
            result["polls"] = self.polls - result["polls_start"]
            result["cell_updates"] = getattr(self.screen.query_one("#tunnels"), "updates", 0)
            self.exit(0)

    state = Path(out).with_suffix(".state.json")
    BenchApp(FakeSource(PEERS, live=True, all_up=True), state_path=state).run()
    Path(out).write_text(json.dumps(result))


def _use_datatable_peer() -> None:
    """The peer: the same dashboard on Textual's DataTable, also updated cell by cell
    (update_cell on changed cells only), which re-renders every visible cell per change."""
    from rich.text import Text
    from textual.widgets import DataTable

    from tui.model import Snapshot
    from tui.screens import dashboard
    from tui.traffic import TrafficMeter
    from tui.widgets.cells import Palette
    from tui.widgets.grid import signature
    from tui.widgets.tunnel_table import COLUMNS, row_cells

    class DataTablePeer(DataTable[Text | str]):
        def __init__(self, *, id: str | None = None) -> None:
            super().__init__(id=id, cursor_type="row", zebra_stripes=True)
            self.sort_key, self.sort_reverse, self.filter_text = "name", False, ""
            self.shown: dict[tuple[str, str], object] = {}
            self.updates = 0

        def on_mount(self) -> None:
            for column in COLUMNS:
                self.add_column(column.label, width=column.width, key=column.key)

        @property
        def selected_peer(self) -> str | None:
            return None

        def forget_cells(self) -> None:
            self.shown.clear()

        def show(self, snapshot: Snapshot, meter: TrafficMeter, palette: Palette) -> None:
            for tunnel in sorted(snapshot.tunnels, key=lambda t: t.name):
                cells = row_cells(tunnel, meter.rates(tunnel.name), palette)
                if (tunnel.name, "name") not in self.shown:
                    self.add_row(*(cells[c.key] for c in COLUMNS), key=tunnel.name)
                for key, cell in cells.items():
                    mark = signature(cell)
                    if self.shown.get((tunnel.name, key)) != mark:
                        if (tunnel.name, key) in self.shown:
                            self.update_cell(tunnel.name, key, cell)
                            self.updates += 1
                        self.shown[(tunnel.name, key)] = mark

    setattr(dashboard, "TunnelTable", DataTablePeer)  # noqa: B010 (a deliberate swap)


def measure(seconds: float, rebuild: bool) -> dict[str, float]:
    """Runs the child on a pty of SIZE, draining its output like a terminal would."""
    with tempfile.TemporaryDirectory(prefix="rbbench-console-") as workdir:
        out = str(Path(workdir) / "result.json")
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
        command = [
            sys.executable,
            "-m",
            "bench.bench_console",
            "--child",
            str(time.time()),
            "--seconds",
            str(seconds),
            "--out",
            out,
        ] + (["--rebuild"] if rebuild else [])
        env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor",
                   XDG_STATE_HOME=workdir)  # fmt: skip
        env.pop("COLUMNS", None)
        env.pop("LINES", None)
        child = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, cwd=REPO,
                                 env=env, start_new_session=True)  # fmt: skip
        os.close(slave)
        written = 0
        deadline = time.monotonic() + seconds + 60
        while child.poll() is None and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    written += len(os.read(master, 1 << 16))
                except OSError:
                    break
        if child.poll() is None:
            child.kill()
        child.wait()
        os.close(master)
        if not Path(out).exists():
            raise SystemExit(f"the console child did not report (exit {child.returncode})")
        result: dict[str, float] = json.loads(Path(out).read_text())
        result["terminal_bytes"] = written
        return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--child", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rebuild", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        run_child(args.child, args.seconds, args.rebuild, args.out)
        return
    print(f"console with {PEERS} live tunnels (fake core, 1 refresh/s), "
          f"{SIZE[0]}x{SIZE[1]} pty, {args.seconds:.0f} s per run")  # fmt: skip
    rows = []
    for label, rebuild in (("grid (rbipsec)", False), ("Textual DataTable", True)):
        result = measure(args.seconds, rebuild)
        cpu = 100.0 * result["cpu"] / result["wall"]
        rows.append((label, result, cpu))
        print(f"  {label:<24} first full frame {result['first_frame']:.2f} s "
              f"({result['rows']:.0f} rows), CPU {cpu:.2f} % of one core, "
              f"{result['polls']:.0f} refreshes, {result['terminal_bytes'] / 1e3:.0f} kB "
              "to the terminal")  # fmt: skip
    ours, peer = rows[0][2], rows[1][2]
    print(f"  ratio CPU grid / DataTable: {ours / peer:.2f}" if peer else "")
    first = rows[0][1]["first_frame"]
    print(f"  goals: first frame < 1 s: {'met' if first < 1.0 else 'MISSED'} ({first:.2f} s); "
          f"CPU < 5 %: {'met' if ours < 5.0 else 'MISSED'} ({ours:.2f} %)")  # fmt: skip


if __name__ == "__main__":
    main()
