"""`rbipsec daemon`: run the core in the foreground until SIGTERM/SIGINT.

Logs go to stderr with their level (systemd's journal adds its own timestamps, so they
are left out when JOURNAL_STREAM says stderr is the journal).  SIGHUP reloads the config.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from core.config import Config, DataplaneChoice
from core.daemon.bus import BusLogHandler
from core.daemon.control.commands import Commands
from core.daemon.control.server import ControlServer
from core.daemon.service import Daemon
from core.errors import ConfigError, RbipsecError

log = logging.getLogger("rbipsec.daemon")

EXIT_OK = 0
EXIT_ERROR = 1


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        fmt = "%(levelname)s %(message)s"
    else:
        fmt = "%(asctime)s %(levelname)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(quiet_libraries)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def quiet_libraries(record: logging.LogRecord) -> bool:
    """Libraries speak only from WARNING up, also at log_level = "debug".  A filter, not
    a logger level: pyroute2, imported lazily after this set-up, resets its logger's
    level to 0 on import (its netlink chatter then flooded debug logs)."""
    return record.levelno >= logging.WARNING or not record.name.startswith("pyroute2")


async def serve(daemon: Daemon) -> int:
    """Start the control socket, then the daemon; run until asked to stop; clean up."""
    server = ControlServer(daemon.config.global_.socket, Commands(daemon))
    bus_handler = BusLogHandler(daemon.bus)
    bus_handler.addFilter(quiet_libraries)
    try:
        await server.start()
    except RbipsecError as error:
        log.error("%s", error)
        return EXIT_ERROR
    logging.getLogger().addHandler(bus_handler)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, daemon.request_stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(_reload(daemon)))
    code = EXIT_OK
    try:
        try:
            await daemon.start()
        except (RbipsecError, OSError) as error:
            log.error("cannot start: %s", error)
            code = EXIT_ERROR
        else:
            log.info("control socket %s; pid %d", daemon.config.global_.socket, os.getpid())
            await daemon.wait_stop_requested()
            log.info("stopping: closing tunnels")
        await daemon.stop()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(signum)
        await server.close()
        logging.getLogger().removeHandler(bus_handler)
    log.info("stopped")
    return code


async def _reload(daemon: Daemon) -> None:
    log.info("SIGHUP: reloading %s", daemon.config.path)
    try:
        await daemon.reload()
    except ConfigError as error:
        log.error("reload rejected, nothing changed:")
        for line in error.problems:
            log.error("  %s", line)


def run(config: Config, dataplane: DataplaneChoice | None = None) -> int:
    setup_logging(config.global_.log_level.value)
    daemon = Daemon(config, dataplane_choice=dataplane)
    return asyncio.run(serve(daemon))
