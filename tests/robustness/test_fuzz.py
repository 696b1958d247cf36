"""Fuzzing in CI: the corpus replayed, a property run per target, and a fixed-budget
coverage-guided run of every target with atheris (skipped when atheris is missing).

Targets and their inputs: fuzz_targets.py.  Long runs: scripts/fuzz.sh (docs/reliability.md
has the figures).  RBIPSEC_FUZZ_SECONDS sets the CI budget per target (default 15; the
engine targets get half as much again).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.daemon.control.protocol import ProtocolError, decode_request
from tests.robustness import fuzz_targets

CORPUS = Path(__file__).resolve().parent / "corpus"
REPO = CORPUS.parents[2]
TARGETS = sorted(fuzz_targets.TARGETS)
SLOW_TARGETS = {"ikev2_engine", "ikev1_engine"}
BUDGET = float(os.environ.get("RBIPSEC_FUZZ_SECONDS", "15"))


def corpus_files(target: str) -> list[Path]:
    return sorted(p for p in (CORPUS / target).glob("*") if p.is_file())


# -- the corpus --------------------------------------------------------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_corpus_inputs_pass(target: str) -> None:
    files = corpus_files(target)
    assert files, f"no corpus for {target}: run python -m tests.robustness.seed_corpus"
    run = fuzz_targets.checked(target)
    for path in files:
        run(path.read_bytes())


def test_engine_seeds_replay_the_real_exchange() -> None:
    """A seed rebuilds its scenario's real message: the pair ends up as a good run does,
    so the fuzzer starts from messages the engine accepts."""
    from core.ike.v2.state import IkeState
    from tests.robustness import keyed_v2

    for name, seed in keyed_v2.seeds().items():
        pair = keyed_v2.run(seed)
        sa_a = pair.a.endpoint.current_sa("peer")
        sa_b = pair.b.endpoint.current_sa("peer")
        assert sa_a is not None and sa_a.state == IkeState.ESTABLISHED, name
        assert sa_b is not None and (sa_a.spi_i, sa_a.spi_r) == (sa_b.spi_i, sa_b.spi_r), name
        assert not any("malformed" in str(e) for e in pair.b.events + pair.a.events), name


# -- property runs (hypothesis, no coverage feedback) ----------------------------------
def _mutations(target: str) -> st.SearchStrategy[bytes]:
    seeds = [p.read_bytes() for p in corpus_files(target)]

    def splice(seed: bytes, at: int, cut: int, insert: bytes) -> bytes:
        at %= len(seed) + 1
        return seed[:at] + insert + seed[at + cut :]

    mutated = st.builds(
        splice, st.sampled_from(seeds), st.integers(0, 4096), st.integers(0, 16), st.binary()
    )
    return st.binary(max_size=512) | mutated


@pytest.mark.parametrize("target", TARGETS)
def test_random_and_mutated_inputs(target: str) -> None:
    examples = 25 if target in SLOW_TARGETS else 200

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=_mutations(target))
    def check(data: bytes) -> None:
        fuzz_targets.checked(target)(data)

    check()


# -- findings, fixed: regression tests -----------------------------------------------------
def test_deeply_nested_request_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_request(b"[" * 100_000)


def test_no_known_findings_are_open() -> None:
    """Long fuzz runs may look past KNOWN findings; none is open, so none is skipped."""
    assert fuzz_targets.KNOWN == {}
    assert not fuzz_targets.is_known(RecursionError(), "control")


# -- coverage-guided, fixed budget --------------------------------------------------------
def _fuzz(target: str, seconds: float, workdir: Path) -> tuple[int, str]:
    work = workdir / target
    work.mkdir()
    command = [
        sys.executable,
        "-m",
        "tests.robustness.fuzz_main",
        target,
        f"-max_total_time={round(seconds)}",
        f"-artifact_prefix={work}/",
        "-seed=1",
        "-print_final_stats=1",
        str(work),
        str(CORPUS / target),
    ]
    result = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="needs atheris")
def test_fixed_budget_coverage_guided_fuzzing(tmp_path: Path) -> None:
    started = time.monotonic()
    budgets = {t: BUDGET * (1.5 if t in SLOW_TARGETS else 1.0) for t in TARGETS}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {t: pool.submit(_fuzz, t, budgets[t], tmp_path) for t in TARGETS}
        results = {t: f.result() for t, f in futures.items()}
    lines, failures = [], []
    for target, (returncode, output) in results.items():
        done = re.findall(r"^Done (\d+) runs in (\d+) second", output, re.MULTILINE)
        runs, seconds = (int(done[-1][0]), int(done[-1][1])) if done else (0, 0)
        lines.append(f"{target}: {runs} runs in {seconds} s ({runs // max(seconds, 1)}/s)")
        if returncode != 0 or not done:
            failures.append(f"{target} (exit {returncode}):\n{output[-4000:]}")
        elif runs < 10:
            failures.append(f"{target}: only {runs} runs")
    print("\n".join(lines), f"\nwall time {time.monotonic() - started:.0f} s")
    assert not failures, "\n\n".join(failures)
