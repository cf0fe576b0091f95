"""The governor: a pure watchdog for catastrophic losses (esper-lite's ``TolariaGovernor``).

optax-style: a frozen :class:`GovernorConfig`, a small frozen
:class:`GovernorState`, and two pure functions, :func:`governor_init` and
:func:`governor_check`, with :func:`prune_on_rollback` and
:func:`should_snapshot` for the loop around them.

Examples:
    One check per epoch; a NaN loss rolls the run back (``Verdict.PANIC``,
    an anomaly not yet confirmed, would keep training):

    >>> import math
    >>> import esper_func as ef
    >>> from esper_func.governor import (
    ...     GovernorConfig, Verdict, governor_check, governor_init, prune_on_rollback, should_snapshot,
    ... )
    >>> config = GovernorConfig()
    >>> gstate = governor_init(config)
    >>> seeds = {"r0c0": ef.germinate("r0c0", "norm")}
    >>> params = last_good_params = {"w": 1.0}
    >>> for epoch, loss in enumerate([2.3, 2.1, math.nan], start=1):
    ...     gstate, verdict, reason = governor_check(config, gstate, loss)
    ...     if verdict == Verdict.ROLLBACK:
    ...         params = last_good_params                               # rolling back = keeping the old values
    ...         seeds, events = prune_on_rollback(config, seeds, reason)  # every live seed goes
    ...     elif should_snapshot(config, epoch, fossilized=False):
    ...         last_good_params = params                               # the new last-known-good state
    >>> verdict, reason, seeds["r0c0"].stage.name
    (<Verdict.ROLLBACK: 2>, 'governor_nan', 'PRUNED')

Checks, in esper-lite's order (its defaults in brackets):

1. NaN or +-inf loss: ROLLBACK, reason ``"governor_nan"``.
2. Lobotomy (with at least ``min_history`` [10] losses recorded): the recent
   mean was below 0.6 x ``random_guess_loss`` [ln 10] and the loss lands
   within 6.5 % of ``random_guess_loss`` (the model now guesses uniformly):
   ROLLBACK, ``"governor_lobotomy"``.
3. Warm-up (fewer than ``min_history`` losses): the loss is recorded; OK.
4. Divergence: the loss exceeds *all* of ``absolute_threshold`` [12.0],
   mean + ``sensitivity`` [6] x std, and ``multiplier`` [3] x mean of the
   recorded losses: one more consecutive panic; ROLLBACK (``"governor_divergence"``)
   once there are ``min_panics_before_rollback`` [3] in a row, PANIC before.
5. Otherwise the loss is recorded, the panic count reset; OK.

Only OK losses are recorded (bounded to the last ``history_window`` [20]): an
anomalous, non-finite or rolled-back loss never enters the history, so the
statistics stay those of healthy training. For a plain "several times the
recent mean" rule, set ``absolute_threshold=0``, ``sensitivity=0`` and
``min_panics_before_rollback=1``.

On ROLLBACK the returned state is the governor's state *after* the rollback
(panic count cleared, ``rollbacks`` incremented, history kept, as esper-lite's
``execute_rollback`` leaves it): keep it, do not roll it back with the model.

What a rollback does to the seeds (:func:`prune_on_rollback`), as esper-lite's
``TolariaGovernor.execute_rollback``: every live seed is pruned with the panic
reason (``"governor_nan"``, ``"governor_lobotomy"`` or
``"governor_divergence"``), initiator ``"governor"``; FOSSILIZED seeds and
slots without a seed are left alone. ``GovernorConfig(rollback_prune="newest")``
prunes only the most recently germinated live seed instead. When to take the
last-known-good snapshot (:func:`should_snapshot`), as esper-lite's training
loop: after a check that did not roll back, every ``snapshot_interval`` [5]
epochs and in the epoch after a fossilization. The RL death penalty and
telemetry are not part of this module.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from typing import Final

import torch

from esper_func._pytree import pytree_dataclass
from esper_func._validate import CheckedIntEnum, check_choice, check_float, check_int
from esper_func.errors import InvalidArgumentError, InvalidTypeError
from esper_func.lifecycle.events import LifecycleEvent
from esper_func.lifecycle.stages import SeedStage
from esper_func.lifecycle.state import SeedState, has_seed
from esper_func.lifecycle.transitions import prune

__all__ = [
    "DEFAULT_GOVERNOR_ABSOLUTE_THRESHOLD",
    "DEFAULT_GOVERNOR_HISTORY_WINDOW",
    "DEFAULT_GOVERNOR_LOSS_MULTIPLIER",
    "DEFAULT_GOVERNOR_SENSITIVITY",
    "DEFAULT_MIN_PANICS_BEFORE_ROLLBACK",
    "MIN_GOVERNOR_HISTORY_SAMPLES",
    "REASON_DIVERGENCE",
    "REASON_LOBOTOMY",
    "REASON_NAN",
    "ROLLBACK_PRUNE_REASON",
    "GovernorConfig",
    "GovernorState",
    "Verdict",
    "governor_check",
    "governor_init",
    "newest_seed",
    "prune_on_rollback",
    "should_snapshot",
]

# esper-lite's leyline constants (Governor / Tolaria).
DEFAULT_GOVERNOR_SENSITIVITY: Final[float] = 6.0
DEFAULT_GOVERNOR_ABSOLUTE_THRESHOLD: Final[float] = 12.0
DEFAULT_GOVERNOR_HISTORY_WINDOW: Final[int] = 20
MIN_GOVERNOR_HISTORY_SAMPLES: Final[int] = 10
DEFAULT_MIN_PANICS_BEFORE_ROLLBACK: Final[int] = 3
DEFAULT_GOVERNOR_LOSS_MULTIPLIER: Final[float] = 3.0
#: Random-guess loss of 10-class classification (esper-lite's default lobotomy signature).
DEFAULT_RANDOM_GUESS_LOSS: Final[float] = math.log(10)
#: Lobotomy: the recent mean must have been below this fraction of the random-guess loss ...
LOBOTOMY_HEALTHY_FRACTION: Final[float] = 0.6
#: ... and the loss within this fraction of the random-guess loss.
LOBOTOMY_RELATIVE_TOLERANCE: Final[float] = 0.065

REASON_NAN: Final[str] = "governor_nan"
REASON_LOBOTOMY: Final[str] = "governor_lobotomy"
REASON_DIVERGENCE: Final[str] = "governor_divergence"
#: Prune reason of a rollback without a recorded panic reason (esper-lite's fallback).
ROLLBACK_PRUNE_REASON: Final[str] = "governor_rollback"
#: esper-lite's training loop snapshots the last-known-good state every this many epochs.
DEFAULT_SNAPSHOT_INTERVAL: Final[int] = 5
#: Consecutive rollbacks after which a run stops: the same data keep producing a non-finite loss.
DEFAULT_MAX_CONSECUTIVE_ROLLBACKS: Final[int] = 3


class Verdict(CheckedIntEnum):
    """The governor's verdict on one loss."""

    OK = 0  #: healthy; the loss was recorded, the state may become the last good one
    PANIC = 1  #: anomalous but not yet confirmed; keep going, do not refresh the last good state
    ROLLBACK = 2  #: catastrophic; restore the last good state


def _require_number(name: str, value: object, *, minimum: float | None = None) -> float:
    return check_float(f"GovernorConfig.{name}", value, minimum=minimum)


def _require_count(name: str, value: object, *, minimum: int) -> int:
    return check_int(f"GovernorConfig.{name}", value, minimum=minimum)


@dataclasses.dataclass(frozen=True, kw_only=True)
class GovernorConfig:
    """Thresholds of the governor (esper-lite's defaults).

    ``random_guess_loss`` is the loss of a model guessing uniformly (ln of the
    number of classes); ``None`` turns lobotomy detection off.
    ``history_window`` must be at least ``min_history``, or statistical
    detection could never run. ``rollback_prune`` is ``"all"`` (esper-lite:
    prune every live seed) or ``"newest"``; ``snapshot_interval`` is how often
    (in epochs) the last-known-good state is refreshed; after
    ``max_consecutive_rollbacks`` rollbacks in a row a training loop stops
    with an error (0: never).
    """

    sensitivity: float = DEFAULT_GOVERNOR_SENSITIVITY
    multiplier: float = DEFAULT_GOVERNOR_LOSS_MULTIPLIER
    absolute_threshold: float = DEFAULT_GOVERNOR_ABSOLUTE_THRESHOLD
    history_window: int = DEFAULT_GOVERNOR_HISTORY_WINDOW
    min_history: int = MIN_GOVERNOR_HISTORY_SAMPLES
    min_panics_before_rollback: int = DEFAULT_MIN_PANICS_BEFORE_ROLLBACK
    random_guess_loss: float | None = DEFAULT_RANDOM_GUESS_LOSS
    rollback_prune: str = "all"
    snapshot_interval: int = DEFAULT_SNAPSHOT_INTERVAL
    max_consecutive_rollbacks: int = DEFAULT_MAX_CONSECUTIVE_ROLLBACKS

    def __post_init__(self) -> None:
        check_choice("GovernorConfig.rollback_prune", self.rollback_prune, ("all", "newest"))
        check_int("GovernorConfig.snapshot_interval", self.snapshot_interval, minimum=1)
        check_int("GovernorConfig.max_consecutive_rollbacks", self.max_consecutive_rollbacks, minimum=0)
        set_ = object.__setattr__
        set_(self, "sensitivity", _require_number("sensitivity", self.sensitivity, minimum=0.0))
        set_(self, "multiplier", _require_number("multiplier", self.multiplier, minimum=0.0))
        set_(self, "absolute_threshold", _require_number("absolute_threshold", self.absolute_threshold))
        _require_count("min_history", self.min_history, minimum=1)
        _require_count("history_window", self.history_window, minimum=1)
        _require_count("min_panics_before_rollback", self.min_panics_before_rollback, minimum=1)
        if self.history_window < self.min_history:
            raise InvalidArgumentError(
                f"GovernorConfig.history_window ({self.history_window}) must be >= min_history "
                f"({self.min_history}); a smaller window would disable anomaly detection"
            )
        if self.random_guess_loss is not None:
            set_(self, "random_guess_loss", _require_number("random_guess_loss", self.random_guess_loss, minimum=0.0))


@pytree_dataclass
@dataclasses.dataclass(frozen=True, kw_only=True)
class GovernorState:
    """The governor's memory: recent healthy losses (oldest first, at most ``history_window``),
    the number of consecutive unconfirmed panics, and the number of rollbacks so far.

    A registered pytree of Python scalars, so it can sit inside a training state.
    """

    losses: tuple[float, ...] = ()
    consecutive_panics: int = 0
    rollbacks: int = 0


def governor_init(config: GovernorConfig | None = None) -> GovernorState:
    """A fresh governor state (empty history)."""
    if config is not None and not isinstance(config, GovernorConfig):
        raise InvalidTypeError(f"governor_init() expects a GovernorConfig or None; got {type(config).__name__}")
    return GovernorState()


def _loss_value(loss: object) -> float:
    if isinstance(loss, torch.Tensor):
        if loss.numel() != 1:
            raise InvalidArgumentError(f"governor_check(): loss must be a scalar; got a tensor of shape {tuple(loss.shape)}")
        return float(loss.detach().item())
    if isinstance(loss, bool) or not isinstance(loss, numbers.Real):
        raise InvalidTypeError(f"governor_check(): loss must be a real number; got {type(loss).__name__} {loss!r}")
    return float(loss)


def _rolled_back(state: GovernorState) -> GovernorState:
    return dataclasses.replace(state, consecutive_panics=0, rollbacks=state.rollbacks + 1)


def governor_check(
    config: GovernorConfig, state: GovernorState, loss: float | torch.Tensor
) -> tuple[GovernorState, Verdict, str]:
    """Judge one loss (pure). Returns ``(new_state, verdict, reason)``.

    ``reason`` is ``""`` for OK, ``"governor_divergence"`` for PANIC, and
    ``"governor_nan"``, ``"governor_lobotomy"`` or ``"governor_divergence"``
    for ROLLBACK. ``loss`` may be a Python number or a one-element tensor
    (which is synced to the host). See the module docstring for the rules.
    """
    if not isinstance(config, GovernorConfig):
        raise InvalidTypeError(f"governor_check() expects a GovernorConfig first; got {type(config).__name__}")
    if not isinstance(state, GovernorState):
        raise InvalidTypeError(f"governor_check() expects a GovernorState second; got {type(state).__name__}")
    value = _loss_value(loss)
    if not math.isfinite(value):
        return _rolled_back(state), Verdict.ROLLBACK, REASON_NAN

    history = state.losses
    enough = len(history) >= config.min_history
    if enough and config.random_guess_loss is not None:
        mean = sum(history) / len(history)
        guess = config.random_guess_loss
        if mean < guess * LOBOTOMY_HEALTHY_FRACTION and abs(value - guess) < LOBOTOMY_RELATIVE_TOLERANCE * guess:
            return _rolled_back(state), Verdict.ROLLBACK, REASON_LOBOTOMY

    if enough:
        mean = sum(history) / len(history)
        std = math.sqrt(sum((x - mean) ** 2 for x in history) / len(history))
        anomalous = (
            value > config.absolute_threshold
            and value > mean + config.sensitivity * std
            and value > mean * config.multiplier
        )
        if anomalous:
            panics = state.consecutive_panics + 1
            if panics >= config.min_panics_before_rollback:
                return _rolled_back(state), Verdict.ROLLBACK, REASON_DIVERGENCE
            return dataclasses.replace(state, consecutive_panics=panics), Verdict.PANIC, REASON_DIVERGENCE

    recorded = (*history, value)[-config.history_window :]
    panics = state.consecutive_panics if not enough else 0
    return dataclasses.replace(state, losses=recorded, consecutive_panics=panics), Verdict.OK, ""


def newest_seed(states: Mapping[str, SeedState]) -> str | None:
    """The slot of the most recently germinated live seed, or ``None`` if there is none.

    Live: a seed is present and not FOSSILIZED (fossils are permanent and
    cannot be pruned). Newest: the fewest epochs lived, ``metrics.epochs_total``
    (``record_accuracy`` counts one per epoch from germination on, so the
    youngest seed has the smallest count); a tie goes to the slot that comes
    last in ``states``' iteration order (for the training loop's dict, which
    gains a slot when it is first germinated: the most recently added).
    """
    if not isinstance(states, Mapping):
        raise InvalidTypeError(f"newest_seed() expects a mapping slot_id -> SeedState; got {type(states).__name__}")
    best: str | None = None
    best_age = math.inf
    for slot_id, state in states.items():
        if not isinstance(state, SeedState):
            raise InvalidTypeError(f"newest_seed(): states[{slot_id!r}] is a {type(state).__name__}, not a SeedState")
        if not has_seed(state) or state.stage == SeedStage.FOSSILIZED:
            continue
        age = state.metrics.epochs_total
        if age <= best_age:
            best, best_age = slot_id, age
    return best


def prune_on_rollback(
    config: GovernorConfig, states: Mapping[str, SeedState], reason: str
) -> tuple[dict[str, SeedState], tuple[LifecycleEvent, ...]]:
    """Prune the seeds a rollback removes; returns new states and the events, in slot order.

    ``config.rollback_prune == "all"`` (esper-lite): every live seed, with
    ``reason`` (the panic reason; ``"governor_rollback"`` when empty),
    initiator ``"governor"``. ``"newest"``: only :func:`newest_seed`.
    FOSSILIZED seeds and slots without a seed are untouched (their prune is
    refused). Pure: ``states`` is left as it was.
    """
    reason = reason or ROLLBACK_PRUNE_REASON
    new = dict(states)
    events: list[LifecycleEvent] = []
    victims = list(new) if config.rollback_prune == "all" else [s for s in (newest_seed(new),) if s is not None]
    for slot_id in victims:
        new[slot_id], pruned = prune(new[slot_id], reason, initiator="governor")
        events.extend(pruned)
    return new, tuple(events)


def should_snapshot(config: GovernorConfig, epoch: int, *, fossilized: bool = False) -> bool:
    """Whether the state after ``epoch`` (whose check did not roll back) becomes the last-known-good one.

    esper-lite's loop: every ``snapshot_interval`` epochs, and at the first
    check after a fossilization (``fossilized``).
    """
    return fossilized or epoch % config.snapshot_interval == 0
