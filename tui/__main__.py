"""`python -m tui`: the console without the rest of the CLI (and a fake core for trying it).

python -m tui -c config.toml      the core embedded (as `rbipsec console -c`)
python -m tui --connect SOCKET    attach to a running daemon
python -m tui --demo              the namespace lab (root)
python -m tui --fake [N]          N made-up tunnels, no root, nothing touched
"""

from __future__ import annotations

import argparse
import sys

from core.errors import ConfigError, UsageError
from tui.app import run_app, run_console


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tui", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-c", "--config", metavar="FILE", help="embed the core with this config")
    group.add_argument("--connect", metavar="SOCKET", help="attach to a daemon's control socket")
    group.add_argument("--demo", action="store_true", help="build and show the namespace lab")
    group.add_argument("--fake", nargs="?", type=int, const=8, metavar="N",
                       help="show N made-up tunnels (default 8)")  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.fake is not None:
            from tui.fake import FakeSource

            return run_app(FakeSource(args.fake, live=True))
        return run_console(args)
    except ConfigError as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        return 2
    except UsageError as error:
        print(f"rbipsec console: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
