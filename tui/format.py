"""Short human forms of sizes, rates and durations for narrow table cells."""

from __future__ import annotations

import math

_UNITS = ("", "k", "M", "G", "T", "P")


def si(value: float, suffix: str = "") -> str:
    """1234 -> "1.2k", 999 -> "999", 0 -> "0"; base 1000, at most 4 characters of number."""
    if value < 0:
        return "-" + si(-value, suffix)
    unit = 0
    while value >= 999.5 and unit < len(_UNITS) - 1:
        value /= 1000.0
        unit += 1
    if unit == 0:
        return f"{value:.0f}{suffix}"
    text = f"{value:.1f}" if value < 9.95 else f"{value:.0f}"
    return f"{text}{_UNITS[unit]}{suffix}"


def size(byte_count: int) -> str:
    """A byte count: "0B", "512B", "1.2kB", "34MB"."""
    return si(byte_count, "B")


def rate(bytes_per_second: float | None) -> str:
    if bytes_per_second is None:
        return "-"
    return si(bytes_per_second, "B/s")


def duration(seconds: float | None) -> str:
    """At most two units: "42s", "5m07s", "3h05m", "2d04h"; "-" when unknown."""
    if seconds is None or math.isnan(seconds):
        return "-"
    negative = seconds < 0
    whole = int(abs(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        text = f"{days}d{hours:02d}h"
    elif hours:
        text = f"{hours}h{minutes:02d}m"
    elif minutes:
        text = f"{minutes}m{secs:02d}s"
    else:
        text = f"{secs}s"
    return "-" + text if negative else text


def ago(seconds: float | None) -> str:
    return "never" if seconds is None else f"{duration(seconds)} ago"


def bar(fraction: float | None, width: int) -> str:
    """A bar of `width` cells, filled by `fraction` (0..1) in eighths; blank when unknown."""
    if fraction is None:
        return " " * width
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part else ""
    filled = "█" * full + partial
    return filled + "·" * (width - len(filled))
