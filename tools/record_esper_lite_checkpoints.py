"""Record real esper-lite 2016337e ``MorphogeneticModel`` checkpoints as reference data.

Runs esper-lite itself (imported from ``$ESPER_LITE_SRC``, the ``src``
directory of an esper-lite checkout at commit 2016337e; nothing of
esper-lite is copied into this repository) and writes, for every scenario in
``tools/_checkpoint_scenarios.py``, into
``tests/data/esper-lite-2016337e/checkpoints/``:

- ``<name>.pt``: ``torch.save(model.state_dict(), path)``, exactly as
  esper-lite users save;
- ``<name>.outputs.pt``: a dict of tensors: the fixed ``inputs``, the
  eval-mode ``prediction`` and counterfactual predictions with slots forced
  to an alpha (``without/<slot>``: 0, ``half/<slot>``: 0.5, ``all_off``);
- ``manifest.json``: host class and arguments, slots, per-slot lifecycle
  summary, state_dict keys with shapes, each slot's ``_extra_state``
  (JSON form) and what every output means.

Every checkpoint is then reloaded with :func:`load_into_esper_lite` into a
fresh esper-lite model (strict ``load_state_dict``) and must reproduce its
saved outputs bitwise.

Usage::

    export ESPER_LITE_SRC=/path/to/esper-lite/src
    python tools/record_esper_lite_checkpoints.py                 # record and verify
    python tools/record_esper_lite_checkpoints.py --verify        # reload and verify only
    python tools/record_esper_lite_checkpoints.py --check-esper-func DIR
        # load esper_func's checkpoints (tools/write_esper_func_checkpoints.py DIR)
        # into esper-lite and write esper_func_roundtrip.json

Timestamps: esper-lite stamps lifecycle events with ``datetime.now``. To make
regeneration byte-for-byte reproducible the recorder substitutes a counter
clock (2026-06-21T00:00:00Z plus one second per reading, restarted for each
scenario) for ``datetime`` in ``esper.kasmina.slot`` and
``esper.leyline.telemetry`` while it drives the lifecycle. Nothing else of
esper-lite is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

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

ESPER_LITE_COMMIT = "2016337e"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "tests" / "data" / f"esper-lite-{ESPER_LITE_COMMIT}" / "checkpoints"
ROUNDTRIP_REPORT = "esper_func_roundtrip.json"
MANIFEST_FORMAT = 1

#: Stages (by name) in which the slot holds a seed module.
LIVE_STAGES = ("GERMINATED", "TRAINING", "BLENDING", "HOLDING", "FOSSILIZED")
#: Stages in which the seed runs in the forward pass.
FORWARD_STAGES = ("TRAINING", "BLENDING", "HOLDING", "FOSSILIZED")
#: Stages whose seeds get a counterfactual contribution each epoch.
CONTRIBUTING_STAGES = ("BLENDING", "HOLDING", "FOSSILIZED")
#: Stage values, as esper-lite's ``SeedStage`` (for readers without esper-lite).
STAGE_VALUES = {
    "UNKNOWN": 0,
    "DORMANT": 1,
    "GERMINATED": 2,
    "TRAINING": 3,
    "BLENDING": 4,
    "HOLDING": 6,
    "FOSSILIZED": 7,
    "PRUNED": 8,
    "EMBARGOED": 9,
    "RESETTING": 10,
}

_MISSING_ESPER_LITE = (
    "This tool runs esper-lite itself and needs its source: set ESPER_LITE_SRC to the 'src' directory of an "
    "esper-lite checkout at commit {commit} (the directory that contains 'esper/kasmina/host.py'), e.g.\n"
    "    git clone https://github.com/tachyon-beep/esper-lite && git -C esper-lite checkout {commit}\n"
    "    ESPER_LITE_SRC=$PWD/esper-lite/src python tools/record_esper_lite_checkpoints.py\n"
    "esper-lite needs only torch and numpy to import. {problem}"
)


#: An esper-lite ``MorphogeneticModel`` (esper-lite is imported at run time, so its types are not static).
ELModel = Any


class RecorderError(RuntimeError):
    """A scenario did not go as planned (a refused action, an unexpected stage, a mismatch on reload)."""


# --------------------------------------------------------------------------- esper-lite


def import_esper_lite() -> SimpleNamespace:
    """Import the parts of esper-lite the recorder drives, from ``$ESPER_LITE_SRC``.

    Raises ``SystemExit`` with instructions when the variable is unset or
    does not point at esper-lite's ``src`` directory.
    """
    src = os.environ.get("ESPER_LITE_SRC")
    if not src:
        raise SystemExit(_MISSING_ESPER_LITE.format(commit=ESPER_LITE_COMMIT, problem="ESPER_LITE_SRC is not set."))
    root = Path(src).expanduser().resolve()
    if not (root / "esper" / "kasmina" / "host.py").is_file():
        raise SystemExit(
            _MISSING_ESPER_LITE.format(
                commit=ESPER_LITE_COMMIT, problem=f"ESPER_LITE_SRC={src!r} has no esper/kasmina/host.py."
            )
        )
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        from esper.kasmina import slot as slot_module
        from esper.kasmina.host import CNNHost, MorphogeneticModel, TransformerHost
        from esper.leyline import SeedStage
        from esper.leyline import telemetry as telemetry_module
        from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve, AlphaMode
        from esper.simic.telemetry.gradient_collector import collect_seed_gradients
    except ImportError as exc:
        raise SystemExit(
            _MISSING_ESPER_LITE.format(commit=ESPER_LITE_COMMIT, problem=f"Importing esper-lite failed: {exc!r}")
        ) from exc
    return SimpleNamespace(
        CNNHost=CNNHost,
        TransformerHost=TransformerHost,
        MorphogeneticModel=MorphogeneticModel,
        SeedStage=SeedStage,
        AlphaAlgorithm=AlphaAlgorithm,
        AlphaCurve=AlphaCurve,
        AlphaMode=AlphaMode,
        slot_module=slot_module,
        telemetry_module=telemetry_module,
        collect_seed_gradients=collect_seed_gradients,
        path=str(root),
    )


CLOCK_START = datetime(2026, 6, 21, tzinfo=UTC)


@contextlib.contextmanager
def counter_clock(el: SimpleNamespace) -> Iterator[None]:
    """Replace ``datetime`` in esper-lite's slot and telemetry modules by a deterministic counter clock.

    Each ``datetime.now(tz)`` returns the previous reading plus one second,
    starting at :data:`CLOCK_START`. Everything else of ``datetime``
    (``fromisoformat``, arithmetic) is the real class.
    """
    readings = [CLOCK_START]

    class CounterClock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> datetime:  # type: ignore[override]
            readings[0] += timedelta(seconds=1)
            value = readings[0]
            return value.astimezone(tz) if tz is not None else value.replace(tzinfo=None)

    modules = (el.slot_module, el.telemetry_module)
    saved = [m.datetime for m in modules]
    for m in modules:
        m.datetime = CounterClock
    try:
        yield
    finally:
        for m, original in zip(modules, saved, strict=True):
            m.datetime = original


def make_host(el: SimpleNamespace, host: Mapping[str, Any]) -> Any:
    """esper-lite host from a manifest's ``{"class": ..., "kwargs": ...}`` (``memory_format`` by name)."""
    kwargs = dict(host["kwargs"])
    if host["class"] == "CNNHost":
        if "memory_format" in kwargs:
            kwargs["memory_format"] = getattr(torch, kwargs["memory_format"])
        return el.CNNHost(**kwargs)
    if host["class"] == "TransformerHost":
        return el.TransformerHost(**kwargs)
    raise RecorderError(f"unknown host class {host['class']!r}; expected 'CNNHost' or 'TransformerHost'")


def _extra_key(slot_id: str) -> str:
    return f"seed_slots.{slot_id}._extra_state"


def load_into_esper_lite(state_dict: Mapping[str, Any], manifest: Mapping[str, Any], *, el: SimpleNamespace | None = None) -> ELModel:
    """Load a ``MorphogeneticModel`` checkpoint into a fresh esper-lite model, as an esper-lite user does.

    ``manifest`` gives the host (``{"class", "kwargs"}``), the enabled
    ``slots`` and ``permissive_gates``. The rest comes from the checkpoint:

    1. build the host and ``MorphogeneticModel(host, slots=..., permissive_gates=...)``:
       every slot starts empty;
    2. for every slot whose saved ``_extra_state["seed_state"]`` is in a stage
       with a seed module (GERMINATED, TRAINING, BLENDING, HOLDING,
       FOSSILIZED) germinate that ``blueprint_id`` there
       (``model.germinate_seed(blueprint_id, seed_id, slot=...)``, default
       blend arguments). The seed module must exist before loading because
       ``set_extra_state`` restores the lifecycle but never builds a seed.
       Slots in PRUNED, EMBARGOED or RESETTING and empty slots stay as they are
       (esper-lite has dropped those seeds; their state lives only in
       ``_extra_state``);
    3. ``model.load_state_dict(state_dict, strict=True)``. For each slot,
       ``SeedSlot.set_extra_state`` runs before the slot's children are
       loaded and before strict key checking: it replaces the freshly
       germinated ``SeedState`` by the saved one (stage, alpha, controller,
       metrics, telemetry, algorithm) and restores the blend settings and
       isolation; when ``alpha_schedule_config`` is set (a GATE seed from
       BLENDING on) it calls ``start_blending`` to build the ``GatedBlend``
       whose ``alpha_schedule.*`` weights are then loaded;
    4. ``model.eval()``.

    Returns the loaded model (in eval mode).
    """
    el = import_esper_lite() if el is None else el
    host = make_host(el, manifest["host"])
    slots = list(manifest["slots"])
    model = el.MorphogeneticModel(host, slots=slots, permissive_gates=bool(manifest.get("permissive_gates", False)))
    live_values = {STAGE_VALUES[s] for s in LIVE_STAGES}
    for slot_id in slots:
        extra = state_dict.get(_extra_key(slot_id))
        seed_state = extra.get("seed_state") if isinstance(extra, Mapping) else None
        if seed_state is None or int(seed_state["stage"]) not in live_values:
            continue
        model.germinate_seed(seed_state["blueprint_id"], seed_state["seed_id"], slot=slot_id)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    return model


# --------------------------------------------------------------------------- data


def accuracy(model: ELModel, x: Tensor, y: Tensor) -> float:
    """Percent of correct argmax predictions (eval mode)."""
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(dim=-1)
    return 100.0 * float((pred == y).float().mean())


# --------------------------------------------------------------------------- outputs


def forced_forward(model: ELModel, x: Tensor, forced: Mapping[str, float]) -> Tensor:
    """``model(x)`` in eval mode with each slot in ``forced`` held at its alpha by ``SeedSlot.force_alpha``."""
    model.eval()
    with torch.no_grad(), contextlib.ExitStack() as stack:
        for slot_id, alpha in forced.items():
            stack.enter_context(model.seed_slots[slot_id].force_alpha(float(alpha)))
        return model(x).detach().clone()


def _stage_name(slot: Any) -> str:
    return "DORMANT" if slot.state is None else slot.state.stage.name


def output_specs(el: SimpleNamespace, model: ELModel, slots: list[str]) -> dict[str, dict[str, Any]]:
    """Which outputs to save: the prediction, then per seed in the forward pass alpha 0 and 0.5, then all at 0.

    A GATE seed before BLENDING has no gate network, so esper-lite cannot
    blend it at all; it gets no ``half/`` output.
    """
    specs: dict[str, dict[str, Any]] = {"prediction": {"forced": {}}}
    forward = [s for s in slots if model.seed_slots[s].is_active and _stage_name(model.seed_slots[s]) in FORWARD_STAGES]
    for s in forward:
        specs[f"without/{s}"] = {"forced": {s: 0.0}}
    for s in forward:
        slot = model.seed_slots[s]
        if slot.state.alpha_algorithm == el.AlphaAlgorithm.GATE and slot.alpha_schedule is None:
            continue
        specs[f"half/{s}"] = {"forced": {s: 0.5}}
    if forward:
        specs["all_off"] = {"forced": {s: 0.0 for s in forward}}
    return specs


def compute_outputs(model: ELModel, x: Tensor, specs: Mapping[str, Mapping[str, Any]]) -> dict[str, Tensor]:
    """``{"inputs": x, <name>: forced_forward(...)}`` for every spec."""
    out = {"inputs": x}
    for name, spec in specs.items():
        out[name] = forced_forward(model, x, spec["forced"])
    return out


# --------------------------------------------------------------------------- JSON helpers


def jsonable(value: Any, path: str = "") -> Any:
    """``value`` with tuples as lists; raises on anything that is not a JSON primitive or a finite float."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecorderError(f"{path}: non-finite float {value!r} cannot go into JSON")
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, f"{path}.{k}") for k, v in value.items()}
    raise RecorderError(f"{path}: {type(value).__name__} is not a JSON primitive")


def json_diff(saved: Any, other: Any, path: str = "") -> list[dict[str, Any]]:
    """Paths where two JSON values differ, with both values."""
    if isinstance(saved, dict) and isinstance(other, dict):
        out = []
        for key in list(saved) + [k for k in other if k not in saved]:
            sub = f"{path}.{key}" if path else key
            if key not in saved:
                out.append({"path": sub, "saved": "<absent>", "reloaded": other[key]})
            elif key not in other:
                out.append({"path": sub, "saved": saved[key], "reloaded": "<absent>"})
            else:
                out.extend(json_diff(saved[key], other[key], sub))
        return out
    if isinstance(saved, list) and isinstance(other, list) and len(saved) == len(other):
        out = []
        for i, (a, b) in enumerate(zip(saved, other, strict=True)):
            out.extend(json_diff(a, b, f"{path}[{i}]"))
        return out
    if saved == other and type(saved) is type(other):
        return []
    return [{"path": path, "saved": saved, "reloaded": other}]


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tensor_layout(state_dict: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``[{"key", "shape", "dtype"}]`` in state_dict order (``_extra_state`` entries with ``"extra_state": true``)."""
    out: list[dict[str, Any]] = []
    for key, value in state_dict.items():
        if isinstance(value, Tensor):
            out.append({"key": key, "shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")})
        else:
            out.append({"key": key, "extra_state": True})
    return out


# --------------------------------------------------------------------------- driving a scenario


def _slot(model: ELModel, slot_id: str) -> Any:
    return model.seed_slots[slot_id]


def apply_action(el: SimpleNamespace, model: ELModel, slot_id: str, action: Action) -> None:
    """Carry out one planned action through esper-lite's API; raise :class:`RecorderError` if it is refused."""
    slot = _slot(model, slot_id)
    a = action.args
    where = f"epoch {action.epoch}, slot {slot_id}, {action.op} {a}"
    if action.op == "germinate":
        model.germinate_seed(
            a["blueprint"],
            f"{slot_id}-{a['blueprint']}",
            slot=slot_id,
            blend_algorithm_id=a["blend"],
            blend_tempo_epochs=a["tempo"],
            alpha_algorithm=el.AlphaAlgorithm[a["algorithm"]],
        )
        return
    if action.op == "advance":
        result = slot.advance_stage(el.SeedStage[a["target"]])
        if not result.passed:
            raise RecorderError(f"{where}: gate {result.gate.name} refused: failed {result.checks_failed}, passed {result.checks_passed}")
        return
    if action.op == "prune":
        ok = slot.prune(reason=a["reason"])
    elif action.op == "schedule_prune":
        curve = None if a["curve"] is None else el.AlphaCurve[a["curve"]]
        ok = slot.schedule_prune(steps=a["steps"], curve=curve)
    elif action.op == "set_alpha_target":
        curve = None if a["curve"] is None else el.AlphaCurve[a["curve"]]
        algorithm = None if a["algorithm"] is None else el.AlphaAlgorithm[a["algorithm"]]
        ok = slot.set_alpha_target(alpha_target=a["alpha_target"], steps=a["steps"], curve=curve, alpha_algorithm=algorithm)
    else:
        raise RecorderError(f"{where}: unknown action")
    if not ok:
        raise RecorderError(f"{where}: esper-lite refused (returned False); stage {_stage_name(slot)}")


def _train_steps(el: SimpleNamespace, model: ELModel, scenario: Scenario, gen: torch.Generator) -> dict[str, dict[str, Any]]:
    """``TRAIN_STEPS`` SGD steps; measures gradient telemetry after each backward. Returns the last health stats per slot."""
    health: dict[str, dict[str, Any]] = {}
    for _ in range(TRAIN_STEPS):
        model.train()
        x, y = make_batch(scenario, TRAIN_BATCH, gen)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=LEARNING_RATE[scenario.topology])
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        for slot_id in scenario.slots:
            plan = scenario.plan(slot_id)
            slot = _slot(model, slot_id)
            if plan is None or not slot.is_active or _stage_name(slot) not in FORWARD_STAGES:
                continue
            if plan.gradient_ratio:
                slot.capture_gradient_telemetry()
            if plan.gradient_health:
                health[slot_id] = el.collect_seed_gradients(model.get_seed_parameters(slot_id))
        optimizer.step()
    return health


def _record_contribution(metrics: Any, contribution: float) -> None:
    # As esper-lite's vectorized trainer updates a seed's counterfactual contribution.
    prev = metrics._prev_contribution
    if prev is not None:
        metrics.contribution_velocity = 0.7 * metrics.contribution_velocity + 0.3 * (contribution - prev)
    metrics._prev_contribution = contribution
    metrics.counterfactual_contribution = contribution


def _end_epoch(el: SimpleNamespace, model: ELModel, scenario: Scenario, epoch: int, health: Mapping[str, Any], val: tuple[Tensor, Tensor]) -> None:
    acc = accuracy(model, *val)
    for slot_id in scenario.slots:
        slot = _slot(model, slot_id)
        if not slot.is_active:
            continue
        slot.state.metrics.record_accuracy(acc)
        if slot.state.stage.name in CONTRIBUTING_STAGES:
            with slot.force_alpha(0.0):
                acc_without = accuracy(model, *val)
            _record_contribution(slot.state.metrics, acc - acc_without)
        stats = health.get(slot_id)
        if stats is None:
            slot.state.sync_telemetry(epoch=epoch + 1, max_epochs=scenario.epochs)
        else:
            slot.state.sync_telemetry(
                gradient_norm=stats["gradient_norm"],
                gradient_health=stats["gradient_health"],
                has_vanishing=stats["has_vanishing"],
                has_exploding=stats["has_exploding"],
                epoch=epoch + 1,
                max_epochs=scenario.epochs,
            )
    for slot_id in scenario.slots:
        _slot(model, slot_id).step_epoch()


#: ``id(module) -> (module, its state_dict when first seen)``; holding the module keeps its id unique.
Initial = dict[int, tuple[nn.Module, dict[str, Tensor]]]


def _snapshot_new_modules(model: ELModel, slots: tuple[str, ...], initial: Initial) -> None:
    for slot_id in slots:
        slot = _slot(model, slot_id)
        for module in (slot.seed, slot.alpha_schedule):
            if isinstance(module, nn.Module) and id(module) not in initial:
                initial[id(module)] = (module, {k: v.detach().clone() for k, v in module.state_dict().items()})


def run_scenario(el: SimpleNamespace, scenario: Scenario) -> tuple[ELModel, Initial]:
    """Drive ``scenario`` through esper-lite; returns the model and the initial weights of every seed and gate."""
    torch.manual_seed(scenario.seed)
    gen = torch.Generator().manual_seed(scenario.seed)
    val = make_batch(scenario, EVAL_BATCH, torch.Generator().manual_seed(scenario.seed + 500))
    host = make_host(el, {"class": "CNNHost" if scenario.topology == "cnn" else "TransformerHost", "kwargs": scenario.host_kwargs})
    model = el.MorphogeneticModel(host, slots=list(scenario.slots), permissive_gates=scenario.permissive_gates)
    initial: Initial = {}
    for epoch in range(scenario.epochs + 1):
        for slot_id, action in scenario.actions_at(epoch):
            apply_action(el, model, slot_id, action)
        _snapshot_new_modules(model, scenario.slots, initial)
        health = _train_steps(el, model, scenario, gen)
        if epoch < scenario.epochs:
            _end_epoch(el, model, scenario, epoch, health, val)
    model.eval()
    for slot_id in scenario.slots:
        plan = scenario.plan(slot_id)
        expected = "DORMANT" if plan is None else plan.expect_stage
        got = _stage_name(_slot(model, slot_id))
        if got != expected:
            raise RecorderError(f"{scenario.name}: slot {slot_id} ended in {got}, expected {expected}")
    return model, initial


def _unchanged_params(module: nn.Module | None, initial: Initial) -> list[str] | None:
    if not isinstance(module, nn.Module):
        return None
    start = initial[id(module)][1]
    return sorted(
        name for name, value in module.state_dict().items() if value.is_floating_point() and torch.equal(value, start[name])
    )


def slot_summary(
    el: SimpleNamespace, model: ELModel, scenario: Scenario, slot_id: str, outputs: Mapping[str, Tensor], initial: Initial
) -> dict[str, Any]:
    """The manifest's per-slot entry."""
    slot = _slot(model, slot_id)
    plan = scenario.plan(slot_id)
    state = slot.state
    entry: dict[str, Any] = {
        "stage": _stage_name(slot),
        "stage_value": STAGE_VALUES[_stage_name(slot)],
        "blueprint": None if state is None else state.blueprint_id,
        "algorithm": None if state is None else state.alpha_algorithm.name,
        "alpha": 0.0 if state is None else state.alpha,
        "alpha_mode": None if state is None else state.alpha_controller.alpha_mode.name,
        "seed_module": slot.seed is not None,
        "gate_network": slot.alpha_schedule is not None,
        "in_forward": slot.is_active and _stage_name(slot) in FORWARD_STAGES,
        "telemetry_measured": None if state is None else state.telemetry.gradient_health is not None,
        "gradient_ratio_measured": None if state is None else state.metrics.seed_gradient_norm_ratio is not None,
        "blend_out_frozen": bool(slot._blend_out_freeze_active),
        "ever_germinated": plan is not None,
        "plan": None if plan is None else plan.to_json(),
    }
    if entry["in_forward"]:
        entry["changes_output"] = not torch.equal(outputs["prediction"], outputs[f"without/{slot_id}"])
        half = outputs.get(f"half/{slot_id}")
        entry["half_alpha_changes_output"] = None if half is None else not torch.equal(outputs["prediction"], half)
    entry["unchanged_seed_params"] = _unchanged_params(slot.seed, initial)
    entry["unchanged_gate_params"] = _unchanged_params(slot.alpha_schedule, initial)
    return entry


def record(el: SimpleNamespace, scenario: Scenario, out_dir: Path) -> dict[str, Any]:
    """Run, save and describe one scenario; returns its manifest entry."""
    with counter_clock(el):
        model, initial = run_scenario(el, scenario)
    slots = list(scenario.slots)
    specs = output_specs(el, model, slots)
    outputs = compute_outputs(model, output_inputs(scenario), specs)

    ckpt = out_dir / f"{scenario.name}.pt"
    outputs_file = out_dir / f"{scenario.name}.outputs.pt"
    state_dict = model.state_dict()
    torch.save(state_dict, ckpt)
    torch.save(outputs, outputs_file)

    host_class = "CNNHost" if scenario.topology == "cnn" else "TransformerHost"
    defaults = {"CNNHost": {"pool_layers": None, "memory_format": "channels_last", "kernel_size": 3}}
    host_kwargs = {**scenario.host_kwargs, **{k: v for k, v in defaults.get(host_class, {}).items() if k not in scenario.host_kwargs}}
    entry: dict[str, Any] = {
        "name": scenario.name,
        "description": scenario.description,
        "file": ckpt.name,
        "outputs_file": outputs_file.name,
        "host": {"class": host_class, "kwargs": host_kwargs},
        "topology": scenario.topology,
        "slots": slots,
        "execution_order": [s for s in model.host.execution_order() if s in slots],
        "permissive_gates": scenario.permissive_gates,
        "epochs": scenario.epochs,
        "seed": scenario.seed,
        "slot_states": {s: slot_summary(el, model, scenario, s, outputs, initial) for s in slots},
        "state_dict": tensor_layout(state_dict),
        "extra_state": {s: jsonable(state_dict[_extra_key(s)], _extra_key(s)) for s in slots},
        "outputs": {
            name: {
                "forced": spec["forced"],
                "shape": list(outputs[name].shape),
                "dtype": str(outputs[name].dtype).removeprefix("torch."),
            }
            for name, spec in specs.items()
        },
        "inputs": {"shape": list(outputs["inputs"].shape), "dtype": str(outputs["inputs"].dtype).removeprefix("torch.")},
    }
    return entry


def verify(el: SimpleNamespace, out_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Reload one checkpoint as a user would and check it reproduces the saved outputs bitwise.

    Returns ``{"strict_load": "ok", "outputs_bitwise_equal": True,
    "extra_state_changes": {slot: [...]}}``: the paths where esper-lite's
    re-serialised ``_extra_state`` differs from the saved one (documented
    esper-lite behaviour, e.g. a seed switched to GATE while holding comes
    back with ``blend_algorithm_id`` ``"gated"``).
    """
    state_dict = torch.load(out_dir / entry["file"], weights_only=True)
    saved = torch.load(out_dir / entry["outputs_file"], weights_only=True)
    for kind in ("file", "outputs_file"):
        recorded = entry.get("sha256", {}).get(kind)
        if recorded is not None and sha256(out_dir / entry[kind]) != recorded:
            raise RecorderError(f"{entry['name']}: {entry[kind]} does not match the manifest's sha256")
    model = load_into_esper_lite(state_dict, entry, el=el)
    reproduced = compute_outputs(model, saved["inputs"], entry["outputs"])
    mismatched = [k for k in saved if not torch.equal(saved[k], reproduced[k])]
    if mismatched:
        raise RecorderError(f"{entry['name']}: reloaded model does not reproduce {mismatched} bitwise")
    changes = {}
    for slot_id in entry["slots"]:
        reloaded = jsonable(_slot(model, slot_id).get_extra_state())
        diff = json_diff(entry["extra_state"][slot_id], reloaded)
        if diff:
            changes[slot_id] = diff
    return {"strict_load": "ok", "outputs_bitwise_equal": True, "extra_state_changes": changes}


def coverage(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Which ``topology/stage/algorithm/telemetry`` combinations the checkpoints hold."""
    combos = set()
    for e in entries:
        for s in e["slot_states"].values():
            measured = {True: "measured", False: "unmeasured", None: "-"}[s["telemetry_measured"]]
            combos.add((e["topology"], s["stage"], s["algorithm"] or "-", measured))
    stages = sorted({c[1] for c in combos}, key=lambda n: STAGE_VALUES[n])
    return {
        "topologies": sorted({c[0] for c in combos}),
        "stages": stages,
        "algorithms": sorted({c[2] for c in combos if c[2] != "-"}),
        "combinations": ["/".join(c) for c in sorted(combos, key=lambda c: (c[0], STAGE_VALUES[c[1]], c[2], c[3]))],
    }


def write_json(path: Path, data: Any) -> None:
    """Pretty JSON with a trailing newline."""
    path.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")


def record_all(el: SimpleNamespace, out_dir: Path, names: list[str] | None) -> dict[str, Any]:
    """Record every scenario (or the named ones), verify each by reloading, and write ``manifest.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    chosen = [s for s in SCENARIOS if names is None or s.name in names]
    entries = []
    for scenario in chosen:
        entry = record(el, scenario, out_dir)
        entry["sha256"] = {"file": sha256(out_dir / entry["file"]), "outputs_file": sha256(out_dir / entry["outputs_file"])}
        entry["reload"] = verify(el, out_dir, entry)
        entries.append(entry)
        _print_entry(entry)
    manifest = {
        "format": MANIFEST_FORMAT,
        "esper_lite_commit": ESPER_LITE_COMMIT,
        "recorded_with": {"torch": torch.__version__.split("+")[0], "tool": "tools/record_esper_lite_checkpoints.py"},
        "clock": {"start": CLOCK_START.isoformat(), "step_seconds": 1},
        "training": {"train_steps_per_epoch": TRAIN_STEPS, "train_batch": TRAIN_BATCH, "eval_batch": EVAL_BATCH, "sgd_lr": LEARNING_RATE},
        "coverage": coverage(entries),
        "checkpoints": entries,
    }
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def _print_entry(entry: Mapping[str, Any]) -> None:
    print(f"{entry['name']}: {entry['file']} ({len(entry['state_dict'])} keys)")
    for slot_id, s in entry["slot_states"].items():
        flags = []
        if s["in_forward"]:
            flags.append("changes output" if s["changes_output"] else "NO EFFECT at alpha 0")
        if s["unchanged_seed_params"]:
            flags.append(f"seed params at init: {s['unchanged_seed_params']}")
        if s["unchanged_gate_params"]:
            flags.append(f"gate params at init: {s['unchanged_gate_params']}")
        print(
            f"  {slot_id}: {s['stage']:<10} {s['blueprint'] or '-':<11} {s['algorithm'] or '-':<8} "
            f"alpha={s['alpha']:.4f} telemetry={s['telemetry_measured']} {'; '.join(flags)}"
        )
    changes = entry["reload"]["extra_state_changes"]
    if changes:
        print(f"  reload changes _extra_state: {json.dumps(changes)}")


def verify_all(el: SimpleNamespace, out_dir: Path) -> None:
    """Reload every checkpoint listed in ``manifest.json`` and check outputs and ``_extra_state`` changes."""
    torch.set_num_threads(1)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    for entry in manifest["checkpoints"]:
        got = verify(el, out_dir, entry)
        if got != entry["reload"]:
            raise RecorderError(f"{entry['name']}: reload gives {got}, manifest says {entry['reload']}")
        print(f"{entry['name']}: strict load ok, {len(entry['outputs'])} outputs reproduced bitwise")


# --------------------------------------------------------------------------- esper_func -> esper-lite


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _reference_extra_state(el: SimpleNamespace, topology: str, channels: int) -> dict[str, Any]:
    """``get_extra_state()`` of a freshly germinated esper-lite slot: every field esper-lite writes and reads."""
    slot = el.slot_module.SeedSlot(slot_id="r0c0", channels=channels, device="cpu")
    slot.germinate("noop", seed_id="reference", topology=topology)
    return jsonable(slot.get_extra_state())


def _schema_diff(written: Any, reference: Any, path: str = "") -> dict[str, list[str]]:
    """Dict keys present in ``reference`` but not in ``written`` (``missing``) and the reverse (``unexpected``)."""
    out: dict[str, list[str]] = {"missing": [], "unexpected": []}
    if not (isinstance(written, dict) and isinstance(reference, dict)):
        return out
    for key in reference:
        sub = f"{path}.{key}" if path else key
        if key not in written:
            out["missing"].append(sub)
        else:
            deeper = _schema_diff(written[key], reference[key], sub)
            out["missing"] += deeper["missing"]
            out["unexpected"] += deeper["unexpected"]
    out["unexpected"] += [f"{path}.{k}" if path else k for k in written if k not in reference]
    return out


def _fill_missing(written: Any, reference: Any) -> Any:
    if not (isinstance(written, dict) and isinstance(reference, dict)):
        return written
    out = {k: _fill_missing(v, reference.get(k)) for k, v in written.items()}
    for key, value in reference.items():
        if key not in out:
            out[key] = value
    return out


_GATE_NAMES = ("gate.0.weight", "gate.0.bias", "gate.2.weight", "gate.2.bias")


def diagnose(el: SimpleNamespace, state_dict: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    """Every reason esper-lite rejects a checkpoint, slot by slot (not only the first exception).

    Per slot: whether the loader's germination and ``set_extra_state`` alone
    succeed (exact error), the ``_extra_state`` fields missing or unexpected
    compared with what esper-lite's own ``get_extra_state()`` writes, and the
    tensor keys missing or unexpected compared with esper-lite's layout (the
    germinated seed's keys, plus the gate's exactly when
    ``alpha_schedule_config`` is set, since only then does ``set_extra_state``
    build a gate).
    """
    model = el.MorphogeneticModel(make_host(el, entry["host"]), slots=list(entry["slots"]), permissive_gates=False)
    out: dict[str, Any] = {}
    live_values = {STAGE_VALUES[s] for s in LIVE_STAGES}
    host_expected = {k for k in model.state_dict() if k.startswith("host.")}
    host_given = {k for k in state_dict if k.startswith("host.")}
    if host_expected != host_given:
        out["host"] = {"missing": sorted(host_expected - host_given), "unexpected": sorted(host_given - host_expected)}
    for slot_id in entry["slots"]:
        report: dict[str, Any] = {}
        slot = _slot(model, slot_id)
        extra = state_dict.get(_extra_key(slot_id))
        seed_state = extra.get("seed_state") if isinstance(extra, Mapping) else None
        live = seed_state is not None and int(seed_state.get("stage", 0)) in live_values
        try:
            if live and seed_state is not None:
                model.germinate_seed(seed_state["blueprint_id"], seed_state["seed_id"], slot=slot_id)
            report["germinate"] = "ok"
        except Exception as exc:
            report["germinate"] = _error(exc)
        reference = _reference_extra_state(el, entry["topology"], slot.channels)
        if isinstance(extra, Mapping):
            schema = _schema_diff(jsonable(extra), reference)
            if seed_state is None:
                schema = {k: [p for p in v if not p.startswith("seed_state.")] for k, v in schema.items()}
            report["extra_state_fields"] = schema
        try:
            if extra is None:
                raise KeyError(_extra_key(slot_id))
            slot.set_extra_state(extra)
            report["set_extra_state"] = "ok"
        except Exception as exc:
            report["set_extra_state"] = _error(exc)
        prefix = f"seed_slots.{slot_id}."
        expected = {f"{prefix}seed.{k}" for k in (slot.seed.state_dict() if slot.seed is not None else {})}
        if isinstance(extra, Mapping) and extra.get("alpha_schedule_config") is not None:
            expected |= {f"{prefix}alpha_schedule.{k}" for k in _GATE_NAMES}
        given = {k for k in state_dict if k.startswith(prefix) and not k.endswith("._extra_state")}
        report["missing_keys"] = sorted(expected - given)
        report["unexpected_keys"] = sorted(given - expected)
        out[slot_id] = report
    return out


def patched_attempt(el: SimpleNamespace, state_dict: Mapping[str, Any], entry: Mapping[str, Any], outputs: Mapping[str, Tensor]) -> dict[str, Any]:
    """A diagnostic only: what happens once the rejections :func:`diagnose` found are patched over.

    Missing ``_extra_state`` fields are filled in with the values of a fresh
    esper-lite slot (``_reference_extra_state``) and tensor keys esper-lite
    does not expect are dropped; then the checkpoint is loaded as usual. This
    shows what lies behind the first error: whether the rest loads, and how
    far the predictions then are from esper_func's.
    """
    diagnostics = diagnose(el, state_dict, entry)
    patched = dict(state_dict)
    patches: list[str] = []
    for slot_id in entry["slots"]:
        report = diagnostics[slot_id]
        for key in report["unexpected_keys"]:
            del patched[key]
            patches.append(f"dropped {key}")
        missing = report.get("extra_state_fields", {}).get("missing", [])
        if missing:
            channels = make_host(el, entry["host"]).segment_channels[slot_id]
            reference = _reference_extra_state(el, entry["topology"], channels)
            patched[_extra_key(slot_id)] = _fill_missing(jsonable(state_dict[_extra_key(slot_id)]), reference)
            patches += [f"filled {_extra_key(slot_id)}.{p}" for p in missing]
    result: dict[str, Any] = {"patches": patches}
    try:
        model = load_into_esper_lite(patched, entry, el=el)
    except Exception as exc:
        result.update(loaded=False, error=_error(exc))
        return result
    reproduced = compute_outputs(model, outputs["inputs"], entry["outputs"])
    result.update(
        loaded=True,
        max_abs_diff={n: float((reproduced[n].double() - outputs[n].double()).abs().max()) for n in entry["outputs"]},
        extra_state_changes={
            s: d
            for s in entry["slots"]
            if (d := json_diff(jsonable(patched[_extra_key(s)]), jsonable(_slot(model, s).get_extra_state())))
        },
    )
    return result


#: ``_extra_state`` fields whose values depend on the weights, the data or the clock, so that two runs of the
#: same scenario (esper-lite's and esper_func's) legitimately differ there; only their kind is compared.
_RUN_DEPENDENT = {
    "seed_state.stage_entered_at",
    "seed_state.telemetry.captured_at",
    "seed_state.metrics.initial_val_accuracy",
    "seed_state.metrics.current_val_accuracy",
    "seed_state.metrics.best_val_accuracy",
    "seed_state.metrics.accuracy_at_stage_start",
    "seed_state.metrics.accuracy_at_blending_start",
    "seed_state.metrics.gradient_norm_avg",
    "seed_state.metrics.counterfactual_contribution",
    "seed_state.metrics._prev_contribution",
    "seed_state.metrics.contribution_velocity",
    "seed_state.metrics.seed_gradient_norm_ratio",
    "seed_state.telemetry.gradient_norm",
    "seed_state.telemetry.gradient_health",
    "seed_state.telemetry.has_vanishing",
    "seed_state.telemetry.has_exploding",
    "seed_state.telemetry.accuracy",
    "seed_state.telemetry.accuracy_delta",
}


def _kind(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return "<bool>"
    if isinstance(value, (int, float)):
        return "<number>"
    if isinstance(value, str):
        return "<string>"
    return f"<{type(value).__name__}>"


def lifecycle_projection(extra: Any, path: str = "") -> Any:
    """``extra`` with run-dependent values replaced by their kind (``None``, ``"<number>"`` ...).

    Timestamps in ``stage_history`` become ``"<string>"``; every other value
    (stages, counters, alpha, controller, algorithm, blend settings, flags,
    parameter counts, the schedule config, which telemetry is ``None``) is
    kept, so two runs of the same lifecycle must agree on it exactly.
    """
    if path in _RUN_DEPENDENT:
        return _kind(extra)
    if path == "seed_state.stage_history" and isinstance(extra, list):
        return [[entry[0], _kind(entry[1])] for entry in extra]
    if isinstance(extra, dict):
        return {k: lifecycle_projection(v, f"{path}.{k}" if path else k) for k, v in extra.items()}
    return extra


def compare_with_recorded(written: Mapping[str, Any], recorded: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per slot, where esper_func's ``_extra_state`` differs from esper-lite's for the same scenario.

    Compares :func:`lifecycle_projection` of both, plus the set of tensor
    keys. ``recorded`` is the scenario's entry in the recorded manifest.
    """
    if recorded is None:
        return {}
    out: dict[str, Any] = {}
    for slot_id, el_extra in recorded["extra_state"].items():
        diff = json_diff(lifecycle_projection(el_extra), lifecycle_projection(jsonable(written["extra"].get(slot_id))))
        if diff:
            out[slot_id] = [{"path": d["path"], "esper_lite": d["saved"], "esper_func": d["reloaded"]} for d in diff]
    el_keys = {item["key"] for item in recorded["state_dict"] if not item.get("extra_state")}
    ef_keys = set(written["tensor_keys"])
    if el_keys != ef_keys:
        out["tensor_keys"] = {"only_esper_lite": sorted(el_keys - ef_keys), "only_esper_func": sorted(ef_keys - el_keys)}
    return out


def check_esper_func(el: SimpleNamespace, directory: Path, report_path: Path, recorded_dir: Path = DEFAULT_OUT) -> dict[str, Any]:
    """Load every esper_func checkpoint in ``directory`` into esper-lite and report.

    ``directory`` holds ``manifest.json`` as written by
    ``tools/write_esper_func_checkpoints.py``: the same layout as this
    recorder's (host, slots, permissive_gates, file, outputs_file, outputs
    with their forced alphas), plus ``error`` for scenarios esper_func could
    not produce. For each checkpoint the report gives whether
    :func:`load_into_esper_lite` succeeded (or its exact error), the largest
    absolute difference between esper-lite's and esper_func's outputs, the
    ``_extra_state`` esper-lite re-serialises after loading and where it
    differs from what esper_func wrote, and per-slot diagnostics. It also
    compares esper_func's ``_extra_state`` with the one esper-lite recorded
    for the same scenario in ``recorded_dir`` (:func:`compare_with_recorded`).
    """
    torch.set_num_threads(1)
    manifest = json.loads((directory / "manifest.json").read_text())
    recorded_path = recorded_dir / "manifest.json"
    recorded = {e["name"]: e for e in json.loads(recorded_path.read_text())["checkpoints"]} if recorded_path.exists() else {}
    results = []
    for entry in manifest["checkpoints"]:
        result: dict[str, Any] = {"name": entry["name"]}
        if entry.get("error"):
            result.update(produced=False, producer_error=entry["error"])
            results.append(result)
            continue
        result["produced"] = True
        state_dict = torch.load(directory / entry["file"], weights_only=True)
        outputs = torch.load(directory / entry["outputs_file"], weights_only=True)
        written = {
            "extra": {s: state_dict.get(_extra_key(s)) for s in entry["slots"]},
            "tensor_keys": [k for k, v in state_dict.items() if isinstance(v, Tensor)],
        }
        result["vs_recorded_esper_lite"] = compare_with_recorded(written, recorded.get(entry["name"]))
        try:
            model = load_into_esper_lite(state_dict, entry, el=el)
        except Exception as exc:
            result.update(
                loaded=False,
                error=_error(exc),
                diagnostics=diagnose(el, state_dict, entry),
                with_rejections_patched=patched_attempt(el, state_dict, entry, outputs),
            )
            results.append(result)
            continue
        result["loaded"] = True
        reproduced = compute_outputs(model, outputs["inputs"], entry["outputs"])
        result["max_abs_diff"] = {
            name: float((reproduced[name].double() - outputs[name].double()).abs().max())
            for name in entry["outputs"]
            if name in outputs
        }
        result["bitwise_equal"] = {name: bool(torch.equal(reproduced[name], outputs[name])) for name in entry["outputs"] if name in outputs}
        result["extra_state"] = {s: jsonable(_slot(model, s).get_extra_state()) for s in entry["slots"]}
        written = {s: jsonable(state_dict.get(_extra_key(s))) for s in entry["slots"]}
        result["extra_state_changes"] = {
            s: d for s in entry["slots"] if (d := json_diff(written[s], result["extra_state"][s]))
        }
        results.append(result)
    loaded = [r for r in results if r.get("loaded")]
    report = {
        "format": MANIFEST_FORMAT,
        "esper_lite_commit": ESPER_LITE_COMMIT,
        "producer": manifest.get("producer"),
        "summary": {
            "checkpoints": len(results),
            "produced": sum(1 for r in results if r["produced"]),
            "loaded": len(loaded),
            "max_abs_diff": max((v for r in loaded for v in r["max_abs_diff"].values()), default=None),
        },
        "results": results,
    }
    write_json(report_path, report)
    for r in results:
        status = "producer failed" if not r["produced"] else ("loaded" if r.get("loaded") else "REJECTED")
        detail = r.get("producer_error") or r.get("error") or f"max |diff| {max(r['max_abs_diff'].values(), default=0.0):.3g}"
        print(f"{r['name']}: {status}: {detail}")
    return report


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint directory (default: %(default)s)")
    parser.add_argument("--only", nargs="*", metavar="NAME", help="record only these scenarios (the manifest then lists only them)")
    parser.add_argument("--verify", action="store_true", help="reload the recorded checkpoints and check them; record nothing")
    parser.add_argument("--check-esper-func", type=Path, metavar="DIR", help="load esper_func's checkpoints from DIR into esper-lite")
    parser.add_argument("--report", type=Path, help=f"round-trip report path (default: OUT/{ROUNDTRIP_REPORT})")
    args = parser.parse_args(argv)
    el = import_esper_lite()
    if args.check_esper_func is not None:
        check_esper_func(el, args.check_esper_func, args.report or args.out / ROUNDTRIP_REPORT, args.out)
        return 0
    if args.verify:
        verify_all(el, args.out)
        return 0
    record_all(el, args.out, args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
