"""Write esper_func checkpoints in esper-lite's layout, for esper-lite 2016337e to load.

Replays every scenario of ``tools/_checkpoint_scenarios.py`` (the ones the
esper-lite checkpoints were recorded from) with esper_func: ``ef.build_model``,
``ef.add_seed`` / ``ef.set_stages`` for structure, the pure lifecycle functions
(``ef.germinate``, ``ef.advance``, ``ef.prune``, ``ef.schedule_prune``,
``ef.set_alpha_target``, ``ef.step_epoch``, ``ef.record_*``) for the seed
states, and functional SGD through ``ef.apply``. It then saves, into ``DIR``:

- ``<name>.pt``: ``torch.save(ef.to_state_dict(model, params, buffers, states=states))``;
- ``<name>.outputs.pt``: the fixed ``inputs`` and ``ef.predict`` outputs with
  the same forced alphas as the recorded esper-lite outputs (``prediction``,
  ``without/<slot>``, ``half/<slot>``, ``all_off``);
- ``manifest.json``: the layout ``tools/record_esper_lite_checkpoints.py``
  reads (host, slots, outputs and their forced alphas), with ``error`` set
  for a scenario esper_func could not produce (the exact exception).

Then ``tools/record_esper_lite_checkpoints.py --check-esper-func DIR`` loads
each into esper-lite and writes the round-trip report. No esper-lite import
is needed here.

Usage::

    python tools/write_esper_func_checkpoints.py DIR [--only NAME ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _checkpoint_scenarios import (
    EVAL_BATCH,
    LEARNING_RATE,
    SCENARIOS,
    TRAIN_BATCH,
    TRAIN_STEPS,
    Action,
    Scenario,
    loss_fn,
    make_batch,
    output_inputs,
)

import esper_func as ef
from esper_func.lifecycle import gradient_health

FORWARD_STAGES = {ef.SeedStage.TRAINING, ef.SeedStage.BLENDING, ef.SeedStage.HOLDING, ef.SeedStage.FOSSILIZED}
CONTRIBUTING_STAGES = {ef.SeedStage.BLENDING, ef.SeedStage.HOLDING, ef.SeedStage.FOSSILIZED}
GATED_STAGES = CONTRIBUTING_STAGES


class ProducerError(RuntimeError):
    """esper_func refused a planned action or cannot express it."""


@dataclasses.dataclass
class Run:
    """The evolving functional model of one scenario."""

    scenario: Scenario
    model: ef.Model
    params: dict[str, Any]
    buffers: dict[str, Any]
    states: dict[str, ef.SeedState]
    gates: ef.Gates


def _host(scenario: Scenario) -> Any:
    cls = ef.CNNHost if scenario.topology == "cnn" else ef.TransformerHost
    return cls(**scenario.host_kwargs)


def _host_param_count(params: Mapping[str, Any]) -> int:
    return sum(t.numel() for t in params["host"].values())


def _seed_param_count(params: Mapping[str, Any], slot_id: str) -> int:
    return sum(t.numel() for t in params["slots"][slot_id]["seed"].values())


def _alphas(run: Run, forced: Mapping[str, float] | None = None) -> Tensor:
    alphas = ef.alphas_of(run.model, run.states)
    for slot_id, value in (forced or {}).items():
        alphas[run.model.index(slot_id)] = value
    return alphas


def _accuracy(run: Run, x: Tensor, y: Tensor, forced: Mapping[str, float] | None = None) -> float:
    with torch.no_grad():
        pred = ef.predict(run.model, run.params, run.buffers, _alphas(run, forced), x).argmax(dim=-1)
    return 100.0 * float((pred == y).float().mean())


def _sync(run: Run, slot_id: str, state: ef.SeedState) -> None:
    run.states[slot_id] = state
    run.model, run.params = ef.set_stages(run.model, run.params, {slot_id: state})


def apply_action(run: Run, slot_id: str, action: Action) -> None:
    """Carry out one planned action with esper_func; raise :class:`ProducerError` if refused or unsupported."""
    a = action.args
    where = f"epoch {action.epoch}, slot {slot_id}, {action.op} {a}"
    state = run.states.get(slot_id)
    if action.op == "germinate":
        algorithm = ef.AlphaAlgorithm[a["algorithm"]]
        seed_gen = torch.Generator().manual_seed(run.scenario.seed * 100 + action.epoch * 10 + run.model.index(slot_id))
        if run.model.slot(slot_id) is None and run.model.stage(slot_id) != ef.SeedStage.DORMANT:
            raise ProducerError(f"{where}: slot is in {run.model.stage(slot_id).name}")
        run.model, run.params = ef.add_seed(
            run.model, run.params, slot_id, ef.default_registry(), a["blueprint"], algorithm=algorithm, generator=seed_gen
        )
        new = ef.germinate(
            slot_id,
            a["blueprint"],
            algorithm=algorithm,
            blend=a["blend"],
            tempo=a["tempo"],
            topology=run.scenario.topology,
            seed_params=_seed_param_count(run.params, slot_id),
            host_params=_host_param_count(run.params),
        )
        _sync(run, slot_id, new)
        return
    if state is None:
        raise ProducerError(f"{where}: no seed state")
    if action.op == "advance":
        new, result, _ = ef.advance(state, run.gates, ef.SeedStage[a["target"]])
        if not result.passed:
            raise ProducerError(f"{where}: gate {result.gate.name} refused: failed {list(result.checks_failed)}")
    elif action.op == "prune":
        new, _ = ef.prune(state, a["reason"])
    elif action.op == "schedule_prune":
        curve = None if a["curve"] is None else ef.AlphaCurve[a["curve"]]
        new, _ = ef.schedule_prune(state, steps=a["steps"], curve=curve)
    elif action.op == "set_alpha_target":
        curve = None if a["curve"] is None else ef.AlphaCurve[a["curve"]]
        kwargs: dict[str, Any] = {"alpha_target": a["alpha_target"], "steps": a["steps"], "curve": curve}
        if a["algorithm"] is not None:
            if "alpha_algorithm" not in inspect.signature(ef.set_alpha_target).parameters:
                raise ProducerError(
                    f"{where}: esper_func's set_alpha_target has no alpha_algorithm argument; it cannot switch "
                    f"{state.alpha_algorithm.name} -> {a['algorithm']} while holding as esper-lite's SeedSlot.set_alpha_target does"
                )
            kwargs["alpha_algorithm"] = ef.AlphaAlgorithm[a["algorithm"]]
        new, _ = ef.set_alpha_target(state, **kwargs)
    else:
        raise ProducerError(f"{where}: unknown action")
    if new == state:
        raise ProducerError(f"{where}: refused (state unchanged); stage {state.stage.name}")
    _sync(run, slot_id, new)
    slot = run.model.slot(slot_id)
    if slot is not None and slot.algorithm != new.alpha_algorithm:
        raise ProducerError(
            f"{where}: the state's algorithm is now {new.alpha_algorithm.name} but the model's slot still blends with "
            f"{slot.algorithm.name} (ef.set_stages does not change a slot's algorithm)"
        )


def _map(tree: Any, fn: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _map(v, fn) for k, v in tree.items()}
    return fn(tree)


def _train_steps(run: Run, gen: torch.Generator, step: int) -> None:
    """``TRAIN_STEPS`` functional SGD steps; records gradient telemetry per the plan after each backward."""
    lr = LEARNING_RATE[run.scenario.topology]
    for i in range(TRAIN_STEPS):
        x, y = make_batch(run.scenario, TRAIN_BATCH, gen)
        leaves = _map(run.params, lambda t: t.detach().requires_grad_(True))
        out, new_buffers = ef.apply(
            run.model, leaves, run.buffers, _alphas(run), x, train=True, rng=torch.Generator().manual_seed(step * 100 + i)
        )
        grads = torch.autograd.grad(
            loss_fn(out, y),
            [t for t in _flat(leaves)],
            allow_unused=True,
        )
        grad_of = dict(zip([id(t) for t in _flat(leaves)], grads, strict=True))
        host_grads = {k: grad_of[id(t)] for k, t in leaves["host"].items()}
        host_norm = float(ef.gradient_norms({"host": host_grads})["host"])
        for slot_id in run.scenario.slots:
            plan = run.scenario.plan(slot_id)
            state = run.states.get(slot_id)
            if plan is None or state is None or state.stage not in FORWARD_STAGES:
                continue
            slot_grads = {g: {k: grad_of[id(t)] for k, t in group.items()} for g, group in leaves["slots"][slot_id].items()}
            seed_norm = float(ef.gradient_norms({"seed": slot_grads["seed"]})["seed"])
            kwargs: dict[str, Any] = {}
            if plan.gradient_health:
                health = gradient_health({g: [v for v in d.values() if v is not None] for g, d in slot_grads.items()})
                kwargs = {
                    "gradient_health": float(health.health),
                    "has_exploding": bool(health.has_exploding),
                    "has_vanishing": bool(health.has_vanishing),
                }
            if plan.gradient_ratio or plan.gradient_health:
                run.states[slot_id] = ef.record_gradients(state, host_grad_norm=host_norm, seed_grad_norm=seed_norm, **kwargs)
        frozen = frozenset(
            slot_id for slot_id, state in run.states.items() if state.stage not in FORWARD_STAGES or not ef.trainable(state)
        )
        run.params = _map_path(leaves, _sgd(grad_of, frozen, lr))
        run.buffers = new_buffers


def _sgd(grad_of: Mapping[int, Tensor | None], frozen: frozenset[str], lr: float) -> Any:
    """``(path, tensor) -> updated tensor``: plain SGD, skipping frozen slots and tensors without a gradient."""

    def update(path: tuple[str, ...], t: Tensor) -> Tensor:
        g = grad_of[id(t)]
        if g is None or (path[0] == "slots" and path[1] in frozen):
            return t.detach()
        return (t - lr * g).detach()

    return update


def _flat(tree: Any) -> list[Tensor]:
    if isinstance(tree, Mapping):
        return [t for v in tree.values() for t in _flat(v)]
    return [tree]


def _map_path(tree: Any, fn: Any, path: tuple[str, ...] = ()) -> Any:
    if isinstance(tree, Mapping):
        return {k: _map_path(v, fn, (*path, k)) for k, v in tree.items()}
    return fn(path, tree)


def _end_epoch(run: Run, val: tuple[Tensor, Tensor]) -> None:
    acc = _accuracy(run, *val)
    for slot_id, state in list(run.states.items()):
        if not ef.has_seed(state):
            continue
        state = ef.record_accuracy(state, acc)
        if state.stage in CONTRIBUTING_STAGES:
            state = ef.record_contribution(state, acc - _accuracy(run, *val, forced={slot_id: 0.0}))
        run.states[slot_id] = state
    for slot_id, state in list(run.states.items()):
        new, _ = ef.step_epoch(state, run.gates)
        _sync(run, slot_id, new)


def run_scenario(scenario: Scenario) -> Run:
    """Drive ``scenario`` through esper_func."""
    gen = torch.Generator().manual_seed(scenario.seed)
    val = make_batch(scenario, EVAL_BATCH, torch.Generator().manual_seed(scenario.seed + 500))
    model, params, buffers = ef.build_model(_host(scenario), list(scenario.slots), generator=torch.Generator().manual_seed(scenario.seed))
    run = Run(scenario, model, params, buffers, {}, ef.Gates(permissive=scenario.permissive_gates))
    for epoch in range(scenario.epochs + 1):
        for slot_id, action in scenario.actions_at(epoch):
            apply_action(run, slot_id, action)
        _train_steps(run, gen, epoch)
        if epoch < scenario.epochs:
            _end_epoch(run, val)
    for slot_id in scenario.slots:
        plan = scenario.plan(slot_id)
        expected = "DORMANT" if plan is None else plan.expect_stage
        got = run.model.stage(slot_id).name
        if got != expected:
            raise ProducerError(f"{scenario.name}: slot {slot_id} ended in {got}, expected {expected}")
    return run


def output_specs(run: Run) -> dict[str, dict[str, Any]]:
    """The outputs the esper-lite recorder saves for the same structure (see its ``output_specs``)."""
    specs: dict[str, dict[str, Any]] = {"prediction": {"forced": {}}}
    forward = [s for s in run.scenario.slots if run.model.slot(s) is not None and run.model.stage(s) in FORWARD_STAGES]
    for s in forward:
        specs[f"without/{s}"] = {"forced": {s: 0.0}}
    for s in forward:
        slot = run.model.slot(s)
        assert slot is not None
        if slot.algorithm == ef.AlphaAlgorithm.GATE and run.model.stage(s) not in GATED_STAGES:
            continue  # esper-lite has no gate network there and cannot blend the seed
        specs[f"half/{s}"] = {"forced": {s: 0.5}}
    if forward:
        specs["all_off"] = {"forced": {s: 0.0 for s in forward}}
    return specs


def write(scenario: Scenario, out_dir: Path) -> dict[str, Any]:
    """Produce one scenario; returns its manifest entry (with ``error`` if esper_func failed)."""
    host_class = "CNNHost" if scenario.topology == "cnn" else "TransformerHost"
    entry: dict[str, Any] = {
        "name": scenario.name,
        "host": {"class": host_class, "kwargs": dict(scenario.host_kwargs)},
        "topology": scenario.topology,
        "slots": list(scenario.slots),
        "permissive_gates": scenario.permissive_gates,
        "error": None,
    }
    try:
        run = run_scenario(scenario)
        state_dict = ef.to_state_dict(run.model, run.params, run.buffers, states=run.states)
    except Exception as exc:
        entry["error"] = f"{type(exc).__name__}: {exc}"
        entry["traceback"] = traceback.format_exc(limit=4)
        return entry
    x = output_inputs(scenario)
    specs = output_specs(run)
    outputs: dict[str, Tensor] = {"inputs": x}
    with torch.no_grad():
        for name, spec in specs.items():
            outputs[name] = ef.predict(run.model, run.params, run.buffers, _alphas(run, spec["forced"]), x).clone()
    torch.save(state_dict, out_dir / f"{scenario.name}.pt")
    torch.save(outputs, out_dir / f"{scenario.name}.outputs.pt")
    entry.update(
        file=f"{scenario.name}.pt",
        outputs_file=f"{scenario.name}.outputs.pt",
        execution_order=list(run.model.slot_order),
        slot_states={
            s: {
                "stage": run.model.stage(s).name,
                "blueprint": None if s not in run.states else run.states[s].blueprint_id,
                "algorithm": None if s not in run.states else run.states[s].alpha_algorithm.name,
                "alpha": 0.0 if s not in run.states else run.states[s].alpha,
            }
            for s in scenario.slots
        },
        outputs={
            name: {"forced": spec["forced"], "shape": list(outputs[name].shape), "dtype": str(outputs[name].dtype).removeprefix("torch.")}
            for name, spec in specs.items()
        },
        inputs={"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")},
    )
    return entry


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to write the checkpoints and manifest.json into")
    parser.add_argument("--only", nargs="*", metavar="NAME", help="produce only these scenarios")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    entries = []
    for scenario in SCENARIOS:
        if args.only and scenario.name not in args.only:
            continue
        entry = write(scenario, args.out)
        entries.append(entry)
        print(f"{scenario.name}: {'FAILED: ' + entry['error'] if entry['error'] else 'written'}")
    manifest = {
        "format": 1,
        "producer": {"name": "esper_func", "version": ef.__version__, "tool": "tools/write_esper_func_checkpoints.py"},
        "checkpoints": entries,
    }
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
