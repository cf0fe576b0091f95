"""Stateful property test: random sequences of every lifecycle operation.

The machine is a subclass of the library's ``esper_func.testing.LifecycleMachine``,
so after every call the lifecycle's invariants are checked
(``check_state``: alpha in its controller and on its ramp, isolation by stage
and topology, counters, the stage history, ``has_gate``, the blend-out freeze
flag, pending prunes; ``check_transition``: legal moves only, chained through
the ``StageChanged`` events, FOSSILIZED terminal, counters never going back).
On top of those, per operation, against models written out here (not the
implementation's own functions):

- ``advance`` passes exactly when the gate passes (an independent model of
  every gate) and the move is legal; a gated blend of tempo 0 is refused
  with ``IllegalTransitionError`` and nothing changes;
- alpha is monotone within a ramp, exactly the target when the ramp ends, and
  a ramp is never retargeted before it finishes;
- each call moves the stage at most once; counters grow by one per recorded
  or cooldown epoch; the cooldown moves on exactly when its own counter says
  so (records in the cooldown shorten it, as in esper-lite), and a slot that
  nothing records in is DORMANT again after exactly ``1 + embargo +
  resetting`` epochs;
- the pending-prune reason and initiator, and the blend-out freeze (a model of
  its rule);
- gradient telemetry changes only when measured or synced;
- inputs unchanged (``assert_pure``); the JSON, esper-lite and pytree round
  trips.

A FOSSILIZED slot never frees up, so a run then carries on with a seed in
a fresh slot. ``test_lifecycle_machine`` also checks that the runs reached
FOSSILIZED, completed a scheduled prune, lifted a blend-out freeze and served
a cooldown, so the checks above cover the whole lifecycle under the CI
profile.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, ClassVar

import optree
import torch.utils._pytree as torch_pytree
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule, run_state_machine_as_test

import esper_func.testing as eft
from esper_func.errors import IllegalTransitionError
from esper_func.lifecycle import (
    AUTO_PRUNE_REASONS,
    SeedState,
    advance,
    germinate,
    germinated_event,
    has_gate,
    has_seed,
    prune,
    record_accuracy,
    record_contribution,
    record_gradients,
    schedule_prune,
    set_alpha_target,
    slot_extra_state,
    state_from_dict,
    state_from_slot_extra_state,
    state_to_dict,
    step_epoch,
    sync_telemetry,
)
from esper_func.lifecycle.alpha import AlphaAlgorithm, AlphaCurve, AlphaMode
from esper_func.lifecycle.events import GateEvaluated, SeedFossilized, SeedPruned, StageChanged
from esper_func.lifecycle.gates import GateLevel, GateResult, Gates
from esper_func.lifecycle.stages import FAILURE_STAGES, VALID_TRANSITIONS, SeedStage, is_failure_stage

S = SeedStage
RAMPING = (AlphaMode.UP, AlphaMode.DOWN)
LIVE = (S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED)
FORWARD = (S.BLENDING, S.HOLDING, S.FOSSILIZED)
EPS = 1e-6

blend_choices = st.sampled_from(
    [("sigmoid", AlphaAlgorithm.ADD), ("linear", AlphaAlgorithm.MULTIPLY), ("gated", AlphaAlgorithm.GATE)]
)
curves = st.one_of(st.none(), st.sampled_from(list(AlphaCurve)))
steepness = st.sampled_from([0.05, 1.0, 12.0, 50.0, 1e4])
levels = st.frozensets(st.sampled_from([GateLevel.G1, GateLevel.G2, GateLevel.G3]))
reasons = st.sampled_from(["", "policy_prune", "underperforming", *sorted(AUTO_PRUNE_REASONS)])
healths = st.one_of(st.none(), st.sampled_from([0.0, 0.5, 0.69, 0.7, 0.9, 1.0]))
flags = st.one_of(st.none(), st.booleans())


def gate_passes(gates: Gates, state: SeedState, target: SeedStage) -> bool:
    """esper-lite's QualityGates verdict, written out from its rules."""
    m, t, c = state.metrics, state.telemetry, state.alpha_controller
    if target == S.GERMINATED:
        return bool(state.seed_id) and bool(state.blueprint_id)
    if target == S.TRAINING:
        return state.stage == S.GERMINATED
    if target == S.BLENDING:
        epochs_ok = m.epochs_in_current_stage >= gates.min_blending_epochs
        if gates.permissive:  # unmeasured is not healthy; exploding is never acceptable
            health = t.gradient_health
            return epochs_ok and health is not None and not t.has_exploding and health >= gates.min_gradient_health_for_blending
        ratio = m.seed_gradient_norm_ratio
        improved = m.current_val_accuracy - m.accuracy_at_stage_start >= gates.min_training_improvement
        return improved and epochs_ok and ratio is not None and ratio >= gates.min_seed_gradient_ratio
    if target == S.HOLDING:
        reached = c.alpha_target >= 1.0 - EPS and c.alpha_mode == AlphaMode.HOLD and abs(c.alpha - c.alpha_target) <= EPS
        return reached and (gates.permissive or m.epochs_in_current_stage >= gates.min_blending_epochs)
    assert target == S.FOSSILIZED
    contribution = m.counterfactual_contribution
    if contribution is None or not state.is_healthy:
        return False
    return gates.permissive or contribution >= gates.min_fossilize_contribution


def refuses_gated_blend(state: SeedState) -> bool:
    """A seed that would enter BLENDING with a gated blend of tempo 0 (refused with an error)."""
    return state.stage == S.TRAINING and state.blend_algorithm_id == "gated" and state.blend_tempo_epochs == 0


def esper_lite_view(state: SeedState) -> SeedState:
    """``state`` as esper-lite's checkpoint layout carries it."""
    history = (*((stage, -1) for stage, _ in state.stage_history[:-1]), (state.stage, state.stage_entered_epoch))
    return dataclasses.replace(
        state,
        stage_history=history,
        metrics=dataclasses.replace(state.metrics, auto_pruned=False, auto_prune_reason=""),
        pending_prune_reason=None,
        pending_prune_initiator=None,
        blend_out_frozen=state.alpha_controller.alpha_mode == AlphaMode.DOWN,
    )


GERMINATE_ARGS: dict[str, Any] = {
    "blend": blend_choices,
    "tempo": st.integers(0, 4),
    # Mostly full targets: a partial one can only reach HOLDING after set_alpha_target(1.0).
    "alpha_target": st.sampled_from([None, None, 1.0, 0.5]),
    "topology": st.sampled_from(["cnn", "transformer"]),
    "seed_params": st.sampled_from([0, 100]),
    "host_params": st.sampled_from([0, 10_000]),
}

TRAIN_ARGS: dict[str, Any] = {
    "delta": st.sampled_from([-0.25, 0.0, 0.5, 1.0, 2.0]),
    "ratio": st.sampled_from([0.0, 0.05, 0.5, 0.5]),
    "health": st.sampled_from([1.0, 1.0, 0.9, 0.3, None]),
    "exploding": st.sampled_from([False, False, False, True, None]),
    "contribution": st.sampled_from([0.5, 2.0]),
}


def check_round_trips(state: SeedState) -> None:
    """The esper_func JSON, the slot's esper-lite ``_extra_state`` (through strict JSON) and both pytree libraries."""
    assert state_from_dict(json.loads(json.dumps(state_to_dict(state), allow_nan=False))) == state
    extra = json.loads(json.dumps(slot_extra_state(state), allow_nan=False))
    back = state_from_slot_extra_state(extra, slot_id=state.slot_id)
    if state.stage == S.DORMANT:  # a freed slot: the last seed's blend settings, written back as saved
        assert back == SeedState(
            slot_id=state.slot_id,
            seed_id="",
            blueprint_id="",
            blend_algorithm_id=state.blend_algorithm_id,
            blend_tempo_epochs=state.blend_tempo_epochs,
            blend_alpha_target=state.blend_alpha_target,
            topology=state.topology,
        )
        assert slot_extra_state(back) == extra
    else:
        assert back == esper_lite_view(state)
    leaves, spec = optree.tree_flatten(state, namespace="esper_func")
    assert optree.tree_unflatten(spec, leaves) == state
    tleaves, tspec = torch_pytree.tree_flatten(state)
    assert torch_pytree.tree_unflatten(tleaves, tspec) == state


class LifecycleOracle(eft.LifecycleMachine):
    """The library's LifecycleMachine (check_state and check_transition after every call) plus, per operation,
    what the call must have done according to the models above."""

    #: Only the rules below drive the slot.
    random_actions = False
    #: What the runs reached (checked by test_lifecycle_machine).
    reached: ClassVar[set[str]] = set()

    def __init__(self) -> None:
        super().__init__()
        self.slot = "r0c0"
        self.fresh_slots = 0
        self.frozen = False  # the freeze flag as its rule says
        self.cooldown_epochs: int | None = None  # step_epoch calls since the prune
        self.recorded_in_cooldown = False
        self.sync_epoch = 0
        self.records_every_slot = False

    @property
    def state(self) -> SeedState | None:
        """The state of the slot the run is using."""
        return self.states.get(self.slot)

    # ------------------------------------------------------------------ setup

    @initialize(
        permissive=st.booleans(),
        min_epochs=st.integers(0, 3),
        embargo=st.sampled_from([0, 1, 2, 5]),
        resetting=st.sampled_from([0, 1, 2]),
        records_every_slot=st.booleans(),
    )
    def setup_lifecycle(  # type: ignore[override]
        self, permissive: bool, min_epochs: int, embargo: int, resetting: int, records_every_slot: bool
    ) -> None:
        self.records_every_slot = records_every_slot
        self.gates = Gates(
            permissive=permissive,
            min_blending_epochs=min_epochs,
            min_training_improvement=0.5,
            embargo_epochs=embargo,
            resetting_epochs=resetting,
        )

    @property
    def dwell(self) -> int:
        return 1 + max(self.gates.embargo_epochs, 1) + max(self.gates.resetting_epochs, 1)

    # ------------------------------------------------------------------ the checks after every operation

    def apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(self.state, ...)``, checked pure (neither the state nor the gates change, no global RNG)."""
        assert self.state is not None
        return eft.assert_pure(fn, self.state, *args, **kwargs)

    def after(
        self,
        old: SeedState,
        new: SeedState,
        events: tuple[Any, ...],
        *,
        op: str,
        epoch_step: bool = False,
        measured: bool = False,
        recorded: bool = False,
    ) -> None:
        assert isinstance(events, tuple)
        # The lifecycle's invariants (eft.check_state, and eft.check_transition against the events).
        self.update(self.slot, new, events)
        self.reached.add(new.stage.name)
        moves = [e for e in events if isinstance(e, StageChanged)]
        assert len(moves) <= 1 or op == "germinate"
        if any(isinstance(e, SeedPruned) for e in events):
            assert new.stage == S.PRUNED
            self.reached.add("pruned_by_" + op)
        if any(isinstance(e, SeedFossilized) for e in events):
            assert new.stage == S.FOSSILIZED
        # -- counters: an epoch is counted by a record (but not in DORMANT) and by a cooldown step
        m_old, m_new = old.metrics, new.metrics
        grew = m_new.epochs_total - m_old.epochs_total
        counted = (recorded and old.stage != S.DORMANT) or (epoch_step and old.stage in (S.EMBARGOED, S.RESETTING))
        assert grew == (1 if counted else 0), (op, old.stage, grew)
        if moves:
            assert new.previous_epochs_in_stage == moves[-1].epochs_in_stage == m_old.epochs_in_current_stage + grew
        # -- monotone within a ramp; exactly the target when it ends; never retargeted mid-ramp
        c_old, c_new = old.alpha_controller, new.alpha_controller
        if c_old.alpha_mode in RAMPING and new.stage == S.HOLDING:
            # The ramp ended on a full target and G3 moved the seed on; HOLDING pins alpha at 1.
            assert c_old.alpha_target == 1.0 and old.stage == S.BLENDING
            assert new.alpha == c_new.alpha_start == c_new.alpha_target == 1.0
            assert c_new.alpha_mode == AlphaMode.HOLD
        elif c_old.alpha_mode in RAMPING and new.stage != S.PRUNED:
            assert (c_new.alpha_start, c_new.alpha_target, c_new.alpha_steps_total) == (
                c_old.alpha_start,
                c_old.alpha_target,
                c_old.alpha_steps_total,
            ), "a ramp was retargeted before it finished"
            lo, hi = sorted((c_old.alpha, c_old.alpha_target))
            assert lo <= c_new.alpha <= hi, (c_old, c_new)
            if c_new.alpha_mode == AlphaMode.HOLD:
                assert c_new.alpha == c_new.alpha_target
                assert c_new.alpha_steps_done == c_new.alpha_steps_total
            else:
                assert c_new.alpha_mode == c_old.alpha_mode
        if c_old.alpha_mode in RAMPING and new.stage == S.PRUNED and epoch_step:
            # Only a completed fade-out (to ~0) prunes in step_epoch.
            assert c_old.alpha_target <= EPS
        # -- the cooldown
        if epoch_step and old.stage == S.PRUNED:
            assert new.stage == S.EMBARGOED
        if epoch_step and old.stage in (S.EMBARGOED, S.RESETTING):
            dwell = self.gates.embargo_epochs if old.stage == S.EMBARGOED else self.gates.resetting_epochs
            moves_on = m_old.epochs_in_current_stage + 1 >= max(1, dwell)
            assert (new.stage != old.stage) == moves_on, (old.stage, m_old.epochs_in_current_stage, dwell)
        if new.stage == S.PRUNED and old.stage != S.PRUNED:
            self.cooldown_epochs, self.recorded_in_cooldown = 0, False
        elif self.cooldown_epochs is not None:
            self.cooldown_epochs += int(epoch_step)
            self.recorded_in_cooldown |= recorded
            if new.stage == S.DORMANT:
                if not self.recorded_in_cooldown:
                    assert self.cooldown_epochs == self.dwell, (self.cooldown_epochs, self.gates)
                    self.reached.add("cooldown_served")
                else:
                    assert self.cooldown_epochs <= self.dwell
                    self.reached.add("cooldown_shortened")
                self.cooldown_epochs = None
            else:
                assert new.stage in FAILURE_STAGES and self.cooldown_epochs < self.dwell
        if has_gate(new):
            self.reached.add("gate_" + new.stage.name)
        # -- the blend-out freeze follows its rule (a model of it, kept by the rules below)
        assert new.blend_out_frozen is self.frozen, (op, old, new)
        if self.frozen:
            self.reached.add("frozen")
        # -- gradient telemetry changes only when measured or synced
        if not measured:
            assert new.telemetry == old.telemetry or op == "germinate"
        # -- serialization and pytree round trips (decoding is not cheap: on each lifecycle change, at the end)
        if new is not old and (moves or op not in ("accuracy", "contribution", "gradients", "sync")):
            check_round_trips(new)

    def teardown(self) -> None:
        if self.state is not None:
            check_round_trips(self.state)
        super().teardown()

    def refused_or_done(self, old: SeedState, new: SeedState, events: tuple[Any, ...]) -> None:
        if new is old:
            assert events == ()

    # ------------------------------------------------------------------ rules

    # A free slot takes a new seed. A FOSSILIZED one never frees up (checked after every call), so the
    # run moves on to a fresh slot instead: the machine then keeps exercising the rest of the lifecycle.
    @precondition(lambda self: self.state is None or self.state.stage in (S.DORMANT, S.FOSSILIZED))
    @rule(**GERMINATE_ARGS)
    def germinate_seed(
        self,
        blend: tuple[str, AlphaAlgorithm],
        tempo: int,
        alpha_target: float | None,
        topology: str,
        seed_params: int,
        host_params: int,
    ) -> None:
        previous = self.state
        if previous is not None and previous.stage == S.FOSSILIZED:
            self.fresh_slots += 1
            self.slot = f"r0c{self.fresh_slots}"
        state = germinate(
            self.slot,
            "norm",
            blend=blend[0],
            algorithm=blend[1],
            tempo=tempo,
            alpha_target=alpha_target,
            topology=topology,
            seed_params=seed_params,
            host_params=host_params,
        )
        assert state.stage == S.GERMINATED and state.alpha == 0.0 and not state.telemetry.gradient_measured
        self.frozen, self.cooldown_epochs = False, None
        if previous is not None:
            assert previous.stage in (S.DORMANT, S.FOSSILIZED)
        self.update(self.slot, state, (germinated_event(state),))
        self.after(state, state, (), op="germinate")

    # Twice: a free slot is soon used again, as a controller would.
    @precondition(lambda self: self.state is None or self.state.stage in (S.DORMANT, S.FOSSILIZED))
    @rule(**GERMINATE_ARGS)
    def germinate_seed_again(self, **kwargs: Any) -> None:
        self.germinate_seed(**kwargs)

    @precondition(lambda self: self.state is not None)
    @rule(to=st.one_of(st.none(), st.none(), st.sampled_from(list(SeedStage))))
    def advance_stage(self, to: SeedStage | None) -> None:
        self._advance(to)

    @precondition(lambda self: self.state is not None and self.state.stage == S.HOLDING)
    @rule()
    def fossilize(self) -> None:
        """A controller's FOSSILIZE action (only offered while HOLDING)."""
        self._advance(S.FOSSILIZED)

    @precondition(lambda self: self.state is not None and self.state.stage == S.HOLDING)
    @rule(contribution=st.sampled_from([0.5, 1.0, 3.0]))
    def measure_and_fossilize(self, contribution: float) -> None:
        """A controller that measures the counterfactual contribution, then asks to fossilize."""
        old = self.state
        assert old is not None
        self.after(old, self.apply(record_contribution, contribution), (), op="contribution")
        self._advance(S.FOSSILIZED)

    def _advance(self, to: SeedStage | None) -> None:
        old = self.state
        assert old is not None
        gated = to is None or to in LIVE
        if has_seed(old) and not gated:
            try:
                self.apply(advance, self.gates, to)
            except IllegalTransitionError:
                return
            raise AssertionError(f"advance to {to} from {old.stage} should raise")
        target = to
        if target is None:
            target = next((s for s in VALID_TRANSITIONS[old.stage] if not is_failure_stage(s)), None)
        passes = has_seed(old) and target is not None and gate_passes(self.gates, old, target)
        if passes and target == S.BLENDING and refuses_gated_blend(old):
            try:
                self.apply(advance, self.gates, to)
            except IllegalTransitionError:
                self.reached.add("gated_tempo_0_refused")
                return
            raise AssertionError("a gated blend of tempo 0 must not start")
        new, result, events = self.apply(advance, self.gates, to)
        assert isinstance(result, GateResult)
        if not has_seed(old):
            assert new is old and result.checks_failed == ("no_active_seed",) and events == ()
        elif target is None:
            assert new is old and result.checks_failed == ("no_valid_transition",) and events == ()
        else:
            assert isinstance(events[0], GateEvaluated) and events[0].passed is passes
            assert events[0].target_stage == target
            legal = target in VALID_TRANSITIONS[old.stage]
            assert result.passed is (passes and legal)
            if result.passed:
                assert new.stage == target and len(events) == (3 if target == S.FOSSILIZED else 2)
            else:
                assert new is old and len(events) == 1
                if passes:
                    assert result.checks_failed == ("transition_failed",)
        self.after(old, new, events, op="advance")

    @precondition(lambda self: self.state is not None)
    @rule(reason=reasons, initiator=st.sampled_from(["policy", "governor"]), go=st.integers(0, 5))
    def prune_seed(self, reason: str, initiator: str, go: int) -> None:
        if go:  # prune in one draw of six, so that seeds live long enough to be fossilized
            return
        old = self.state
        assert old is not None
        new, events = self.apply(prune, reason, initiator=initiator)
        if not has_seed(old) or old.stage == S.FOSSILIZED:
            assert new is old and events == ()
        else:
            assert new.stage == S.PRUNED and new.metrics.auto_pruned == (reason in AUTO_PRUNE_REASONS)
            assert (events[1].reason, events[1].initiator) == (reason, initiator)
            self.frozen = False
        self.after(old, new, events, op="prune")

    @precondition(lambda self: self.state is not None)
    @rule(steps=st.integers(-1, 5), curve=curves, k=steepness, reason=reasons, go=st.integers(0, 3))
    def schedule_prune_seed(self, steps: int, curve: AlphaCurve | None, k: float, reason: str, go: int) -> None:
        old = self.state
        assert old is not None
        if go and old.stage not in (S.BLENDING, S.HOLDING):  # immediate prunes are rarer
            return
        new, events = self.apply(
            schedule_prune, steps=steps, curve=curve, steepness=k, reason=reason, initiator="tamiyo"
        )
        self.refused_or_done(old, new, events)
        if new is not old:
            fading = new.stage == S.BLENDING
            assert fading == (steps > 0 and old.alpha > 0.0 and old.stage in (S.BLENDING, S.HOLDING))
            if fading:
                assert new.alpha_controller.alpha_mode == AlphaMode.DOWN and new.alpha_controller.alpha_target == 0.0
                assert (new.pending_prune_reason, new.pending_prune_initiator) == (reason, "tamiyo")
            self.frozen = fading
        self.after(old, new, events, op="schedule_prune")

    @precondition(lambda self: self.state is not None)
    @rule(
        alpha_target=st.sampled_from([-0.5, 0.0, 1e-7, 0.25, 0.5, 0.75, 1.0, 1.5]),
        steps=st.integers(0, 5),
        curve=curves,
        k=steepness,
        algorithm=st.one_of(st.none(), st.none(), st.sampled_from(list(AlphaAlgorithm))),
    )
    def retarget_alpha(
        self, alpha_target: float, steps: int, curve: AlphaCurve | None, k: float, algorithm: AlphaAlgorithm | None
    ) -> None:
        self._retarget(alpha_target, steps, curve, k, algorithm)

    @precondition(
        lambda self: self.state is not None
        and self.state.stage in (S.BLENDING, S.HOLDING)
        and self.state.alpha_controller.alpha_mode == AlphaMode.HOLD
        and not self.state.blend_out_frozen
    )
    @rule(alpha_target=st.sampled_from([0.25, 0.5, 0.75]), steps=st.integers(1, 3))
    def fade_partially(self, alpha_target: float, steps: int) -> None:
        """A partial fade-out (the blend-out freeze, lifted after the ramp), offered between ramps once unfrozen."""
        self._retarget(alpha_target, steps, None, 12.0, None)

    @precondition(lambda self: self.state is not None and self.state.stage in (S.BLENDING, S.HOLDING))
    @rule(alpha_target=st.sampled_from([0.25, 0.5, 0.75]), steps=st.integers(1, 3), curve=curves)
    def fade_while_blending(self, alpha_target: float, steps: int, curve: AlphaCurve | None) -> None:
        """The same, offered whenever a seed blends or holds (refused mid-ramp)."""
        self._retarget(alpha_target, steps, curve, 12.0, None)

    def _retarget(
        self, alpha_target: float, steps: int, curve: AlphaCurve | None, k: float, algorithm: AlphaAlgorithm | None
    ) -> None:
        old = self.state
        assert old is not None
        new, events = self.apply(
            set_alpha_target, alpha_target=alpha_target, steps=steps, curve=curve, steepness=k, alpha_algorithm=algorithm
        )
        self.refused_or_done(old, new, events)
        accepted = (
            alpha_target > 0.0
            and old.stage in (S.BLENDING, S.HOLDING)
            and old.alpha_controller.alpha_mode == AlphaMode.HOLD
        )
        assert (new is not old) is accepted
        if accepted:
            assert new.alpha_controller.alpha_target == min(alpha_target, 1.0)
            if steps == 0:  # alpha moves at once
                assert new.alpha == min(alpha_target, 1.0) and new.alpha_controller.alpha_mode == AlphaMode.HOLD
            expected_algorithm = old.alpha_algorithm if algorithm is None else algorithm
            assert new.alpha_algorithm == expected_algorithm
            if expected_algorithm == AlphaAlgorithm.GATE and old.alpha_algorithm != AlphaAlgorithm.GATE:
                assert new.gate_total_steps == max(1, steps)
            self.frozen = new.alpha_controller.alpha_mode == AlphaMode.DOWN
        self.after(old, new, events, op="set_alpha_target")

    def _step(self, auto_forward: frozenset[GateLevel], op: str) -> None:
        old = self.state
        assert old is not None
        m = old.metrics
        if (
            GateLevel.G2 in auto_forward
            and refuses_gated_blend(old)
            and m.epochs_in_current_stage >= self.gates.min_blending_epochs
            and gate_passes(self.gates, old, S.BLENDING)
        ):
            try:
                self.apply(step_epoch, self.gates, auto_forward=auto_forward)
            except IllegalTransitionError:
                self.reached.add("gated_tempo_0_refused")
                return
            raise AssertionError("a gated blend of tempo 0 must not start")
        new, events = self.apply(step_epoch, self.gates, auto_forward=auto_forward)
        if old.stage in (S.HOLDING, S.FOSSILIZED) and old.blend_out_frozen == (old.alpha_controller.alpha_mode == AlphaMode.DOWN):
            assert new is old and events == ()
        if old.stage == S.DORMANT:
            assert new is old and events == ()
        else:
            # The freeze is refreshed from the controller first; a prune (or the return to DORMANT) clears it.
            was_down = old.alpha_controller.alpha_mode == AlphaMode.DOWN
            cleared = any(isinstance(e, SeedPruned) for e in events) or new.stage == S.DORMANT
            if self.frozen and not was_down:
                self.reached.add("freeze_lifted")
            self.frozen = was_down and not cleared
        if any(isinstance(e, SeedPruned) for e in events):
            self.reached.add("scheduled_prune_completed")
            # An empty pending reason falls back too, as in esper-lite.
            assert events[-1].reason == (old.pending_prune_reason or "scheduled_prune")
            assert events[-1].initiator == (old.pending_prune_initiator or "policy")
            if old.pending_prune_reason is None:
                self.reached.add("faded_to_tiny_target")
        self.after(old, new, events, op=op, epoch_step=True)

    @precondition(lambda self: self.state is not None)
    @rule(auto_forward=levels)
    def epoch(self, auto_forward: frozenset[GateLevel]) -> None:
        self._step(auto_forward, "step")

    @precondition(lambda self: self.state is not None)
    @rule(**TRAIN_ARGS)
    def train_epoch(
        self,
        delta: float,
        ratio: float,
        health: float | None,
        exploding: bool | None,
        contribution: float,
    ) -> None:
        """What a training loop does each epoch: measure, sync, then step with every auto-forward."""
        self._train(delta, ratio, health, exploding, contribution)

    # The same rule twice more: training epochs are what a run mostly does, and they move seeds on.
    @precondition(lambda self: self.state is not None)
    @rule(**TRAIN_ARGS)
    def train_epoch_again(self, **kwargs: Any) -> None:
        self._train(**kwargs)

    @precondition(lambda self: self.state is not None)
    @rule(**TRAIN_ARGS)
    def train_epoch_more(self, **kwargs: Any) -> None:
        self._train(**kwargs)

    def _train(
        self,
        delta: float,
        ratio: float,
        health: float | None,
        exploding: bool | None,
        contribution: float,
    ) -> None:
        old = self.state
        assert old is not None
        # Some loops record every slot (which shortens the cooldown), some only live seeds (esper-lite's).
        if has_seed(old) or self.records_every_slot:
            acc = min(100.0, max(0.0, old.metrics.current_val_accuracy + delta))
            self.after(old, self.apply(record_accuracy, acc), (), op="accuracy", recorded=True)
        mid = self.state
        assert mid is not None
        new = self.apply(record_gradients, host_grad_norm=1.0, seed_grad_norm=ratio)
        self.after(mid, new, (), op="gradients", measured=True)
        self.sync_epoch += 1
        mid = self.state
        new = self.apply(sync_telemetry, epoch=self.sync_epoch, gradient_health=health, has_exploding=exploding)
        self.after(mid, new, (), op="sync", measured=True)
        mid = self.state
        self.after(mid, self.apply(record_contribution, contribution), (), op="contribution")
        self._step(frozenset(GateLevel), "train_step")

    @precondition(lambda self: self.state is not None)
    @rule(
        kind=st.sampled_from(["accuracy", "contribution", "gradients", "sync"]),
        accuracy=st.floats(0.0, 100.0),
        contribution=st.floats(-5.0, 5.0),
        host=st.floats(0.0, 10.0),
        seed=st.floats(0.0, 10.0),
        epoch=st.integers(0, 40),
        health=healths,
        exploding=flags,
        vanishing=flags,
    )
    def measure(
        self,
        kind: str,
        accuracy: float,
        contribution: float,
        host: float,
        seed: float,
        epoch: int,
        health: float | None,
        exploding: bool | None,
        vanishing: bool | None,
    ) -> None:
        """One measurement with random values (one rule, so that lifecycle moves get most of a run)."""
        if kind == "accuracy":
            self._accuracy(accuracy)
        elif kind == "contribution":
            self._contribution(contribution)
        elif kind == "gradients":
            self._gradients(host, seed, health, exploding, vanishing)
        else:
            self._sync(epoch, health, exploding, vanishing)

    def _accuracy(self, accuracy: float) -> None:
        old = self.state
        assert old is not None
        new = self.apply(record_accuracy, accuracy)
        if old.stage != S.DORMANT:  # counted in every stage but DORMANT, as esper-lite's SeedMetrics does
            assert new.metrics.epochs_total == old.metrics.epochs_total + 1
            assert new.metrics.current_val_accuracy == accuracy
        else:
            assert new is old
        self.after(old, new, (), op="accuracy", recorded=True)

    def _contribution(self, contribution: float) -> None:
        old = self.state
        assert old is not None
        new = self.apply(record_contribution, contribution)
        assert (new is old) is (old.stage == S.DORMANT)
        if new is not old:
            assert new.metrics.counterfactual_contribution == contribution
        self.after(old, new, (), op="contribution")

    def _gradients(
        self, host: float, seed: float, health: float | None, exploding: bool | None, vanishing: bool | None
    ) -> None:
        old = self.state
        assert old is not None
        new = self.apply(
            record_gradients,
            host_grad_norm=host,
            seed_grad_norm=seed,
            gradient_health=health,
            has_exploding=exploding,
            has_vanishing=vanishing,
        )
        if has_seed(old):
            ratio = new.metrics.seed_gradient_norm_ratio
            assert ratio is not None and 0.0 <= ratio <= 10.0
            t_old, t = old.telemetry, new.telemetry
            assert t.gradient_health == (t_old.gradient_health if health is None else health)
            assert t.has_exploding == (t_old.has_exploding if exploding is None else exploding)
            assert t.has_vanishing == (t_old.has_vanishing if vanishing is None else vanishing)
            assert t.epoch == t_old.epoch  # only a sync stamps the epoch
        else:
            assert new is old
        self.after(old, new, (), op="gradients", measured=True)

    def _sync(self, epoch: int, health: float | None, exploding: bool | None, vanishing: bool | None) -> None:
        old = self.state
        assert old is not None
        new = self.apply(
            sync_telemetry, epoch=epoch, gradient_health=health, has_exploding=exploding, has_vanishing=vanishing
        )
        if old.stage == S.DORMANT:
            assert new is old
        else:
            t_old, t = old.telemetry, new.telemetry
            assert t.gradient_health == (t_old.gradient_health if health is None else health)
            assert t.has_exploding == (t_old.has_exploding if exploding is None else exploding)
            assert t.has_vanishing == (t_old.has_vanishing if vanishing is None else vanishing)
            assert (t.epoch, t.max_epochs, t.gradient_norm) == (epoch, t_old.max_epochs, t_old.gradient_norm)
        self.after(old, new, (), op="sync", measured=True)


#: Calls per run: enough for a seed to go from germination to FOSSILIZED, or through a cooldown, and again.
STEPS = 250

# The goals a run must reach for the checks above to have covered the whole lifecycle.
MUST_REACH = {
    "FOSSILIZED",
    "HOLDING",
    "DORMANT",
    "frozen",
    "freeze_lifted",
    "scheduled_prune_completed",
    "cooldown_served",
    "cooldown_shortened",
    "gate_BLENDING",
}


def test_lifecycle_machine() -> None:
    LifecycleOracle.reached = set()
    run_state_machine_as_test(LifecycleOracle, settings=settings(stateful_step_count=STEPS))
    missing = MUST_REACH - LifecycleOracle.reached
    assert not missing, f"the runs never reached {sorted(missing)}; reached {sorted(LifecycleOracle.reached)}"
