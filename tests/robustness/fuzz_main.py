"""Coverage-guided fuzzing with atheris (libFuzzer): `python -m tests.robustness.fuzz_main
TARGET [libFuzzer options] [corpus directories]`.

The project's code (core/) and the targets are instrumented; libFuzzer's options apply,
e.g. `-max_total_time=30`, `-runs=N`, `-seed=1`, `-artifact_prefix=DIR/`.  Known
findings (fuzz_targets.KNOWN) are passed over unless RBIPSEC_FUZZ_KNOWN=1.  At the end a
libFuzzer line `Done N runs in S second(s)` gives the totals (scripts/fuzz.sh, the tests).
"""

from __future__ import annotations

import os
import sys

import atheris  # type: ignore[import-untyped]

with atheris.instrument_imports(include=["core", "tests.robustness"]):
    from tests.robustness import fuzz_targets


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in fuzz_targets.TARGETS:
        names = ", ".join(fuzz_targets.TARGETS)
        sys.exit(f"usage: python -m tests.robustness.fuzz_main TARGET [options]; TARGET: {names}")
    name = sys.argv.pop(1)
    if os.environ.get("RBIPSEC_FUZZ_KNOWN") == "1":
        target = fuzz_targets.TARGETS[name]
    else:
        target = fuzz_targets.checked(name)
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
