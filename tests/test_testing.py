"""esper_func.testing: its strategies, checks and state machine, tested as a user would rely on them."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import optree
import pytest
import torch
from hypothesis import HealthCheck, Phase, find, given, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

import esper_func as ef
from esper_func import testing as eft

S = ef.SeedStage
A = ef.AlphaAlgorithm
#: Shrinking on, whatever the profile (the CI profile turns it off for speed).
SHRINK = settings(phases=list(Phase), max_examples=50, database=None, suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------- import


def test_importing_without_hypothesis_says_how_to_install_it_and_the_core_never_imports_it() -> None:
    script = textwrap.dedent(
        """
        import sys
        import esper_func
        assert "hypothesis" not in sys.modules, "import esper_func imported hypothesis"
        sys.modules["hypothesis"] = None  # as if it were not installed
        try:
            import esper_func.testing
        except ImportError as err:
            assert isinstance(err, esper_func.MissingDependencyError), type(err)
            print(err)
        else:
            raise SystemExit("esper_func.testing imported without hypothesis")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install 'esper-func[testing]'" in done.stdout


# --------------------------------------------------------------------------- lifecycle states


@settings(max_examples=60)
@given(eft.histories())
def test_every_drawn_state_is_valid_reachable_and_round_trips(history: eft.History) -> None:
    gates, actions, state = history
    eft.check_state(state)
    # Reachable: replaying the history's legal operations gives the state, and every step on the way
    # passes the checks (with the events each step returned).
    assert isinstance(actions[0], eft.Germinate)
    current: ef.SeedState | None = None
    for action in actions:
        new, events = action.apply(current, gates)
        assert new is not None
        eft.check_state(new)
        if current is not None:
            eft.check_transition(current, new, events)
        current = new
    assert current == state == eft.apply_actions(None, actions, gates)
    # The state codec (through strict JSON) and both pytree libraries.
    assert ef.state_from_dict(json.loads(json.dumps(ef.state_to_dict(state), allow_nan=False))) == state
    assert optree.tree_unflatten(*reversed(optree.tree_flatten(state, namespace="esper_func"))) == state
    leaves, spec = torch.utils._pytree.tree_flatten(state)
    assert torch.utils._pytree.tree_unflatten(leaves, spec) == state


@pytest.mark.parametrize("stage", eft.REACHABLE_STAGES, ids=lambda s: s.name)
@settings(max_examples=8)
@given(data=st.data())
def test_seed_states_reach_the_requested_stage(stage: ef.SeedStage, data: st.DataObject) -> None:
    topology = data.draw(st.sampled_from(["cnn", "transformer"]))
    state = data.draw(eft.seed_states(stages=stage, topology=topology, slot_id="r1c0"))
    assert state.stage == stage and state.topology == topology and state.slot_id == "r1c0"
    eft.check_state(state)


@settings(max_examples=5)
@given(eft.seed_states(stages=[S.FOSSILIZED, S.EMBARGOED], gates=ef.Gates()))
def test_seed_states_reach_far_stages_under_esper_lites_default_gates(state: ef.SeedState) -> None:
    # Default gates: 10 epochs in TRAINING and in BLENDING, a 5-epoch embargo.
    assert state.stage in (S.FOSSILIZED, S.EMBARGOED)
    eft.check_state(state)


@settings(max_examples=10)
@given(eft.seed_states(germination=eft.germinations(blueprint_id="conv_small", algorithm=A.GATE)))
def test_a_pinned_germination_keeps_the_seed(state: ef.SeedState) -> None:
    assert (state.blueprint_id, state.alpha_algorithm, state.blend_algorithm_id) == ("conv_small", A.GATE, "gated")


def test_lifecycle_strategies_cover_the_interesting_states() -> None:
    seen: set[str] = set()

    @settings(max_examples=300, database=None, derandomize=True)
    @given(eft.seed_states())
    def collect(state: ef.SeedState) -> None:
        seen.add(state.stage.name)
        c = state.alpha_controller
        if c.alpha_mode != ef.AlphaMode.HOLD:
            seen.add("ramp_" + c.alpha_mode.name)
        if state.blend_out_frozen:
            seen.add("frozen")
        if state.pending_prune_reason is not None:
            seen.add("scheduled_prune")
        if ef.has_gate(state):
            seen.add("gate")
        if state.metrics.auto_pruned:
            seen.add("auto_pruned")

    collect()
    wanted = {s.name for s in eft.REACHABLE_STAGES} | {"ramp_UP", "ramp_DOWN", "frozen", "scheduled_prune", "gate"}
    assert wanted <= seen, f"never drawn: {sorted(wanted - seen)}"


def test_histories_shrink_to_the_shortest_way_there() -> None:
    history = find(eft.histories(stages=S.HOLDING), lambda h: True, settings=SHRINK)
    # germinate, advance to TRAINING, measure the gradients, two accuracies, advance to BLENDING, advance to HOLDING
    assert len(history.actions) <= 8, history.actions
    sequence = find(eft.action_sequences(), lambda a: len(a) >= 3, settings=SHRINK)
    assert sequence == [eft.StepEpoch()] * 3


def test_strategies_are_deterministic_under_a_seed_and_leave_torchs_rng_alone() -> None:
    def draws() -> list[Any]:
        out: list[Any] = []

        @seed(20260101)
        @settings(max_examples=6, database=None, derandomize=False)
        @given(eft.seed_states(), eft.models(), st.data())
        def record(state: ef.SeedState, drawn: eft.DrawnModel, data: st.DataObject) -> None:
            grid = data.draw(eft.alpha_grids(drawn.model.n_slots))
            x = data.draw(eft.inputs(drawn.model))
            out.append((state, drawn.model, torch.utils._pytree.tree_leaves(drawn.params), grid, x))

        record()
        return out

    before = torch.get_rng_state()
    first, second = draws(), draws()
    assert torch.equal(torch.get_rng_state(), before)
    assert len(first) == len(second) == 6
    for a, b in zip(first, second, strict=True):
        assert a[:2] == b[:2]
        assert all(torch.equal(x, y) for x, y in zip(a[2], b[2], strict=True))
        assert torch.equal(a[3], b[3]) and torch.equal(a[4], b[4])


def test_strategies_respect_max_examples() -> None:
    calls = 0

    @settings(max_examples=7, database=None)
    @given(eft.histories(), eft.models(), eft.action_sequences())
    def count(history: eft.History, drawn: eft.DrawnModel, actions: list[eft.LifecycleAction]) -> None:
        nonlocal calls
        calls += 1

    count()
    assert calls <= 7


def test_apply_actions_replays_and_refuses_like_the_lifecycle() -> None:
    gates = ef.Gates(permissive=True, min_blending_epochs=0)
    actions = [
        eft.RecordAccuracy(50.0),  # a free slot: nothing to record
        eft.Germinate("norm", tempo=2),
        eft.Germinate("conv_heavy"),  # occupied: refused
        eft.Advance(),
        eft.RecordGradients(gradient_health=1.0, has_exploding=False),
        eft.Advance(),
        eft.StepEpoch(),
        eft.SetAlphaTarget(0.5),  # mid-ramp: refused
    ]
    state = eft.apply_actions(None, actions, gates)
    assert state is not None and state.blueprint_id == "norm" and state.stage == S.BLENDING
    assert state.alpha_controller.alpha_target == 1.0
    assert eft.apply_actions(state, [], gates) is state
    assert repr(eft.Advance(S.BLENDING)) == "Advance(target=SeedStage.BLENDING)"
    with pytest.raises(TypeError, match="Gates"):
        eft.apply_actions(None, actions, None)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="action 0 is a Action"):
        eft.apply_actions(state, [ef.Action(kind=ef.ActionKind.WAIT)], gates)  # type: ignore[list-item]


def test_bad_strategy_arguments_fail_at_once_with_a_clear_message() -> None:
    with pytest.raises(ef.InvalidArgumentError, match="UNKNOWN cannot be drawn"):
        eft.seed_states(stages=S.UNKNOWN)
    with pytest.raises(ef.UnknownTopologyError, match="expected one of"):
        eft.seed_states(topology="rnn")
    with pytest.raises(ef.InvalidTypeError, match="gates"):
        eft.seed_states(gates="strict")  # type: ignore[arg-type]
    with pytest.raises(ef.InvalidArgumentError, match="unknown strategy"):
        eft.alpha_grids(3, strategy="latin")
    with pytest.raises(ef.InvalidArgumentError, match="min_seeds=1"):
        eft.models(stages=[S.PRUNED])
    with pytest.raises(ef.InvalidTypeError, match="expects a Model"):
        eft.slot_states("model")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- grids, registries, hosts, models


@pytest.mark.parametrize("strategy", [None, "fractional", "binary", "ablation", "shapley", "full_factorial"])
@settings(max_examples=10)
@given(data=st.data())
def test_alpha_grids(strategy: str | None, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 6))
    grid = data.draw(eft.alpha_grids(n, strategy=strategy))
    assert grid.dtype == torch.float32 and grid.ndim == 2 and grid.shape[1] == n and grid.shape[0] >= 1
    assert bool(((grid >= 0) & (grid <= 1)).all())
    if strategy is not None and strategy not in ("fractional", "binary"):
        kwargs = {} if strategy != "shapley" else {"seed": 0, "samples": 2}
        assert grid.shape[0] >= ef.alpha_grid(strategy, n, **kwargs).shape[0] or strategy == "shapley"


@settings(max_examples=15)
@given(eft.registries(), st.data())
def test_registries_and_blueprints(registry: ef.Registry, data: st.DataObject) -> None:
    full = ef.default_registry()
    assert registry.names("cnn") and registry.names("transformer")
    assert set(registry) <= set(full)
    bp = data.draw(eft.blueprints("transformer", registry=registry))
    assert bp.topology == "transformer" and registry.get("transformer", bp.name) == bp
    assert data.draw(eft.blueprints()) in full.values()


@settings(max_examples=15)
@given(eft.hosts(), st.data())
def test_hosts_are_small_and_take_their_inputs(host: ef.CNNHost | ef.TransformerHost, data: st.DataObject) -> None:
    model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(0))
    assert sum(t.numel() for t in torch.utils._pytree.tree_leaves(params)) < 50_000
    x = data.draw(eft.inputs(host))
    out = ef.predict(model, params, buffers, torch.zeros(model.n_slots), x)
    assert out.shape[0] == x.shape[0] and bool(torch.isfinite(out).all())


@settings(max_examples=15)
@given(eft.models(), st.data())
def test_drawn_models_predict_and_sweep(drawn: eft.DrawnModel, data: st.DataObject) -> None:
    model, params, buffers = drawn
    assert 1 <= len(model.seeded) and set(params["slots"]) == set(model.seeded)
    states = data.draw(eft.slot_states(model))
    for state in states.values():
        eft.check_state(state)
        assert state.stage == model.stage(state.slot_id)
    same_model, same_params = eft.assert_pure(ef.set_stages, model, params, states)
    assert same_model == model
    assert torch.utils._pytree.tree_structure(same_params) == torch.utils._pytree.tree_structure(params)
    x = data.draw(eft.inputs(model))
    out = ef.predict(model, params, buffers, ef.alphas_of(model, states), x)
    assert out.shape[0] == x.shape[0] and bool(torch.isfinite(out).all())
    grid = data.draw(eft.alpha_grids(model.n_slots))
    swept = ef.sweep(model, params, buffers, x, grid)  # equal to stacked predicts: tests/test_counterfactual.py
    assert swept.shape == (grid.shape[0], *out.shape) and bool(torch.isfinite(swept).all())
    assert "DrawnModel(host=" in drawn.describe() and "tensor(" not in drawn.describe()


@settings(max_examples=10)
@given(
    eft.models(
        topology="cnn",
        registry=eft.registries(topology="cnn"),
        stages=[S.BLENDING, S.PRUNED],
        algorithms=[A.GATE],
        min_seeds=2,
        max_seeds=2,
        dtype=torch.float64,
    )
)
def test_models_follow_their_arguments(drawn: eft.DrawnModel) -> None:
    model, params, _ = drawn
    assert model.host.topology == "cnn" and len(model.seeded) == 2
    for sid, slot, stage in zip(model.slot_order, model.slots, model.stages, strict=True):
        if slot is None:
            assert stage in (S.DORMANT, S.PRUNED)
        else:
            assert stage == S.BLENDING and slot.algorithm == A.GATE and slot.gated
            assert set(params["slots"][sid]) == {"seed", "gate"}
    assert all(t.dtype == torch.float64 for t in torch.utils._pytree.tree_leaves(params) if t.is_floating_point())


# --------------------------------------------------------------------------- assert_pure


def _mutates(x: torch.Tensor) -> torch.Tensor:
    x.add_(1.0)
    return x * 2


def _mutates_and_restores(x: torch.Tensor) -> torch.Tensor:
    x.add_(1.0).sub_(1.0)
    return x * 2


def _uses_global_rng(x: torch.Tensor) -> torch.Tensor:
    return x + torch.rand(x.shape)


def _reseeds(x: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    return x + 1


def _python_random(x: torch.Tensor) -> torch.Tensor:
    return x + random.random()


def _numpy_random(x: torch.Tensor) -> torch.Tensor:
    return x + float(np.random.rand())


VIEWS = {
    "index": lambda x: x[0],
    "view": lambda x: x.view(-1),
    "transpose": lambda x: x.t(),
    "detach": lambda x: x.detach(),
    "in a dict": lambda x: {"out": x[:, :1], "sum": x.sum()},
}


def test_assert_pure_catches_in_place_changes() -> None:
    x = torch.ones(2, 3)
    with pytest.raises(eft.PurityError, match=r"args\[0\]: modified in place \(version counter 0 -> 1\); its values changed"):
        eft.assert_pure(_mutates, x)
    y = torch.ones(2, 3)
    with pytest.raises(eft.PurityError, match=r"modified in place \(version counter 0 -> 2\)"):
        eft.assert_pure(_mutates_and_restores, y)
    params = {"host": {"w": torch.zeros(3)}}
    with pytest.raises(eft.PurityError, match=r"kwargs\['p'\]\['host'\]\['w'\]: its values changed without a version bump"):
        eft.assert_pure(lambda p: p["host"]["w"].data.fill_(2.0), p=params)


def test_assert_pure_catches_changed_containers_generators_modules_and_grads() -> None:
    params = {"host": {"w": torch.zeros(3)}}
    with pytest.raises(eft.PurityError, match=r"args\[0\]\['host'\]: entries were added"):
        eft.assert_pure(lambda p: p["host"].update(b=torch.ones(1)), params)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(eft.PurityError, match=r"args\[0\]: the torch.Generator was advanced"):
        eft.assert_pure(lambda gen: torch.rand(2, generator=gen), g)
    module = torch.nn.Linear(2, 2)
    with pytest.raises(eft.PurityError, match=r"train/eval mode changed"):
        eft.assert_pure(lambda m: m.eval(), module)
    w = torch.ones(2, requires_grad=True)
    with pytest.raises(eft.PurityError, match=r"\.grad was written"):
        eft.assert_pure(lambda t: (t * 2).sum().backward(), w)


@pytest.mark.parametrize("fn", [_uses_global_rng, _reseeds, _python_random, _numpy_random])
def test_assert_pure_catches_the_global_rng_and_puts_it_back(fn: Any) -> None:
    torch_state, py_state, np_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    with pytest.raises(eft.PurityError, match=r"global RNG|random module|NumPy"):
        eft.assert_pure(fn, torch.ones(2))
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state
    assert (np.random.get_state()[1] == np_state[1]).all()


@pytest.mark.parametrize("name", sorted(VIEWS))
def test_assert_pure_catches_an_output_that_views_an_input(name: str) -> None:
    with pytest.raises(eft.PurityError, match=r"shares memory with the input args\[0\]"):
        eft.assert_pure(VIEWS[name], torch.ones(2, 3))


def test_assert_pure_checks_inputs_when_the_function_raises() -> None:
    def fails_after_writing(x: torch.Tensor) -> None:
        x.zero_()
        raise ValueError("boom")

    with pytest.raises(eft.PurityError, match="raised ValueError after changing its inputs") as info:
        eft.assert_pure(fails_after_writing, torch.ones(2))
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ValueError, match="boom"):
        eft.assert_pure(lambda x: (_ for _ in ()).throw(ValueError("boom")), torch.ones(2))


def test_assert_pure_passes_pure_functions_and_returns_their_result() -> None:
    nan = torch.tensor([float("nan"), -0.0, 1.0])
    assert eft.assert_pure(lambda t: t.clone(), nan).isnan()[0]
    x = torch.ones(2)
    assert eft.assert_pure(lambda t: (t, t + 1), x)[0] is x  # passing an input through is sharing, not aliasing
    with torch.inference_mode():
        frozen = torch.ones(2)
    assert torch.equal(eft.assert_pure(torch.add, frozen, 1.0), torch.full((2,), 2.0))


@settings(max_examples=5)
@given(eft.models(), st.data())
def test_library_functions_are_pure(drawn: eft.DrawnModel, data: st.DataObject) -> None:
    model, params, buffers = drawn
    registry = ef.default_registry()
    x = data.draw(eft.inputs(model))
    alphas = data.draw(eft.alpha_grids(model.n_slots, strategy="fractional"))[0]
    eft.assert_pure(ef.predict, model, params, buffers, alphas, x)
    eft.assert_pure(ef.apply, model, params, buffers, alphas, x, train=False)
    if not (isinstance(model.host, ef.TransformerHost) and model.host.dropout > 0):
        eft.assert_pure(ef.apply, model, params, buffers, alphas, x, train=True)
    eft.assert_pure(ef.sweep, model, params, buffers, x, ef.alpha_grid("ablation", model.n_slots))
    free = [sid for sid in model.slot_order if model.slot(sid) is None]
    if free:
        generator = torch.Generator().manual_seed(3)
        eft.assert_pure(ef.add_seed, model, params, free[0], registry, "norm", generator=generator)
    for sid in model.seeded:
        slot = model.slot(sid)
        assert slot is not None
        h = torch.randn(2, slot.channels, 4, 4) if slot.topology == "cnn" else torch.randn(2, 3, slot.channels)
        for stage in (model.stage(sid), S.DORMANT):
            eft.assert_pure(ef.slot_apply, slot, params["slots"][sid], torch.tensor(0.5), h, stage=stage)
    state = data.draw(eft.seed_states())
    eft.assert_pure(ef.step_epoch, state, ef.Gates(), auto_forward={ef.GateLevel.G1})
    eft.assert_pure(ef.alpha_grid, "shapley", 4, seed=torch.Generator().manual_seed(1), samples=4)


# --------------------------------------------------------------------------- check_state / check_transition


@pytest.fixture(scope="module")
def blending() -> ef.SeedState:
    gates = ef.Gates(permissive=True, min_blending_epochs=0)
    actions = [eft.Germinate("norm", tempo=3), eft.Advance(), eft.RecordGradients(gradient_health=1.0), eft.Advance(), eft.StepEpoch()]
    state = eft.apply_actions(None, actions, gates)
    assert state is not None and state.stage == S.BLENDING
    return state


BROKEN = {
    "frozen before blending": (lambda s: dataclasses.replace(s, stage=S.TRAINING), r"TRAINING is not a legal|stage_history ends"),
    "alpha off its controller's target": (
        lambda s: dataclasses.replace(s, alpha_controller=dataclasses.replace(s.alpha_controller, alpha=0.9)),
        r"alpha 0.9 is off its SIGMOID ramp from 0.0 to 1.0: step 1/3 puts it at 0.117",
    ),
    "ramp without the freeze flag": (
        lambda s: dataclasses.replace(
            s, alpha_controller=dataclasses.replace(s.alpha_controller, alpha_mode=ef.AlphaMode.DOWN, alpha_start=1.0, alpha_target=0.0)
        ),
        r"ramps DOWN but the blend-out freeze",
    ),
    "pending prune alone": (lambda s: dataclasses.replace(s, pending_prune_reason="x"), r"set together"),
    "gate steps without a gate": (lambda s: dataclasses.replace(s, gate_total_steps=3), r"gate_total_steps is 3"),
    "history rewritten": (lambda s: dataclasses.replace(s, stage_history=((S.TRAINING, 0), *s.stage_history[1:])), r"starts at \(TRAINING, 0\)"),
    "counter mismatch": (
        lambda s: dataclasses.replace(s, metrics=dataclasses.replace(s.metrics, epochs_in_current_stage=5)),
        r"exceeds epochs_total|stage_history ends",
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_state_says_what_broke(blending: ef.SeedState, name: str) -> None:
    eft.check_state(blending)
    breaks, pattern = BROKEN[name]
    with pytest.raises(eft.InvariantError, match=pattern) as info:
        eft.check_state(breaks(blending))
    assert "slot 'r0c0'" in str(info.value) and isinstance(info.value, AssertionError)


def test_check_transition_says_what_broke(blending: ef.SeedState) -> None:
    gates = ef.Gates(permissive=True, min_blending_epochs=0)
    later, events = ef.step_epoch(blending, gates)
    eft.check_transition(blending, later, events)
    eft.check_transition(blending, later)
    pruned, events = ef.prune(later, "policy")
    eft.check_transition(blending, pruned, events)
    with pytest.raises(eft.InvariantError, match="do not match the history"):
        eft.check_transition(blending, pruned, ())
    with pytest.raises(eft.InvariantError, match="epochs_total went back"):
        eft.check_transition(eft.apply_actions(later, [eft.RecordAccuracy(1.0)], gates), later)
    fossil = eft.apply_actions(None, [eft.Germinate(tempo=0), eft.Advance(), eft.RecordGradients(gradient_health=1.0),
                                      eft.Advance(), eft.Advance(), eft.RecordContribution(2.0), eft.Advance()], gates)
    assert fossil.stage == S.FOSSILIZED
    fresh = ef.germinate("r0c0", "norm")
    with pytest.raises(eft.InvariantError, match="FOSSILIZED is terminal"):
        eft.check_transition(fossil, fresh, (ef.germinated_event(fresh),))


# --------------------------------------------------------------------------- LifecycleMachine


class OneSeedAtATime(eft.LifecycleMachine):
    """A toy controller: germinate when nothing is live, advance otherwise; it must keep one seed at most."""

    slot_ids = ("r0c0", "r0c1", "r1c0")

    @rule(accuracy=st.floats(0, 100))
    def controller_step(self, accuracy: float) -> None:
        live = [sid for sid, s in self.states.items() if ef.has_seed(s) and s.stage != S.FOSSILIZED]
        for sid in live:
            self.act(sid, eft.RecordAccuracy(accuracy))
        if live:
            action = ef.Action(kind=ef.ActionKind.ADVANCE, slot_id=live[0])
        else:
            free = [sid for sid in self.slot_ids if ef.is_free(self.states.get(sid))]
            if not free:
                return
            action = ef.Action(kind=ef.ActionKind.GERMINATE, slot_id=free[0], blueprint="norm")
        new, events, _ = ef.apply_action(action, self.states, self.gates, epoch=self.epoch, topology=self.topology_of_run)
        self.update_all(new, events)


def test_a_subclass_of_the_lifecycle_machine_runs() -> None:
    run_state_machine_as_test(OneSeedAtATime, settings=settings(max_examples=10, stateful_step_count=30))


class BreaksTheLifecycle(eft.LifecycleMachine):
    random_actions = False

    @rule()
    def corrupt(self) -> None:
        state = ef.germinate("r0c0", "norm")
        self.update("r0c0", dataclasses.replace(state, blend_out_frozen=True))


def test_the_machine_reports_a_broken_state_at_the_step_that_made_it() -> None:
    with pytest.raises(eft.InvariantError, match="blend-out freeze is on in GERMINATED"):
        run_state_machine_as_test(BreaksTheLifecycle, settings=settings(max_examples=3, database=None))
