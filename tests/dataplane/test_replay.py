"""Anti-replay window (RFC 4303 section 3.4.3) and ESN inference (Appendix A2.2)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.dataplane.userspace.replay import ReplayWindow

WRAP = 1 << 32


def accept(window: ReplayWindow, seq_low: int) -> int | None:
    """What a receiver does: infer, check, (ICV), update.  The full seq or None."""
    seq = window.infer(seq_low)
    if seq < 0 or not window.check(seq):
        return None
    window.update(seq)
    return seq


def test_new_duplicate_and_old_packets() -> None:
    window = ReplayWindow(8)
    assert accept(window, 5) == 5
    assert accept(window, 5) is None
    assert accept(window, 3) == 3  # late but inside the window
    assert accept(window, 3) is None
    assert accept(window, 12) == 12
    assert accept(window, 6) == 6  # 12 - 6 = 6 < 8: still inside, never seen
    assert accept(window, 4) is None  # 12 - 4 = 8: left of the window
    assert window.highest == 12


def test_sequence_zero_is_never_valid() -> None:
    assert not ReplayWindow(64).check(0)
    assert not ReplayWindow(64, esn=True).check(0)


def test_check_does_not_update() -> None:
    window = ReplayWindow(32)
    assert window.check(7)
    assert window.check(7)  # an ICV failure in between leaves no trace
    window.update(7)
    assert not window.check(7)


def test_a_jump_larger_than_the_window_clears_the_bitmap() -> None:
    window = ReplayWindow(16)
    for seq in range(1, 10):
        window.update(seq)
    window.update(1000)
    assert not window.check(1000)
    assert window.check(999)
    assert not window.check(984)


def test_window_zero_disables_replay_checks() -> None:
    window = ReplayWindow(0)
    window.update(5)
    assert window.check(5)
    assert window.check(1)


def test_without_esn_numbers_stay_32_bit() -> None:
    window = ReplayWindow(64)
    assert window.infer(WRAP - 1) == WRAP - 1
    assert not window.check(WRAP)


def test_esn_case_a_window_inside_one_subspace() -> None:
    window = ReplayWindow(64, esn=True)
    window.update((3 << 32) | 1000)
    assert window.infer(2000) == (3 << 32) | 2000  # ahead, same sub-space
    assert window.infer(937) == (3 << 32) | 937  # at the bottom of the window
    assert window.infer(936) == (4 << 32) | 936  # below the window: the next sub-space


def test_esn_case_b_window_spans_two_subspaces() -> None:
    window = ReplayWindow(64, esn=True)
    window.update((3 << 32) | 10)
    assert window.infer(20) == (3 << 32) | 20
    assert window.infer(WRAP - 5) == (2 << 32) | (WRAP - 5)  # just before the wrap
    assert accept(window, WRAP - 5) == (2 << 32) | (WRAP - 5)


def test_esn_at_the_very_start_cannot_go_below_zero() -> None:
    window = ReplayWindow(64, esn=True)
    assert window.infer(WRAP - 1) == -1
    assert accept(window, 1) == 1


def test_esn_without_replay_window_still_infers() -> None:
    window = ReplayWindow(0, esn=True)
    window.update((1 << 32) | 5)
    assert window.infer(6) == (1 << 32) | 6


def test_negative_size_is_refused() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(-1)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(min_value=1, max_value=(1 << 40)),
    steps=st.lists(st.integers(min_value=-100, max_value=100), min_size=1, max_size=60),
)
def test_esn_receiver_tracks_a_sender_with_bounded_reordering(start: int, steps: list[int]) -> None:
    # A sender moving forward, delivered with reordering smaller than the window:
    # every inferred number equals the sent one, and nothing is accepted twice.
    window = ReplayWindow(128, esn=True)
    window.update(start)
    seen = {start}
    highest = start
    for step in steps:
        seq = max(1, highest + step)
        if highest - seq >= 127:
            continue
        inferred = window.infer(seq & (WRAP - 1))
        assert inferred == seq
        assert window.check(seq) == (seq not in seen)
        if seq not in seen:
            window.update(seq)
            seen.add(seq)
            highest = max(highest, seq)
