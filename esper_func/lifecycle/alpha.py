"""The alpha controller: a frozen schedule that moves alpha from a start to a target.

An :class:`AlphaController` is a small immutable value. :func:`retarget` starts
a new ramp and :func:`tick` advances it by one step; both return a *new*
controller and leave their argument alone (optax-style: state in, state out).

Contracts (esper-lite's ``AlphaController``, reproduced; checked by the tests):

- ``alpha``, ``alpha_start`` and ``alpha_target`` are clamped to ``[0, 1]``;
  ``alpha_steepness`` to at least ``0.1``; step counts to ``>= 0`` with
  ``alpha_steps_done <= alpha_steps_total``. NaN is rejected, not clamped.
- :func:`retarget` is only allowed from :attr:`AlphaMode.HOLD` (no dithering
  mid-ramp); from ``UP``/``DOWN`` it raises
  :class:`~esper_func.errors.IllegalTransitionError`. A target above the
  current alpha ramps ``UP``, below ramps ``DOWN``, equal stays in ``HOLD``;
  ``steps=0`` snaps to the target at once.
- :func:`tick` is a no-op in ``HOLD``. On the last step it snaps alpha to the
  target exactly and returns to ``HOLD`` (``reached=True``); before that
  ``alpha = start + (target - start) * curve(done / total)``, kept within
  ``[start, target]`` so the ramp is monotone.
- Curves map progress ``t`` in ``[0, 1]`` onto ``[0, 1]``: linear ``t``;
  cosine ``0.5 (1 - cos(pi t))``; sigmoid ``(s(k(t - 1/2)) - s(-k/2)) /
  (s(k/2) - s(-k/2))`` with the logistic ``s`` evaluated without overflow, so
  any finite steepness ``k`` (``1e4``, ``0.1``) gives finite values.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Final

from esper_func._pytree import pytree_dataclass, static_field
from esper_func._validate import CheckedIntEnum, check_enum, check_float, check_int
from esper_func.errors import IllegalTransitionError, InvalidArgumentError

__all__ = [
    "AlphaAlgorithm",
    "AlphaCurve",
    "AlphaMode",
    "AlphaController",
    "DEFAULT_STEEPNESS",
    "MIN_STEEPNESS",
    "curve_progress",
    "retarget",
    "tick",
]

#: Sigmoid steepness used when none is given (esper-lite's default).
DEFAULT_STEEPNESS: Final[float] = 12.0
#: Smallest steepness kept; lower values are raised to this (esper-lite's floor).
MIN_STEEPNESS: Final[float] = 0.1


class AlphaAlgorithm(CheckedIntEnum):
    """How a seed is composed with the host (values as in esper-lite)."""

    ADD = 1
    MULTIPLY = 2
    GATE = 3


class AlphaMode(CheckedIntEnum):
    """Direction of the controller (values as in esper-lite's leyline)."""

    HOLD = 0
    UP = 1
    DOWN = 2


class AlphaCurve(CheckedIntEnum):
    """Easing curve of a ramp (values as in esper-lite's leyline)."""

    LINEAR = 1
    COSINE = 2
    SIGMOID = 3


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _clamp01(value: float) -> float:
    return max(0.0, min(1.0, float(value)))


def _check_not_nan(name: str, value: float) -> None:
    if math.isnan(value):
        raise InvalidArgumentError(f"AlphaController: {name} is NaN; expected a number in [0, 1]")


def _logistic(x: float) -> float:
    """``1 / (1 + exp(-x))`` without overflow for any finite ``x``."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def curve_progress(t: float, curve: AlphaCurve, steepness: float = DEFAULT_STEEPNESS) -> float:
    """Eased progress in ``[0, 1]`` for linear progress ``t`` (clamped to ``[0, 1]``).

    ``steepness`` only affects :attr:`AlphaCurve.SIGMOID`.
    """
    t = max(0.0, min(1.0, float(t)))
    if curve == AlphaCurve.LINEAR:
        return t
    if curve == AlphaCurve.COSINE:
        return 0.5 * (1.0 - math.cos(math.pi * t))
    if curve == AlphaCurve.SIGMOID:
        k = float(steepness)
        lo = _logistic(-0.5 * k)
        hi = _logistic(0.5 * k)
        if hi == lo:  # only for a vanishing steepness; fall back to linear
            return t
        return (_logistic(k * (t - 0.5)) - lo) / (hi - lo)
    raise InvalidArgumentError(f"unknown alpha curve {curve!r}; expected one of {[c.name for c in AlphaCurve]}")


@pytree_dataclass
@dataclasses.dataclass(frozen=True, kw_only=True)
class AlphaController:
    """Schedule of alpha from ``alpha_start`` to ``alpha_target`` over ``alpha_steps_total`` ticks.

    Numbers are pytree children; ``alpha_mode`` and ``alpha_curve`` are static
    metadata. Constructing one with Python numbers clamps them as esper-lite
    does (see the module docstring); field names are esper-lite's.
    """

    alpha: float = 0.0
    alpha_start: float = 0.0
    alpha_target: float = 0.0
    alpha_mode: AlphaMode = static_field(default=AlphaMode.HOLD)
    alpha_curve: AlphaCurve = static_field(default=AlphaCurve.LINEAR)
    alpha_steepness: float = DEFAULT_STEEPNESS
    alpha_steps_total: int = 0
    alpha_steps_done: int = 0

    def __post_init__(self) -> None:
        # Only plain Python numbers are normalised: pytree utilities may rebuild
        # the node with other leaves (tensors, placeholders), which pass through.
        set_ = object.__setattr__
        for name in ("alpha", "alpha_start", "alpha_target"):
            value = getattr(self, name)
            if _is_number(value):
                _check_not_nan(name, value)
                set_(self, name, _clamp01(value))
        if _is_number(self.alpha_steepness):
            _check_not_nan("alpha_steepness", self.alpha_steepness)
            set_(self, "alpha_steepness", max(MIN_STEEPNESS, float(self.alpha_steepness)))
        if _is_number(self.alpha_steps_total):
            set_(self, "alpha_steps_total", max(0, int(self.alpha_steps_total)))
        if _is_number(self.alpha_steps_done):
            done = max(0, int(self.alpha_steps_done))
            if _is_number(self.alpha_steps_total):
                done = min(done, self.alpha_steps_total)
            set_(self, "alpha_steps_done", done)
        if not isinstance(self.alpha_mode, AlphaMode):
            set_(self, "alpha_mode", check_enum("AlphaController.alpha_mode", self.alpha_mode, AlphaMode))
        if not isinstance(self.alpha_curve, AlphaCurve):
            set_(self, "alpha_curve", check_enum("AlphaController.alpha_curve", self.alpha_curve, AlphaCurve))

    @property
    def steps_remaining(self) -> int:
        """Ticks left until the target (0 in HOLD after a completed ramp)."""
        return max(self.alpha_steps_total - self.alpha_steps_done, 0)


_RETARGET_FROM_RAMP = (
    "retarget() is only allowed from AlphaMode.HOLD, but the controller is ramping {mode} "
    "(alpha={alpha:.4f} -> target {target:.4f}, step {done}/{total}). Let the ramp finish "
    "(tick() until reached) before choosing a new target; changing targets mid-ramp would "
    "make alpha dither."
)


def retarget(
    ctrl: AlphaController,
    *,
    alpha_target: float,
    steps: int,
    curve: AlphaCurve | None = None,
    steepness: float | None = None,
) -> AlphaController:
    """Start a ramp from the current alpha to ``alpha_target`` over ``steps`` ticks.

    ``alpha_target`` is clamped to ``[0, 1]``; ``steps`` must be ``>= 0``;
    ``curve``/``steepness`` of ``None`` keep the controller's current ones.
    Returns a new controller in ``UP``, ``DOWN`` or (target equals alpha, or
    ``steps == 0``: snapped to the target) ``HOLD``.

    Raises:
        IllegalTransitionError: the controller is not in ``HOLD``.
        InvalidArgumentError: ``alpha_target`` is NaN, ``steps`` negative or
            ``steepness`` not finite.
    """
    if ctrl.alpha_mode != AlphaMode.HOLD:
        raise IllegalTransitionError(
            _RETARGET_FROM_RAMP.format(
                mode=ctrl.alpha_mode.name,
                alpha=ctrl.alpha,
                target=ctrl.alpha_target,
                done=ctrl.alpha_steps_done,
                total=ctrl.alpha_steps_total,
            )
        )
    target = _clamp01(check_float("retarget(): alpha_target", alpha_target, finite=False))
    steps_total = check_int("retarget(): steps", steps, minimum=0)
    new_steepness = ctrl.alpha_steepness
    if steepness is not None:
        new_steepness = max(MIN_STEEPNESS, check_float("retarget(): steepness", steepness))
    new_curve = ctrl.alpha_curve if curve is None else check_enum("retarget(): curve", curve, AlphaCurve)

    alpha = ctrl.alpha
    if target > alpha:
        mode = AlphaMode.UP
    elif target < alpha:
        mode = AlphaMode.DOWN
    else:
        mode = AlphaMode.HOLD
        alpha = target
    if steps_total == 0:
        alpha = target
        mode = AlphaMode.HOLD
    return dataclasses.replace(
        ctrl,
        alpha=alpha,
        alpha_start=ctrl.alpha,
        alpha_target=target,
        alpha_mode=mode,
        alpha_curve=new_curve,
        alpha_steepness=new_steepness,
        alpha_steps_total=steps_total,
        alpha_steps_done=0,
    )


def tick(ctrl: AlphaController) -> tuple[AlphaController, bool]:
    """Advance one step. Returns ``(new_controller, reached)``.

    ``reached`` is ``True`` only on the tick that snaps alpha onto the target
    and returns the controller to ``HOLD``. In ``HOLD`` (or with zero total
    steps) the controller is returned unchanged with ``reached=False``.
    """
    if ctrl.alpha_mode == AlphaMode.HOLD or ctrl.alpha_steps_total == 0:
        return ctrl, False
    done = ctrl.alpha_steps_done + 1
    if done >= ctrl.alpha_steps_total:
        new = dataclasses.replace(
            ctrl,
            alpha=ctrl.alpha_target,
            alpha_mode=AlphaMode.HOLD,
            alpha_steps_done=ctrl.alpha_steps_total,
        )
        return new, True
    progress = curve_progress(done / ctrl.alpha_steps_total, ctrl.alpha_curve, ctrl.alpha_steepness)
    value = _clamp01(ctrl.alpha_start + (ctrl.alpha_target - ctrl.alpha_start) * progress)
    if ctrl.alpha_mode == AlphaMode.UP:
        value = min(max(value, ctrl.alpha_start), ctrl.alpha_target)
    else:  # DOWN
        value = max(min(value, ctrl.alpha_start), ctrl.alpha_target)
    return dataclasses.replace(ctrl, alpha=value, alpha_steps_done=done), False
