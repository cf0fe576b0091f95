"""Tournaments in the epoch loop: exact until the choice, resumable mid-incubation, on the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _live_run import dataset, germinate_once, leaves_equal, start

import esper_func as ef
from esper_func import cli
from esper_func.fit import FitConfig, LoopState, fit, run_epoch
from esper_func.report import _events
from esper_func.runs import load_run, save_run

GATES = ef.Gates(permissive=True, min_blending_epochs=2, min_gradient_health_for_blending=0.4)
POOL = ("conv_light", "norm", "depthwise", "conv_heavy")
TOTAL_EPOCHS = 10


controller = germinate_once(ef.AlphaAlgorithm.ADD, "conv_light", tempo=2)


def config(k: int, **kw: Any) -> FitConfig:
    return FitConfig(epochs=TOTAL_EPOCHS, batch_size=32, gates=GATES, tournament=k, tournament_blueprints=POOL, **kw)


def epoch(model: ef.Model, state: Any, loop: LoopState, k: int, optimizer: ef.optim.Optimizer) -> Any:
    return run_epoch(model, state, loop, dataset(), optimizer=optimizer, config=config(k),
                     registry=ef.default_registry(), controller=controller)


def test_tournament_runs_exactly_as_the_single_seed_until_it_chooses() -> None:
    optimizer = ef.optim.adamw(1e-2)
    single, group = start(optimizer), start(optimizer)
    single_loop = group_loop = LoopState()
    initial = None
    while True:
        single_model, single_state, single_loop, single_record = epoch(*single, single_loop, 1, optimizer)
        group_model, group_state, group_loop, group_record = epoch(*group, group_loop, 3, optimizer)
        decided = [e for e in group_record.events if isinstance(e, ef.TournamentDecided)]
        if decided:
            break
        # the host trains and validates exactly as with the single seed; nothing else differs
        assert leaves_equal(single_state.params["host"], group_state.params["host"])
        assert leaves_equal(single_state.buffers, group_state.buffers)
        assert (single_record.train_loss, single_record.val_loss) == (group_record.train_loss, group_record.val_loss)
        if isinstance(group_model.slot("r0c0"), ef.Candidates):
            assert tuple(m.name for m in group_model.slot("r0c0").members) == ("conv_light", "norm", "depthwise")
            candidates = ef.candidate_params(group_model, group_state.params, "r0c0")
            # candidate 0 is the seed the single germination grows, initialised and trained alike (bitwise on CPU)
            assert leaves_equal(candidates[0], single_state.params["slots"]["r0c0"])
            initial = initial or candidates
        single, group = (single_model, single_state), (group_model, group_state)
        assert group_loop.epoch < TOTAL_EPOCHS, "the tournament never decided"
    assert initial is not None and not leaves_equal(initial, ef.candidate_params(*group[:1], group[1].params, "r0c0"))

    (event,) = decided
    assert event.slot_id == "r0c0" and event.candidates == ("conv_light", "norm", "depthwise")
    assert event.gate_passed[event.winner] or not any(event.gate_passed)
    winner = event.candidates[event.winner]
    slot = group_model.slot("r0c0")
    assert type(slot) is ef.Slot and slot.blueprint_id == winner
    assert group_state.seeds["r0c0"].blueprint_id == winner
    shapes = {k: v.shape for k, v in group_state.params["slots"]["r0c0"]["seed"].items()}
    assert shapes == {k: v.shape for k, v in ef.candidate_params(*group[:1], group[1].params, "r0c0")[event.winner]["seed"].items()}
    if event.winner == 0:  # the single seed trained the same epoch: the winner kept its weights and moments
        assert leaves_equal(single_state.params["slots"]["r0c0"], group_state.params["slots"]["r0c0"])
        assert leaves_equal(single_state.opt_state.exp_avg["slots"]["r0c0"], group_state.opt_state.exp_avg["slots"]["r0c0"])
    # and it goes on as an ordinary seed: it blends
    model, state, loop = group_model, group_state, group_loop
    while loop.epoch < TOTAL_EPOCHS:
        model, state, loop, _ = epoch(model, state, loop, 3, optimizer)
    assert state.seeds["r0c0"].stage in (ef.SeedStage.BLENDING, ef.SeedStage.HOLDING, ef.SeedStage.FOSSILIZED)


def test_resume_mid_incubation_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    registry = ef.default_registry()
    optimizer = ef.optim.adamw(1e-2)
    full = fit(*start(optimizer), dataset(), optimizer=optimizer, config=config(3), registry=registry,
               controller=controller)
    assert any(isinstance(e, ef.TournamentDecided) for e in full.loop.events)

    model, state = start(optimizer)
    loop = LoopState()
    while not (isinstance(model.slot("r0c0"), ef.Candidates) and state.seeds["r0c0"].stage == ef.SeedStage.TRAINING):
        model, state, loop, _ = epoch(model, state, loop, 3, optimizer)
        assert loop.epoch < TOTAL_EPOCHS - 3, "the candidates never incubated early enough to resume"
    save_run(tmp_path, model, state, loop)
    model, state, loop = load_run(tmp_path, registry=registry).restore(optimizer)
    assert isinstance(model.slot("r0c0"), ef.Candidates)
    rest = fit(model, state, dataset(), optimizer=optimizer, config=config(3), registry=registry,
               controller=controller, loop=loop)
    assert rest.model == full.model
    assert leaves_equal(rest.state.params, full.state.params)
    assert leaves_equal(rest.state.opt_state, full.state.opt_state)
    assert rest.state.seeds == full.state.seeds
    assert rest.loop.records == full.loop.records


def test_patience_ends_a_tournament_no_candidate_can_win() -> None:
    # no candidate ever passes G2 (a health no gradient reaches): after the patience the best one is kept anyway
    gates = ef.Gates(permissive=True, min_blending_epochs=1, min_gradient_health_for_blending=2.0)
    cfg = FitConfig(epochs=8, batch_size=32, gates=gates, tournament=2, tournament_blueprints=POOL, tournament_patience=2)
    optimizer = ef.optim.adamw(1e-2)
    result = fit(*start(optimizer), dataset(), optimizer=optimizer, config=cfg, registry=ef.default_registry(),
                 controller=controller)
    (event,) = [e for e in result.loop.events if isinstance(e, ef.TournamentDecided)]
    assert not any(event.gate_passed) and "no candidate passes G2" in event.reason
    epochs = {type(e).__name__: t for e, t in zip(result.loop.events, result.loop.event_epochs, strict=True)}
    # germinated at epoch 1, TRAINING from epoch 2: compared at epochs 3, 4, 5, chosen at the last
    assert epochs["TournamentDecided"] == 5
    assert result.state.seeds["r0c0"].stage == ef.SeedStage.TRAINING


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tournament": 0}, ef.InvalidArgumentError, "tournament"),
        ({"tournament": 2.0}, ef.InvalidTypeError, "tournament"),
        ({"tournament": 2, "gates": ef.Gates(min_blending_epochs=0)}, ef.InvalidArgumentError, "min_blending_epochs"),
        ({"tournament_blueprints": "norm"}, ef.InvalidArgumentError, "tournament_blueprints"),
        ({"tournament_blueprints": ()}, ef.InvalidArgumentError, "tournament_blueprints"),
        ({"tournament_patience": -1}, ef.InvalidArgumentError, "tournament_patience"),
    ],
)
def test_bad_tournament_settings_are_refused(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        FitConfig(epochs=1, **kwargs)


def test_unknown_tournament_blueprint_is_refused_before_the_epoch_runs() -> None:
    optimizer = ef.optim.adamw(1e-2)
    cfg = FitConfig(epochs=1, tournament=2, tournament_blueprints=("conv_light", "no_such_seed"), gates=GATES)
    with pytest.raises(ef.UnknownBlueprintError, match="no_such_seed"):
        fit(*start(optimizer), dataset(), optimizer=optimizer, config=cfg, registry=ef.default_registry())


def test_demo_tournament_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert cli.main(["demo", "--dataset", "synthetic", "--epochs", "14", "--tournament", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["tournament"] == 2
    (tournament,) = summary["tournaments"]
    assert tournament["slot"] == "r0c0" and len(tournament["candidates"]) == len(tournament["losses"]) == 2
    assert tournament["blueprint_id"] == tournament["candidates"][tournament["winner"]]
    assert f"tournament in r0c0 at epoch {tournament['epoch']}: {tournament['blueprint_id']} won" in printed
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert (tournament["epoch"], "tournament", f"r0c0: {tournament['blueprint_id']} won of 2 candidates") in _events(records)
    # the run resumes (nothing left to do) and its records read the tournament back
    assert cli.main(["resume", str(out)]) == 0
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["demo", "--dataset", "synthetic", "--quick", "--tournament", "0", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "--tournament: must be a whole number from 1 to 16" in capsys.readouterr().err


def test_run_config_refuses_a_tournament_without_incubation() -> None:
    with pytest.raises(ef.InvalidArgumentError, match="min_blending_epochs"):
        cli.RunConfig(tournament=2, min_blending_epochs=0)
    with pytest.raises(ef.InvalidArgumentError, match="tournament"):
        cli.RunConfig(tournament=17)


def test_a_group_whose_own_state_passes_g2_is_decided_not_advanced() -> None:
    # The slot's state measures the group as a whole: it can pass G2 while no single candidate does.
    # The loop must then end the tournament, never move a slot still holding candidates to BLENDING.
    gates = ef.Gates(permissive=False, min_blending_epochs=2, min_training_improvement=-100.0,
                     min_seed_gradient_ratio=1.33)
    cfg = FitConfig(epochs=10, batch_size=32, gates=gates, tournament=4, tournament_blueprints=("conv_light",),
                    tournament_patience=5)
    optimizer = ef.optim.adamw(1e-2)
    result = fit(*start(optimizer), dataset(), optimizer=optimizer, config=cfg, registry=ef.default_registry(),
                 controller=controller)
    assert any(isinstance(e, ef.TournamentDecided) for e in result.loop.events)
    assert not isinstance(result.model.slot("r0c0"), ef.Candidates)


def test_tournament_blueprints_must_be_a_list_or_tuple() -> None:
    with pytest.raises(ef.InvalidArgumentError, match="list or tuple"):
        FitConfig(epochs=1, tournament_blueprints={"norm", "conv_light"})  # a set's order depends on the hash seed


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", True])
def test_max_batch_must_be_a_positive_int_or_none(bad: object) -> None:
    with pytest.raises(ef.InvalidArgumentError, match=r"FitConfig.max_batch must be a positive int \(samples\) or None"):
        FitConfig(epochs=1, max_batch=bad)  # type: ignore[arg-type]
    assert FitConfig(epochs=1, max_batch=4).max_batch == 4
