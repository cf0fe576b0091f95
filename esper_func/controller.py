"""Seed-lifecycle controllers: esper-lite's heuristic policy as a pure function.

A controller maps one :class:`Observation` (everything known after an
epoch's validation and lifecycle step) to one
:class:`~esper_func.lifecycle.Action`; the lifecycle executes it
(:func:`esper_func.lifecycle.apply_action`).

Examples:
    After three epochs of plateau on a stabilised loss, the heuristic
    germinates the first blueprint of its rotation into the first free slot:

    >>> import esper_func as ef
    >>> from esper_func.controller import Observation, SlotView, heuristic
    >>> controller = heuristic()                    # or any Observation -> Action
    >>> observation = Observation(
    ...     epoch=6, max_epochs=20, topology="cnn",
    ...     val_accuracy=65.3, val_loss=0.69, train_loss=0.7,
    ...     accuracy_history=(50.0, 60.0, 65.0, 65.1, 65.2, 65.3),
    ...     loss_history=(1.0, 0.8, 0.7, 0.69, 0.69, 0.69),
    ...     slots=(SlotView("r0c0"), SlotView("r0c1")),
    ... )
    >>> action = controller(observation)
    >>> action.kind, action.slot_id, action.blueprint
    (<ActionKind.GERMINATE: 1>, 'r0c0', 'conv_light')
    >>> states, events, result = ef.apply_action(action, {}, ef.Gates(), epoch=observation.epoch, topology="cnn")
    >>> states["r0c0"].stage, [type(event).__name__ for event in events]
    (<SeedStage.GERMINATED: 2>, ['SeedGerminated'])

This module is policy only. :func:`decide` reproduces esper-lite 2016337e's
``HeuristicTamiyo`` (``tamiyo/heuristic.py``) and the plateau/stabilisation
tracking of its ``SignalTracker`` (``tamiyo/tracker.py``). esper-lite keeps
the policy's memory in mutable attributes; here the policy has none. Each
piece is recomputed from the observation on every call (see :func:`recall`
and :class:`PolicyMemory`):

=================================  ==========================================
esper-lite attribute               derived here from
=================================  ==========================================
``SignalTracker._plateau_count``   ``accuracy_history`` (replayed: an epoch
                                   whose gain over the previous one is below
                                   ``plateau_threshold`` points extends the
                                   plateau, any other epoch ends it; the
                                   "previous" accuracy of the first epoch is 0)
``SignalTracker._is_stabilized``   ``loss_history`` (replayed latch: an epoch
                                   whose relative loss change lies strictly
                                   between a ``regression_threshold`` rise and a
                                   ``stabilization_threshold`` fall is stable;
                                   ``stabilization_epochs`` stable epochs in a
                                   row set the latch for good)
``_last_prune_epoch``              the latest ``SeedPruned`` event whose
                                   initiator is ``"policy"`` (governor prunes do
                                   not count, as in esper-lite, where the
                                   governor prunes slots behind the policy's back)
``_blueprint_penalties``           those same prune events: ``+penalty_on_prune``
                                   per prune, multiplied by ``penalty_decay`` once
                                   per epoch since, dropped below 0.1
``_blueprint_index``               the ``SeedGerminated`` events, replaying the
                                   rotation (skips of penalised blueprints
                                   included) with the penalties of that epoch
=================================  ==========================================

Event times are global epochs, given by ``Observation.event_epochs`` (one per
event): an event record's own ``epoch`` field is the *seed's* age
(``metrics.epochs_total``), which cannot order events across slots.

Decision rules (esper-lite's order; the first live seed in execution order is
the only one managed, one action per call, as esper-lite's single decision
per step):

- No live seed (every slot free, cooling down after a prune, or FOSSILIZED):
  WAIT during the policy embargo (fewer than ``embargo_epochs_after_prune``
  epochs since the policy's last prune), WAIT while the host is not
  stabilised, WAIT before ``min_epochs_before_germinate``, WAIT when no slot
  was available (``Observation.available_slots``: esper-lite counts free
  slots *before* the epoch's lifecycle step, so a slot freed by that step is
  used an epoch later), GERMINATE the next blueprint of the rotation into
  the first free slot once the plateau lasts ``plateau_epochs_to_germinate``
  epochs, WAIT otherwise. A slot is free when it has never been used or its
  state is DORMANT again; PRUNED, EMBARGOED and RESETTING slots are not.
- GERMINATED: ADVANCE (to TRAINING).
- TRAINING: PRUNE when failing (at least ``prune_after_epochs_without_improvement``
  epochs in the stage and accuracy more than ``prune_if_accuracy_drops_by``
  points below its value at the stage start), else ADVANCE (the G2 gate
  decides whether it happens).
- BLENDING: PRUNE when failing; ADVANCE once the ramp reached full amplitude;
  else WAIT.
- HOLDING: PRUNE a "ransomware" seed (contribution above
  ``ransomware_contribution_threshold`` while the total improvement is below
  ``ransomware_improvement_threshold``); WAIT while no counterfactual
  contribution has been measured; FOSSILIZE when the contribution exceeds
  ``min_improvement_to_fossilize``; else PRUNE.

Blueprint choice: starting at the rotation position, the first blueprint
whose penalty is below ``blueprint_penalty_threshold``; when all are
penalised, the rotation position indexes the blueprints sorted by
``(penalty, name)`` and the position moves on by one (esper-lite's fix for
the exploration collapse of always picking the least-penalised one).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final, TypeAlias

from esper_func._validate import check_choice, check_enum, check_float, check_int, describe
from esper_func.errors import InvalidArgumentError, InvalidTypeError, UnknownBlueprintError, UnknownTopologyError
from esper_func.hosts import resolve_topology
from esper_func.lifecycle.actions import Action, ActionKind, apply_action
from esper_func.lifecycle.alpha import AlphaAlgorithm, AlphaMode
from esper_func.lifecycle.events import LifecycleEvent, SeedGerminated, SeedPruned
from esper_func.lifecycle.gates import DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE
from esper_func.lifecycle.stages import SeedStage
from esper_func.lifecycle.state import BLEND_ALGORITHMS, SeedState, is_free

__all__ = [
    "DEFAULT_BLUEPRINT_ROTATION",
    "LIVE_STAGES",
    "Action",
    "ActionKind",
    "Controller",
    "HeuristicConfig",
    "Observation",
    "PolicyMemory",
    "SlotView",
    "apply_action",
    "decide",
    "heuristic",
    "is_free",
    "is_live",
    "recall",
    "select_blueprint",
]

# esper-lite's leyline constants for the heuristic policy and its signal tracker.
DEFAULT_PLATEAU_EPOCHS_TO_GERMINATE: Final[int] = 3
DEFAULT_MIN_EPOCHS_BEFORE_GERMINATE: Final[int] = 5
DEFAULT_PRUNE_AFTER_EPOCHS_WITHOUT_IMPROVEMENT: Final[int] = 5
DEFAULT_PRUNE_IF_ACCURACY_DROPS_BY: Final[float] = 2.0
DEFAULT_MIN_IMPROVEMENT_TO_FOSSILIZE: Final[float] = 0.5
DEFAULT_BLUEPRINT_PENALTY_ON_PRUNE: Final[float] = 2.0
DEFAULT_BLUEPRINT_PENALTY_DECAY: Final[float] = 0.5
DEFAULT_BLUEPRINT_PENALTY_THRESHOLD: Final[float] = 3.0
DEFAULT_RANSOMWARE_CONTRIBUTION_THRESHOLD: Final[float] = 0.1
DEFAULT_RANSOMWARE_IMPROVEMENT_THRESHOLD: Final[float] = 0.0
DEFAULT_PLATEAU_THRESHOLD: Final[float] = 0.5
DEFAULT_STABILIZATION_THRESHOLD: Final[float] = 0.03
DEFAULT_STABILIZATION_EPOCHS: Final[int] = 3
#: A loss rise of less than this (relative) still counts as a stable epoch (esper-lite's tracker).
DEFAULT_REGRESSION_THRESHOLD: Final[float] = 0.05
#: A decayed penalty below this is forgotten (esper-lite's fixed cut-off).
PENALTY_FLOOR: Final[float] = 0.1
#: Tolerance of the "full amplitude reached" test in BLENDING.
_ALPHA_EPS: Final[float] = 1e-6
#: Losses at or below this give no relative improvement (esper-lite's tracker).
_LOSS_EPS: Final[float] = 1e-8

#: Default blueprint rotation per topology. The CNN rotation is esper-lite's
#: default; esper-lite has no transformer default (its heuristic refuses the
#: CNN default for transformers), so the rotation its documentation suggests
#: for transformer hosts is used.
DEFAULT_BLUEPRINT_ROTATION: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "cnn": ("conv_light", "conv_heavy", "attention", "norm", "depthwise"),
        "transformer": ("norm", "lora", "attention"),
    }
)

#: Stages in which a seed is managed by the policy (esper-lite: not terminal, not failed).
LIVE_STAGES: Final = frozenset({SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING})


# --------------------------------------------------------------------------- helpers


def _floats(name: str, values: object) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidTypeError(f"{name} must be a sequence of numbers (oldest first); got {describe(values)}")
    return tuple(_number(f"{name}[{i}]", v) for i, v in enumerate(values))


def _number(name: str, value: object) -> float:
    """A real number; NaN and infinities are allowed (a diverged epoch)."""
    if isinstance(value, float) and math.isnan(value):
        return value
    return check_float(name, value, finite=False)


def _strings(name: str, values: object) -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InvalidTypeError(f"{name} must be a sequence of str (e.g. a tuple); got {describe(values)}")
    for i, v in enumerate(values):
        if not isinstance(v, str) or not v:
            raise InvalidTypeError(f"{name}[{i}] must be a non-empty str; got {describe(v)}")
    return tuple(values)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# --------------------------------------------------------------------------- configuration


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeuristicConfig:
    """Thresholds of the heuristic policy (esper-lite's ``HeuristicPolicyConfig`` defaults).

    Also holds the signal-tracker settings esper-lite keeps on
    ``SignalTracker`` (plateau and stabilisation detection) and the blend
    settings of germinations (esper-lite germinates with the model's
    defaults: sigmoid blend, 5-epoch tempo, additive blending, full
    amplitude).

    ``blueprint_rotation=None`` picks :data:`DEFAULT_BLUEPRINT_ROTATION` for the
    observed topology; a topology of your own, which has no default, rotates
    through every blueprint the registry holds for it (the observation's
    ``available_blueprints``, smallest first). Accuracies and improvements
    are in percentage points.
    """

    # germination triggers
    plateau_epochs_to_germinate: int = DEFAULT_PLATEAU_EPOCHS_TO_GERMINATE
    min_epochs_before_germinate: int = DEFAULT_MIN_EPOCHS_BEFORE_GERMINATE
    plateau_threshold: float = DEFAULT_PLATEAU_THRESHOLD
    stabilization_threshold: float = DEFAULT_STABILIZATION_THRESHOLD
    regression_threshold: float = DEFAULT_REGRESSION_THRESHOLD
    #: Consecutive stable epochs before germination is allowed; 0 disables the check.
    stabilization_epochs: int = DEFAULT_STABILIZATION_EPOCHS
    # pruning
    prune_after_epochs_without_improvement: int = DEFAULT_PRUNE_AFTER_EPOCHS_WITHOUT_IMPROVEMENT
    prune_if_accuracy_drops_by: float = DEFAULT_PRUNE_IF_ACCURACY_DROPS_BY
    # fossilization
    min_improvement_to_fossilize: float = DEFAULT_MIN_IMPROVEMENT_TO_FOSSILIZE
    ransomware_contribution_threshold: float = DEFAULT_RANSOMWARE_CONTRIBUTION_THRESHOLD
    ransomware_improvement_threshold: float = DEFAULT_RANSOMWARE_IMPROVEMENT_THRESHOLD
    # anti-thrashing
    embargo_epochs_after_prune: int = DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE
    blueprint_rotation: tuple[str, ...] | None = None
    blueprint_penalty_on_prune: float = DEFAULT_BLUEPRINT_PENALTY_ON_PRUNE
    blueprint_penalty_decay: float = DEFAULT_BLUEPRINT_PENALTY_DECAY
    blueprint_penalty_threshold: float = DEFAULT_BLUEPRINT_PENALTY_THRESHOLD
    # germination settings
    blend: str = "sigmoid"
    tempo: int = 5
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD

    def __post_init__(self) -> None:
        owner = "HeuristicConfig"
        set_ = object.__setattr__
        for name in (
            "plateau_epochs_to_germinate",
            "min_epochs_before_germinate",
            "stabilization_epochs",
            "prune_after_epochs_without_improvement",
            "embargo_epochs_after_prune",
            "tempo",
        ):
            check_int(f"{owner}.{name}", getattr(self, name), minimum=0)
        for name in (
            "plateau_threshold",
            "stabilization_threshold",
            "regression_threshold",
            "prune_if_accuracy_drops_by",
            "min_improvement_to_fossilize",
            "ransomware_contribution_threshold",
            "ransomware_improvement_threshold",
            "blueprint_penalty_threshold",
        ):
            set_(self, name, check_float(f"{owner}.{name}", getattr(self, name)))
        set_(
            self,
            "blueprint_penalty_decay",
            check_float(f"{owner}.blueprint_penalty_decay (per-epoch factor)", self.blueprint_penalty_decay,
                        minimum=0.0, maximum=1.0),
        )
        set_(
            self,
            "blueprint_penalty_on_prune",
            check_float(f"{owner}.blueprint_penalty_on_prune", self.blueprint_penalty_on_prune, minimum=0.0),
        )
        if self.blueprint_rotation is not None:
            rotation = _strings(f"{owner}.blueprint_rotation", self.blueprint_rotation)
            if not rotation:
                raise InvalidArgumentError(f"{owner}.blueprint_rotation must name at least one blueprint (None = default)")
            set_(self, "blueprint_rotation", rotation)
        check_choice(f"{owner}.blend", self.blend, BLEND_ALGORITHMS)
        algorithm = check_enum(f"{owner}.algorithm", self.algorithm, AlphaAlgorithm)
        if (self.blend == "gated") != (algorithm == AlphaAlgorithm.GATE):
            raise InvalidArgumentError(
                f"{owner}: blend='gated' goes with algorithm=GATE and only with it; "
                f"got blend={self.blend!r}, algorithm={algorithm.name}"
            )
        set_(self, "algorithm", algorithm)

    def rotation_for(self, topology: str, available: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The blueprint rotation used for ``topology``.

        The configured rotation if any, else the default one of a built-in
        topology, else ``available`` (the registry's blueprint names for
        ``topology``).

        Raises:
            UnknownTopologyError: none of the three exists; the message says
                how to give a rotation.
        """
        if self.blueprint_rotation is not None:
            return self.blueprint_rotation
        default = DEFAULT_BLUEPRINT_ROTATION.get(str(topology))
        if default is not None:
            return default
        if available:
            return tuple(available)
        raise UnknownTopologyError(
            f"no blueprint rotation for topology {topology!r}: it has no default (defaults exist for "
            f"{list(DEFAULT_BLUEPRINT_ROTATION)}) and no blueprints were offered; pass "
            "HeuristicConfig(blueprint_rotation=...) or register blueprints for it"
        )


# --------------------------------------------------------------------------- observation


@dataclasses.dataclass(frozen=True)
class SlotView:
    """One slot as the controller sees it.

    ``state`` is ``None`` for a slot that was never used (a DORMANT state means
    free as well). ``contribution`` is this epoch's counterfactual contribution
    (accuracy with the seed minus without it, in points), ``None`` if not
    measured; when ``None`` the policy falls back on
    ``state.metrics.counterfactual_contribution``.
    """

    slot_id: str
    state: SeedState | None = None
    contribution: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.slot_id, str) or not self.slot_id:
            raise InvalidTypeError(f"SlotView.slot_id must be a non-empty str; got {describe(self.slot_id)}")
        if self.state is not None:
            if not isinstance(self.state, SeedState):
                raise InvalidTypeError(f"SlotView.state must be a SeedState or None; got {type(self.state).__name__}")
            if self.state.slot_id != self.slot_id:
                raise InvalidArgumentError(
                    f"SlotView {self.slot_id!r} holds the state of slot {self.state.slot_id!r}; "
                    "pass each slot's own state"
                )
        if self.contribution is not None:
            object.__setattr__(self, "contribution", check_float("SlotView.contribution", self.contribution))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observation:
    """Everything a controller may use, after epoch ``epoch``'s validation and lifecycle step.

    Fields:
        epoch: the current epoch (esper-lite counts from 1).
        max_epochs: the planned number of epochs.
        topology: ``"cnn"``, ``"transformer"`` or a :class:`~esper_func.Topology`
            of your own (the host's ``host.topology``).
        val_accuracy: validation accuracy of this epoch, percent (0-100).
        val_loss, train_loss: this epoch's losses.
        accuracy_history, loss_history: validation accuracy and validation
            loss of every epoch so far, oldest first, *including this epoch*
            (so each ends with ``val_accuracy``/``val_loss``). Plateau and
            stabilisation are replayed from these.
        slots: every slot in execution order, with its state after this
            epoch's ``step_epoch``.
        events: every lifecycle event so far, in the order they happened.
        event_epochs: the global epoch of each event (same length as
            ``events``, non-decreasing, at most ``epoch``).
        available_blueprints: blueprint names the registry holds for
            ``topology``; the rotation is checked against them (empty: no check).
        available_slots: free slots counted *before* this epoch's lifecycle
            step, as esper-lite's loop counts them; ``None`` counts the free
            slots in ``slots``.

    Losses and accuracies may be NaN or infinite (a diverged epoch), though a
    loop normally lets the governor handle such an epoch before deciding.

    Sequences are stored as tuples, so observations are hashable values.
    """

    epoch: int
    max_epochs: int
    topology: str
    val_accuracy: float
    val_loss: float
    train_loss: float
    accuracy_history: tuple[float, ...]
    loss_history: tuple[float, ...]
    slots: tuple[SlotView, ...]
    events: tuple[LifecycleEvent, ...] = ()
    event_epochs: tuple[int, ...] = ()
    available_blueprints: tuple[str, ...] = ()
    available_slots: int | None = None

    def __post_init__(self) -> None:
        owner = "Observation"
        set_ = object.__setattr__
        epoch = check_int(f"{owner}.epoch", self.epoch, minimum=0)
        max_epochs = check_int(f"{owner}.max_epochs", self.max_epochs, minimum=0)
        if epoch > max_epochs:
            raise InvalidArgumentError(f"{owner}.epoch ({epoch}) exceeds max_epochs ({max_epochs})")
        try:
            resolve_topology(self.topology)
        except UnknownTopologyError as exc:
            raise UnknownTopologyError(f"{owner}.topology: {exc}") from None
        for name in ("val_accuracy", "val_loss", "train_loss"):
            set_(self, name, _number(f"{owner}.{name}", getattr(self, name)))
        acc = _floats(f"{owner}.accuracy_history", self.accuracy_history)
        loss = _floats(f"{owner}.loss_history", self.loss_history)
        if len(acc) != len(loss):
            raise InvalidArgumentError(
                f"{owner}: accuracy_history ({len(acc)} epochs) and loss_history ({len(loss)} epochs) "
                "must cover the same epochs"
            )
        if acc and not (_same(acc[-1], self.val_accuracy) and _same(loss[-1], self.val_loss)):
            raise InvalidArgumentError(
                f"{owner}: the histories must include the current epoch, i.e. end with "
                f"val_accuracy={self.val_accuracy} and val_loss={self.val_loss}; they end with "
                f"{acc[-1]} and {loss[-1]}"
            )
        set_(self, "accuracy_history", acc)
        set_(self, "loss_history", loss)
        if isinstance(self.slots, (str, bytes)) or not isinstance(self.slots, Sequence):
            raise InvalidTypeError(f"{owner}.slots must be a sequence of SlotView; got {type(self.slots).__name__}")
        slots = tuple(self.slots)
        for i, view in enumerate(slots):
            if not isinstance(view, SlotView):
                raise InvalidTypeError(f"{owner}.slots[{i}] must be a SlotView; got {type(view).__name__}")
        ids = [view.slot_id for view in slots]
        if len(set(ids)) != len(ids):
            raise InvalidArgumentError(f"{owner}.slots has duplicate slot ids: {ids}")
        set_(self, "slots", slots)
        if not isinstance(self.events, Sequence) or not isinstance(self.event_epochs, Sequence):
            raise InvalidTypeError(f"{owner}.events and {owner}.event_epochs must be sequences")
        events = tuple(self.events)
        stamps = tuple(self.event_epochs)
        if len(events) != len(stamps):
            raise InvalidArgumentError(
                f"{owner}: event_epochs must give one global epoch per event; got {len(stamps)} epochs "
                f"for {len(events)} events"
            )
        previous = 0
        for i, stamp in enumerate(stamps):
            check_int(f"{owner}.event_epochs[{i}]", stamp, minimum=0)
            if stamp < previous or stamp > epoch:
                raise InvalidArgumentError(
                    f"{owner}.event_epochs must be non-decreasing and at most epoch={epoch}; "
                    f"event_epochs[{i}] = {stamp} follows {previous}"
                )
            previous = stamp
        set_(self, "events", events)
        set_(self, "event_epochs", stamps)
        set_(self, "available_blueprints", _strings(f"{owner}.available_blueprints", self.available_blueprints))
        if self.available_slots is not None:
            check_int(f"{owner}.available_slots", self.available_slots, minimum=0, maximum=len(slots))

    def timed_events(self) -> tuple[tuple[int, LifecycleEvent], ...]:
        """``(global_epoch, event)`` pairs, oldest first."""
        return tuple(zip(self.event_epochs, self.events, strict=True))

    def free_slots(self) -> int:
        """``available_slots``, or the number of free slots in ``slots`` when it is ``None``."""
        if self.available_slots is not None:
            return self.available_slots
        return sum(1 for view in self.slots if is_free(view.state))


#: A controller: any function from an observation to one action.
Controller: TypeAlias = Callable[[Observation], Action]


def is_live(state: SeedState | None) -> bool:
    """Whether the policy manages this seed (GERMINATED, TRAINING, BLENDING or HOLDING)."""
    return state is not None and state.stage in LIVE_STAGES


# --------------------------------------------------------------------------- memory


@dataclasses.dataclass(frozen=True, kw_only=True)
class PolicyMemory:
    """What the heuristic remembers, derived from an observation by :func:`recall`.

    ``penalties`` are ``(blueprint, penalty)`` pairs sorted by name, decayed to
    the observation's epoch (forgotten ones omitted). ``rotation_index`` is
    the rotation position the next germination starts from (modulo the
    rotation length). ``last_prune_epoch`` is ``None`` if the policy never
    pruned.
    """

    plateau_epochs: int
    host_stabilized: bool
    last_prune_epoch: int | None
    penalties: tuple[tuple[str, float], ...]
    rotation_index: int

    def penalty(self, blueprint: str) -> float:
        """The current penalty of ``blueprint`` (0 if none)."""
        return dict(self.penalties).get(blueprint, 0.0)


def _plateau_epochs(accuracies: Sequence[float], threshold: float) -> int:
    count = 0
    previous = 0.0
    for acc in accuracies:
        count = count + 1 if acc - previous < threshold else 0
        previous = acc
    return count


def _stabilized(losses: Sequence[float], *, threshold: float, regression: float, epochs: int) -> bool:
    """esper-lite's stabilisation latch, replayed over the validation losses."""
    if epochs == 0:
        return True
    stable = 0
    previous = math.inf
    for loss in losses:
        # Comparisons with NaN are false, so a NaN loss neither counts nor, as the
        # previous loss, lets the next epoch count: as in esper-lite's tracker.
        if previous < math.inf and previous > _LOSS_EPS:
            relative = (previous - loss) / previous
            if -regression < relative < threshold:
                stable += 1
                if stable >= epochs:
                    return True
            else:
                stable = 0
        previous = loss
    return False


def select_blueprint(
    rotation: Sequence[str], penalties: Mapping[str, float], index: int, *, threshold: float
) -> tuple[str, int]:
    """esper-lite's blueprint choice: ``(blueprint, next_index)``.

    From ``index`` on, the first blueprint whose penalty is below
    ``threshold`` (the index moves past every blueprint looked at); if all
    are at or above it, ``sorted(rotation, key=(penalty, name))[index % n]``
    and the index moves on by one.
    """
    n = len(rotation)
    if n == 0:
        raise InvalidArgumentError("select_blueprint(): the rotation is empty")
    for offset in range(n):
        candidate = rotation[(index + offset) % n]
        if penalties.get(candidate, 0.0) < threshold:
            return candidate, (index + offset + 1) % n
    ranked = sorted(rotation, key=lambda bp: (penalties.get(bp, 0.0), bp))
    return ranked[index % n], (index + 1) % n


def recall(config: HeuristicConfig, observation: Observation) -> PolicyMemory:
    """Recompute the heuristic's memory from ``observation`` (pure; see the module docstring)."""
    rotation = config.rotation_for(observation.topology, observation.available_blueprints)
    decay = config.blueprint_penalty_decay
    penalties: dict[str, float] = {}
    decayed_to: int | None = None
    index = 0
    last_prune: int | None = None

    def decay_to(epoch: int) -> None:
        # One multiplication per epoch, each followed by the cut-off, exactly as
        # esper-lite decays its penalties once per decision.
        nonlocal decayed_to
        if decayed_to is not None:
            for _ in range(max(0, epoch - decayed_to)):
                for bp in list(penalties):
                    penalties[bp] *= decay
                    if penalties[bp] < PENALTY_FLOOR:
                        del penalties[bp]
        decayed_to = epoch if decayed_to is None else max(decayed_to, epoch)

    for epoch, event in observation.timed_events():
        if isinstance(event, SeedPruned) and event.initiator == "policy":
            decay_to(epoch)
            penalties[event.blueprint_id] = penalties.get(event.blueprint_id, 0.0) + config.blueprint_penalty_on_prune
            last_prune = epoch
        elif isinstance(event, SeedGerminated):
            decay_to(epoch)
            chosen, after = select_blueprint(
                rotation, penalties, index, threshold=config.blueprint_penalty_threshold
            )
            if event.blueprint_id == chosen:
                index = after
            elif event.blueprint_id in rotation:  # chosen by someone else: resume after it
                index = (rotation.index(event.blueprint_id) + 1) % len(rotation)
    decay_to(observation.epoch)
    return PolicyMemory(
        plateau_epochs=_plateau_epochs(observation.accuracy_history, config.plateau_threshold),
        host_stabilized=_stabilized(
            observation.loss_history,
            threshold=config.stabilization_threshold,
            regression=config.regression_threshold,
            epochs=config.stabilization_epochs,
        ),
        last_prune_epoch=last_prune,
        penalties=tuple(sorted(penalties.items())),
        rotation_index=index,
    )


# --------------------------------------------------------------------------- decide


def _check_rotation(rotation: tuple[str, ...], observation: Observation) -> None:
    available = observation.available_blueprints
    if not available:
        return
    missing = sorted(set(rotation) - set(available))
    if missing:
        raise UnknownBlueprintError(
            f"blueprint rotation {list(rotation)} names blueprints the registry does not hold for "
            f"topology {observation.topology!r}: {missing}. Available: {sorted(available)}. "
            "Pass HeuristicConfig(blueprint_rotation=...) with available names."
        )


def _wait(reason: str, slot_id: str | None = None) -> Action:
    return Action(kind=ActionKind.WAIT, slot_id=slot_id, reason=reason)


def _germination(config: HeuristicConfig, observation: Observation, rotation: tuple[str, ...]) -> Action:
    memory = recall(config, observation)
    epoch = observation.epoch
    if memory.last_prune_epoch is not None:
        since = epoch - memory.last_prune_epoch
        if since < config.embargo_epochs_after_prune:
            return _wait(f"embargo ({since}/{config.embargo_epochs_after_prune} epochs since the last prune)")
    if not memory.host_stabilized:
        return _wait("host not stabilized")
    if epoch < config.min_epochs_before_germinate:
        return _wait(f"too early (epoch {epoch} < {config.min_epochs_before_germinate})")
    if observation.free_slots() <= 0:
        return _wait("no available slots")
    if memory.plateau_epochs < config.plateau_epochs_to_germinate:
        return _wait("training progressing normally")
    free = next((view.slot_id for view in observation.slots if is_free(view.state)), None)
    if free is None:
        return _wait(f"plateau detected ({memory.plateau_epochs} epochs) but no free slot")
    blueprint, _ = select_blueprint(
        rotation, dict(memory.penalties), memory.rotation_index, threshold=config.blueprint_penalty_threshold
    )
    return Action(
        kind=ActionKind.GERMINATE,
        slot_id=free,
        blueprint=blueprint,
        reason=f"plateau detected ({memory.plateau_epochs} epochs)",
        blend=config.blend,
        tempo=config.tempo,
        algorithm=config.algorithm,
    )


def _failing(config: HeuristicConfig, state: SeedState) -> bool:
    if state.metrics.epochs_in_current_stage < config.prune_after_epochs_without_improvement:
        return False
    return state.metrics.improvement_since_stage_start < -config.prune_if_accuracy_drops_by


def _manage(config: HeuristicConfig, view: SlotView) -> Action:
    state = view.state
    assert state is not None
    slot = view.slot_id
    stage = state.stage
    improvement = state.metrics.improvement_since_stage_start
    if stage == SeedStage.GERMINATED:
        return Action(kind=ActionKind.ADVANCE, slot_id=slot, reason="advance to TRAINING")
    if stage == SeedStage.TRAINING:
        if _failing(config, state):
            return Action(kind=ActionKind.PRUNE, slot_id=slot, reason=f"failing in TRAINING ({improvement:+.2f}%)")
        return Action(kind=ActionKind.ADVANCE, slot_id=slot, reason=f"advance to BLENDING ({improvement:+.2f}%)")
    if stage == SeedStage.BLENDING:
        if _failing(config, state):
            return Action(kind=ActionKind.PRUNE, slot_id=slot, reason=f"failing in BLENDING ({improvement:+.2f}%)")
        ctrl = state.alpha_controller
        if (
            ctrl.alpha_target >= 1.0 - _ALPHA_EPS
            and ctrl.alpha_mode == AlphaMode.HOLD
            and abs(state.alpha - ctrl.alpha_target) <= _ALPHA_EPS
        ):
            return Action(kind=ActionKind.ADVANCE, slot_id=slot, reason="advance to HOLDING (full amplitude)")
        return _wait(f"blending (alpha={state.alpha:.2f})", slot)
    # HOLDING
    contribution = view.contribution
    if contribution is None:
        contribution = state.metrics.counterfactual_contribution
    total = state.metrics.total_improvement
    if (
        contribution is not None
        and contribution > config.ransomware_contribution_threshold
        and total < config.ransomware_improvement_threshold
    ):
        return Action(
            kind=ActionKind.PRUNE,
            slot_id=slot,
            reason=f"ransomware pattern: contribution {contribution:+.3f} but total improvement {total:+.3f}",
        )
    if contribution is None:
        return _wait("awaiting counterfactual contribution before fossilization", slot)
    if contribution > config.min_improvement_to_fossilize:
        return Action(
            kind=ActionKind.FOSSILIZE, slot_id=slot, reason=f"fossilizing: {contribution:+.2f}% contribution"
        )
    return Action(kind=ActionKind.PRUNE, slot_id=slot, reason=f"no improvement in HOLDING ({contribution:+.2f}%)")


def decide(config: HeuristicConfig, observation: Observation) -> Action:
    """esper-lite's heuristic policy: one action for this epoch (pure).

    Call once per epoch after validation, counterfactual measurement,
    ``record_accuracy``/``record_contribution`` and ``step_epoch`` (the order
    of esper-lite's loop). The result depends on ``(config, observation)``
    only; see the module docstring for the rules and for how the past is
    recovered from the observation.

    Raises:
        InvalidTypeError: arguments of the wrong type.
        UnknownBlueprintError: the rotation names a blueprint outside
            ``observation.available_blueprints``.
    """
    if not isinstance(config, HeuristicConfig):
        raise InvalidTypeError(f"decide() expects a HeuristicConfig first; got {type(config).__name__}")
    if not isinstance(observation, Observation):
        raise InvalidTypeError(f"decide() expects an Observation; got {type(observation).__name__}")
    rotation = config.rotation_for(observation.topology, observation.available_blueprints)
    _check_rotation(rotation, observation)
    live = next((view for view in observation.slots if is_live(view.state)), None)
    if live is None:
        return _germination(config, observation, rotation)
    return _manage(config, live)


def heuristic(config: HeuristicConfig | None = None) -> Controller:
    """The heuristic policy as a :data:`Controller` (``decide`` with ``config`` bound)."""
    if config is None:
        config = HeuristicConfig()
    elif not isinstance(config, HeuristicConfig):
        raise InvalidTypeError(f"heuristic() expects a HeuristicConfig or None; got {type(config).__name__}")
    bound: Callable[[Observation], Action] = functools.partial(decide, config)
    return bound

