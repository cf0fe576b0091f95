"""The heuristic controller: hand-derived decision tables, memory replay, purity, legality.

Expectations come from reading esper-lite's ``tamiyo/heuristic.py`` (explicit
ADVANCE, HOLDING, ransomware checks), its ``SignalTracker`` and its heuristic
training loop, and are written as literals.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

import esper_func.testing as eft
from esper_func import default_registry
from esper_func.controller import (
    DEFAULT_BLUEPRINT_ROTATION,
    Action,
    ActionKind,
    HeuristicConfig,
    Observation,
    PolicyMemory,
    SlotView,
    apply_action,
    decide,
    heuristic,
    is_free,
    is_live,
    recall,
    select_blueprint,
)
from esper_func.errors import IllegalTransitionError, UnknownBlueprintError, UnknownTopologyError
from esper_func.lifecycle import (
    SeedState,
    advance,
    germinate,
    germinated_event,
    has_seed,
    prune,
    record_accuracy,
    record_contribution,
    record_gradients,
    step_epoch,
    sync_telemetry,
)
from esper_func.lifecycle.alpha import AlphaAlgorithm, AlphaController, AlphaMode
from esper_func.lifecycle.events import LifecycleEvent, SeedFossilized, SeedGerminated, SeedPruned, StageChanged
from esper_func.lifecycle.gates import GateLevel, Gates
from esper_func.lifecycle.stages import SeedStage

S = SeedStage
K = ActionKind
CNN_BLUEPRINTS = tuple(default_registry().names("cnn"))
TRANSFORMER_BLUEPRINTS = tuple(default_registry().names("transformer"))


# --------------------------------------------------------------------------- builders


def histories(epochs: int, *, plateau: bool = True, stable: bool = True) -> tuple[list[float], list[float]]:
    """Accuracy/loss per epoch 1..epochs.

    Plateaued accuracy ``50 - 40 * 0.5**i`` gains less than 0.5 points from
    epoch 7 on (plateau count at epoch n >= 7: n - 6). Stable loss
    ``0.5 + 2 * 0.5**i`` falls by less than 3 % from epoch 7 on, so the
    stabilisation latch sets at epoch 9. Otherwise accuracy climbs 2 points
    an epoch and loss falls 10 % an epoch.
    """
    acc = [50.0 - 40.0 * 0.5**i if plateau else 10.0 + 2.0 * i for i in range(1, epochs + 1)]
    loss = [0.5 + 2.0 * 0.5**i if stable else 3.0 * 0.9**i for i in range(1, epochs + 1)]
    return acc, loss


def observe(
    *slots: SlotView,
    epoch: int = 10,
    events: Sequence[tuple[int, LifecycleEvent]] = (),
    plateau: bool = True,
    stable: bool = True,
    topology: str = "cnn",
    available: tuple[str, ...] | None = None,
) -> Observation:
    acc, loss = histories(epoch, plateau=plateau, stable=stable)
    if available is None:
        available = CNN_BLUEPRINTS if topology == "cnn" else TRANSFORMER_BLUEPRINTS
    return Observation(
        epoch=epoch,
        max_epochs=100,
        topology=topology,
        val_accuracy=acc[-1],
        val_loss=loss[-1],
        train_loss=loss[-1],
        accuracy_history=tuple(acc),
        loss_history=tuple(loss),
        slots=slots or (SlotView("r0c0"), SlotView("r0c1"), SlotView("r0c2")),
        events=tuple(e for _, e in events),
        event_epochs=tuple(t for t, _ in events),
        available_blueprints=available,
    )


def seed(
    slot: str,
    stage: SeedStage,
    *,
    blueprint: str = "conv_light",
    improvement: float = 0.0,
    total: float = 0.0,
    epochs_in_stage: int = 0,
    contribution: float | None = None,
    alpha: float = 0.0,
) -> SeedState:
    """A hand-made state: stage and the metrics the policy reads."""
    state = germinate(slot, blueprint)
    metrics = dataclasses.replace(
        state.metrics,
        epochs_total=epochs_in_stage + 3,
        epochs_in_current_stage=epochs_in_stage,
        initial_val_accuracy=50.0 - total,
        current_val_accuracy=50.0,
        accuracy_at_stage_start=50.0 - improvement,
        counterfactual_contribution=contribution,
    )
    ctrl = dataclasses.replace(state.alpha_controller, alpha=alpha)
    return dataclasses.replace(state, stage=stage, metrics=metrics, alpha_controller=ctrl)


def full_amplitude(state: SeedState) -> SeedState:
    ctrl = AlphaController(alpha=1.0, alpha_start=0.0, alpha_target=1.0, alpha_mode=AlphaMode.HOLD)
    return dataclasses.replace(state, alpha_controller=ctrl)


def germination_event(slot: str, blueprint: str) -> SeedGerminated:
    return germinated_event(germinate(slot, blueprint))


def prune_event(slot: str, blueprint: str, *, initiator: str = "policy") -> SeedPruned:
    state, _, _ = advance(germinate(slot, blueprint), Gates())
    _, events = prune(state, "test", initiator=initiator)
    event = events[-1]
    assert isinstance(event, SeedPruned)
    return event


def views(**states: SeedState | None) -> tuple[SlotView, ...]:
    return tuple(SlotView(slot, state) for slot, state in states.items())


# --------------------------------------------------------------------------- configuration


def test_defaults_are_esper_lites() -> None:
    cfg = HeuristicConfig()
    assert (cfg.plateau_epochs_to_germinate, cfg.min_epochs_before_germinate) == (3, 5)
    assert (cfg.prune_after_epochs_without_improvement, cfg.prune_if_accuracy_drops_by) == (5, 2.0)
    assert cfg.min_improvement_to_fossilize == 0.5
    assert cfg.embargo_epochs_after_prune == 5
    assert (cfg.blueprint_penalty_on_prune, cfg.blueprint_penalty_decay, cfg.blueprint_penalty_threshold) == (
        2.0,
        0.5,
        3.0,
    )
    assert (cfg.ransomware_contribution_threshold, cfg.ransomware_improvement_threshold) == (0.1, 0.0)
    assert (cfg.plateau_threshold, cfg.stabilization_threshold, cfg.stabilization_epochs) == (0.5, 0.03, 3)
    assert (cfg.blend, cfg.tempo, cfg.algorithm) == ("sigmoid", 5, AlphaAlgorithm.ADD)
    assert cfg.rotation_for("cnn") == ("conv_light", "conv_heavy", "attention", "norm", "depthwise")
    assert cfg.rotation_for("transformer") == ("norm", "lora", "attention")
    assert HeuristicConfig(blueprint_rotation=["norm"]).rotation_for("transformer") == ("norm",)
    for topology, rotation in DEFAULT_BLUEPRINT_ROTATION.items():
        assert set(rotation) <= set(default_registry().names(topology))
    hash(cfg)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"plateau_epochs_to_germinate": -1}, ValueError),
        ({"min_epochs_before_germinate": 1.5}, TypeError),
        ({"blueprint_penalty_decay": 1.5}, ValueError),
        ({"prune_if_accuracy_drops_by": float("nan")}, ValueError),
        ({"blueprint_rotation": ()}, ValueError),
        ({"blueprint_rotation": "conv_light"}, TypeError),
        ({"blend": "cubic"}, ValueError),
        ({"blend": "gated"}, ValueError),
        ({"algorithm": AlphaAlgorithm.GATE}, ValueError),
    ],
)
def test_config_rejects_bad_values(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        HeuristicConfig(**kwargs)


def test_unknown_topology_rotation() -> None:
    with pytest.raises(UnknownTopologyError):
        HeuristicConfig().rotation_for("rnn")


# --------------------------------------------------------------------------- germination rules


def test_plateau_germinates_first_free_slot_with_first_blueprint() -> None:
    fossil = seed("r0c0", S.FOSSILIZED)
    obs = observe(*views(r0c0=fossil, r0c1=None, r0c2=None))
    action = decide(HeuristicConfig(), obs)
    assert action == Action(
        kind=K.GERMINATE,
        slot_id="r0c1",
        blueprint="conv_light",
        reason="plateau detected (4 epochs)",
        blend="sigmoid",
        tempo=5,
        algorithm=AlphaAlgorithm.ADD,
    )


def test_transformer_uses_its_rotation() -> None:
    action = decide(HeuristicConfig(), observe(topology="transformer"))
    assert (action.kind, action.slot_id, action.blueprint) == (K.GERMINATE, "r0c0", "norm")


def test_dormant_slot_is_free_again() -> None:
    state = seed("r0c0", S.DORMANT)
    action = decide(HeuristicConfig(), observe(*views(r0c0=state)))
    assert (action.kind, action.slot_id) == (K.GERMINATE, "r0c0")


@pytest.mark.parametrize("stage", [S.PRUNED, S.EMBARGOED, S.RESETTING])
def test_cooling_down_slots_are_not_reused(stage: SeedStage) -> None:
    cooling = seed("r0c0", stage)
    action = decide(HeuristicConfig(), observe(*views(r0c0=cooling, r0c1=None)))
    assert (action.kind, action.slot_id) == (K.GERMINATE, "r0c1")
    action = decide(HeuristicConfig(), observe(*views(r0c0=cooling, r0c1=seed("r0c1", S.FOSSILIZED))))
    assert action.kind == K.WAIT and "no available slots" in action.reason


def test_no_germination_before_min_epochs() -> None:
    cfg = HeuristicConfig(min_epochs_before_germinate=11)
    action = decide(cfg, observe(epoch=10))
    assert action == Action(kind=K.WAIT, reason="too early (epoch 10 < 11)")
    assert decide(cfg, observe(epoch=11)).kind == K.GERMINATE


def test_plateau_must_last_long_enough() -> None:
    # plateau count is epoch - 6: 2 at epoch 8, 3 at epoch 9
    cfg = HeuristicConfig(stabilization_epochs=0)
    assert recall(cfg, observe(epoch=8)).plateau_epochs == 2
    assert decide(cfg, observe(epoch=8)) == Action(kind=K.WAIT, reason="training progressing normally")
    assert decide(cfg, observe(epoch=9)).kind == K.GERMINATE
    assert decide(cfg, observe(epoch=20, plateau=False)).kind == K.WAIT


def test_no_germination_until_host_stabilized() -> None:
    assert recall(HeuristicConfig(), observe(epoch=8)).host_stabilized is False
    assert recall(HeuristicConfig(), observe(epoch=9)).host_stabilized is True
    action = decide(HeuristicConfig(), observe(epoch=12, stable=False))
    assert action == Action(kind=K.WAIT, reason="host not stabilized")
    # stabilization_epochs=0 disables the check
    assert decide(HeuristicConfig(stabilization_epochs=0), observe(epoch=12, stable=False)).kind == K.GERMINATE


def test_stabilization_latch_survives_later_growth() -> None:
    _, loss = histories(12)
    loss[-1] = loss[-2] * 0.5  # a big late improvement does not unlatch
    obs = dataclasses.replace(observe(epoch=12), loss_history=tuple(loss), val_loss=loss[-1])
    assert recall(HeuristicConfig(), obs).host_stabilized


def test_no_germination_while_a_seed_is_live() -> None:
    training = seed("r0c0", S.TRAINING, improvement=1.0, epochs_in_stage=2)
    action = decide(HeuristicConfig(), observe(*views(r0c0=training, r0c1=None)))
    assert (action.kind, action.slot_id) == (K.ADVANCE, "r0c0")


def test_embargo_after_a_policy_prune() -> None:
    events = [(7, prune_event("r0c0", "conv_light"))]
    slots = views(r0c0=seed("r0c0", S.EMBARGOED), r0c1=None)
    action = decide(HeuristicConfig(), observe(*slots, epoch=10, events=events))
    assert action == Action(kind=K.WAIT, reason="embargo (3/5 epochs since the last prune)")
    assert decide(HeuristicConfig(), observe(*slots, epoch=11, events=events)).kind == K.WAIT
    assert decide(HeuristicConfig(), observe(*slots, epoch=12, events=events)).kind == K.GERMINATE


def test_governor_prunes_do_not_embargo_or_penalise() -> None:
    events = [(9, prune_event("r0c0", "conv_light", initiator="governor"))]
    obs = observe(epoch=10, events=events)
    memory = recall(HeuristicConfig(), obs)
    assert (memory.last_prune_epoch, memory.penalties) == (None, ())
    assert decide(HeuristicConfig(), obs).kind == K.GERMINATE


# --------------------------------------------------------------------------- blueprint memory


def test_penalised_blueprint_is_skipped_and_penalty_decays() -> None:
    cfg = HeuristicConfig(embargo_epochs_after_prune=0, blueprint_penalty_on_prune=4.0)
    events = [(10, prune_event("r0c0", "conv_light"))]
    slots = views(r0c0=seed("r0c0", S.PRUNED), r0c1=None)
    # penalty 4.0 at epoch 10 (>= 3: skipped), 2.0 at epoch 11 (usable again)
    assert recall(cfg, observe(*slots, epoch=10, events=events)).penalties == (("conv_light", 4.0),)
    assert decide(cfg, observe(*slots, epoch=10, events=events)).blueprint == "conv_heavy"
    assert decide(cfg, observe(*slots, epoch=11, events=events)).blueprint == "conv_light"
    expected = {11: 2.0, 12: 1.0, 13: 0.5, 14: 0.25, 15: 0.125, 16: 0.0}
    for epoch, penalty in expected.items():
        memory = recall(cfg, observe(*slots, epoch=epoch, events=events))
        assert memory.penalty("conv_light") == penalty
    assert recall(cfg, observe(*slots, epoch=16, events=events)).penalties == ()


def test_penalties_accumulate_with_decay_between_prunes() -> None:
    cfg = HeuristicConfig()
    events = [(10, prune_event("r0c0", "norm")), (12, prune_event("r0c1", "norm"))]
    memory = recall(cfg, observe(epoch=13, events=events))
    # ((2 * 0.5**2) + 2) * 0.5 = 1.25
    assert memory.penalty("norm") == pytest.approx(1.25)
    assert memory.last_prune_epoch == 12


def test_rotation_advances_with_each_germination() -> None:
    events = [(6, germination_event("r0c0", "conv_light")), (20, germination_event("r0c1", "conv_heavy"))]
    slots = views(r0c0=seed("r0c0", S.FOSSILIZED), r0c1=seed("r0c1", S.FOSSILIZED), r0c2=None)
    assert recall(HeuristicConfig(), observe(*slots, epoch=30, events=events[:1])).rotation_index == 1
    action = decide(HeuristicConfig(), observe(*slots, epoch=30, events=events))
    assert (action.slot_id, action.blueprint) == ("r0c2", "attention")


def test_rotation_replays_skips_of_penalised_blueprints() -> None:
    cfg = HeuristicConfig(
        blueprint_rotation=("conv_light", "conv_heavy", "attention"),
        blueprint_penalty_decay=1.0,
        blueprint_penalty_on_prune=4.0,
        embargo_epochs_after_prune=0,
    )
    events = [
        (5, prune_event("r0c0", "conv_light")),  # conv_light penalised for good (no decay)
        (6, germination_event("r0c1", "conv_heavy")),  # skipped conv_light: index 0 -> 2
        (8, germination_event("r0c2", "attention")),  # index 2 -> 0
    ]
    slots = views(r0c0=None, r0c1=seed("r0c1", S.FOSSILIZED), r0c2=seed("r0c2", S.FOSSILIZED))
    memory = recall(cfg, observe(*slots, epoch=12, events=events))
    assert (memory.rotation_index, memory.penalties) == (0, (("conv_light", 4.0),))
    assert decide(cfg, observe(*slots, epoch=12, events=events)).blueprint == "conv_heavy"


def test_foreign_germination_resumes_rotation_after_it() -> None:
    events = [(6, germination_event("r0c0", "norm"))]  # not what the policy would pick
    assert recall(HeuristicConfig(), observe(epoch=10, events=events)).rotation_index == 4
    events = [(6, germination_event("r0c0", "bottleneck"))]  # not in the rotation at all
    assert recall(HeuristicConfig(), observe(epoch=10, events=events)).rotation_index == 0


def test_all_penalised_rotates_through_penalty_order() -> None:
    rotation = ("conv_light", "conv_heavy", "attention")
    penalties = {"conv_light": 5.0, "conv_heavy": 3.0, "attention": 10.0}
    picks = []
    index = 0
    for _ in range(6):
        blueprint, index = select_blueprint(rotation, penalties, index, threshold=1.0)
        picks.append(blueprint)
    assert picks == ["conv_heavy", "conv_light", "attention"] * 2
    # ties are broken by name
    assert select_blueprint(rotation, dict.fromkeys(rotation, 2.0), 0, threshold=1.0) == ("attention", 1)


def test_select_blueprint_skips_and_wraps() -> None:
    rotation = ("a", "b", "c")
    assert select_blueprint(rotation, {}, 0, threshold=3.0) == ("a", 1)
    assert select_blueprint(rotation, {"c": 3.0}, 2, threshold=3.0) == ("a", 1)
    assert select_blueprint(rotation, {"a": 9.0, "b": 2.9}, 0, threshold=3.0) == ("b", 2)
    with pytest.raises(ValueError):
        select_blueprint((), {}, 0, threshold=3.0)


def test_rotation_checked_against_available_blueprints() -> None:
    cfg = HeuristicConfig(blueprint_rotation=("conv_light", "lora"))
    with pytest.raises(UnknownBlueprintError, match="lora"):
        decide(cfg, observe())
    assert decide(cfg, observe(available=())).blueprint == "conv_light"  # no registry given: no check


# --------------------------------------------------------------------------- seed management


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (seed("r0c0", S.GERMINATED), (K.ADVANCE, "advance to TRAINING")),
        (seed("r0c0", S.TRAINING, improvement=1.0, epochs_in_stage=5), (K.ADVANCE, "advance to BLENDING (+1.00%)")),
        (seed("r0c0", S.TRAINING, improvement=-3.0, epochs_in_stage=4), (K.ADVANCE, "advance to BLENDING (-3.00%)")),
        (seed("r0c0", S.TRAINING, improvement=-2.0, epochs_in_stage=9), (K.ADVANCE, "advance to BLENDING (-2.00%)")),
        (seed("r0c0", S.TRAINING, improvement=-3.0, epochs_in_stage=5), (K.PRUNE, "failing in TRAINING (-3.00%)")),
        (seed("r0c0", S.BLENDING, improvement=-2.5, epochs_in_stage=6), (K.PRUNE, "failing in BLENDING (-2.50%)")),
        (seed("r0c0", S.BLENDING, alpha=0.5, epochs_in_stage=2), (K.WAIT, "blending (alpha=0.50)")),
        (full_amplitude(seed("r0c0", S.BLENDING)), (K.ADVANCE, "advance to HOLDING (full amplitude)")),
        (seed("r0c0", S.HOLDING, contribution=1.0, total=0.6), (K.FOSSILIZE, "fossilizing: +1.00% contribution")),
        (seed("r0c0", S.HOLDING, contribution=0.5, total=3.0), (K.PRUNE, "no improvement in HOLDING (+0.50%)")),
        (seed("r0c0", S.HOLDING, contribution=-1.0, total=0.0), (K.PRUNE, "no improvement in HOLDING (-1.00%)")),
        (seed("r0c0", S.HOLDING, total=2.0), (K.WAIT, "awaiting counterfactual contribution before fossilization")),
        (seed("r0c0", S.HOLDING, total=-2.0), (K.WAIT, "awaiting counterfactual contribution before fossilization")),
        (
            seed("r0c0", S.HOLDING, contribution=2.0, total=-1.0),
            (K.PRUNE, "ransomware pattern: contribution +2.000 but total improvement -1.000"),
        ),
    ],
)
def test_seed_management_table(state: SeedState, expected: tuple[ActionKind, str]) -> None:
    action = decide(HeuristicConfig(), observe(*views(r0c0=state, r0c1=None)))
    assert (action.kind, action.reason) == expected
    assert action.slot_id == "r0c0"


def test_observed_contribution_takes_precedence() -> None:
    state = seed("r0c0", S.HOLDING, contribution=-1.0, total=0.6)
    obs = observe(SlotView("r0c0", state, contribution=1.5))
    assert decide(HeuristicConfig(), obs).kind == K.FOSSILIZE


def test_only_the_first_live_seed_is_managed() -> None:
    blending = seed("r0c0", S.BLENDING, alpha=0.4)
    germinated = seed("r0c1", S.GERMINATED)
    action = decide(HeuristicConfig(), observe(*views(r0c0=blending, r0c1=germinated)))
    assert (action.kind, action.slot_id) == (K.WAIT, "r0c0")
    action = decide(HeuristicConfig(), observe(*views(r0c0=seed("r0c0", S.FOSSILIZED), r0c1=germinated)))
    assert (action.kind, action.slot_id) == (K.ADVANCE, "r0c1")


# --------------------------------------------------------------------------- purity and the controller type


def test_decide_is_pure_and_deterministic() -> None:
    state = seed("r0c0", S.HOLDING, contribution=1.0, total=1.0)
    obs = observe(*views(r0c0=state, r0c1=None), events=[(4, prune_event("r0c1", "norm"))])
    before = copy.deepcopy(obs)
    digest = hash(obs)
    first = decide(HeuristicConfig(), obs)
    assert obs == before and hash(obs) == digest
    assert decide(HeuristicConfig(), obs) == first
    assert heuristic()(obs) == first
    assert heuristic(HeuristicConfig(min_improvement_to_fossilize=5.0))(obs).kind == K.PRUNE


def test_custom_controller_is_just_a_function() -> None:
    def always_wait(observation: Observation) -> Action:
        return Action(kind=K.WAIT, reason=f"epoch {observation.epoch}")

    controllers = [heuristic(), always_wait]
    actions = [c(observe()) for c in controllers]
    assert [a.kind for a in actions] == [K.GERMINATE, K.WAIT]


def test_argument_types_are_checked() -> None:
    with pytest.raises(TypeError):
        decide(observe(), HeuristicConfig())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        heuristic({"plateau_epochs_to_germinate": 3})  # type: ignore[arg-type]


# --------------------------------------------------------------------------- observation and action validation


def test_observation_validation() -> None:
    obs = observe()
    with pytest.raises(ValueError, match="include the current epoch"):
        dataclasses.replace(obs, val_accuracy=1.0)
    with pytest.raises(ValueError, match="same epochs"):
        dataclasses.replace(obs, loss_history=obs.loss_history[:-1])
    with pytest.raises(ValueError, match="one global epoch per event"):
        dataclasses.replace(obs, events=(germination_event("r0c0", "norm"),))
    with pytest.raises(ValueError, match="non-decreasing"):
        observe(events=[(5, germination_event("r0c0", "norm")), (3, germination_event("r0c1", "norm"))])
    with pytest.raises(ValueError, match="duplicate"):
        observe(SlotView("r0c0"), SlotView("r0c0"))
    with pytest.raises(ValueError, match="holds the state of slot"):
        SlotView("r0c1", germinate("r0c0", "norm"))
    with pytest.raises(UnknownTopologyError):
        dataclasses.replace(obs, topology="rnn")
    with pytest.raises(ValueError, match="exceeds max_epochs"):
        dataclasses.replace(obs, max_epochs=5)
    # lists are accepted and stored as tuples
    listed = dataclasses.replace(obs, slots=list(obs.slots), accuracy_history=list(obs.accuracy_history))
    assert listed == obs and hash(listed) == hash(obs)
    assert obs.timed_events() == ()
    inf = float("inf")
    diverged = dataclasses.replace(obs, val_loss=inf, loss_history=(*obs.loss_history[:-1], inf))
    assert recall(HeuristicConfig(), diverged).host_stabilized


def test_action_validation() -> None:
    with pytest.raises(ValueError, match="slot_id"):
        Action(kind=K.PRUNE)
    with pytest.raises(ValueError, match="blueprint"):
        Action(kind=K.GERMINATE, slot_id="r0c0")
    with pytest.raises(ValueError, match="GERMINATE only"):
        Action(kind=K.ADVANCE, slot_id="r0c0", blueprint="norm")
    with pytest.raises(ValueError):
        Action(kind=2, slot_id="r0c0")  # SET_ALPHA_TARGET is not an ActionKind
    assert Action(kind=4, slot_id="r0c0").kind is K.FOSSILIZE


# --------------------------------------------------------------------------- apply_action


def test_apply_germinate() -> None:
    action = decide(HeuristicConfig(), observe())
    states: dict[str, SeedState] = {}
    new, events, result = apply_action(action, states, Gates(), epoch=10, topology="cnn", seed_params=7)
    assert states == {} and result is None
    state = new["r0c0"]
    assert (state.stage, state.seed_id, state.blueprint_id) == (S.GERMINATED, "r0c0-conv_light-e10", "conv_light")
    assert (state.blend_algorithm_id, state.blend_tempo_epochs, state.metrics.seed_param_count) == ("sigmoid", 5, 7)
    assert events == (germinated_event(state),)
    with pytest.raises(ValueError, match="topology"):
        apply_action(action, {}, Gates(), epoch=10)
    with pytest.raises(IllegalTransitionError, match="occupied"):
        apply_action(action, new, Gates(), epoch=11, topology="cnn")
    # a DORMANT slot may be reused
    reused, _, _ = apply_action(action, {"r0c0": seed("r0c0", S.DORMANT)}, Gates(), epoch=11, topology="cnn")
    assert reused["r0c0"].stage == S.GERMINATED


def test_apply_advance_fossilize_prune() -> None:
    gates = Gates(permissive=True)
    states = {"r0c0": germinate("r0c0", "norm"), "r0c1": seed("r0c1", S.HOLDING, contribution=2.0, total=2.0)}
    snapshot = dict(states)
    new, events, result = apply_action(Action(kind=K.ADVANCE, slot_id="r0c0"), states, gates, epoch=3)
    assert states == snapshot
    assert new["r0c0"].stage == S.TRAINING and result is not None and result.gate == GateLevel.G1
    assert [type(e) for e in events] == [type(events[0]), StageChanged]
    new, events, result = apply_action(Action(kind=K.FOSSILIZE, slot_id="r0c1"), new, gates, epoch=4)
    assert new["r0c1"].stage == S.FOSSILIZED and result is not None and result.passed
    assert isinstance(events[-1], SeedFossilized)
    new, events, result = apply_action(Action(kind=K.PRUNE, slot_id="r0c0", reason="failing"), new, gates, epoch=5)
    pruned = events[-1]
    assert isinstance(pruned, SeedPruned) and (pruned.reason, pruned.initiator) == ("failing", "policy")
    assert new["r0c0"].stage == S.PRUNED and result is None
    # a failed gate is an outcome, not an error
    holding = seed("r0c1", S.HOLDING, contribution=0.7)
    same, events, result = apply_action(Action(kind=K.FOSSILIZE, slot_id="r0c1"), {"r0c1": holding}, Gates(), epoch=6)
    assert same["r0c1"] == holding and result is not None and not result.passed


@pytest.mark.parametrize(
    ("kind", "state"),
    [
        (K.ADVANCE, None),
        (K.ADVANCE, seed("r0c0", S.PRUNED)),
        (K.ADVANCE, seed("r0c0", S.FOSSILIZED)),
        (K.PRUNE, seed("r0c0", S.FOSSILIZED)),
        (K.PRUNE, seed("r0c0", S.EMBARGOED)),
        (K.FOSSILIZE, seed("r0c0", S.BLENDING)),
        (K.FOSSILIZE, seed("r0c0", S.DORMANT)),
    ],
)
def test_apply_rejects_illegal_actions(kind: ActionKind, state: SeedState | None) -> None:
    states = {} if state is None else {"r0c0": state}
    with pytest.raises(IllegalTransitionError):
        apply_action(Action(kind=kind, slot_id="r0c0"), states, Gates(), epoch=3)


def test_apply_wait_changes_nothing() -> None:
    states = {"r0c0": germinate("r0c0", "norm")}
    new, events, result = apply_action(Action(kind=K.WAIT, reason="x"), states, Gates(), epoch=1)
    assert new == states and new is not states and events == () and result is None


# --------------------------------------------------------------------------- a whole run without a model


def run_episode(
    contribution: float, *, epochs: int = 60, slots: tuple[str, ...] = ("r0c0", "r0c1")
) -> tuple[list[tuple[int, LifecycleEvent]], list[Action]]:
    """Drive the lifecycle with the heuristic on synthetic metrics, in the training loop's order.

    Per epoch: record accuracy (and, while blended, the contribution) and a
    healthy gradient measurement into every seed; count the free slots;
    ``step_epoch`` every slot; decide; apply.
    """
    gates = Gates(permissive=True, min_blending_epochs=2)
    controller = heuristic()
    states: dict[str, SeedState] = {}
    log: list[tuple[int, LifecycleEvent]] = []
    actions = []
    acc_hist: list[float] = []
    loss_hist: list[float] = []
    for epoch in range(1, epochs + 1):
        acc_hist.append(50.0 - 40.0 * 0.5**epoch)
        loss_hist.append(0.5 + 2.0 * 0.5**epoch)
        for slot, state in list(states.items()):
            if not has_seed(state):
                continue
            state = record_accuracy(state, acc_hist[-1])
            if state.stage in (S.BLENDING, S.HOLDING):
                state = record_contribution(state, contribution)
            state = record_gradients(state, host_grad_norm=1.0, seed_grad_norm=0.5)
            state = sync_telemetry(state, epoch=epoch, gradient_health=1.0, has_vanishing=False, has_exploding=False)
            states[slot] = state
        available = sum(1 for s in slots if is_free(states.get(s)))
        for slot, state in list(states.items()):
            states[slot], events = step_epoch(state, gates)
            log.extend((epoch, e) for e in events)
        obs = Observation(
            epoch=epoch,
            max_epochs=epochs,
            topology="cnn",
            val_accuracy=acc_hist[-1],
            val_loss=loss_hist[-1],
            train_loss=loss_hist[-1],
            accuracy_history=tuple(acc_hist),
            loss_history=tuple(loss_hist),
            slots=tuple(SlotView(s, states.get(s)) for s in slots),
            events=tuple(e for _, e in log),
            event_epochs=tuple(t for t, _ in log),
            available_blueprints=CNN_BLUEPRINTS,
            available_slots=available,
        )
        action = controller(obs)
        actions.append(action)
        states, events, _ = apply_action(action, states, gates, epoch=epoch, topology="cnn")
        log.extend((epoch, e) for e in events)
    return log, actions


def test_episode_germinates_blends_and_fossilizes() -> None:
    # epoch 9: stabilised (latch) and 3 plateau epochs -> GERMINATE r0c0; 10: ADVANCE -> TRAINING;
    # 11: ADVANCE refused (G2 wants 2 epochs); 12: -> BLENDING; ramp ticks in step_epoch 12..16;
    # 17: full amplitude -> HOLDING; 18: contribution 2.0 > 0.5 -> FOSSILIZED; 19: next blueprint.
    log, actions = run_episode(contribution=2.0)
    germinations = [(t, e.slot_id, e.blueprint_id) for t, e in log if isinstance(e, SeedGerminated)]
    fossils = [(t, e.slot_id) for t, e in log if isinstance(e, SeedFossilized)]
    moves = [(t, e.slot_id, e.to_stage) for t, e in log if isinstance(e, StageChanged)]
    assert germinations == [(9, "r0c0", "conv_light"), (19, "r0c1", "conv_heavy")]
    assert moves[:4] == [(10, "r0c0", S.TRAINING), (12, "r0c0", S.BLENDING), (17, "r0c0", S.HOLDING),
                         (18, "r0c0", S.FOSSILIZED)]
    assert fossils == [(18, "r0c0"), (28, "r0c1")]
    assert not any(isinstance(e, SeedPruned) for _, e in log)
    assert [a.kind for a in actions[:9]] == [K.WAIT] * 8 + [K.GERMINATE]
    assert actions[-1].kind == K.WAIT and "no available slots" in actions[-1].reason


def test_episode_prunes_embargoes_and_rotates() -> None:
    # contribution -1.0 in HOLDING -> PRUNE at 18; the policy embargo ends at 23 (23 - 18 = 5), when
    # r0c0 is still EMBARGOED, so r0c1 gets the next blueprint (conv_light's penalty 2 * 0.5**5 is
    # forgotten by then); r0c0 is DORMANT again from 24 and takes the germination at 37.
    log, _ = run_episode(contribution=-1.0)
    germinations = [(t, e.slot_id, e.blueprint_id) for t, e in log if isinstance(e, SeedGerminated)]
    prunes = [(t, e.slot_id, e.reason) for t, e in log if isinstance(e, SeedPruned)]
    assert germinations == [
        (9, "r0c0", "conv_light"),
        (23, "r0c1", "conv_heavy"),
        (37, "r0c0", "attention"),
        (51, "r0c1", "norm"),
    ]
    assert [(t, slot) for t, slot, _ in prunes] == [(18, "r0c0"), (32, "r0c1"), (46, "r0c0"), (60, "r0c1")]
    assert prunes[0][2] == "no improvement in HOLDING (-1.00%)"


# --------------------------------------------------------------------------- property: only legal actions

ROTATION = ("conv_light", "conv_heavy", "attention", "norm", "depthwise")


@st.composite
def observations(draw: st.DrawFn) -> tuple[Observation, HeuristicConfig]:
    epoch = draw(st.integers(1, 30))
    ids = [f"r0c{i}" for i in range(draw(st.integers(1, 3)))]
    slots = tuple(
        SlotView(slot, draw(st.none() | eft.seed_states(topology="cnn", slot_id=slot)), draw(st.none() | st.floats(-5, 5)))
        for slot in ids
    )
    acc = draw(st.lists(st.floats(0, 100), min_size=epoch, max_size=epoch))
    loss = draw(st.lists(st.floats(0, 5), min_size=epoch, max_size=epoch))
    stamps = sorted(draw(st.lists(st.integers(0, epoch), max_size=8)))
    events: list[LifecycleEvent] = []
    for _ in stamps:
        slot, blueprint = draw(st.sampled_from(ids)), draw(st.sampled_from(ROTATION))
        if draw(st.booleans()):
            events.append(germination_event(slot, blueprint))
        else:
            events.append(prune_event(slot, blueprint, initiator=draw(st.sampled_from(["policy", "governor"]))))
    obs = Observation(
        epoch=epoch,
        max_epochs=30,
        topology="cnn",
        val_accuracy=acc[-1],
        val_loss=loss[-1],
        train_loss=1.0,
        accuracy_history=tuple(acc),
        loss_history=tuple(loss),
        slots=slots,
        events=tuple(events),
        event_epochs=tuple(stamps),
        available_blueprints=CNN_BLUEPRINTS,
    )
    config = HeuristicConfig(
        plateau_epochs_to_germinate=draw(st.integers(0, 4)),
        min_epochs_before_germinate=draw(st.integers(0, 6)),
        stabilization_epochs=draw(st.integers(0, 3)),
        embargo_epochs_after_prune=draw(st.integers(0, 6)),
        blueprint_penalty_decay=draw(st.floats(0, 1)),
        blueprint_penalty_threshold=draw(st.floats(0, 5)),
        min_improvement_to_fossilize=draw(st.floats(-1, 2)),
    )
    return obs, config


@given(observations())
def test_decide_only_returns_legal_actions(case: tuple[Observation, HeuristicConfig]) -> None:
    obs, config = case
    before = copy.deepcopy(obs)
    action = decide(config, obs)
    assert obs == before
    assert decide(config, obs) == action
    by_slot = {view.slot_id: view.state for view in obs.slots}
    if action.kind == K.GERMINATE:
        assert is_free(by_slot[action.slot_id])
        assert action.blueprint in config.rotation_for("cnn")
        assert not any(is_live(state) for state in by_slot.values())
    elif action.kind in (K.ADVANCE, K.PRUNE):
        assert is_live(by_slot[action.slot_id])
    elif action.kind == K.FOSSILIZE:
        state = by_slot[action.slot_id]
        assert state is not None and state.stage == S.HOLDING
    memory = recall(config, obs)
    assert isinstance(memory, PolicyMemory) and 0 <= memory.rotation_index < 5
    assert all(p >= 0.1 for _, p in memory.penalties)
    states = {slot: state for slot, state in by_slot.items() if state is not None}
    new, events, _ = apply_action(action, states, Gates(), epoch=obs.epoch, topology="cnn")
    assert set(new) >= set(states)
    if action.kind == K.WAIT:
        assert events == ()
