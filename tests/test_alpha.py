"""AlphaController: clamping, HOLD-only retargeting, snap-to-target, closed-form ramps."""

from __future__ import annotations

import copy
import dataclasses
import math

import optree
import pytest
import torch.utils._pytree as torch_pytree
from hypothesis import given
from hypothesis import strategies as st

from esper_func.errors import IllegalTransitionError, InvalidArgumentError, InvalidTypeError
from esper_func.lifecycle.alpha import (
    AlphaAlgorithm,
    AlphaController,
    AlphaCurve,
    AlphaMode,
    curve_progress,
    retarget,
    tick,
)


def _logistic(x: float) -> float:  # only used with moderate |x| here
    return 1.0 / (1.0 + math.exp(-x))


def closed_form(curve: AlphaCurve, t: float, k: float = 12.0) -> float:
    """The three curves written out independently of the implementation."""
    if curve == AlphaCurve.LINEAR:
        return t
    if curve == AlphaCurve.COSINE:
        return 0.5 * (1.0 - math.cos(math.pi * t))
    lo, hi = _logistic(-k / 2), _logistic(k / 2)
    return (_logistic(k * (t - 0.5)) - lo) / (hi - lo)


def run_ramp(ctrl: AlphaController) -> list[tuple[float, AlphaMode, bool]]:
    out = []
    while True:
        ctrl, reached = tick(ctrl)
        out.append((ctrl.alpha, ctrl.alpha_mode, reached))
        if reached or ctrl.alpha_mode == AlphaMode.HOLD:
            return out


# ----------------------------------------------------------------------------- enums


def test_enum_values_match_esper_lite() -> None:
    assert [(m.name, int(m)) for m in AlphaMode] == [("HOLD", 0), ("UP", 1), ("DOWN", 2)]
    assert [(c.name, int(c)) for c in AlphaCurve] == [("LINEAR", 1), ("COSINE", 2), ("SIGMOID", 3)]
    assert [(a.name, int(a)) for a in AlphaAlgorithm] == [("ADD", 1), ("MULTIPLY", 2), ("GATE", 3)]


# ----------------------------------------------------------------------------- construction


def test_defaults() -> None:
    ctrl = AlphaController()
    assert (ctrl.alpha, ctrl.alpha_start, ctrl.alpha_target) == (0.0, 0.0, 0.0)
    assert ctrl.alpha_mode == AlphaMode.HOLD and ctrl.alpha_curve == AlphaCurve.LINEAR
    assert ctrl.alpha_steepness == 12.0
    assert (ctrl.alpha_steps_total, ctrl.alpha_steps_done) == (0, 0)


def test_construction_clamps_like_esper_lite() -> None:
    ctrl = AlphaController(
        alpha=1.5, alpha_start=-0.2, alpha_target=2.0, alpha_steepness=0.0, alpha_steps_total=-3, alpha_steps_done=7
    )
    assert (ctrl.alpha, ctrl.alpha_start, ctrl.alpha_target) == (1.0, 0.0, 1.0)
    assert ctrl.alpha_steepness == 0.1
    assert (ctrl.alpha_steps_total, ctrl.alpha_steps_done) == (0, 0)
    assert AlphaController(alpha_steps_total=4, alpha_steps_done=9).alpha_steps_done == 4
    assert isinstance(AlphaController(alpha=1).alpha, float)


@pytest.mark.parametrize("field", ["alpha", "alpha_start", "alpha_target", "alpha_steepness"])
def test_construction_rejects_nan(field: str) -> None:
    with pytest.raises(InvalidArgumentError, match=f"AlphaController: {field} is NaN"):
        AlphaController(**{field: float("nan")})


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        AlphaController().alpha = 0.5  # type: ignore[misc]


def test_pytree_roundtrip_both_libraries() -> None:
    ctrl = retarget(AlphaController(alpha=0.2), alpha_target=0.9, steps=3, curve=AlphaCurve.COSINE)
    leaves, spec = optree.tree_flatten(ctrl, namespace="esper_func")
    assert leaves == [0.2, 0.2, 0.9, 12.0, 3, 0]
    assert optree.tree_unflatten(spec, leaves) == ctrl
    tleaves, tspec = torch_pytree.tree_flatten(ctrl)
    assert torch_pytree.tree_unflatten(tleaves, tspec) == ctrl


# ----------------------------------------------------------------------------- retarget


def test_retarget_up_down_hold() -> None:
    base = AlphaController(alpha=0.4)
    up = retarget(base, alpha_target=0.9, steps=3)
    assert (up.alpha_mode, up.alpha_start, up.alpha_target, up.alpha, up.alpha_steps_total) == (
        AlphaMode.UP,
        0.4,
        0.9,
        0.4,
        3,
    )
    down = retarget(base, alpha_target=0.1, steps=3)
    assert down.alpha_mode == AlphaMode.DOWN
    same = retarget(base, alpha_target=0.4, steps=3)
    assert same.alpha_mode == AlphaMode.HOLD and same.alpha == 0.4


def test_retarget_zero_steps_snaps() -> None:
    ctrl = retarget(AlphaController(alpha=0.4), alpha_target=0.9, steps=0)
    assert ctrl == AlphaController(
        alpha=0.9, alpha_start=0.4, alpha_target=0.9, alpha_mode=AlphaMode.HOLD, alpha_steps_total=0, alpha_steps_done=0
    )
    down = retarget(AlphaController(alpha=0.4), alpha_target=0.1, steps=0)
    assert (down.alpha, down.alpha_start, down.alpha_mode) == (0.1, 0.4, AlphaMode.HOLD)
    # A snapped controller is in HOLD, so it can be retargeted again at once; tick leaves it alone.
    assert tick(down) == (down, False)
    assert retarget(down, alpha_target=0.6, steps=2).alpha_mode == AlphaMode.UP


@given(start=st.floats(0.0, 1.0), target=st.floats(-2.0, 3.0), curve=st.sampled_from(list(AlphaCurve)))
def test_zero_step_retarget_snaps_to_the_clamped_target(start: float, target: float, curve: AlphaCurve) -> None:
    ctrl = retarget(AlphaController(alpha=start), alpha_target=target, steps=0, curve=curve)
    clamped = min(1.0, max(0.0, target))
    assert (ctrl.alpha, ctrl.alpha_start, ctrl.alpha_target) == (clamped, start, clamped)
    assert ctrl.alpha_mode == AlphaMode.HOLD and ctrl.alpha_curve == curve
    assert (ctrl.alpha_steps_total, ctrl.alpha_steps_done, ctrl.steps_remaining) == (0, 0, 0)


@pytest.mark.parametrize("steps", [-1, -5])
def test_retarget_refuses_negative_steps(steps: int) -> None:
    ctrl = AlphaController(alpha=0.4)
    with pytest.raises(InvalidArgumentError, match=r"retarget\(\): steps must be >= 0; got -"):
        retarget(ctrl, alpha_target=0.1, steps=steps)
    assert ctrl == AlphaController(alpha=0.4)


@pytest.mark.parametrize("steps", [1.5, 2.0, True, "3", None])
def test_retarget_refuses_non_int_steps(steps: object) -> None:
    with pytest.raises(InvalidTypeError, match=r"retarget\(\): steps must be an int"):
        retarget(AlphaController(), alpha_target=0.5, steps=steps)  # type: ignore[arg-type]


def test_retarget_clamps_target_and_steepness() -> None:
    ctrl = retarget(AlphaController(), alpha_target=7.0, steps=2, steepness=-3.0)
    assert ctrl.alpha_target == 1.0 and ctrl.alpha_steepness == 0.1
    assert retarget(AlphaController(alpha=0.5), alpha_target=-1.0, steps=2).alpha_target == 0.0


def test_retarget_keeps_curve_and_steepness_when_none() -> None:
    ctrl = AlphaController(alpha_curve=AlphaCurve.COSINE, alpha_steepness=3.0)
    out = retarget(ctrl, alpha_target=1.0, steps=4)
    assert out.alpha_curve == AlphaCurve.COSINE and out.alpha_steepness == 3.0
    out = retarget(ctrl, alpha_target=1.0, steps=4, curve=AlphaCurve.SIGMOID, steepness=6.0)
    assert out.alpha_curve == AlphaCurve.SIGMOID and out.alpha_steepness == 6.0


@pytest.mark.parametrize("mode_target", [0.9, 0.1])
def test_retarget_from_ramp_raises(mode_target: float) -> None:
    ramping = retarget(AlphaController(alpha=0.5), alpha_target=mode_target, steps=4)
    assert ramping.alpha_mode != AlphaMode.HOLD
    with pytest.raises(IllegalTransitionError, match=r"only allowed from AlphaMode\.HOLD"):
        retarget(ramping, alpha_target=0.3, steps=2)
    with pytest.raises(ValueError):  # IllegalTransitionError is a ValueError
        retarget(ramping, alpha_target=0.3, steps=2)


def test_retarget_rejects_nan_and_infinite_steepness() -> None:
    with pytest.raises(InvalidArgumentError, match=r"retarget\(\): alpha_target must be a number, not NaN"):
        retarget(AlphaController(), alpha_target=float("nan"), steps=2)
    with pytest.raises(InvalidArgumentError, match=r"retarget\(\): steepness must be finite; got inf"):
        retarget(AlphaController(), alpha_target=1.0, steps=2, steepness=float("inf"))
    with pytest.raises(InvalidTypeError, match=r"retarget\(\): alpha_target must be a real number; got str"):
        retarget(AlphaController(), alpha_target="1", steps=2)  # type: ignore[arg-type]
    # An infinite target is a number: clamped like any other.
    assert retarget(AlphaController(), alpha_target=float("inf"), steps=2).alpha_target == 1.0


def test_retarget_and_tick_do_not_mutate() -> None:
    ctrl = AlphaController(alpha=0.25)
    snapshot = copy.deepcopy(ctrl)
    ramp = retarget(ctrl, alpha_target=1.0, steps=3)
    assert ctrl == snapshot
    ramp_snapshot = copy.deepcopy(ramp)
    tick(ramp)
    assert ramp == ramp_snapshot


# ----------------------------------------------------------------------------- tick


def test_tick_in_hold_is_noop() -> None:
    ctrl = AlphaController(alpha=0.3)
    out, reached = tick(ctrl)
    assert out is ctrl and reached is False
    # A ramp of zero total steps never moves, whatever its mode says.
    stuck = AlphaController(alpha=0.3, alpha_target=0.8, alpha_mode=AlphaMode.UP, alpha_steps_total=0)
    out, reached = tick(stuck)
    assert out is stuck and reached is False


@pytest.mark.parametrize("curve", list(AlphaCurve))
@pytest.mark.parametrize(
    "start,target,steps", [(0.0, 1.0, 4), (0.0, 1.0, 5), (0.2, 0.7, 3), (1.0, 0.0, 4), (0.9, 0.3, 6)]
)
def test_tick_matches_closed_form(curve: AlphaCurve, start: float, target: float, steps: int) -> None:
    ctrl = retarget(AlphaController(alpha=start), alpha_target=target, steps=steps, curve=curve)
    trace = run_ramp(ctrl)
    assert len(trace) == steps
    for k, (alpha, mode, reached) in enumerate(trace[:-1], start=1):
        expected = start + (target - start) * closed_form(curve, k / steps)
        assert alpha == pytest.approx(expected, abs=1e-12)
        assert mode == ctrl.alpha_mode and not reached
    alpha, mode, reached = trace[-1]
    assert alpha == target and mode == AlphaMode.HOLD and reached  # exact snap


def test_linear_and_cosine_literal_values() -> None:
    lin = run_ramp(retarget(AlphaController(), alpha_target=1.0, steps=4, curve=AlphaCurve.LINEAR))
    assert [a for a, _, _ in lin] == [0.25, 0.5, 0.75, 1.0]
    cos = run_ramp(retarget(AlphaController(), alpha_target=1.0, steps=4, curve=AlphaCurve.COSINE))
    assert [a for a, _, _ in cos] == pytest.approx([0.14644660940672624, 0.5, 0.8535533905932737, 1.0], abs=1e-15)


def test_sigmoid_tempo5_literal_values() -> None:
    """The BLENDING ramp of a default germination: sigmoid, steepness 12, 5 steps."""
    trace = run_ramp(retarget(AlphaController(), alpha_target=1.0, steps=5, curve=AlphaCurve.SIGMOID))
    assert [a for a, _, _ in trace] == pytest.approx(
        [0.02424426427877362, 0.23014069577164564, 0.7698593042283542, 0.9757557357212262, 1.0], abs=1e-15
    )
    assert [m for _, m, _ in trace] == [AlphaMode.UP] * 4 + [AlphaMode.HOLD]
    assert [r for _, _, r in trace] == [False] * 4 + [True]


def test_steps_done_counts_and_hold_after_snap() -> None:
    ctrl = retarget(AlphaController(), alpha_target=1.0, steps=3)
    ctrl, _ = tick(ctrl)
    assert ctrl.alpha_steps_done == 1 and ctrl.steps_remaining == 2
    ctrl, _ = tick(ctrl)
    ctrl, reached = tick(ctrl)
    assert reached and ctrl.alpha_steps_done == 3 and ctrl.steps_remaining == 0
    again, reached = tick(ctrl)
    assert again is ctrl and not reached


@pytest.mark.parametrize("steepness", [1e4, 1e6, 1e300, 0.1, 0.01, 0.0])
def test_extreme_steepness_stays_finite_and_monotone(steepness: float) -> None:
    ctrl = retarget(
        AlphaController(), alpha_target=1.0, steps=8, curve=AlphaCurve.SIGMOID, steepness=steepness
    )
    alphas = [a for a, _, _ in run_ramp(ctrl)]
    assert all(math.isfinite(a) and 0.0 <= a <= 1.0 for a in alphas)
    assert alphas == sorted(alphas) and alphas[-1] == 1.0


def test_extreme_steepness_shapes() -> None:
    # Very steep: a step function at t = 1/2.
    assert [curve_progress(t, AlphaCurve.SIGMOID, 1e4) for t in (0.25, 0.5, 0.75)] == [0.0, 0.5, 1.0]
    # Very flat (steepness floored at 0.1 by the controller): almost linear.
    for t in (0.1, 0.25, 0.5, 0.9):
        assert curve_progress(t, AlphaCurve.SIGMOID, 0.1) == pytest.approx(t, abs=1e-3)


@pytest.mark.parametrize("curve", list(AlphaCurve))
def test_curve_endpoints_and_clamp(curve: AlphaCurve) -> None:
    assert curve_progress(0.0, curve) == pytest.approx(0.0, abs=1e-15)
    assert curve_progress(1.0, curve) == pytest.approx(1.0, abs=1e-15)
    assert curve_progress(-1.0, curve) == curve_progress(0.0, curve)
    assert curve_progress(2.0, curve) == curve_progress(1.0, curve)


@given(
    start=st.floats(0.0, 1.0),
    target=st.floats(0.0, 1.0),
    steps=st.integers(0, 12),
    curve=st.sampled_from(list(AlphaCurve)),
    steepness=st.floats(0.0, 1e5),
)
def test_ramps_are_monotone_and_snap(
    start: float, target: float, steps: int, curve: AlphaCurve, steepness: float
) -> None:
    ctrl = retarget(AlphaController(alpha=start), alpha_target=target, steps=steps, curve=curve, steepness=steepness)
    if ctrl.alpha_mode == AlphaMode.HOLD:
        assert ctrl.alpha == target or (ctrl.alpha == start == target)
        return
    previous = ctrl.alpha
    lo, hi = min(start, target), max(start, target)
    for _ in range(steps + 2):
        ctrl, reached = tick(ctrl)
        assert lo <= ctrl.alpha <= hi
        if target > start:
            assert ctrl.alpha >= previous
        else:
            assert ctrl.alpha <= previous
        previous = ctrl.alpha
        if reached:
            assert ctrl.alpha == target and ctrl.alpha_mode == AlphaMode.HOLD
    assert ctrl.alpha_mode == AlphaMode.HOLD and ctrl.alpha == target
