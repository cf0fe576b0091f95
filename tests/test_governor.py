"""The governor: NaN/inf, divergence after warm-up, lobotomy, bounded history, purity, newest_seed.

Thresholds are esper-lite's ``TolariaGovernor`` defaults (sensitivity 6,
multiplier 3, absolute threshold 12, window 20, at least 10 samples, 3
consecutive panics, lobotomy at ln 10).
"""

from __future__ import annotations

import dataclasses
import math

import optree
import pytest
import torch
import torch.utils._pytree as torch_pytree
from hypothesis import given
from hypothesis import strategies as st

from esper_func.governor import (
    ROLLBACK_PRUNE_REASON,
    GovernorConfig,
    GovernorState,
    Verdict,
    governor_check,
    governor_init,
    newest_seed,
)
from esper_func.lifecycle import SeedState, advance, germinate, prune, record_accuracy, step_epoch
from esper_func.lifecycle.gates import Gates
from esper_func.lifecycle.stages import SeedStage

CFG = GovernorConfig()


def feed(config: GovernorConfig, losses: list[float], state: GovernorState | None = None) -> GovernorState:
    state = governor_init(config) if state is None else state
    for loss in losses:
        state, verdict, reason = governor_check(config, state, loss)
        assert (verdict, reason) == (Verdict.OK, ""), loss
    return state


def warm(config: GovernorConfig = CFG) -> GovernorState:
    """Ten healthy losses: mean 1.0, std 0.1 (alternating 0.9 / 1.1)."""
    return feed(config, [0.9, 1.1] * 5)


def test_defaults_are_esper_lites() -> None:
    assert (CFG.sensitivity, CFG.multiplier, CFG.absolute_threshold) == (6.0, 3.0, 12.0)
    assert (CFG.history_window, CFG.min_history, CFG.min_panics_before_rollback) == (20, 10, 3)
    assert CFG.random_guess_loss == pytest.approx(math.log(10))
    assert governor_init(CFG) == GovernorState(losses=(), consecutive_panics=0, rollbacks=0)
    assert ROLLBACK_PRUNE_REASON == "governor_rollback"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("warmed", [False, True])
def test_non_finite_loss_rolls_back_at_once(bad: float, warmed: bool) -> None:
    state = warm() if warmed else governor_init(CFG)
    new, verdict, reason = governor_check(CFG, state, bad)
    assert (verdict, reason) == (Verdict.ROLLBACK, "governor_nan")
    assert new.losses == state.losses  # a rolled-back loss is never recorded
    assert (new.rollbacks, new.consecutive_panics) == (1, 0)


def test_spike_after_warm_up_panics_then_rolls_back() -> None:
    state = warm()
    # 100 > 12 (absolute), > 1.0 + 6 * 0.1 (statistical), > 3 * 1.0 (multiplier)
    state, verdict, reason = governor_check(CFG, state, 100.0)
    assert (verdict, reason, state.consecutive_panics) == (Verdict.PANIC, "governor_divergence", 1)
    state, verdict, _ = governor_check(CFG, state, 100.0)
    assert (verdict, state.consecutive_panics) == (Verdict.PANIC, 2)
    state, verdict, reason = governor_check(CFG, state, 100.0)
    assert (verdict, reason) == (Verdict.ROLLBACK, "governor_divergence")
    assert (state.consecutive_panics, state.rollbacks) == (0, 1)
    assert state.losses == (0.9, 1.1) * 5  # anomalies never enter the history


def test_single_spike_rolls_back_with_min_panics_one() -> None:
    config = GovernorConfig(min_panics_before_rollback=1)
    _, verdict, reason = governor_check(config, warm(config), 20.0)
    assert (verdict, reason) == (Verdict.ROLLBACK, "governor_divergence")


def test_recovery_resets_the_panic_count() -> None:
    state, verdict, _ = governor_check(CFG, warm(), 50.0)
    assert verdict == Verdict.PANIC
    state, verdict, _ = governor_check(CFG, state, 1.0)
    assert (verdict, state.consecutive_panics) == (Verdict.OK, 0)
    state, verdict, _ = governor_check(CFG, state, 50.0)
    assert (verdict, state.consecutive_panics) == (Verdict.PANIC, 1)


def test_no_spike_detection_during_warm_up() -> None:
    state = feed(CFG, [1.0] * 9)
    state, verdict, reason = governor_check(CFG, state, 1000.0)
    assert (verdict, reason) == (Verdict.OK, "")
    assert state.losses[-1] == 1000.0  # esper-lite records warm-up losses as they come
    # the tenth sample completes the warm-up; the next spike is judged
    state, verdict, _ = governor_check(CFG, feed(CFG, [1.0] * 10), 1000.0)
    assert verdict == Verdict.PANIC


def test_every_condition_must_hold() -> None:
    state = warm()
    # 5x the mean but under the absolute threshold of 12: fine by esper-lite's rules
    assert governor_check(CFG, state, 5.0)[1] == Verdict.OK
    # a plain "several times the recent mean" rule
    plain = GovernorConfig(absolute_threshold=0.0, sensitivity=0.0, min_panics_before_rollback=1)
    assert governor_check(plain, warm(plain), 5.0)[1] == Verdict.ROLLBACK
    assert governor_check(plain, warm(plain), 2.9)[1] == Verdict.OK
    # above 12 and 3x the mean, but within 6 sigma of a noisy history
    noisy = feed(CFG, [1.0, 9.0] * 5)  # mean 5, std 4: 6-sigma bound 29
    assert governor_check(CFG, noisy, 20.0)[1] == Verdict.OK


def test_lobotomy() -> None:
    state = feed(CFG, [0.5] * 10)  # healthy: mean 0.5 < 0.6 * ln 10
    _, verdict, reason = governor_check(CFG, state, math.log(10) + 0.1)
    assert (verdict, reason) == (Verdict.ROLLBACK, "governor_lobotomy")
    assert governor_check(CFG, state, math.log(10) + 0.2)[1] == Verdict.OK  # outside 6.5 % of ln 10
    assert governor_check(GovernorConfig(random_guess_loss=None), state, math.log(10))[1] == Verdict.OK
    assert governor_check(CFG, feed(CFG, [2.0] * 10), math.log(10))[1] == Verdict.OK  # was not doing well
    assert governor_check(CFG, feed(CFG, [0.5] * 9), math.log(10))[1] == Verdict.OK  # warm-up


@given(st.lists(st.floats(0.5, 2.0), min_size=1, max_size=60))
def test_normal_fluctuations_are_ok_and_history_is_bounded(losses: list[float]) -> None:
    state = feed(CFG, losses)
    assert state.losses == tuple(losses[-20:])
    assert (state.consecutive_panics, state.rollbacks) == (0, 0)


def test_history_window() -> None:
    config = GovernorConfig(history_window=12)
    state = feed(config, [float(i) / 10 + 1 for i in range(30)])
    assert len(state.losses) == 12 and state.losses[0] == pytest.approx(2.8)


def test_purity() -> None:
    state = warm()
    before = dataclasses.replace(state)
    inputs = (1.0, 100.0, float("nan"))
    results = [governor_check(CFG, state, x) for x in inputs]
    assert state == before and CFG == GovernorConfig()
    assert [governor_check(CFG, state, x) for x in inputs] == results


def test_tensor_losses_and_bad_inputs() -> None:
    state, verdict, _ = governor_check(CFG, governor_init(CFG), torch.tensor(0.7))
    assert verdict == Verdict.OK and state.losses == (pytest.approx(0.7),)
    assert governor_check(CFG, state, torch.tensor(float("nan")))[1] == Verdict.ROLLBACK
    with pytest.raises(ValueError, match="scalar"):
        governor_check(CFG, state, torch.ones(2))
    with pytest.raises(TypeError):
        governor_check(CFG, state, "1.0")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        governor_check(state, CFG, 1.0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"history_window": 5},
        {"min_panics_before_rollback": 0},
        {"sensitivity": -1.0},
        {"multiplier": float("nan")},
        {"random_guess_loss": float("inf")},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        GovernorConfig(**kwargs)


def test_state_is_a_pytree_in_both_libraries() -> None:
    state = GovernorState(losses=(1.0, 2.0), consecutive_panics=1, rollbacks=3)
    leaves, spec = optree.tree_flatten(state, namespace="esper_func")
    assert leaves == [1.0, 2.0, 1, 3]
    assert optree.tree_unflatten(spec, leaves) == state
    leaves, tspec = torch_pytree.tree_flatten(state)
    assert torch_pytree.tree_unflatten(leaves, tspec) == state
    hash(state)


# --------------------------------------------------------------------------- newest_seed


def aged(slot: str, epochs: int, stage: SeedStage | None = None) -> SeedState:
    """A seed that lived ``epochs`` epochs (one ``record_accuracy`` each), optionally moved on."""
    state = germinate(slot, "norm")
    for _ in range(epochs):
        state = record_accuracy(state, 50.0)
    if stage == SeedStage.PRUNED:
        state, _ = prune(state, "x")
    elif stage == SeedStage.TRAINING:
        state, _, _ = advance(state, Gates())
    elif stage == SeedStage.DORMANT:
        state, _ = prune(state, "x")
        while state.stage != SeedStage.DORMANT:
            state, _ = step_epoch(state, Gates())
    elif stage == SeedStage.FOSSILIZED:
        state = dataclasses.replace(state, stage=SeedStage.FOSSILIZED)
    return state


def test_newest_seed() -> None:
    assert newest_seed({}) is None
    states = {
        "r0c0": aged("r0c0", 9, SeedStage.TRAINING),
        "r0c1": aged("r0c1", 2, SeedStage.TRAINING),
        "r0c2": aged("r0c2", 4),
    }
    assert newest_seed(states) == "r0c1"
    # fossils and empty / cooling-down slots are never chosen, however young
    states |= {"r1c0": aged("r1c0", 0, SeedStage.FOSSILIZED), "r1c1": aged("r1c1", 0, SeedStage.PRUNED)}
    states |= {"r1c2": aged("r1c2", 0, SeedStage.DORMANT)}
    assert newest_seed(states) == "r0c1"
    # a tie goes to the later slot
    assert newest_seed({"a": aged("a", 3), "b": aged("b", 3)}) == "b"
    assert newest_seed({"a": aged("a", 1, SeedStage.FOSSILIZED)}) is None
    with pytest.raises(TypeError):
        newest_seed({"a": 1})  # type: ignore[dict-item]


def test_rollback_prune_of_the_newest_seed() -> None:
    states = {"r0c0": aged("r0c0", 9, SeedStage.TRAINING), "r0c1": aged("r0c1", 1, SeedStage.TRAINING)}
    slot = newest_seed(states)
    assert slot == "r0c1"
    pruned, events = prune(states[slot], ROLLBACK_PRUNE_REASON, initiator="governor")
    assert pruned.stage == SeedStage.PRUNED
    assert pruned.metrics.auto_pruned and pruned.metrics.auto_prune_reason == "governor_rollback"
    assert events[-1].initiator == "governor"  # type: ignore[union-attr]
