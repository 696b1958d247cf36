"""The `rbipsec` command line.

Exit codes: 0 success; 1 other error (including "the daemon is not running" and an error
answer from the daemon); 2 bad usage or config problems (the problem lines go to stderr);
3 the command exists but its implementation has not landed yet.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from core.config import DEFAULT_SOCKET, Config, DataplaneChoice, PeerConfig, load
from core.config.fields import NAME_PATTERN
from core.errors import ConfigError, UsageError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # also config problems

DEFAULT_CONFIG_PATHS = (Path("config.toml"), Path("/etc/rbipsec/config.toml"))

Handler = Callable[[argparse.Namespace], int]


def find_config(explicit: str | None) -> Path | None:
    """The -c FILE if given, else the first of ./config.toml and /etc/rbipsec/config.toml that
    exists; None when there is none."""
    if explicit is not None:
        return Path(explicit)
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.is_file():
            return candidate
    return None


def find_socket(config: str | None, socket: str | None) -> str:
    """The control socket: --socket PATH, else global.socket of the config, else the default.

    Only [global] is read here, so a client still finds the daemon when a peer is broken.
    """
    if socket is not None:
        return socket
    path = find_config(config)
    if path is None:
        return DEFAULT_SOCKET
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        load(path)  # reports the syntax problem with its line
        raise
    settings = document.get("global", {})
    value = settings.get("socket", DEFAULT_SOCKET) if isinstance(settings, dict) else None
    if not isinstance(value, str) or not value.startswith("/"):
        load(path)  # reports global.socket with its line
        raise ConfigError([f"{path}: global.socket: must be an absolute path"])
    return value


def _version() -> str:
    from importlib import metadata  # only for --version: it costs ~20 ms to import

    try:
        return metadata.version("rbipsec")
    except metadata.PackageNotFoundError:
        return "0+unknown (not installed)"


class _VersionAction(argparse.Action):
    """`--version`, with the version looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
        values: object, option_string: str | None = None,
    ) -> None:  # fmt: skip
        print(f"rbipsec {_version()}")
        parser.exit()


def _peer_name(text: str) -> str:
    if not NAME_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a peer name ([a-z0-9_-]+)")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rbipsec",
        description="Route-based IPsec for Linux: one interface per peer, IKEv1/IKEv2.",
        epilog="Exit codes: 0 ok, 1 error (e.g. no daemon running), 2 usage or config problems.",
    )
    parser.add_argument("--version", action=_VersionAction)
    _add_locators(parser, None)
    parser.set_defaults(command=None, handler=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    check = _command(commands, "check", "validate a config file and summarise it", _check)
    check.add_argument("file", nargs="?", metavar="FILE", help="the config file (same as -c)")
    _add_locators(check, argparse.SUPPRESS, socket=False)

    daemon = _command(commands, "daemon", "run the core headless (IKE, dataplane)", _daemon)
    daemon.add_argument(
        "--dataplane",
        choices=[choice.value for choice in DataplaneChoice],
        help="override global.dataplane (auto: kernel XFRM interfaces if usable, else userspace)",
    )
    _add_locators(daemon, argparse.SUPPRESS, socket=False)

    status = _command(commands, "status", "show tunnels, SAs and DPD state", _status)
    status.add_argument("--json", action="store_true", help="print machine-readable JSON")
    status.add_argument("peer", nargs="?", metavar="PEER", type=_peer_name,
                        help="only this [[peer]]")  # fmt: skip
    _add_locators(status, argparse.SUPPRESS)

    for name, summary in (
        ("up", "initiate the tunnel to PEER"),
        ("down", "close the tunnel to PEER (deletes its SAs)"),
        ("rekey", "rekey the Child SAs of PEER now (--ike: its IKE SA)"),
    ):
        sub = _command(commands, name, summary, _peer_command)
        sub.add_argument("peer", metavar="PEER", type=_peer_name, help="a [[peer]] name")
        if name == "rekey":
            sub.add_argument("--ike", action="store_true", help="rekey the IKE SA instead")
        _add_locators(sub, argparse.SUPPRESS)

    reload = _command(commands, "reload", "make the daemon re-read its config", _reload)
    _add_locators(reload, argparse.SUPPRESS)

    console = _command(commands, "console", "the terminal console (Textual)", _console)
    _add_locators(console, argparse.SUPPRESS)
    console.add_argument("--connect", metavar="SOCKET",
                         help="attach to the daemon on this control socket")  # fmt: skip
    console.add_argument("--demo", action="store_true",
                         help="build a throwaway lab of real tunnels, show it (root)")  # fmt: skip
    return parser


def _command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    summary: str,
    handler: Handler,
) -> argparse.ArgumentParser:
    sub = commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:])
    sub.set_defaults(command=name, handler=handler)
    return sub


def _add_locators(parser: argparse.ArgumentParser, default: object, socket: bool = True) -> None:
    """-c/--config and --socket, accepted before or after the command name."""
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default,
        help="config file (default: ./config.toml, then /etc/rbipsec/config.toml)",
    )
    if socket:
        parser.add_argument(
            "--socket",
            metavar="PATH",
            default=default,
            help="the daemon's control socket (default: global.socket of the config)",
        )


def _check(args: argparse.Namespace) -> int:
    explicit = args.file if args.file is not None else args.config
    path = find_config(explicit)
    if path is None:
        tried = ", ".join(str(candidate) for candidate in DEFAULT_CONFIG_PATHS)
        raise ConfigError([f"rbipsec check: no config file found (tried {tried})"])
    config = load(path)
    _print_summary(config, sys.stdout)
    return EXIT_OK


def _print_summary(config: Config, out: TextIO) -> None:
    settings = config.global_
    state = "enabled" if settings.enabled else "disabled (global.enabled = false)"
    peers = len(config.peers)
    print(f"{config.path}: ok, {peers} peer{'s' if peers != 1 else ''}", file=out)
    print(
        f"  global: route-based IPsec {state}, dataplane {settings.dataplane}, "
        f"socket {settings.socket}",
        file=out,
    )
    for peer in config.peers:
        print(f"  peer {peer.name}: {_describe_peer(peer)}", file=out)


def _describe_peer(peer: PeerConfig) -> str:
    version = f"IKEv{peer.ike_version}"
    if peer.ike_version == 1:
        version += f" {peer.exchange_mode}"
    parts = [
        peer.interface,
        f"{version} {peer.mode.value}",
        f"{peer.local_address} -> {peer.remote_address}",
        str(peer.address) if peer.address else "unnumbered",
        f"{len(peer.routes)} route{'s' if len(peer.routes) != 1 else ''}",
    ]
    if peer.passive:
        parts.append("passive")
    if not peer.enabled:
        parts.append("disabled")
    return ", ".join(parts)


def _daemon(args: argparse.Namespace) -> int:
    path = find_config(args.config)
    if path is None:
        tried = ", ".join(str(candidate) for candidate in DEFAULT_CONFIG_PATHS)
        raise ConfigError([f"rbipsec daemon: no config file found (tried {tried})"])
    config = load(path)
    from core.daemon.main import run

    override = DataplaneChoice(args.dataplane) if args.dataplane else None
    return run(config, override)


def _console(args: argparse.Namespace) -> int:
    """-c FILE embeds the core; --connect/--socket attaches to a daemon; --demo: the lab."""
    from tui.app import run_console

    return run_console(args)


def _ask(args: argparse.Namespace, cmd: str, **arguments: object) -> object:
    """One request to the daemon; its failures become UsageError with a clear message."""
    from core.daemon.control.client import CommandFailed, ControlClient

    socket = find_socket(args.config, args.socket)
    with ControlClient(socket) as client:
        try:
            return client.request(cmd, **arguments)
        except CommandFailed as failure:
            if failure.problems:
                raise ConfigError([str(failure), *failure.problems]) from None
            raise


def _status(args: argparse.Namespace) -> int:
    status = _ask(args, "status", **({"peer": args.peer} if args.peer else {}))
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    from core.daemon.control.render import print_status

    assert isinstance(status, dict)
    print_status(status)
    return EXIT_OK


def _peer_command(args: argparse.Namespace) -> int:
    if args.command == "rekey":
        result = _ask(args, "rekey", peer=args.peer, ike=args.ike)
    else:
        result = _ask(args, args.command, peer=args.peer)
    assert isinstance(result, dict)
    message = f"{args.peer}: {result.get('state') or result.get('rekeying', 'ok')}"
    if result.get("note"):
        message += f" ({result['note']})"
    print(message)
    return EXIT_OK


def _reload(args: argparse.Namespace) -> int:
    result = _ask(args, "reload")
    assert isinstance(result, dict)
    changed = result.get("changed", {})
    print(
        f"reloaded: {len(result.get('added', []))} added, {len(result.get('removed', []))} "
        f"removed, {len(changed)} changed, {len(result.get('unchanged', []))} unchanged"
    )
    for key in result.get("restart_needed", []):
        print(f"note: global.{key} takes effect when the daemon restarts")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # --help, --version and usage errors
        code = exit_request.code
        return code if isinstance(code, int) else EXIT_USAGE
    handler: Handler | None = args.handler
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except ConfigError as error:
        for line in error.problems:
            print(line, file=sys.stderr)
        return EXIT_USAGE
    except UsageError as error:
        print(f"rbipsec: {error}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
