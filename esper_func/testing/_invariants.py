"""The lifecycle's invariants, as checks: :func:`check_state` and :func:`check_transition`.

:func:`check_state` holds for every state the lifecycle functions return,
whatever sequence of calls produced it, starting from
:func:`esper_func.germinate`. :func:`check_transition` holds between any
state and a later state of the same slot. Both collect every violation and
raise one :class:`InvariantError` listing them, so a failing property test
says everything that broke at once.

States decoded from esper-lite checkpoints carry less history than
esper_func keeps (see ``docs/migrating-from-esper-lite.md``) and are not
covered; states built by hand with ``SeedState(...)`` or
``dataclasses.replace`` are checked like any other.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from typing import Final

from esper_func.errors import EsperFuncError
from esper_func.hosts import BUILTIN_TOPOLOGIES, Topology
from esper_func.lifecycle.alpha import MIN_STEEPNESS, AlphaAlgorithm, AlphaCurve, AlphaMode, curve_progress
from esper_func.lifecycle.events import LifecycleEvent, SeedFossilized, SeedGerminated, SeedPruned, StageChanged
from esper_func.lifecycle.measure import MAX_GRADIENT_RATIO
from esper_func.lifecycle.stages import (
    ACTIVE_STAGES,
    FAILURE_STAGES,
    GATED_STAGES,
    VALID_TRANSITIONS,
    SeedStage,
)
from esper_func.lifecycle.state import (
    AUTO_PRUNE_REASONS,
    BLEND_ALGORITHMS,
    STAGE_HISTORY_MAXLEN,
    SeedState,
    has_gate,
    has_seed,
    trainable,
)

__all__ = ["InvariantError", "check_state", "check_transition"]

S = SeedStage
#: Tolerance the lifecycle uses for "alpha reached its target" and "a full target".
EPS: Final[float] = 1e-6
_RAMPING = (AlphaMode.UP, AlphaMode.DOWN)
#: Identity and settings fixed for the life of one seed.
_SEED_CONSTANTS: Final = (
    "slot_id",
    "seed_id",
    "blueprint_id",
    "topology",
    "blend_algorithm_id",
    "blend_tempo_epochs",
    "blend_alpha_target",
)


class InvariantError(EsperFuncError, AssertionError, ValueError):
    """A lifecycle state (or a change between two states) that breaks an invariant the library guarantees.

    An ``AssertionError`` (a failed check in a test) and a ``ValueError`` (an invalid state).
    """

    __module__ = "esper_func.testing"


def _where(state: SeedState) -> str:
    return f"slot {state.slot_id!r} (seed {state.seed_id!r}, stage {state.stage.name})"


def _raise(what: str, problems: list[str]) -> None:
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise InvariantError(f"{what} breaks {len(problems)} lifecycle invariant(s):\n{listed}")


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_state(state: SeedState) -> None:
    """Check every invariant of one lifecycle state; raise :class:`InvariantError` listing what broke.

    Checked (each holds for any state the lifecycle functions produce):

    - **identity and settings**: a non-empty seed and blueprint id, a known
      topology and blend id, a tempo ``>= 0``, a germination alpha target in
      ``(0, 1]``; the stage is a :class:`~esper_func.SeedStage` other than
      UNKNOWN;
    - **stage history**: 1 to 100 ``(stage, epoch)`` entries, each a legal
      move from the one before, epochs non-decreasing, starting at
      ``(GERMINATED, 0)`` unless truncated, ending at ``(stage,
      stage_entered_epoch)``; ``previous_stage`` and
      ``previous_epochs_in_stage`` agree with it;
    - **counters**: non-negative, ``epochs_in_current_stage <=
      epochs_total``, best accuracy at least every other accuracy, nothing
      recorded before the first epoch, contributions recorded together, every
      number finite, gradient ratio in ``[0, 10]``, telemetry in range;
    - **alpha and its controller**: ``state.alpha`` is the controller's;
      alpha, start and target in ``[0, 1]``, steepness ``>= 0.1``,
      ``0 <= steps_done <= steps_total``; a controller at rest (HOLD) sits on
      its target; a ramp has steps left and alpha on its curve between its
      start and target;
      ramps run only in BLENDING (or, for a target within 1e-6 of 1, in
      HOLDING and FOSSILIZED); alpha is 0 at rest before BLENDING and without
      a seed, full (within 1e-6) in HOLDING and FOSSILIZED; a BLENDING seed at
      rest has a non-zero target;
    - **isolation**: ``isolate_gradients`` is on in TRAINING and, for a
      topology that isolates blending seeds (CNN hosts), in BLENDING, HOLDING
      and FOSSILIZED, and off otherwise;
    - **the gate network** (:func:`~esper_func.has_gate`): exactly GATE seeds
      from BLENDING on, and exactly those have ``gate_total_steps > 0``;
    - **the blend-out freeze**: on whenever alpha ramps down, only for a live
      seed, and at rest only right after a ramp down;
      :func:`~esper_func.trainable` is "a live seed, not frozen";
    - **pending prune**: reason and initiator are set together, exactly while a
      scheduled prune fades alpha to 0 in BLENDING;
    - **prune marks**: ``auto_pruned`` only after a prune with one of
      :data:`~esper_func.lifecycle.AUTO_PRUNE_REASONS`, and
      ``blending_started`` exactly once blending began.
    """
    if not isinstance(state, SeedState):
        raise InvariantError(f"check_state() expects a SeedState; got {type(state).__name__}")
    problems: list[str] = []
    add = problems.append
    stage = state.stage
    if not isinstance(stage, SeedStage):
        _raise(f"state of slot {state.slot_id!r}", [f"stage {stage!r} is not a SeedStage"])
    m, c, t = state.metrics, state.alpha_controller, state.telemetry

    # -- identity and settings
    if not isinstance(state.seed_id, str) or not state.seed_id:
        add(f"seed_id {state.seed_id!r} is not a non-empty string")
    if not isinstance(state.blueprint_id, str) or not state.blueprint_id:
        add(f"blueprint_id {state.blueprint_id!r} is not a non-empty string")
    topology = state.topology
    if not isinstance(topology, Topology):
        add(f"topology {topology!r} is not an esper_func Topology")
    elif topology.name in BUILTIN_TOPOLOGIES and BUILTIN_TOPOLOGIES[topology.name].rules() != topology.rules():
        add(f"topology {topology!r} has the name of a built-in topology but other rules")
    if state.blend_algorithm_id not in BLEND_ALGORITHMS:
        add(f"blend_algorithm_id {state.blend_algorithm_id!r} is not one of {list(BLEND_ALGORITHMS)}")
    if not isinstance(state.blend_tempo_epochs, int) or state.blend_tempo_epochs < 0:
        add(f"blend_tempo_epochs {state.blend_tempo_epochs!r} is not an int >= 0")
    if not (_finite(state.blend_alpha_target) and 0.0 < state.blend_alpha_target <= 1.0):
        add(f"blend_alpha_target {state.blend_alpha_target!r} is not within (0, 1]")
    if not isinstance(state.alpha_algorithm, AlphaAlgorithm):
        add(f"alpha_algorithm {state.alpha_algorithm!r} is not an AlphaAlgorithm")
    if stage == S.UNKNOWN:
        add("stage is UNKNOWN, which no lifecycle operation produces")

    # -- stage history
    history = state.stage_history
    if not history:
        add("stage_history is empty (a germinated seed always has at least (GERMINATED, 0))")
    elif len(history) > STAGE_HISTORY_MAXLEN:
        add(f"stage_history has {len(history)} entries; at most {STAGE_HISTORY_MAXLEN} are kept")
    else:
        for i, entry in enumerate(history):
            if (
                not isinstance(entry, tuple)
                or len(entry) != 2
                or not isinstance(entry[0], SeedStage)
                or not isinstance(entry[1], int)
                or entry[1] < 0
            ):
                add(f"stage_history[{i}] = {entry!r} is not a (SeedStage, epoch >= 0) pair")
                break
        else:
            if len(history) < STAGE_HISTORY_MAXLEN and history[0] != (S.GERMINATED, 0):
                add(f"stage_history starts at {_entry(history[0])}, not at (GERMINATED, 0) where germinate() starts it")
            for i, ((s1, e1), (s2, e2)) in enumerate(itertools.pairwise(history)):
                if s2 not in VALID_TRANSITIONS[s1]:
                    add(f"stage_history[{i}] -> [{i + 1}]: {s1.name} -> {s2.name} is not a legal transition")
                if e2 < e1:
                    add(f"stage_history[{i}] -> [{i + 1}]: the epoch goes back from {e1} to {e2}")
            if history[-1] != (stage, state.stage_entered_epoch):
                add(
                    f"stage_history ends at {_entry(history[-1])}, but the state is {stage.name} since epoch "
                    f"{state.stage_entered_epoch} (epochs_total {m.epochs_total} - epochs_in_current_stage "
                    f"{m.epochs_in_current_stage})"
                )
            if len(history) >= 2:
                (prev, e_prev), (_, e_last) = history[-2], history[-1]
                if state.previous_stage != prev:
                    add(f"previous_stage is {_name(state.previous_stage)} but the history's previous stage is {prev.name}")
                if state.previous_epochs_in_stage != e_last - e_prev:
                    add(
                        f"previous_epochs_in_stage is {state.previous_epochs_in_stage} but the history spent "
                        f"{e_last - e_prev} epochs in {prev.name}"
                    )
            elif (state.previous_stage, state.previous_epochs_in_stage) != (S.DORMANT, 0):
                add(
                    f"previous stage is ({_name(state.previous_stage)}, {state.previous_epochs_in_stage} epochs); "
                    "a seed that has not moved since germination comes from (DORMANT, 0 epochs)"
                )

    # -- counters
    for name in ("epochs_total", "epochs_in_current_stage", "alpha_ramp_step", "seed_param_count", "host_param_count"):
        value = getattr(m, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            add(f"metrics.{name} = {value!r} is not a count >= 0")
    if not isinstance(state.previous_epochs_in_stage, int) or state.previous_epochs_in_stage < 0:
        add(f"previous_epochs_in_stage = {state.previous_epochs_in_stage!r} is not a count >= 0")
    if isinstance(m.epochs_total, int) and isinstance(m.epochs_in_current_stage, int):
        if m.epochs_in_current_stage > m.epochs_total:
            add(f"metrics.epochs_in_current_stage {m.epochs_in_current_stage} exceeds epochs_total {m.epochs_total}")
    accuracies = {
        "current_val_accuracy": m.current_val_accuracy,
        "initial_val_accuracy": m.initial_val_accuracy,
        "accuracy_at_stage_start": m.accuracy_at_stage_start,
        "accuracy_at_blending_start": m.accuracy_at_blending_start,
    }
    floats = {
        **accuracies,
        "best_val_accuracy": m.best_val_accuracy,
        "gradient_norm_avg": m.gradient_norm_avg,
        "contribution_velocity": m.contribution_velocity,
        "interaction_sum": m.interaction_sum,
        "boost_received": m.boost_received,
        "upstream_alpha_sum": m.upstream_alpha_sum,
        "downstream_alpha_sum": m.downstream_alpha_sum,
    }
    for name, value in floats.items():
        if not _finite(value):
            add(f"metrics.{name} = {value!r} is not a finite number")
    for name, value in (("counterfactual_contribution", m.counterfactual_contribution), ("prev_contribution", m.prev_contribution)):
        if value is not None and not _finite(value):
            add(f"metrics.{name} = {value!r} is neither None nor a finite number")
    if all(_finite(v) for v in floats.values()):
        for name, value in accuracies.items():
            if value > m.best_val_accuracy:
                add(f"metrics.{name} {value} exceeds best_val_accuracy {m.best_val_accuracy}")
        if m.gradient_norm_avg < 0:
            add(f"metrics.gradient_norm_avg {m.gradient_norm_avg} is negative")
        if m.epochs_total == 0 and any(v != 0.0 for v in (*accuracies.values(), m.best_val_accuracy)):
            add("accuracies are set although no epoch was recorded yet (epochs_total 0)")
    if m.prev_contribution != m.counterfactual_contribution:
        add(
            f"metrics.prev_contribution {m.prev_contribution!r} differs from counterfactual_contribution "
            f"{m.counterfactual_contribution!r} (record_contribution sets both)"
        )
    if m.counterfactual_contribution is None and m.contribution_velocity != 0.0:
        add(f"metrics.contribution_velocity is {m.contribution_velocity} before any contribution was recorded")
    ratio = m.seed_gradient_norm_ratio
    if ratio is not None and not (_finite(ratio) and 0.0 <= ratio <= MAX_GRADIENT_RATIO):
        add(f"metrics.seed_gradient_norm_ratio {ratio!r} is not within [0, {MAX_GRADIENT_RATIO}]")
    if t.gradient_health is not None and not (_finite(t.gradient_health) and 0.0 <= t.gradient_health <= 1.0):
        add(f"telemetry.gradient_health {t.gradient_health!r} is neither None nor within [0, 1]")
    if t.gradient_norm is not None and not (_finite(t.gradient_norm) and t.gradient_norm >= 0.0):
        add(f"telemetry.gradient_norm {t.gradient_norm!r} is neither None nor a finite number >= 0")
    for name in ("has_vanishing", "has_exploding"):
        if getattr(t, name) not in (None, True, False):
            add(f"telemetry.{name} {getattr(t, name)!r} is neither None nor a bool")
    for name in ("epoch", "max_epochs"):
        value = getattr(t, name)
        if not isinstance(value, int) or value < 0:
            add(f"telemetry.{name} = {value!r} is not a count >= 0")

    # -- alpha and its controller
    seeded = has_seed(state)
    values = {"alpha": c.alpha, "alpha_start": c.alpha_start, "alpha_target": c.alpha_target}
    bounded = True
    for name, value in values.items():
        if not (_finite(value) and 0.0 <= value <= 1.0):
            add(f"alpha_controller.{name} {value!r} is not within [0, 1]")
            bounded = False
    if not (_finite(c.alpha_steepness) and c.alpha_steepness >= MIN_STEEPNESS):
        add(f"alpha_controller.alpha_steepness {c.alpha_steepness!r} is not a finite number >= {MIN_STEEPNESS}")
    if not (0 <= c.alpha_steps_done <= c.alpha_steps_total):
        add(f"alpha_controller steps {c.alpha_steps_done}/{c.alpha_steps_total} are not 0 <= done <= total")
    if state.alpha != c.alpha:
        add(f"state.alpha {state.alpha!r} is not the controller's alpha {c.alpha!r}")
    if bounded:
        a, start, target = c.alpha, c.alpha_start, c.alpha_target
        mode = c.alpha_mode
        if mode == AlphaMode.HOLD and a != target:
            add(f"the controller is at rest (HOLD) at alpha {a} but its target is {target}")
        elif mode == AlphaMode.UP and not (start < target and start <= a <= target):
            add(f"ramping UP from {start} to {target}, but alpha is {a} (a ramp up needs start <= alpha <= target, start < target)")
        elif mode == AlphaMode.DOWN and not (target < start and target <= a <= start):
            add(f"ramping DOWN from {start} to {target}, but alpha is {a} (a ramp down needs target <= alpha <= start, target < start)")
        if mode in _RAMPING:
            if c.alpha_steps_done >= c.alpha_steps_total:
                add(f"ramping {mode.name} with no steps left ({c.alpha_steps_done}/{c.alpha_steps_total})")
            else:
                expected = _on_curve(start, target, c.alpha_steps_done, c.alpha_steps_total, c.alpha_curve, c.alpha_steepness)
                if abs(a - expected) > 1e-12:
                    add(
                        f"alpha {a} is off its {c.alpha_curve.name} ramp from {start} to {target}: step "
                        f"{c.alpha_steps_done}/{c.alpha_steps_total} puts it at {expected}"
                    )
            if stage != S.BLENDING and not (stage in (S.HOLDING, S.FOSSILIZED) and target >= 1.0 - EPS):
                add(f"alpha ramps {mode.name} (to {target}) outside BLENDING")
        if stage in (S.GERMINATED, S.TRAINING) or not seeded:
            if (a, start, target, mode) != (0.0, 0.0, 0.0, AlphaMode.HOLD):
                add(
                    f"alpha must be 0 at rest (start 0, target 0, HOLD) in {stage.name}; got alpha {a}, start {start}, "
                    f"target {target}, {mode.name}"
                )
        if not seeded and (c.alpha_steps_total, c.alpha_steps_done) != (0, 0):
            add(f"a slot without a seed has a ramp of {c.alpha_steps_done}/{c.alpha_steps_total} steps")
        if stage in (S.HOLDING, S.FOSSILIZED) and (a < 1.0 - EPS or target < 1.0 - EPS):
            add(f"{stage.name} is full amplitude, but alpha is {a} with target {target}")
        if stage == S.BLENDING and mode == AlphaMode.HOLD and target <= 0.0:
            add("BLENDING at rest with a target of 0 (a completed fade-out prunes the seed)")

    # -- isolation
    isolates = isinstance(topology, Topology) and topology.isolate_blending
    isolated = stage == S.TRAINING or (stage in ACTIVE_STAGES and isolates)
    if state.isolate_gradients is not isolated:
        add(f"isolate_gradients is {state.isolate_gradients} for a {state.topology} seed in {stage.name}; expected {isolated}")

    # -- the gate network
    gated = state.alpha_algorithm == AlphaAlgorithm.GATE and stage in GATED_STAGES
    if has_gate(state) is not gated:
        add(f"has_gate() is {has_gate(state)} for a {_name(state.alpha_algorithm)} seed in {stage.name}; expected {gated}")
    if not isinstance(state.gate_total_steps, int) or state.gate_total_steps < 0:
        add(f"gate_total_steps {state.gate_total_steps!r} is not a count >= 0")
    elif (state.gate_total_steps > 0) is not gated:
        add(
            f"gate_total_steps is {state.gate_total_steps} for a {_name(state.alpha_algorithm)} seed in {stage.name}; "
            f"it is > 0 exactly when the seed has its gate network ({gated})"
        )

    # -- the blend-out freeze
    frozen = state.blend_out_frozen
    if c.alpha_mode == AlphaMode.DOWN and not frozen:
        add("alpha ramps DOWN but the blend-out freeze (blend_out_frozen) is off")
    if frozen:
        if not seeded:
            add("the blend-out freeze is on in a slot without a seed")
        elif stage in (S.GERMINATED, S.TRAINING):
            add(f"the blend-out freeze is on in {stage.name}, before any ramp")
        if c.alpha_mode == AlphaMode.UP:
            add("the blend-out freeze is on while alpha ramps UP")
        elif c.alpha_mode == AlphaMode.HOLD and c.alpha_start < c.alpha_target:
            add(
                f"the blend-out freeze is on at rest after a ramp up ({c.alpha_start} -> {c.alpha_target}); "
                "it lasts only until the step_epoch after a ramp down"
            )
    if trainable(state) is not (seeded and not frozen):
        add(f"trainable() is {trainable(state)}; expected {seeded and not frozen} (a live seed, not frozen)")

    # -- pending prune
    reason, initiator = state.pending_prune_reason, state.pending_prune_initiator
    if (reason is None) is not (initiator is None):
        add(f"pending prune reason {reason!r} and initiator {initiator!r} must be set together")
    fading_out = stage == S.BLENDING and c.alpha_mode == AlphaMode.DOWN and c.alpha_target == 0.0
    if (reason is not None) is not fading_out:
        if reason is not None:
            add(f"a pending prune ({reason!r}) outside a fade-out to 0 in BLENDING")
        else:
            add("alpha fades to 0 in BLENDING (a scheduled prune) but no pending prune reason is set")

    # -- prune marks and blending
    if m.auto_pruned:
        if m.auto_prune_reason not in AUTO_PRUNE_REASONS:
            add(f"auto_pruned with reason {m.auto_prune_reason!r}, not one of {sorted(AUTO_PRUNE_REASONS)}")
        if stage not in FAILURE_STAGES and stage != S.DORMANT:
            add(f"auto_pruned is set in {stage.name}, but only a prune sets it")
    elif m.auto_prune_reason:
        add(f"auto_prune_reason {m.auto_prune_reason!r} without auto_pruned")
    if stage in GATED_STAGES and not m.blending_started:
        add(f"blending_started is off in {stage.name}")
    if stage in (S.GERMINATED, S.TRAINING) and (m.blending_started or m.accuracy_at_blending_start != 0.0):
        add(f"blending marks are set in {stage.name}, before blending began")

    _raise(f"check_state: {_where(state)}", problems)


def _on_curve(start: float, target: float, done: int, total: int, curve: AlphaCurve, steepness: float) -> float:
    """Where a ramp puts alpha after ``done`` of ``total`` ticks (the alpha controller's contract)."""
    if done == 0:
        return start
    value = max(0.0, min(1.0, start + (target - start) * curve_progress(done / total, curve, steepness)))
    return min(max(value, start), target) if target > start else max(min(value, start), target)


def _name(value: object) -> str:
    return getattr(value, "name", repr(value))


def _entry(entry: tuple[SeedStage, int]) -> str:
    return f"({_name(entry[0])}, {entry[1]})"


def _new_entries(old: SeedState, new: SeedState) -> list[tuple[SeedStage, int]] | None:
    """The history entries ``new`` added to ``old``'s, or ``None`` if it does not extend it (a new seed)."""
    a, b = old.stage_history, new.stage_history
    for drop in range(len(a) + 1):
        kept = a[drop:]
        if b[: len(kept)] == kept:
            added = list(b[len(kept) :])
            if drop == 0 or len(b) == STAGE_HISTORY_MAXLEN:
                return added
    return None


def check_transition(old: SeedState, new: SeedState, events: Iterable[LifecycleEvent] | None = None) -> None:
    """Check that ``new`` can follow ``old`` in the same slot; raise :class:`InvariantError` listing what broke.

    ``new`` may be the result of any number of lifecycle calls on ``old``
    (one training epoch of a loop, say). ``events`` are the events those calls
    returned (events of other slots are ignored); ``None`` when unknown.

    Checked: the same slot; either the same seed, or a new seed germinated
    after the old one left (never after FOSSILIZED, which is terminal); for
    the same seed, its identity and blend settings unchanged, the stage
    history extended by legal moves only, counters and best accuracy never
    decreasing, ``blending_started`` never reset, a FOSSILIZED seed and its
    alpha unchanged, and a ramp still running moving monotonically towards
    its target; with ``events``, the ``StageChanged`` events chain from the
    old stage to the new one and match the history, and a ``SeedPruned`` /
    ``SeedFossilized`` / ``SeedGerminated`` event comes with its move.
    Both states should also pass :func:`check_state` (not repeated here).
    """
    if not isinstance(old, SeedState) or not isinstance(new, SeedState):
        raise InvariantError(
            f"check_transition() expects two SeedStates; got {type(old).__name__} and {type(new).__name__}"
        )
    problems: list[str] = []
    add = problems.append
    mine = None if events is None else [e for e in events if getattr(e, "slot_id", None) == new.slot_id]
    if new.slot_id != old.slot_id:
        add(f"the slot id changed from {old.slot_id!r} to {new.slot_id!r}")
    added = _new_entries(old, new)
    germinated = mine is not None and any(isinstance(e, SeedGerminated) for e in mine)
    if added is None or (germinated and new is not old):
        # A new seed in the slot: the old one must have been able to leave.
        if old.stage == S.FOSSILIZED:
            add(f"a FOSSILIZED seed ({old.seed_id!r}) was replaced; FOSSILIZED is terminal")
        if mine is not None and not any(isinstance(e, SeedGerminated) and e.seed_id == new.seed_id for e in mine):
            add(f"a new seed {new.seed_id!r} appeared without a SeedGerminated event")
        _raise(f"check_transition: {_where(old)} -> {_where(new)}", problems)
        return

    for name in _SEED_CONSTANTS:
        if getattr(old, name) != getattr(new, name):
            add(f"{name} changed from {getattr(old, name)!r} to {getattr(new, name)!r} for the same seed")
    mo, mn = old.metrics, new.metrics
    for name in ("seed_param_count", "host_param_count"):
        if getattr(mo, name) != getattr(mn, name):
            add(f"metrics.{name} changed from {getattr(mo, name)} to {getattr(mn, name)}")
    if mn.epochs_total < mo.epochs_total:
        add(f"metrics.epochs_total went back from {mo.epochs_total} to {mn.epochs_total}")
    if mn.best_val_accuracy < mo.best_val_accuracy:
        add(f"metrics.best_val_accuracy went back from {mo.best_val_accuracy} to {mn.best_val_accuracy}")
    if mo.blending_started and not mn.blending_started:
        add("blending_started was reset")
    stage = old.stage
    for entry in added:
        if entry[0] not in VALID_TRANSITIONS[stage]:
            add(f"the history moved {stage.name} -> {entry[0].name}, not a legal transition")
        stage = entry[0]
    if stage != new.stage:
        add(f"the history's last stage is {stage.name} but the state is {new.stage.name}")
    if not added:
        grew = mn.epochs_total - mo.epochs_total
        if mn.epochs_in_current_stage != mo.epochs_in_current_stage + grew:
            add(
                f"still in {new.stage.name}, yet epochs_in_current_stage went from {mo.epochs_in_current_stage} to "
                f"{mn.epochs_in_current_stage} while epochs_total grew by {grew}"
            )
        if (new.previous_stage, new.previous_epochs_in_stage) != (old.previous_stage, old.previous_epochs_in_stage):
            add("previous_stage / previous_epochs_in_stage changed without a stage change")
    if old.stage == S.FOSSILIZED and (new.stage != S.FOSSILIZED or new.alpha != old.alpha):
        add(f"a FOSSILIZED seed changed to {new.stage.name} with alpha {new.alpha} (was {old.alpha})")

    co, cn = old.alpha_controller, new.alpha_controller
    same_ramp = (co.alpha_start, co.alpha_target, co.alpha_steps_total, co.alpha_curve, co.alpha_steepness) == (
        cn.alpha_start,
        cn.alpha_target,
        cn.alpha_steps_total,
        cn.alpha_curve,
        cn.alpha_steepness,
    )
    if co.alpha_mode in _RAMPING and same_ramp and has_seed(new):
        lo, hi = sorted((co.alpha, co.alpha_target))
        if not lo <= cn.alpha <= hi:
            add(f"alpha left its ramp: {co.alpha} -> {cn.alpha} while ramping {co.alpha_mode.name} to {co.alpha_target}")
        if cn.alpha_steps_done < co.alpha_steps_done:
            add(f"the ramp went back from step {co.alpha_steps_done} to {cn.alpha_steps_done}")

    if mine is not None:
        moves = [e for e in mine if isinstance(e, StageChanged)]
        at = old.stage
        for move in moves:
            if move.from_stage != at:
                add(f"StageChanged {move.from_stage.name} -> {move.to_stage.name} does not start from {at.name}")
            if move.to_stage not in VALID_TRANSITIONS[move.from_stage]:
                add(f"StageChanged {move.from_stage.name} -> {move.to_stage.name} is not a legal transition")
            at = move.to_stage
        if at != new.stage:
            add(f"the StageChanged events end at {at.name} but the state is {new.stage.name}")
        if [(e.to_stage, e.epoch) for e in moves] != added:
            add(
                f"the StageChanged events {[(e.to_stage.name, e.epoch) for e in moves]} do not match the history's "
                f"new entries {[(s.name, e) for s, e in added]}"
            )
        for kind, target in ((SeedPruned, S.PRUNED), (SeedFossilized, S.FOSSILIZED)):
            if sum(isinstance(e, kind) for e in mine) != sum(m.to_stage == target for m in moves):
                add(f"{kind.__name__} events do not match the moves to {target.name}")

    _raise(f"check_transition: {_where(old)} -> {_where(new)}", problems)
