"""`rbipsec console --demo`: the namespace lab (being built)."""

from __future__ import annotations

import argparse

from core.errors import NotAvailableError


def run_demo(args: argparse.Namespace) -> int:
    raise NotAvailableError("rbipsec console --demo: not available yet")
