"""`python -m tests.robustness.lab_daemon -c CONFIG`: the real daemon (`core.daemon.main`)
with test timings, for the robustness lab.

The config format only allows lifetimes of 60 s and more, and the engine's retransmission
timing is not configurable; robustness runs need rekeys within seconds.  Two environment
variables change what the daemon gets, nothing else:
- RBIPSEC_LAB_TIMING: JSON of `core.ike.policy.Timing` fields, e.g.
  {"retransmit_timeout": 0.5, "rekey_margin": 0.3};
- RBIPSEC_LAB_LIFETIMES: "child=SECONDS,ike=SECONDS" for every peer.
A SIGHUP reload reads the file again without these lifetimes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from dataclasses import replace
from typing import Any

from core.config import load
from core.config.schema import Config
from core.daemon.main import serve, setup_logging
from core.daemon.service import Daemon
from core.ike.policy import Timing


def lab_config(config: Config, lifetimes: str) -> Config:
    values = dict(item.split("=") for item in lifetimes.split(",") if item)
    changes: dict[str, Any] = {}
    if "child" in values:
        changes["child_lifetime"] = int(values["child"])
    if "ike" in values:
        changes["ike_lifetime"] = int(values["ike"])
    return replace(config, peers=tuple(replace(p, **changes) for p in config.peers))


def lab_timing(text: str) -> Timing | None:
    if not text:
        return None
    fields = json.loads(text)
    if "reestablish_backoff" in fields:
        fields["reestablish_backoff"] = tuple(fields["reestablish_backoff"])
    return Timing(**fields)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-c", "--config", required=True)
    args = parser.parse_args()
    config = lab_config(load(args.config), os.environ.get("RBIPSEC_LAB_LIFETIMES", ""))
    setup_logging(config.global_.log_level.value)
    daemon = Daemon(config, timing=lab_timing(os.environ.get("RBIPSEC_LAB_TIMING", "")))
    return asyncio.run(serve(daemon))


if __name__ == "__main__":
    raise SystemExit(main())
