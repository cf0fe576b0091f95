"""Stateful property test: random sequences of every lifecycle operation.

After every step the machine checks: only legal stage transitions (the
``StageChanged`` events chain from the old stage to the new one); alpha in
``[0, 1]``; alpha monotone within a ramp and equal to the target when the
ramp ends; FOSSILIZED terminal; a pruned slot DORMANT again after exactly
``1 + embargo + resetting`` epochs; inputs unchanged (purity); the JSON and
pytree round trips give back an equal state.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import optree
import torch.utils._pytree as torch_pytree
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from esper_func.errors import IllegalTransitionError
from esper_func.lifecycle import (
    AUTO_PRUNE_REASONS,
    SeedState,
    advance,
    germinate,
    has_seed,
    prune,
    record_accuracy,
    record_contribution,
    record_gradients,
    schedule_prune,
    set_alpha_target,
    state_from_dict,
    state_to_dict,
    step_epoch,
    trainable,
)
from esper_func.lifecycle.alpha import AlphaAlgorithm, AlphaCurve, AlphaMode
from esper_func.lifecycle.events import GateEvaluated, SeedFossilized, SeedPruned, StageChanged
from esper_func.lifecycle.gates import GateLevel, GateResult, Gates
from esper_func.lifecycle.stages import FAILURE_STAGES, SeedStage, is_valid_transition

S = SeedStage
RAMPING = (AlphaMode.UP, AlphaMode.DOWN)

blend_choices = st.sampled_from(
    [("sigmoid", AlphaAlgorithm.ADD), ("linear", AlphaAlgorithm.MULTIPLY), ("gated", AlphaAlgorithm.GATE)]
)
curves = st.one_of(st.none(), st.sampled_from(list(AlphaCurve)))
steepness = st.sampled_from([0.05, 1.0, 12.0, 50.0, 1e4])
levels = st.frozensets(st.sampled_from([GateLevel.G1, GateLevel.G2, GateLevel.G3]))
reasons = st.sampled_from(["", "policy_prune", "underperforming", *sorted(AUTO_PRUNE_REASONS)])


class LifecycleMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state: SeedState | None = None
        self.gates = Gates()
        self.fossilized = False
        self.cooldown_epochs: int | None = None  # step_epoch calls since the prune

    # ------------------------------------------------------------------ setup

    @initialize(
        permissive=st.booleans(),
        min_epochs=st.integers(0, 3),
        embargo=st.sampled_from([0, 1, 2, 5]),
        resetting=st.sampled_from([0, 1, 2]),
    )
    def setup(self, permissive: bool, min_epochs: int, embargo: int, resetting: int) -> None:
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

    # ------------------------------------------------------------------ the check after every operation

    def apply(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(self.state, ...)``, checking that neither the state nor the gates change."""
        state, gates = self.state, self.gates
        assert state is not None
        snapshot, as_dict, gates_copy = copy.deepcopy(state), state_to_dict(state), copy.deepcopy(gates)
        out = fn(state, *args, **kwargs)
        assert state == snapshot and state_to_dict(state) == as_dict, "input state was modified"
        assert gates == gates_copy
        return out

    def after(self, old: SeedState, new: SeedState, events: tuple[Any, ...], *, epoch_step: bool = False) -> None:
        assert isinstance(events, tuple)
        # -- legal transitions, chained through the events
        moves = [e for e in events if isinstance(e, StageChanged)]
        stage = old.stage
        for move in moves:
            assert move.from_stage == stage, (move, stage)
            assert is_valid_transition(move.from_stage, move.to_stage), move
            stage = move.to_stage
        assert stage == new.stage, (old.stage, [(m.from_stage, m.to_stage) for m in moves], new.stage)
        if any(isinstance(e, SeedPruned) for e in events):
            assert new.stage == S.PRUNED
        if any(isinstance(e, SeedFossilized) for e in events):
            assert new.stage == S.FOSSILIZED
        # -- FOSSILIZED is terminal
        if self.fossilized:
            assert new.stage == S.FOSSILIZED and new.alpha == old.alpha
        self.fossilized = new.stage == S.FOSSILIZED
        # -- alpha bounds and controller sanity
        c_old, c_new = old.alpha_controller, new.alpha_controller
        assert 0.0 <= new.alpha <= 1.0
        for value in (c_new.alpha, c_new.alpha_start, c_new.alpha_target):
            assert 0.0 <= value <= 1.0
        assert 0 <= c_new.alpha_steps_done <= c_new.alpha_steps_total
        # -- monotone within a ramp; exactly the target when it ends
        if c_old.alpha_mode in RAMPING and new.stage == S.HOLDING:
            # The ramp ended on a full target and G3 moved the seed on; HOLDING pins alpha at 1.
            assert c_old.alpha_target == 1.0 and old.stage == S.BLENDING
            assert new.alpha == c_new.alpha == c_new.alpha_start == c_new.alpha_target == 1.0
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
                if new.stage == S.BLENDING:
                    assert new.alpha == c_new.alpha_target
            else:
                assert c_new.alpha_mode == c_old.alpha_mode
        if c_old.alpha_mode in RAMPING and new.stage == S.PRUNED:
            assert c_old.alpha_target == 0.0 or not epoch_step  # only a completed fade-out prunes in step_epoch
        if c_new.alpha_mode in RAMPING:
            assert new.stage == S.BLENDING
        # -- pruned slots are DORMANT after exactly the dwell
        if new.stage == S.PRUNED and old.stage != S.PRUNED:
            self.cooldown_epochs = 0
        elif self.cooldown_epochs is not None:
            if epoch_step:
                self.cooldown_epochs += 1
            if new.stage == S.DORMANT:
                assert self.cooldown_epochs == self.dwell, (self.cooldown_epochs, self.gates)
                self.cooldown_epochs = None
            else:
                assert new.stage in FAILURE_STAGES and self.cooldown_epochs < self.dwell
        # -- derived predicates
        assert has_seed(new) == (new.stage in (S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED))
        assert trainable(new) == (has_seed(new) and c_new.alpha_mode != AlphaMode.DOWN)
        if not has_seed(new):
            assert new.alpha == 0.0 and c_new.alpha_mode == AlphaMode.HOLD and not new.isolate_gradients
        assert len(new.stage_history) <= 100 and new.stage_history[-1][0] == new.stage
        # -- serialization and pytree round trips
        assert state_from_dict(json.loads(json.dumps(state_to_dict(new), allow_nan=False))) == new
        leaves, spec = optree.tree_flatten(new, namespace="esper_func")
        assert optree.tree_unflatten(spec, leaves) == new
        tleaves, tspec = torch_pytree.tree_flatten(new)
        assert torch_pytree.tree_unflatten(tleaves, tspec) == new
        self.state = new

    def refused_or_done(self, old: SeedState, new: SeedState, events: tuple[Any, ...]) -> None:
        if new is old:
            assert events == ()

    # ------------------------------------------------------------------ rules

    @precondition(lambda self: self.state is None or self.state.stage == S.DORMANT)
    @rule(
        blend=blend_choices,
        tempo=st.integers(0, 4),
        alpha_target=st.one_of(st.none(), st.sampled_from([0.25, 0.5, 1.0])),
        topology=st.sampled_from(["cnn", "transformer"]),
        seed_params=st.sampled_from([0, 100]),
        host_params=st.sampled_from([0, 10_000]),
    )
    def germinate_seed(
        self, blend: tuple[str, AlphaAlgorithm], tempo: int, alpha_target: float | None, topology: str,
        seed_params: int, host_params: int,
    ) -> None:
        previous = self.state
        state = germinate(
            "r0c0",
            "norm",
            blend=blend[0],
            algorithm=blend[1],
            tempo=tempo,
            alpha_target=alpha_target,
            topology=topology,
            seed_params=seed_params,
            host_params=host_params,
        )
        assert state.stage == S.GERMINATED and state.alpha == 0.0
        self.fossilized = False
        self.cooldown_epochs = None
        if previous is not None:
            assert previous.stage == S.DORMANT
        self.state = state
        self.after(state, state, ())

    @precondition(lambda self: self.state is not None)
    @rule(to=st.one_of(st.none(), st.sampled_from(list(SeedStage))))
    def advance_stage(self, to: SeedStage | None) -> None:
        target = to
        old = self.state
        assert old is not None
        gated = target is None or target in (S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED)
        if has_seed(old) and not gated:
            try:
                self.apply(advance, self.gates, target)
            except IllegalTransitionError:
                return
            raise AssertionError(f"advance to {target} from {old.stage} should raise")
        new, result, events = self.apply(advance, self.gates, target)
        assert isinstance(result, GateResult)
        if not has_seed(old):
            assert new is old and result.checks_failed == ("no_active_seed",) and events == ()
        elif result.passed:
            assert new.stage != old.stage and isinstance(events[0], GateEvaluated)
        else:
            assert new is old
        self.after(old, new, events)

    @precondition(lambda self: self.state is not None)
    @rule(reason=reasons, initiator=st.sampled_from(["policy", "governor"]), go=st.integers(0, 3))
    def prune_seed(self, reason: str, initiator: str, go: int) -> None:
        if go:  # prune in one draw of four, so that seeds live long enough to reach HOLDING
            return
        old = self.state
        assert old is not None
        new, events = self.apply(prune, reason, initiator=initiator)
        if not has_seed(old) or old.stage == S.FOSSILIZED:
            assert new is old and events == ()
        else:
            assert new.stage == S.PRUNED and new.metrics.auto_pruned == (reason in AUTO_PRUNE_REASONS)
        self.after(old, new, events)

    @precondition(lambda self: self.state is not None)
    @rule(steps=st.integers(-1, 5), curve=curves, k=steepness, reason=reasons, go=st.integers(0, 1))
    def schedule_prune_seed(self, steps: int, curve: AlphaCurve | None, k: float, reason: str, go: int) -> None:
        old = self.state
        assert old is not None
        if go and old.stage not in (S.BLENDING, S.HOLDING):  # immediate prunes are rarer
            return
        new, events = self.apply(schedule_prune, steps=steps, curve=curve, steepness=k, reason=reason)
        self.refused_or_done(old, new, events)
        if new.stage == S.BLENDING and new is not old:
            assert new.alpha_controller.alpha_mode == AlphaMode.DOWN and not trainable(new)
            assert new.pending_prune_reason == reason
        self.after(old, new, events)

    @precondition(lambda self: self.state is not None)
    @rule(
        alpha_target=st.sampled_from([-0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5]),
        steps=st.integers(0, 5),
        curve=curves,
        k=steepness,
    )
    def retarget_alpha(self, alpha_target: float, steps: int, curve: AlphaCurve | None, k: float) -> None:
        old = self.state
        assert old is not None
        new, events = self.apply(set_alpha_target, alpha_target=alpha_target, steps=steps, curve=curve, steepness=k)
        self.refused_or_done(old, new, events)
        if alpha_target <= 0.0 or old.stage not in (S.BLENDING, S.HOLDING):
            assert new is old
        self.after(old, new, events)

    @precondition(lambda self: self.state is not None)
    @rule(auto_forward=levels)
    def epoch(self, auto_forward: frozenset[GateLevel]) -> None:
        old = self.state
        assert old is not None
        new, events = self.apply(step_epoch, self.gates, auto_forward=auto_forward)
        if old.stage in (S.HOLDING, S.FOSSILIZED, S.DORMANT):
            assert new is old and events == ()
        self.after(old, new, events, epoch_step=True)

    @precondition(lambda self: self.state is not None)
    @rule(
        delta=st.sampled_from([-0.25, 0.0, 0.5, 1.0, 2.0]),
        ratio=st.sampled_from([0.0, 0.05, 0.5]),
        contribution=st.sampled_from([0.5, 2.0]),
    )
    def train_epoch(self, delta: float, ratio: float, contribution: float) -> None:
        """What a training loop does each epoch: measure, then step with every auto-forward."""
        old = self.state
        assert old is not None
        acc = min(100.0, max(0.0, old.metrics.current_val_accuracy + delta))
        self.after(old, self.apply(record_accuracy, acc), ())
        mid = self.state
        self.after(mid, self.apply(record_gradients, host_grad_norm=1.0, seed_grad_norm=ratio), ())
        mid = self.state
        self.after(mid, self.apply(record_contribution, contribution), ())
        mid = self.state
        new, events = self.apply(step_epoch, self.gates, auto_forward=set(GateLevel))
        self.after(mid, new, events, epoch_step=True)

    @precondition(lambda self: self.state is not None)
    @rule(accuracy=st.floats(0.0, 100.0, allow_nan=False))
    def accuracy(self, accuracy: float) -> None:
        old = self.state
        assert old is not None
        new = self.apply(record_accuracy, accuracy)
        if has_seed(old):
            assert new.metrics.epochs_total == old.metrics.epochs_total + 1
            assert new.metrics.current_val_accuracy == accuracy
        else:
            assert new is old
        self.after(old, new, ())

    @precondition(lambda self: self.state is not None)
    @rule(contribution=st.floats(-5.0, 5.0, allow_nan=False))
    def contribution(self, contribution: float) -> None:
        old = self.state
        assert old is not None
        self.after(old, self.apply(record_contribution, contribution), ())

    @precondition(lambda self: self.state is not None)
    @rule(
        host=st.floats(0.0, 10.0),
        seed=st.floats(0.0, 10.0),
        health=st.one_of(st.none(), st.floats(0.0, 1.0)),
        exploding=st.one_of(st.none(), st.booleans()),
    )
    def gradients(self, host: float, seed: float, health: float | None, exploding: bool | None) -> None:
        old = self.state
        assert old is not None
        new = self.apply(
            record_gradients, host_grad_norm=host, seed_grad_norm=seed, gradient_health=health, has_exploding=exploding
        )
        if has_seed(old):
            ratio = new.metrics.seed_gradient_norm_ratio
            assert ratio is not None and 0.0 <= ratio <= 10.0
        self.after(old, new, ())


LifecycleMachine.TestCase.settings = settings(stateful_step_count=100)
TestLifecycleMachine = LifecycleMachine.TestCase
