#!/usr/bin/env python
"""Record esper-lite 2016337e's behaviour as reference data for esper_func's replay tests.

This script runs esper-lite itself (imported from ``ESPER_LITE_SRC``; nothing of
esper-lite is copied here) and writes three kinds of traces plus a ``meta.json``
into ``tests/data/esper-lite-2016337e/``:

* ``lifecycle.json.gz`` -- random operation sequences driven through one
  ``SeedSlot``, with the return value, the telemetry events and the full state
  after every operation;
* ``controller.json.gz`` -- ``HeuristicTamiyo`` + ``SignalTracker`` driven the way
  esper-lite's heuristic training loop drives them, on random loss/accuracy series
  and three real ``SeedSlot``\\ s;
* ``governor.json.gz`` -- ``TolariaGovernor`` on random loss sequences, with
  rollbacks executed on a small ``MorphogeneticModel``.

The format is documented in the README.md that this script writes next to the data.

Usage::

    ESPER_LITE_SRC=/path/to/esper-lite/src python tools/record_esper_lite.py --out tests/data/esper-lite-2016337e
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import enum
import hashlib
import importlib
import json
import lzma
import math
import os
import platform
import random
import re
import sys
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

COMMIT = "2016337e"
FORMAT_VERSION = 1

# esper-lite files whose behaviour the data records: the recorder calls into the first twelve and restates
# loop logic from the last two. Their sha256 at 2016337e; the recorder refuses other sources unless told.
EXPECTED_SHA256: dict[str, str] = {
    "esper/kasmina/slot.py": "2362d210eb21838121ae44cc9422ae60d7fa4eb164201d48ec1ad0dea623bc6a",
    "esper/kasmina/alpha_controller.py": "dc28026e06eff49477a8bb4ec970d5b541f7ce1cf697b5599612ae3fcfbf54d7",
    "esper/kasmina/blending.py": "f49947b10f832a260ef10a87ce30def3e4ca221bc5b7f53056fed8b16edeac17",
    "esper/kasmina/host.py": "f473efcde17ec3b42fbb14633f8fd906b871c539398181333c74ab8a342f39bb",
    "esper/leyline/__init__.py": "8d767611aad2a386239a2bf3e2591a1a05dda550b77b42ab652d552e144d2e58",
    "esper/leyline/alpha.py": "d3bcce3452900d6621efe52388ce1444794a27ec85586b14f0d8f9eb56a6c785",
    "esper/leyline/stages.py": "fc1c498ce86d225482edc9ac751641cfb01c9121d5ebefe67841b1539f12e145",
    "esper/leyline/schemas.py": "ee0c19b39eef3244cef929809a72a3ff00c8370b7d64b060de4ad9df8f231669",
    "esper/leyline/telemetry.py": "8f85005842af583d683a89a25c47f3f0b9a704f9845ebf7517c559e12af1b37c",
    "esper/tamiyo/heuristic.py": "75020ddecaf63d4b12ac5bf1919831f65abc91c8f392dfe297c50e4eaf2dca59",
    "esper/tamiyo/tracker.py": "dae1f2b86ed64d476c1965aa43cd3fc3ba86f52b04270a6d80a1aabc5b9506e6",
    "esper/tolaria/governor.py": "55a6f2d468ed89879a58876d9e4917fe8cb1ca496596359defe62345c9cf8683",
    "esper/simic/training/helpers.py": "b64cf2c26523eafed82544c3ec3c2891295981219246672ce25a5894bc2e09d7",
    "esper/simic/training/vectorized_trainer.py": "aae226d48cbd06324ba528be2dd12fa149158c0e7b976e3d5a76ffb622af01f5",
}

SLOT_IDS = ("r0c0", "r0c1", "r0c2")
# Payload fields left out of recorded telemetry events: always None or a constant sentinel here
# (no morphology context is attached, no episode index, env_id is esper-lite's -1 placeholder).
DROPPED_EVENT_FIELDS = frozenset(
    {
        "env_id",
        "episode_idx",
        "morphology_proposal_id",
        "morphology_verdict_id",
        "morphology_mutation_id",
        "rng_stream",
        "rng_seed",
    }
)


class RecorderError(RuntimeError):
    """The recorder cannot run (no esper-lite, wrong esper-lite, bad arguments)."""


# --------------------------------------------------------------------------------------------------
# esper-lite import
# --------------------------------------------------------------------------------------------------


class Esper:
    """The esper-lite modules and names the recorder drives (all loaded at run time)."""

    def __init__(self, src: Path) -> None:
        self.src = src
        self.esper: ModuleType = importlib.import_module("esper")
        self.slot_mod: ModuleType = importlib.import_module("esper.kasmina.slot")
        self.host_mod: ModuleType = importlib.import_module("esper.kasmina.host")
        self.leyline: ModuleType = importlib.import_module("esper.leyline")
        self.alpha_mod: ModuleType = importlib.import_module("esper.leyline.alpha")
        self.heuristic: ModuleType = importlib.import_module("esper.tamiyo.heuristic")
        self.tracker: ModuleType = importlib.import_module("esper.tamiyo.tracker")
        self.governor: ModuleType = importlib.import_module("esper.tolaria.governor")
        self.SeedSlot: Any = self.slot_mod.SeedSlot
        self.QualityGates: Any = self.slot_mod.QualityGates
        self.SeedStage: Any = self.leyline.SeedStage
        self.GateLevel: Any = self.leyline.GateLevel
        self.AlphaAlgorithm: Any = self.alpha_mod.AlphaAlgorithm
        self.AlphaCurve: Any = self.alpha_mod.AlphaCurve
        self.AlphaMode: Any = self.alpha_mod.AlphaMode


def import_esper_lite() -> Esper:
    """Import esper-lite from ``ESPER_LITE_SRC`` or raise :class:`RecorderError` saying why not."""
    raw = os.environ.get("ESPER_LITE_SRC")
    if not raw:
        raise RecorderError(
            "ESPER_LITE_SRC is not set. Point it at the src/ directory of an esper-lite checkout at commit "
            f"{COMMIT} (the directory that contains esper/), e.g. ESPER_LITE_SRC=~/esper-lite/src."
        )
    src = Path(raw).expanduser().resolve()
    if not (src / "esper" / "kasmina" / "slot.py").is_file():
        raise RecorderError(
            f"ESPER_LITE_SRC={raw!r} does not contain esper/kasmina/slot.py; it must name esper-lite's src/ directory."
        )
    sys.path.insert(0, str(src))
    try:
        es = Esper(src)
    except Exception as exc:
        raise RecorderError(
            f"esper-lite at ESPER_LITE_SRC={raw!r} does not import: {type(exc).__name__}: {exc}"
        ) from exc
    loaded = Path(es.esper.__file__ or "").resolve()
    if src not in loaded.parents:
        raise RecorderError(
            f"`import esper` loaded {loaded}, not the copy under ESPER_LITE_SRC={src}; remove the other copy from the path."
        )
    return es


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprints(src: Path) -> dict[str, str]:
    return {rel: sha256_file(src / rel) for rel in EXPECTED_SHA256}


# --------------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------------


def enc(value: Any) -> Any:
    """Convert a recorded value into strict JSON data.

    Non-finite floats become ``{"$float": "nan" | "inf" | "-inf"}``; tuples and deques become lists;
    enum members become their integer values (the recorder names enums explicitly where a name is wanted).
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, enum.Enum):
        return int(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return {"$float": "nan"}
        if math.isinf(value):
            return {"$float": "inf" if value > 0 else "-inf"}
        return value
    if isinstance(value, dict):
        return {str(k): enc(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, deque)):
        return [enc(v) for v in value]
    raise TypeError(f"cannot record a {type(value).__name__}: {value!r}")


def dumps(value: Any) -> str:
    return json.dumps(enc(value), separators=(",", ":"), allow_nan=False)


def write_jsonl_xz(path: Path, header: dict[str, Any], records: Iterable[Any]) -> None:
    """Write a header line and one line per record, as strict JSON, xz-compressed (reproducible bytes)."""
    with lzma.open(path, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f:
        f.write(dumps(header) + "\n")
        for rec in records:
            f.write(dumps(rec) + "\n")


# --------------------------------------------------------------------------------------------------
# Observing a SeedSlot
# --------------------------------------------------------------------------------------------------


class NormsMonitor:
    """Stands in for esper-lite's ``GradientHealthMonitor``: returns the norms it is given.

    ``SeedSlot.capture_gradient_telemetry`` asks its monitor for ``host_grad_norm`` and
    ``seed_grad_norm``; everything after that (the parameter-normalised ratio, the cap, the EMA) is
    esper-lite's own code.
    """

    def __init__(self) -> None:
        self.host_grad_norm = 0.0
        self.seed_grad_norm = 0.0

    def register(self, host: Any, seed: Any) -> None:
        """Accept registration (esper-lite registers host and seed at germination)."""

    def reset(self) -> None:
        """Accept a reset (esper-lite resets the monitor when a seed is pruned or removed)."""

    def compute_gradient_health(self) -> dict[str, float]:
        return {"host_grad_norm": self.host_grad_norm, "seed_grad_norm": self.seed_grad_norm}


def host_standin(n_params: int) -> Any:
    """An ``nn.Module`` with exactly ``n_params`` trainable parameters (germinate counts them)."""
    import torch

    module = torch.nn.Module()
    module.weight = torch.nn.Parameter(torch.zeros(n_params))
    return module


def gate_result(result: Any) -> dict[str, Any]:
    return {
        "gate": result.gate.name,
        "passed": bool(result.passed),
        "score": float(result.score),
        "checks_passed": list(result.checks_passed),
        "checks_failed": list(result.checks_failed),
        "message": result.message,
    }


def event_record(event: Any) -> dict[str, Any]:
    data = None
    if event.data is not None:
        data = {k: v for k, v in dataclasses.asdict(event.data).items() if k not in DROPPED_EVENT_FIELDS}
    return {"type": event.event_type.name, "seed_id": event.seed_id, "slot_id": event.slot_id, "data": data}


def slot_state(slot: Any) -> dict[str, Any] | None:
    """The compact full state of a slot after an operation (``None`` when ``slot.state is None``)."""
    state = slot.state
    if state is None:
        return None
    seed_state = state.to_dict()
    del seed_state["stage_entered_at"]
    seed_state["stage_history"] = [stage for stage, _ in seed_state["stage_history"]]
    if seed_state["telemetry"] is not None:
        del seed_state["telemetry"]["captured_at"]
    schedule = slot.alpha_schedule
    return {
        "seed_state": seed_state,
        "auto_pruned": state.metrics.auto_pruned,
        "auto_prune_reason": state.metrics.auto_prune_reason,
        "alpha": slot.alpha,
        "slot": {
            "isolate_gradients": slot.isolate_gradients,
            "blend_out_freeze_active": slot._blend_out_freeze_active,
            "frozen_param_count": len(slot._blend_out_frozen_params),
            "pending_prune_reason": slot._pending_prune_reason,
            "pending_prune_initiator": slot._pending_prune_initiator,
            "blend_algorithm_id": slot._blend_algorithm_id,
            "blend_tempo_epochs": slot._blend_tempo_epochs,
            "blend_alpha_target": slot._blend_alpha_target,
            "resolved_topology": slot._resolved_topology,
            "has_seed": slot.seed is not None,
            "has_alpha_schedule": schedule is not None,
            "alpha_schedule_total_steps": None if schedule is None else schedule.total_steps,
            "alpha_schedule_current_step": None if schedule is None else schedule._current_step,
            "is_active": slot.is_active,
            "active_seed_params": slot.active_seed_params,
        },
    }


def extra_state(slot: Any) -> dict[str, Any]:
    """``slot.get_extra_state()`` with its wall-clock timestamps replaced by ``None`` (shape kept)."""
    data = copy.deepcopy(slot.get_extra_state())
    seed_state = data.get("seed_state")
    if seed_state is not None:
        seed_state["stage_entered_at"] = None
        seed_state["stage_history"] = [[stage, None] for stage, _ in seed_state["stage_history"]]
        if seed_state.get("telemetry") is not None:
            seed_state["telemetry"]["captured_at"] = None
    return data


def raised_in_esper(es: Esper, tb: TracebackType | None) -> bool:
    """True when the innermost frame of a traceback lies in esper-lite's source (or torch below it)."""
    frames = traceback.extract_tb(tb)
    src = str(es.src)
    return any(frame.filename.startswith(src) for frame in frames[1:])


def apply_contribution(metrics: Any, contribution: float) -> None:
    """esper-lite's counterfactual update, restated.

    esper-lite 2016337e writes the counterfactual contribution inline in
    ``simic/training/vectorized_trainer.py`` (fused validation, "solo" ablation result, ~1361-1388):
    the velocity is an EMA (0.7 old, 0.3 new) of the change since the previous measurement, updated only
    when a previous measurement exists; then the previous value and the contribution are both set to the
    new measurement. There is no function to call, so the recorder applies these three assignments to the
    slot's real ``SeedMetrics``.
    """
    prev = metrics._prev_contribution
    if prev is not None:
        metrics.contribution_velocity = 0.7 * metrics.contribution_velocity + 0.3 * (contribution - prev)
    metrics._prev_contribution = contribution
    metrics.counterfactual_contribution = contribution


class SlotDriver:
    """Applies recorded operations to one real ``SeedSlot`` and records what happened."""

    def __init__(self, es: Esper, slot: Any) -> None:
        self.es = es
        self.slot = slot
        self.monitor = NormsMonitor()
        self.events: list[Any] = []
        slot.isolation_monitor = self.monitor
        slot.on_telemetry = self.events.append
        slot.fast_mode = False

    def run(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Apply one operation; return ``{"op", "args", "returned" | "raised", "events"}``."""
        self.events.clear()
        record: dict[str, Any] = {"op": op, "args": args}
        try:
            returned = self._dispatch(op, args)
        except Exception as exc:
            if not raised_in_esper(self.es, exc.__traceback__):
                raise
            record["raised"] = {"type": type(exc).__name__, "message": str(exc)}
        else:
            record["returned"] = returned
        record["events"] = [event_record(e) for e in self.events]
        self.events.clear()
        return record

    def _dispatch(self, op: str, a: dict[str, Any]) -> Any:
        es, slot = self.es, self.slot
        if op == "germinate":
            host = None if a["host_params"] is None else host_standin(a["host_params"])
            slot.germinate(
                a["blueprint_id"],
                seed_id=a["seed_id"],
                host_module=host,
                blend_algorithm_id=a["blend_algorithm_id"],
                blend_tempo_epochs=a["blend_tempo_epochs"],
                alpha_algorithm=es.AlphaAlgorithm[a["alpha_algorithm"]],
                alpha_target=a["alpha_target"],
                topology=a["topology"],
            )
            return None
        if op == "advance_stage":
            target = None if a["target"] is None else es.SeedStage[a["target"]]
            return gate_result(slot.advance_stage(target))
        if op == "prune":
            return bool(slot.prune(a["reason"], initiator=a["initiator"]))
        if op == "schedule_prune":
            return bool(
                slot.schedule_prune(
                    steps=a["steps"],
                    curve=None if a["curve"] is None else es.AlphaCurve[a["curve"]],
                    steepness=a["steepness"],
                    reason=a["reason"],
                    initiator=a["initiator"],
                )
            )
        if op == "set_alpha_target":
            return bool(
                slot.set_alpha_target(
                    alpha_target=a["alpha_target"],
                    steps=a["steps"],
                    curve=None if a["curve"] is None else es.AlphaCurve[a["curve"]],
                    steepness=a["steepness"],
                    alpha_algorithm=None if a["alpha_algorithm"] is None else es.AlphaAlgorithm[a["alpha_algorithm"]],
                    initiator=a["initiator"],
                )
            )
        if op == "step_epoch":
            slot.auto_forward_gates = frozenset(es.GateLevel[g] for g in a["auto_forward"])
            slot.step_epoch()
            return None
        if op == "record_accuracy":
            slot.state.metrics.record_accuracy(a["accuracy"])
            return None
        if op == "capture_gradients":
            self.monitor.host_grad_norm = a["host_grad_norm"]
            self.monitor.seed_grad_norm = a["seed_grad_norm"]
            slot.capture_gradient_telemetry()
            return None
        if op == "sync_telemetry":
            slot.state.sync_telemetry(
                gradient_norm=a["gradient_norm"],
                gradient_health=a["gradient_health"],
                has_vanishing=a["has_vanishing"],
                has_exploding=a["has_exploding"],
                epoch=a["epoch"],
                max_epochs=a["max_epochs"],
            )
            return None
        if op == "record_contribution":
            apply_contribution(slot.state.metrics, a["contribution"])
            return None
        raise RecorderError(f"unknown operation {op!r}")


def refused(record: dict[str, Any]) -> bool:
    """Whether an operation record is a refusal: it raised, returned False, or its gate failed."""
    if "raised" in record:
        return True
    returned = record.get("returned")
    if returned is False:
        return True
    return isinstance(returned, dict) and not returned["passed"]


# --------------------------------------------------------------------------------------------------
# Operation generation (lifecycle traces and the governor's model)
# --------------------------------------------------------------------------------------------------

BLUEPRINTS = {
    "cnn": ("noop", "norm", "attention", "depthwise", "conv_small"),
    "transformer": ("noop", "norm", "lora", "mlp_small"),
}
BLENDS = (("ADD", "sigmoid"), ("ADD", "linear"), ("MULTIPLY", "sigmoid"), ("MULTIPLY", "linear"), ("GATE", "gated"))
CURVES = (None, "LINEAR", "COSINE", "SIGMOID")
STEEPNESS = (0.05, 1.0, 6.0, 12.0, 1e4)
REASONS = (
    "",
    "policy_prune",
    "no_improvement",
    "governor_nan",
    "governor_lobotomy",
    "governor_divergence",
    "governor_rollback",
)
INITIATORS = ("policy", "governor", "operator")
AUTO_FORWARD_SETS: tuple[tuple[str, ...], ...] = (
    (),
    ("G1",),
    ("G2",),
    ("G3",),
    ("G1", "G2"),
    ("G1", "G2", "G3"),
    ("G2", "G3"),
)
ALL_STAGES = (
    "UNKNOWN",
    "DORMANT",
    "GERMINATED",
    "TRAINING",
    "BLENDING",
    "HOLDING",
    "FOSSILIZED",
    "PRUNED",
    "EMBARGOED",
    "RESETTING",
)
STATE_OPS = frozenset({"record_accuracy", "sync_telemetry", "record_contribution"})


@dataclasses.dataclass
class GatesConfig:
    """The ``QualityGates`` arguments of a trace."""

    permissive: bool
    min_blending_epochs: int
    min_training_improvement: float = 0.5
    min_probation_stability: float = 0.95
    min_seed_gradient_ratio: float = 0.10
    min_gradient_health_for_blending: float = 0.7

    def build(self, es: Esper) -> Any:
        return es.QualityGates(**dataclasses.asdict(self))

    @staticmethod
    def draw(rng: random.Random, *, small_epochs: bool = False) -> GatesConfig:
        epochs = rng.choice((0, 1, 2, 3, 5)) if small_epochs else rng.choice((0, 1, 2, 3, 5, 10, 10))
        cfg = GatesConfig(permissive=rng.random() < 0.5, min_blending_epochs=epochs)
        if rng.random() < 0.2:
            cfg.min_training_improvement = rng.choice((0.0, 0.25, 1.0))
            cfg.min_seed_gradient_ratio = rng.choice((0.05, 0.1, 0.5))
            cfg.min_gradient_health_for_blending = rng.choice((0.5, 0.7, 0.9))
        return cfg


class Planner:
    """Chooses the next operation for one slot: mostly goal-directed, partly random.

    A goal is an episode of one seed's life: ``("fossilize",)`` drives the seed to FOSSILIZED;
    ``("prune", STAGE, method)`` drives it to STAGE and then prunes it (immediately or by a scheduled
    blend-out) and lets the cooldown run back to an empty slot. ``chaos`` is the probability of a random,
    possibly illegal, operation instead of the goal-directed one.
    """

    def __init__(
        self,
        rng: random.Random,
        gates: GatesConfig,
        *,
        chaos: float,
        topology: str,
        counter: list[int],
        fossilize_rate: float = 0.55,
    ) -> None:
        self.rng = rng
        self.gates = gates
        self.chaos = chaos
        self.topology = topology
        self.fossilize_rate = fossilize_rate
        self.accuracy = round(rng.uniform(20.0, 60.0), 3)
        self.goal: tuple[str, ...] = self._draw_goal()
        self.auto_forward = rng.choice(AUTO_FORWARD_SETS)
        self.counter = counter  # shared seed-id counter
        self.lingering = 0  # ops spent in the goal's terminal stage
        self.probe = False  # next goal-directed op asks the gate right after a bad measurement

    def _draw_goal(self) -> tuple[str, ...]:
        rng = self.rng
        if rng.random() < self.fossilize_rate:
            return ("fossilize",)
        stage = rng.choice(("GERMINATED", "TRAINING", "BLENDING", "BLENDING", "HOLDING", "HOLDING"))
        method = "prune" if stage in ("GERMINATED", "TRAINING") or rng.random() < 0.4 else "schedule_prune"
        return ("prune", stage, method)

    # -- argument helpers ---------------------------------------------------------------------------

    def acc(self, delta: float) -> dict[str, Any]:
        self.accuracy = round(min(99.0, max(0.5, self.accuracy + delta)), 3)
        return {"accuracy": self.accuracy}

    def germinate_args(self, *, valid: bool = True) -> dict[str, Any]:
        rng = self.rng
        topology = self.topology if rng.random() < 0.9 else rng.choice(("cnn", "transformer", None))
        algorithm, blend = rng.choice(BLENDS)
        tempo = rng.choice((1, 2, 3, 3, 5, 5, 8)) if rng.random() < 0.95 else 0
        self.counter[0] += 1
        args: dict[str, Any] = {
            "blueprint_id": rng.choice(BLUEPRINTS[topology or "cnn"]),
            "seed_id": None if rng.random() < 0.3 else f"seed-{self.counter[0]}",
            "host_params": rng.choice((None, 1000, 6418, 50000)),
            "blend_algorithm_id": blend,
            "blend_tempo_epochs": tempo,
            "alpha_algorithm": algorithm,
            "alpha_target": rng.choice((None, None, None, 1.0, 0.75, 0.5, 0.25)),
            "topology": topology,
        }
        if not valid:
            kind = rng.choice(("blend_mismatch", "gate_mismatch", "target", "blueprint", "topology"))
            if kind == "blend_mismatch":
                args["blend_algorithm_id"], args["alpha_algorithm"] = "gated", rng.choice(("ADD", "MULTIPLY"))
            elif kind == "gate_mismatch":
                args["blend_algorithm_id"], args["alpha_algorithm"] = rng.choice(("linear", "sigmoid")), "GATE"
            elif kind == "target":
                args["alpha_target"] = rng.choice((0.0, -0.5, 1.5))
            elif kind == "blueprint":
                args["blueprint_id"] = "no_such_blueprint"
            else:
                args["topology"] = "rnn"
        return args

    def schedule_args(self) -> dict[str, Any]:
        rng = self.rng
        return {
            "steps": rng.choice((1, 2, 3, 4)) if rng.random() < 0.85 else rng.choice((0, -1)),
            "curve": rng.choice(CURVES),
            "steepness": rng.choice(STEEPNESS),
            "reason": rng.choice(REASONS),
            "initiator": rng.choice(INITIATORS),
        }

    def retarget_args(self, target: float, *, algorithm: str | None = None) -> dict[str, Any]:
        rng = self.rng
        return {
            "alpha_target": target,
            "steps": rng.choice((0, 1, 2, 3, 4)),
            "curve": rng.choice(CURVES),
            "steepness": rng.choice(STEEPNESS),
            "alpha_algorithm": algorithm,
            "initiator": "policy",
        }

    def capture_args(self, state: Any, *, good: bool) -> dict[str, Any]:
        rng = self.rng
        host = round(rng.uniform(0.2, 3.0), 4) if rng.random() < 0.95 else 0.0
        if not good:
            return {"host_grad_norm": host, "seed_grad_norm": round(host * rng.uniform(0.0, 0.05), 5)}
        metrics = state.metrics if state is not None else None
        factor = 1.0
        if metrics is not None and metrics.host_param_count > 0 and metrics.seed_param_count > 0:
            factor = math.sqrt(metrics.host_param_count / metrics.seed_param_count)
        need = max(self.gates.min_seed_gradient_ratio, 0.01) * rng.uniform(1.2, 4.0) / factor
        host = max(host, 0.2)
        return {"host_grad_norm": host, "seed_grad_norm": round(host * need, 6)}

    def sync_args(self, *, good: bool, measured: bool = False) -> dict[str, Any]:
        rng = self.rng
        if good:
            health = round(rng.uniform(max(self.gates.min_gradient_health_for_blending, 0.0) + 0.01, 1.0), 4)
            exploding: bool | None = False
            vanishing: bool | None = rng.random() < 0.1
        else:
            health = round(rng.uniform(0.0, 1.0), 4)
            exploding = rng.choice((True, False, None))
            vanishing = rng.choice((True, False, None))
        unmeasured = not good and not measured and rng.random() < 0.3
        return {
            "gradient_norm": None if unmeasured else round(rng.uniform(0.01, 8.0), 4),
            "gradient_health": None if unmeasured else health,
            "has_vanishing": None if unmeasured else vanishing,
            "has_exploding": None if unmeasured else exploding,
            "epoch": rng.randint(0, 40),
            "max_epochs": rng.choice((25, 50)),
        }

    def step(self) -> tuple[str, dict[str, Any]]:
        auto = self.auto_forward if self.rng.random() < 0.85 else self.rng.choice(AUTO_FORWARD_SETS)
        return "step_epoch", {"auto_forward": list(auto)}

    # -- choosing -----------------------------------------------------------------------------------

    def next_op(self, slot: Any) -> tuple[str, dict[str, Any]]:
        if self.rng.random() < self.chaos:
            return self.random_op(slot)
        return self.goal_op(slot)

    def random_op(self, slot: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        state = slot.state
        ops = [
            "germinate",
            "advance_stage",
            "prune",
            "schedule_prune",
            "set_alpha_target",
            "step_epoch",
            "capture_gradients",
        ]
        weights = [1.0 if state is None else 0.3, 3, 0.7, 1.2, 2, 3, 1]
        if state is not None:
            ops += ["record_accuracy", "sync_telemetry", "record_contribution"]
            weights += [3, 1.5, 1.5]
        op = rng.choices(ops, weights=weights)[0]
        if op == "germinate":
            return op, self.germinate_args(valid=rng.random() < 0.6)
        if op == "advance_stage":
            return op, {"target": None if rng.random() < 0.4 else rng.choice(ALL_STAGES)}
        if op == "prune":
            return op, {"reason": rng.choice(REASONS), "initiator": rng.choice(INITIATORS)}
        if op == "schedule_prune":
            return op, self.schedule_args()
        if op == "set_alpha_target":
            target = rng.choice((1.0, 1.0, 0.5, 0.3, 0.999, 0.0, -0.25, 1.5, math.nan))
            algorithm = rng.choice((None, None, "ADD", "MULTIPLY", "GATE"))
            return op, self.retarget_args(target, algorithm=algorithm)
        if op == "step_epoch":
            return "step_epoch", {"auto_forward": list(rng.choice(AUTO_FORWARD_SETS))}
        if op == "capture_gradients":
            return op, self.capture_args(state, good=rng.random() < 0.5)
        if op == "record_accuracy":
            return op, self.acc(rng.uniform(-3.0, 3.0))
        if op == "sync_telemetry":
            return op, self.sync_args(good=rng.random() < 0.4)
        return "record_contribution", {"contribution": round(rng.uniform(-2.0, 4.0), 4)}

    def goal_op(self, slot: Any) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        state = slot.state
        if state is None:
            self.goal = self._draw_goal()
            self.lingering = 0
            return "germinate", self.germinate_args()
        stage = state.stage.name
        m = state.metrics
        ctrl = state.alpha_controller
        gates = self.gates
        goal = self.goal

        if stage in ("PRUNED", "EMBARGOED", "RESETTING"):
            return ("record_accuracy", self.acc(rng.uniform(-1, 1))) if rng.random() < 0.2 else self.step()
        if stage == "FOSSILIZED":
            self.lingering += 1
            return self.random_op(slot)

        if goal[0] == "prune" and goal[1] == stage:
            self.lingering += 1
            if self.lingering > rng.randint(1, 4):
                if goal[2] == "schedule_prune" and stage in ("BLENDING", "HOLDING"):
                    if ctrl.alpha_mode.name == "HOLD":
                        return "schedule_prune", self.schedule_args()
                    return self.step()
                return "prune", {"reason": rng.choice(REASONS), "initiator": rng.choice(INITIATORS)}
            # Linger in the stage: operations that do not move the seed on.
            if stage != "BLENDING" or ctrl.alpha_mode.name == "HOLD":
                return rng.choice(
                    (
                        ("record_accuracy", self.acc(rng.uniform(-1.0, 1.0))),
                        ("capture_gradients", self.capture_args(state, good=rng.random() < 0.5)),
                        ("step_epoch", {"auto_forward": []}),
                    )
                )

        if self.probe and stage in ("TRAINING", "HOLDING"):
            self.probe = False
            return "advance_stage", {"target": "FOSSILIZED" if stage == "HOLDING" else "BLENDING"}
        noise = rng.random() < 0.15
        if stage == "GERMINATED":
            if noise:
                return self.step()
            return "advance_stage", {"target": None if rng.random() < 0.6 else "TRAINING"}
        if stage == "TRAINING":
            if noise:
                return rng.choice(
                    (
                        self.step(),
                        ("capture_gradients", self.capture_args(state, good=False)),
                        ("record_accuracy", self.acc(rng.uniform(-2.0, 0.5))),
                        ("sync_telemetry", self.sync_args(good=False)),
                    )
                )
            if rng.random() < 0.12:
                # Ask before the seed is ready: the gate's failing checks.
                return "advance_stage", {"target": None if rng.random() < 0.6 else "BLENDING"}
            if rng.random() < 0.06:
                # A bad measurement, and the gate asked right after it.
                self.probe = True
                if gates.permissive:
                    return "sync_telemetry", self.sync_args(good=False, measured=True)
                return "capture_gradients", self.capture_args(state, good=False)
            if gates.permissive:
                tel = state.telemetry
                if (
                    tel is None
                    or tel.gradient_health is None
                    or tel.has_exploding
                    or tel.gradient_health < gates.min_gradient_health_for_blending
                ):
                    return "sync_telemetry", self.sync_args(good=True)
                if m.epochs_in_current_stage < gates.min_blending_epochs:
                    return "record_accuracy", self.acc(rng.uniform(-0.5, 1.0))
            else:
                if m.seed_gradient_norm_ratio is None or m.seed_gradient_norm_ratio < gates.min_seed_gradient_ratio:
                    return "capture_gradients", self.capture_args(state, good=True)
                if (
                    m.epochs_in_current_stage < gates.min_blending_epochs
                    or m.improvement_since_stage_start < gates.min_training_improvement
                ):
                    return "record_accuracy", self.acc(rng.uniform(0.05, 0.6))
            if rng.random() < 0.25:
                return "step_epoch", {"auto_forward": ["G2"] if rng.random() < 0.7 else list(self.auto_forward)}
            return "advance_stage", {"target": None if rng.random() < 0.6 else "BLENDING"}
        if stage == "BLENDING":
            if ctrl.alpha_mode.name != "HOLD":
                return ("record_accuracy", self.acc(rng.uniform(-0.3, 0.6))) if rng.random() < 0.3 else self.step()
            if ctrl.alpha_target < 1.0 - 1e-6:
                if rng.random() < 0.3:
                    return "record_accuracy", self.acc(rng.uniform(-0.3, 0.6))
                algorithm = rng.choice((None, None, None, "ADD", "MULTIPLY", "GATE"))
                return "set_alpha_target", self.retarget_args(1.0, algorithm=algorithm)
            if noise:
                return self.step()
            if not gates.permissive and m.epochs_in_current_stage < gates.min_blending_epochs:
                return "record_accuracy", self.acc(rng.uniform(-0.3, 0.6))
            if rng.random() < 0.25:
                return "step_epoch", {"auto_forward": ["G3"] if rng.random() < 0.7 else list(self.auto_forward)}
            return "advance_stage", {"target": None if rng.random() < 0.5 else "HOLDING"}
        if stage == "HOLDING":
            if rng.random() < 0.08:
                return "advance_stage", {"target": "FOSSILIZED" if rng.random() < 0.7 else None}
            if rng.random() < 0.05 and not gates.permissive:
                self.probe = True
                return "record_contribution", {"contribution": round(rng.uniform(-0.5, 0.99), 4)}
            if rng.random() < 0.12:
                target = rng.choice((0.5, 0.25, 0.8, 1.0))
                algorithm = rng.choice((None, "ADD", "MULTIPLY", "GATE"))
                return "set_alpha_target", self.retarget_args(target, algorithm=algorithm)
            if noise:
                return rng.choice((self.step(), ("record_accuracy", self.acc(rng.uniform(-1.0, 1.0)))))
            contribution = m.counterfactual_contribution
            if contribution is None or (not gates.permissive and contribution < 1.0) or rng.random() < 0.2:
                value = rng.uniform(1.0, 5.0) if rng.random() < 0.75 else rng.uniform(-1.0, 1.2)
                return "record_contribution", {"contribution": round(value, 4)}
            return "advance_stage", {"target": "FOSSILIZED" if rng.random() < 0.7 else None}
        return self.random_op(slot)


# --------------------------------------------------------------------------------------------------
# Lifecycle traces
# --------------------------------------------------------------------------------------------------


def lifecycle_trace(es: Esper, index: int, seed: int, *, extra_state_every: int) -> dict[str, Any]:
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    gates = GatesConfig.draw(rng)
    topology = "transformer" if rng.random() < 0.3 else "cnn"
    channels = rng.choice((8, 16))
    chaos = 0.5 if rng.random() < 0.15 else rng.choice((0.05, 0.1, 0.2))
    n_ops = rng.randint(100, 200)
    slot = es.SeedSlot("r0c0", channels=channels, gates=gates.build(es))
    driver = SlotDriver(es, slot)
    planner = Planner(rng, gates, chaos=chaos, topology=topology, counter=[0])

    ops: list[dict[str, Any]] = []
    fossilized_at: int | None = None
    for i in range(n_ops):
        op, args = planner.next_op(slot)
        if op in STATE_OPS and slot.state is None:
            continue
        before = (slot_state(slot), extra_state(slot))
        record = driver.run(op, args)
        record["after"] = slot_state(slot)
        if refused(record) and (record["after"], extra_state(slot)) != before:
            record["refused_but_changed"] = True
        if len(ops) % extra_state_every == extra_state_every - 1:
            record["extra_state"] = extra_state(slot)
        ops.append({"i": len(ops), **record})
        if slot.state is not None and slot.state.stage.name == "FOSSILIZED" and fossilized_at is None:
            fossilized_at = i
        # After fossilization: a few more operations (mostly refusals), then stop.
        if fossilized_at is not None and i - fossilized_at >= 12 and rng.random() < 0.3:
            break
    return {
        "id": f"lifecycle-{index:03d}",
        "rng_seed": seed,
        "slot_id": "r0c0",
        "channels": channels,
        "topology": topology,
        "scenario": None,
        "chaos": chaos,
        "gates": dataclasses.asdict(gates),
        "ops": ops,
        "final_extra_state": extra_state(slot),
    }


GOOD_SYNC: dict[str, Any] = {
    "gradient_norm": 1.0,
    "gradient_health": 0.95,
    "has_vanishing": False,
    "has_exploding": False,
    "epoch": 1,
    "max_epochs": 25,
}


def germ(
    algorithm: str = "ADD",
    blend: str = "sigmoid",
    tempo: int = 3,
    *,
    target: float | None = None,
    blueprint: str = "norm",
    seed_id: str = "s1",
    topology: str = "cnn",
) -> tuple[str, dict[str, Any]]:
    args = {
        "blueprint_id": blueprint,
        "seed_id": seed_id,
        "host_params": 6418,
        "blend_algorithm_id": blend,
        "blend_tempo_epochs": tempo,
        "alpha_algorithm": algorithm,
        "alpha_target": target,
        "topology": topology,
    }
    return "germinate", args


def step(*gates: str) -> tuple[str, dict[str, Any]]:
    return "step_epoch", {"auto_forward": list(gates)}


def retarget(
    target: float, steps: int, *, curve: str | None = None, algorithm: str | None = None
) -> tuple[str, dict[str, Any]]:
    args = {
        "alpha_target": target,
        "steps": steps,
        "curve": curve,
        "steepness": 12.0,
        "alpha_algorithm": algorithm,
        "initiator": "policy",
    }
    return "set_alpha_target", args


def prune_op(reason: str = "", initiator: str = "policy") -> tuple[str, dict[str, Any]]:
    return "prune", {"reason": reason, "initiator": initiator}


def schedule(steps: int, reason: str = "", *, curve: str | None = None) -> tuple[str, dict[str, Any]]:
    return "schedule_prune", {
        "steps": steps,
        "curve": curve,
        "steepness": 12.0,
        "reason": reason,
        "initiator": "policy",
    }


def goto(stage: str) -> tuple[str, dict[str, Any]]:
    return "goto", {"stage": stage}


SYNC = ("sync_telemetry", GOOD_SYNC)
ADVANCE = ("advance_stage", {"target": None})


def acc(value: float) -> tuple[str, dict[str, Any]]:
    return "record_accuracy", {"accuracy": value}


def contribution(value: float) -> tuple[str, dict[str, Any]]:
    return "record_contribution", {"contribution": value}


# Short scripted traces that pin behaviour the random traces reach rarely. Permissive gates with
# min_blending_epochs=0 unless a scenario names other gates; ("goto", STAGE) expands into the shortest
# sequence of recorded operations that reaches STAGE (advance; good telemetry; ticks; a contribution).
SCENARIOS: tuple[tuple[str, GatesConfig, list[tuple[str, dict[str, Any]]]], ...] = (
    (
        "gated_zero_tempo_via_advance",
        GatesConfig(permissive=True, min_blending_epochs=0),
        [germ("GATE", "gated", 0), goto("TRAINING"), SYNC, ADVANCE, step(), step(), ADVANCE, prune_op()],
    ),
    (
        "gated_zero_tempo_via_auto_forward",
        GatesConfig(permissive=True, min_blending_epochs=0),
        [germ("GATE", "gated", 0), step("G1"), SYNC, step("G2"), step("G3"), ADVANCE, step(), prune_op()],
    ),
    (
        "refused_germinate_overwrites_blend_settings",
        GatesConfig(permissive=True, min_blending_epochs=0),
        [
            germ("ADD", "sigmoid", 5),
            goto("TRAINING"),
            germ("ADD", "linear", 2, target=0.5, seed_id="s2"),
            SYNC,
            ADVANCE,
            step(),
            step(),
            step(),
            retarget(1.0, 2),
            step(),
            step(),
            goto("FOSSILIZED"),
        ],
    ),
    (
        "refused_germinate_breaks_gated_blend",
        GatesConfig(permissive=True, min_blending_epochs=0),
        [
            germ("GATE", "gated", 3),
            goto("TRAINING"),
            germ("MULTIPLY", "sigmoid", 2, seed_id="s2"),
            SYNC,
            ADVANCE,
            step(),
            ADVANCE,
            step(),
            prune_op(),
        ],
    ),
    (
        "accuracy_counts_in_cooldown",
        GatesConfig(permissive=False, min_blending_epochs=2),
        [
            germ(),
            acc(50.0),
            goto("TRAINING"),
            acc(51.0),
            prune_op("governor_nan", "governor"),
            acc(51.5),
            step(),
            acc(52.0),
            acc(52.5),
            acc(53.0),
            step(),
            acc(53.5),
            step(),
            acc(54.0),
            step(),
            germ(seed_id="s2"),
            acc(55.0),
            goto("TRAINING"),
        ],
    ),
    (
        "refused_prunes_in_cooldown",
        GatesConfig(permissive=True, min_blending_epochs=0),
        [
            germ(),
            goto("BLENDING"),
            prune_op("governor_nan", "governor"),
            prune_op("governor_lobotomy", "governor"),
            step(),
            prune_op("", "policy"),
            schedule(3, "governor_divergence"),
            step(),
            prune_op("governor_rollback", "governor"),
            step(),
            step(),
            step(),
            schedule(0, "policy_prune"),
            step(),
            prune_op("governor_nan", "governor"),
            step(),
        ],
    ),
    (
        "nan_alpha_target",
        GatesConfig(permissive=True, min_blending_epochs=0),
        [
            germ("ADD", "linear", 2),
            goto("HOLDING"),
            retarget(math.nan, 2),
            retarget(0.5, 2),
            step(),
            step(),
            retarget(math.nan, 3),
            step(),
            step(),
            step(),
            goto("FOSSILIZED"),
        ],
    ),
    (
        "blend_out_freeze_timing",
        GatesConfig(permissive=True, min_blending_epochs=0),
        [
            germ("MULTIPLY", "linear", 4),
            goto("HOLDING"),
            retarget(0.4, 2, curve="COSINE"),
            step(),
            step(),
            acc(40.0),
            step(),
            retarget(1.0, 2),
            step(),
            step(),
            ADVANCE,
            schedule(2, "policy_prune", curve="SIGMOID"),
            step(),
            step(),
            step(),
        ],
    ),
    (
        "alpha_algorithm_switches",
        GatesConfig(permissive=True, min_blending_epochs=0),
        [
            germ("ADD", "sigmoid", 2),
            goto("HOLDING"),
            retarget(1.0, 2, algorithm="GATE"),
            retarget(0.6, 0, algorithm="MULTIPLY"),
            retarget(1.0, 1, algorithm="GATE"),
            step(),
            ADVANCE,
            retarget(1.0, 3, algorithm="ADD"),
            retarget(0.7, 2, algorithm="GATE"),
            step(),
            step(),
            retarget(1.0, 2, algorithm="ADD"),
            step(),
            step(),
            goto("FOSSILIZED"),
        ],
    ),
    (
        "schedule_prune_paths",
        GatesConfig(permissive=True, min_blending_epochs=0),
        [
            germ("ADD", "linear", 4),
            goto("TRAINING"),
            SYNC,
            ADVANCE,
            step(),
            schedule(2, "ramping"),
            step(),
            step(),
            step(),
            ADVANCE,
            schedule(3, "from_holding"),
            step(),
            schedule(1, "again"),
            step(),
            step(),
            step(),
        ],
    ),
    (
        "auto_forward_strict",
        GatesConfig(permissive=False, min_blending_epochs=2),
        [
            germ("ADD", "linear", 1),
            acc(50.0),
            step("G1", "G2", "G3"),
            acc(50.2),
            ("capture_gradients", {"host_grad_norm": 1.0, "seed_grad_norm": 0.5}),
            step("G1", "G2", "G3"),
            acc(50.9),
            step("G1", "G2", "G3"),
            step("G1", "G2", "G3"),
            acc(51.0),
            step("G1", "G2", "G3"),
            acc(51.2),
            step("G1", "G2", "G3"),
            step("G1", "G2", "G3"),
            contribution(0.8),
            ("advance_stage", {"target": "FOSSILIZED"}),
            contribution(1.5),
            ("advance_stage", {"target": "FOSSILIZED"}),
        ],
    ),
    (
        "gradient_ratio_edges",
        GatesConfig(permissive=False, min_blending_epochs=0),
        [
            germ(blueprint="noop"),
            goto("TRAINING"),
            ("capture_gradients", {"host_grad_norm": 0.0, "seed_grad_norm": 1.0}),
            ("capture_gradients", {"host_grad_norm": 1e-9, "seed_grad_norm": 1.0}),
            ("capture_gradients", {"host_grad_norm": 1.0, "seed_grad_norm": 1.0}),
            ("capture_gradients", {"host_grad_norm": 0.01, "seed_grad_norm": 5.0}),
            prune_op(),
            ("capture_gradients", {"host_grad_norm": 1.0, "seed_grad_norm": 1.0}),
            step(),
            step(),
            step(),
            step(),
            step(),
            step(),
            step(),
            germ(blueprint="conv_small", seed_id="s2"),
            goto("TRAINING"),
            ("capture_gradients", {"host_grad_norm": 0.001, "seed_grad_norm": 1.0}),
            ("capture_gradients", {"host_grad_norm": 2.0, "seed_grad_norm": 0.01}),
            ADVANCE,
        ],
    ),
)


def scenario_next(slot: Any, target: str) -> tuple[str, dict[str, Any]]:
    """The next operation on the shortest path to ``target`` (permissive gates, min_blending_epochs=0)."""
    state = slot.state
    stage = state.stage.name
    if stage == "TRAINING" and (state.telemetry is None or state.telemetry.gradient_health is None):
        return SYNC
    if stage == "BLENDING" and state.alpha_controller.alpha_mode.name != "HOLD":
        return step()
    if stage == "HOLDING":
        if state.metrics.counterfactual_contribution is None:
            return contribution(2.0)
        return "advance_stage", {"target": "FOSSILIZED"}
    return ADVANCE


def scenario_trace(
    es: Esper, name: str, gates: GatesConfig, script: list[tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    slot = es.SeedSlot("r0c0", channels=8, gates=gates.build(es))
    driver = SlotDriver(es, slot)
    ops: list[dict[str, Any]] = []

    def run(op: str, args: dict[str, Any]) -> None:
        before = (slot_state(slot), extra_state(slot))
        record = driver.run(op, args)
        record["after"] = slot_state(slot)
        if refused(record) and (record["after"], extra_state(slot)) != before:
            record["refused_but_changed"] = True
        record["extra_state"] = extra_state(slot)
        ops.append({"i": len(ops), **record})

    for op, args in script:
        if op != "goto":
            run(op, args)
            continue
        for _ in range(40):
            if slot.state is None or slot.state.stage.name == args["stage"]:
                break
            run(*scenario_next(slot, args["stage"]))
        else:
            raise RecorderError(f"scenario {name}: cannot reach {args['stage']}")
    return {
        "id": f"lifecycle-scenario-{name}",
        "scenario": name,
        "rng_seed": None,
        "slot_id": "r0c0",
        "channels": 8,
        "topology": "cnn",
        "chaos": 0.0,
        "gates": dataclasses.asdict(gates),
        "ops": ops,
        "final_extra_state": extra_state(slot),
    }


# --------------------------------------------------------------------------------------------------
# Controller traces (HeuristicTamiyo + SignalTracker, driven like run_heuristic_episode)
# --------------------------------------------------------------------------------------------------

DEFAULT_ROTATION = ("conv_light", "conv_heavy", "attention", "norm", "depthwise")
ALL_ROTATION = ("conv_light", "conv_heavy", "attention", "norm", "depthwise", "bottleneck", "conv_small")


def draw_series(rng: random.Random, n: int) -> list[dict[str, float]]:
    """Random per-epoch (train loss, train accuracy, val loss, val accuracy) with regimes."""
    acc = rng.uniform(10.0, 45.0)
    loss = rng.uniform(1.4, 2.4)
    regime = "explosive" if rng.random() < 0.7 else rng.choice(("gain", "plateau"))
    left = rng.randint(2, 8)
    out = []
    spike_undo: tuple[float, float] | None = None
    for _ in range(n):
        if spike_undo is not None:
            loss, acc = spike_undo
            spike_undo = None
        if left <= 0:
            regime = rng.choices(
                ("explosive", "gain", "plateau", "noise", "regress", "spike"), weights=(0.5, 2, 3, 2, 1, 0.6)
            )[0]
            left = 1 if regime == "spike" else rng.randint(2, 10)
        left -= 1
        if regime == "explosive":
            loss *= rng.uniform(0.82, 0.95)
            acc += rng.uniform(1.0, 5.0)
        elif regime == "gain":
            loss *= rng.uniform(0.965, 0.995)
            acc += rng.uniform(0.3, 1.8)
        elif regime == "plateau":
            loss *= rng.uniform(0.99, 1.01)
            acc += rng.gauss(0.0, 0.25)
        elif regime == "noise":
            loss *= rng.uniform(0.95, 1.05)
            acc += rng.gauss(0.0, 1.0)
        elif regime == "regress":
            loss *= rng.uniform(1.02, 1.10)
            acc -= rng.uniform(0.3, 3.0)
        else:
            spike_undo = (loss, acc)
            loss *= rng.uniform(1.2, 2.0)
            acc -= rng.uniform(3.0, 10.0)
        acc = min(98.0, max(2.0, acc))
        loss = min(8.0, max(0.02, loss))
        out.append(
            {
                "train_loss": round(loss * rng.uniform(0.75, 1.0), 4),
                "train_accuracy": round(min(99.5, acc + rng.uniform(0.0, 6.0)), 3),
                "val_loss": round(loss, 4),
                "val_accuracy": round(acc, 3),
            }
        )
    return out


def signals_record(signals: Any) -> dict[str, Any]:
    """The tracker's outputs (its echo of the epoch's inputs and its last-5 histories are left out)."""
    m = signals.metrics
    return {
        "global_step": m.global_step,
        "loss_delta": m.loss_delta,
        "accuracy_delta": m.accuracy_delta,
        "plateau_epochs": m.plateau_epochs,
        "host_stabilized": m.host_stabilized,
        "best_val_accuracy": m.best_val_accuracy,
        "best_val_loss": m.best_val_loss,
        "active_seeds": list(signals.active_seeds),
        "available_slots": signals.available_slots,
        "seed_stage": signals.seed_stage,
        "seed_epochs_in_stage": signals.seed_epochs_in_stage,
        "seed_alpha": signals.seed_alpha,
        "seed_improvement": signals.seed_improvement,
    }


def controller_trace(es: Esper, index: int, seed: int) -> dict[str, Any]:
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    heur = es.heuristic
    policy_cfg: dict[str, Any] = {}
    if rng.random() < 0.55:
        policy_cfg.update(
            plateau_epochs_to_germinate=rng.choice((1, 2, 3)),
            min_epochs_before_germinate=rng.choice((0, 1, 2, 3, 5)),
        )
    if rng.random() < 0.4:
        policy_cfg.update(
            prune_after_epochs_without_improvement=rng.choice((1, 2, 3, 5)),
            prune_if_accuracy_drops_by=rng.choice((0.5, 1.0, 2.0)),
        )
    if rng.random() < 0.4:
        policy_cfg.update(
            min_improvement_to_fossilize=rng.choice((0.0, 0.5, 1.0, 2.0)),
            embargo_epochs_after_prune=rng.choice((0, 2, 5, 8)),
        )
    if rng.random() < 0.4:
        rotation = list(ALL_ROTATION)
        rng.shuffle(rotation)
        policy_cfg["blueprint_rotation"] = rotation[: rng.randint(1, len(rotation))]
    if rng.random() < 0.3:
        policy_cfg.update(
            blueprint_penalty_on_prune=rng.choice((1.0, 2.0, 4.0)),
            blueprint_penalty_decay=rng.choice((0.5, 0.8)),
            blueprint_penalty_threshold=rng.choice((1.5, 3.0)),
        )
    if rng.random() < 0.2:
        policy_cfg.update(
            ransomware_contribution_threshold=rng.choice((0.1, 0.5)),
            ransomware_improvement_threshold=rng.choice((0.0, 1.0)),
        )
    tracker_cfg: dict[str, Any] = {}
    if rng.random() < 0.45:
        tracker_cfg.update(
            stabilization_epochs=rng.choice((0, 1, 2, 3, 5)),
            stabilization_threshold=rng.choice((0.01, 0.03, 0.1)),
            regression_threshold=rng.choice((0.02, 0.05, 0.1)),
        )
    if rng.random() < 0.25:
        tracker_cfg.update(plateau_threshold_pct=rng.choice((0.2, 0.5, 1.0)), history_window=rng.choice((5, 10)))
    gates = GatesConfig.draw(rng, small_epochs=rng.random() < 0.7)
    n_epochs = rng.randint(30, 80)
    gradient_stride = rng.choice((0, 1, 1, 1, 2, 2, 3, 5, 10))
    counterfactual = rng.random() < 0.6
    contribution_mean = rng.choice((-0.5, 0.3, 0.8, 1.5, 1.5, 3.0, 3.0))
    sync_telemetry = rng.random() < (0.7 if gates.permissive else 0.35)
    host_params = 6418
    batches_per_epoch = 10

    policy = heur.HeuristicTamiyo(heur.HeuristicPolicyConfig(**policy_cfg), topology="cnn")
    full_policy_cfg = dataclasses.asdict(policy.config)
    tracker = es.tracker.SignalTracker(**tracker_cfg)
    quality_gates = gates.build(es)
    slots = {sid: es.SeedSlot(sid, channels=8, gates=quality_gates) for sid in SLOT_IDS}
    drivers = {sid: SlotDriver(es, slot) for sid, slot in slots.items()}
    for slot in slots.values():
        slot.isolate_gradients = True  # run_heuristic_episode sets this on every enabled slot
    host = host_standin(host_params)
    series = draw_series(rng, n_epochs)
    germinate_prefix = es.leyline.GERMINATE_PREFIX
    seeds_created = 0

    epochs: list[dict[str, Any]] = []
    for epoch in range(1, n_epochs + 1):
        obs = series[epoch - 1]
        events: list[dict[str, Any]] = []

        def collect(sid: str, events: list[dict[str, Any]] = events) -> None:
            events.extend(event_record(e) for e in drivers[sid].events)
            drivers[sid].events.clear()

        # 1. Gradient statistics (training phase), every gradient_stride epochs, on every slot.
        gradients: dict[str, list[float]] | None = None
        if gradient_stride > 0 and epoch % gradient_stride == 0:
            gradients = {}
            for sid, slot in slots.items():
                h = round(rng.uniform(0.2, 3.0), 4) if rng.random() < 0.95 else 0.0
                s = round(max(h, 0.2) * rng.uniform(0.0, 0.6), 5)
                gradients[sid] = [h, s]
                drivers[sid].monitor.host_grad_norm = h
                drivers[sid].monitor.seed_grad_norm = s
                slot.capture_gradient_telemetry()
        # 2. Counterfactual contributions (fused validation): active slots with alpha > 0, fossils excluded.
        contributions: dict[str, float] | None = None
        if counterfactual and rng.random() < 0.85:
            contributions = {}
            for sid, slot in slots.items():
                if (
                    slot.is_active
                    and slot.state is not None
                    and slot.alpha > 0
                    and slot.state.stage.name != "FOSSILIZED"
                ):
                    value = round(rng.gauss(contribution_mean, 0.8), 4)
                    contributions[sid] = value
                    apply_contribution(slot.state.metrics, value)
        # 3. Active seeds, accuracy recorded on them.
        active = [slots[sid].state for sid in SLOT_IDS if slots[sid].is_active and slots[sid].state is not None]
        for state in active:
            state.metrics.record_accuracy(obs["val_accuracy"])
        # 4. Optional telemetry sync (vectorized-trainer style) on active seeds.
        telemetry: dict[str, dict[str, Any]] | None = None
        if sync_telemetry:
            telemetry = {}
            for sid in SLOT_IDS:
                slot = slots[sid]
                if not (slot.is_active and slot.state is not None):
                    continue
                if rng.random() < 0.75:
                    args: dict[str, Any] = {
                        "gradient_norm": round(rng.uniform(0.05, 6.0), 4),
                        "gradient_health": round(rng.uniform(0.4, 1.0), 4),
                        "has_vanishing": rng.random() < 0.1,
                        "has_exploding": rng.random() < 0.08,
                    }
                else:
                    args = {
                        "gradient_norm": None,
                        "gradient_health": None,
                        "has_vanishing": None,
                        "has_exploding": None,
                    }
                args.update(epoch=epoch, max_epochs=n_epochs)
                telemetry[sid] = args
                slot.state.sync_telemetry(**args)
        # 5. Free slots counted before the lifecycle step; tracker update.
        available = sum(1 for sid in SLOT_IDS if slots[sid].state is None)
        signals = tracker.update(
            epoch=epoch,
            global_step=epoch * batches_per_epoch,
            train_loss=obs["train_loss"],
            train_accuracy=obs["train_accuracy"],
            val_loss=obs["val_loss"],
            val_accuracy=obs["val_accuracy"],
            active_seeds=active,
            available_slots=available,
        )
        # 6. Lifecycle mechanics on every slot.
        for sid in SLOT_IDS:
            slots[sid].step_epoch()
            collect(sid)
        # 7. Decision and its application.
        decision = policy.decide(signals, active)
        name = decision.action.name
        op = "GERMINATE" if name.startswith(germinate_prefix) else name
        blueprint = es.leyline.get_blueprint_from_action_name(name) if op == "GERMINATE" else None
        target_slot = None
        if decision.target_seed_id:
            matches = [
                sid
                for sid in SLOT_IDS
                if slots[sid].state is not None and slots[sid].state.seed_id == decision.target_seed_id
            ]
            if len(matches) != 1:
                raise RecorderError(f"target seed {decision.target_seed_id!r} in {matches}")
            target_slot = matches[0]
        free_slot = next((sid for sid in SLOT_IDS if slots[sid].state is None), None)
        applied: dict[str, Any] = {"op": op}
        if op == "GERMINATE":
            if free_slot is None:
                applied["skipped"] = "no_free_slot"
            else:
                seed_id = f"seed_{seeds_created}"
                applied.update(slot=free_slot, seed_id=seed_id, blueprint_id=blueprint)
                rec = drivers[free_slot].run(
                    "germinate",
                    {
                        "blueprint_id": blueprint,
                        "seed_id": seed_id,
                        "host_params": host_params,
                        "blend_algorithm_id": "sigmoid",
                        "blend_tempo_epochs": 5,
                        "alpha_algorithm": "ADD",
                        "alpha_target": None,
                        "topology": "cnn",
                    },
                )
                if "raised" in rec:
                    applied["raised"] = rec["raised"]
                else:
                    seeds_created += 1
                events.extend(rec["events"])
        elif op == "FOSSILIZE":
            if target_slot is None:
                applied["skipped"] = "no_target"
            elif slots[target_slot].state.stage.name != "HOLDING":
                applied.update(slot=target_slot, skipped="not_holding")
            else:
                rec = drivers[target_slot].run("advance_stage", {"target": "FOSSILIZED"})
                applied.update(slot=target_slot, returned=rec.get("returned"))
                events.extend(rec["events"])
                if rec["returned"]["passed"]:
                    slots[target_slot].set_alpha(1.0)
                    applied["set_alpha"] = 1.0
        elif op == "PRUNE":
            if target_slot is None:
                applied["skipped"] = "no_target"
            else:
                rec = drivers[target_slot].run("prune", {"reason": "", "initiator": "policy"})
                applied.update(slot=target_slot, returned=rec.get("returned"))
                events.extend(rec["events"])
        elif op == "ADVANCE":
            if target_slot is None:
                applied["skipped"] = "no_target"
            else:
                rec = drivers[target_slot].run("advance_stage", {"target": None})
                applied.update(slot=target_slot, returned=rec.get("returned"))
                if "raised" in rec:
                    applied["raised"] = rec["raised"]
                events.extend(rec["events"])
        epochs.append(
            {
                "epoch": epoch,
                "inputs": {**obs, "gradients": gradients, "contributions": contributions, "telemetry": telemetry},
                "active_seeds": [s.seed_id for s in active],
                "available_slots": available,
                "signals": signals_record(signals),
                "tracker": {"stable_count": tracker._stable_count},
                "decision": {
                    "action": name,
                    "op": op,
                    "blueprint_id": blueprint,
                    "target_seed_id": decision.target_seed_id,
                    "target_slot": target_slot,
                    "reason": decision.reason,
                    "confidence": decision.confidence,
                },
                "policy": {
                    "blueprint_index": policy._blueprint_index,
                    "germination_count": policy._germination_count,
                    "last_prune_epoch": policy._last_prune_epoch,
                    "last_decay_epoch": policy._last_decay_epoch,
                    "blueprint_penalties": dict(policy._blueprint_penalties),
                },
                "applied": applied,
                "events": events,
                "slots": {sid: slot_state(slots[sid]) for sid in SLOT_IDS},
            }
        )
    del host
    return {
        "id": f"controller-{index:03d}",
        "rng_seed": seed,
        "slots": [{"slot_id": sid, "channels": 8} for sid in SLOT_IDS],
        "topology": "cnn",
        "host_params": host_params,
        "batches_per_epoch": batches_per_epoch,
        "policy_config": full_policy_cfg,
        "policy_config_overrides": policy_cfg,
        "tracker_config": {
            "plateau_threshold_pct": tracker.plateau_threshold_pct,
            "history_window": tracker.history_window,
            "stabilization_threshold": tracker.stabilization_threshold,
            "stabilization_epochs": tracker.stabilization_epochs,
            "regression_threshold": tracker.regression_threshold,
        },
        "gates": dataclasses.asdict(gates),
        "gradient_stride": gradient_stride,
        "counterfactual": counterfactual,
        "sync_telemetry": sync_telemetry,
        "epochs": epochs,
    }


# --------------------------------------------------------------------------------------------------
# Governor traces
# --------------------------------------------------------------------------------------------------


def draw_losses(
    rng: random.Random, n: int, *, guess: float, absolute: float, min_panics: int
) -> list[tuple[str, float]]:
    """Random validation losses: warm-up, healthy noise, NaN/inf, lobotomy, divergence spikes, recoveries."""
    level = rng.uniform(0.3, 1.2)
    noise = rng.choice((0.005, 0.02, 0.05, 0.15))
    out: list[tuple[str, float]] = []
    plan: list[str] = []
    while len(out) < n:
        if not plan:
            r = rng.random()
            if len(out) < 3 and rng.random() < 0.08:
                plan = [rng.choice(("nan", "inf"))]
            elif r < 0.55:
                plan = ["normal"] * rng.randint(2, 8)
            elif r < 0.63:
                plan = [rng.choice(("nan", "inf", "-inf", "nan"))]
            elif r < 0.72:
                plan = ["lobotomy"]
            elif r < 0.82:
                plan = ["spike"]
            elif r < 0.95:
                plan = ["spike"] * rng.randint(2, max(2, min_panics + 1))
            else:
                plan = ["near_spike"] * rng.randint(1, 3)
        kind = plan.pop(0)
        level *= rng.uniform(0.985, 1.005)
        if kind == "normal":
            value = level + rng.gauss(0.0, noise * level)
        elif kind == "nan":
            value = math.nan
        elif kind == "inf":
            value = math.inf
        elif kind == "-inf":
            value = -math.inf
        elif kind == "lobotomy":
            value = guess + rng.uniform(-0.06, 0.06) * guess
        elif kind == "spike":
            value = max(absolute, level) * rng.uniform(1.05, 6.0) + rng.uniform(0.0, 5.0)
        else:
            # Fails exactly one of the three divergence conditions (or is close to the limits).
            value = rng.choice((absolute * rng.uniform(0.8, 0.999), level * rng.uniform(2.0, 4.0), absolute + 0.01))
        out.append((kind, round(value, 5) if math.isfinite(value) else value))
    return out


def governor_state(gov: Any) -> dict[str, Any]:
    return {
        "loss_history": list(gov.loss_history),
        "consecutive_panics": gov.consecutive_panics,
        "pending_panic": gov._pending_panic,
        "panic_reason": gov._panic_reason,
        "panic_loss": gov._panic_loss,
    }


def prune_spy(slot: Any, log: list[dict[str, Any]]) -> Callable[..., bool]:
    """Wrap ``slot.prune`` so that each call's arguments and result are appended to ``log``."""
    original = slot.prune

    def spy(reason: str = "", *, initiator: str = "policy") -> bool:
        result = bool(original(reason, initiator=initiator))
        log.append({"slot": slot.slot_id, "reason": reason, "initiator": initiator, "returned": result})
        return result

    return spy


def stage_name(slot: Any) -> str | None:
    return None if slot.state is None else slot.state.stage.name


def governor_trace(es: Esper, index: int, seed: int) -> dict[str, Any]:
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    ley = es.leyline
    kwargs: dict[str, Any] = {}
    if rng.random() < 0.6:
        if rng.random() < 0.5:
            kwargs["sensitivity"] = rng.choice((2.0, 3.0, 6.0))
        if rng.random() < 0.5:
            kwargs["multiplier"] = rng.choice((1.5, 2.0, 3.0))
        if rng.random() < 0.5:
            kwargs["absolute_threshold"] = rng.choice((1.0, 3.0, 12.0, 20.0))
        if rng.random() < 0.3:
            kwargs["death_penalty"] = rng.choice((5.0, 10.0, 25.0))
        if rng.random() < 0.5:
            kwargs["history_window"] = rng.choice((10, 12, 20, 30))
        if rng.random() < 0.5:
            kwargs["min_panics_before_rollback"] = rng.choice((1, 2, 3, 4))
        if rng.random() < 0.3:
            kwargs["random_guess_loss"] = rng.choice((math.log(100), math.log(1000), 1.0))
    base_channels = rng.choice((4, 8))
    host = es.host_mod.CNNHost(num_classes=10, n_blocks=3, base_channels=base_channels)
    model = es.host_mod.MorphogeneticModel(host, slots=list(SLOT_IDS))
    gates = GatesConfig.draw(rng, small_epochs=True)
    drivers: dict[str, SlotDriver] = {}
    planners: dict[str, Planner] = {}
    counter = [0]
    for sid in SLOT_IDS:
        slot = model.seed_slots[sid]
        slot.gates = gates.build(es)
        drivers[sid] = SlotDriver(es, slot)
        planners[sid] = Planner(rng, gates, chaos=0.03, topology="cnn", counter=counter, fossilize_rate=0.25)
    gov = es.governor.TolariaGovernor(model, **kwargs)
    resolved = {
        "sensitivity": gov.sensitivity,
        "multiplier": gov.multiplier,
        "absolute_threshold": gov.absolute_threshold,
        "death_penalty": gov.death_penalty,
        "history_window": gov.loss_history.maxlen,
        "min_panics_before_rollback": gov.min_panics_before_rollback,
        "random_guess_loss": gov.random_guess_loss,
    }
    n_epochs = rng.randint(30, 90)
    losses = draw_losses(
        rng,
        n_epochs,
        guess=gov.random_guess_loss,
        absolute=gov.absolute_threshold,
        min_panics=gov.min_panics_before_rollback,
    )
    host_params = [p for p in host.parameters()]
    snapshot_copies: dict[int, list[Any]] = {0: [p.detach().clone() for p in host_params]}
    last_snapshot_epoch = 0
    needs_snapshot = False
    gen = torch.Generator().manual_seed(seed)

    steps: list[dict[str, Any]] = []
    for epoch in range(1, n_epochs + 1):
        kind, loss = losses[epoch - 1]
        # Training moves the host weights (so that a rollback visibly restores them).
        with torch.no_grad():
            for p in host_params:
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
        step: dict[str, Any] = {"epoch": epoch, "loss": loss, "kind": kind, "needs_snapshot_before": needs_snapshot}
        panic = bool(gov.check_vital_signs(loss))
        step["returned"] = panic
        step["governor"] = governor_state(gov)
        step["snapshot"] = False
        if panic:
            before = {sid: slot_state(model.seed_slots[sid]) for sid in SLOT_IDS}
            # Each slot's prune() is observed (called through, its arguments and result logged).
            prunes: list[dict[str, Any]] = []
            for sid in SLOT_IDS:
                model.seed_slots[sid].prune = prune_spy(model.seed_slots[sid], prunes)
            try:
                report = gov.execute_rollback()
            finally:
                for sid in SLOT_IDS:
                    del model.seed_slots[sid].prune
            events: list[dict[str, Any]] = []
            for sid in SLOT_IDS:
                events.extend(event_record(e) for e in drivers[sid].events)
                drivers[sid].events.clear()
            restored = all(
                torch.equal(p, q) for p, q in zip(host_params, snapshot_copies[last_snapshot_epoch], strict=True)
            )
            step["rollback"] = {
                "slots_before": before,
                "prunes": prunes,
                "events": events,
                "report": {
                    "reason": report.reason,
                    "loss_at_panic": report.loss_at_panic,
                    "loss_threshold": report.loss_threshold,
                    "consecutive_panics": report.consecutive_panics,
                    "rollback_occurred": report.rollback_occurred,
                },
                "punishment": gov.get_punishment_reward(),
                "governor_after": governor_state(gov),
                "slots_after": {sid: slot_state(model.seed_slots[sid]) for sid in SLOT_IDS},
                "restored_snapshot_epoch": last_snapshot_epoch,
                "host_restored": restored,
            }
        else:
            if epoch % 5 == 0 or needs_snapshot:
                gov.snapshot()
                needs_snapshot = False
                step["snapshot"] = True
                last_snapshot_epoch = epoch
                snapshot_copies = {epoch: [p.detach().clone() for p in host_params]}
            # Action phase: lifecycle operations on the slots (skipped on a panic, as the trainer does).
            actions: list[dict[str, Any]] = []
            for sid in SLOT_IDS:
                slot = model.seed_slots[sid]
                for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
                    op, args = planners[sid].next_op(slot)
                    if op in STATE_OPS and slot.state is None:
                        continue
                    was = stage_name(slot)
                    rec = drivers[sid].run(op, args)
                    rec["slot"] = sid
                    del rec["events"]
                    actions.append(rec)
                    if was != "FOSSILIZED" and stage_name(slot) == "FOSSILIZED":
                        needs_snapshot = True  # the trainer's fossilize handler asks for a snapshot
                drivers[sid].events.clear()
            step["actions"] = actions
        step["stages"] = {sid: stage_name(model.seed_slots[sid]) for sid in SLOT_IDS}
        steps.append(step)
    del ley
    return {
        "id": f"governor-{index:03d}",
        "rng_seed": seed,
        "constructor_overrides": kwargs,
        "constructor": resolved,
        "host": {"kind": "CNNHost", "num_classes": 10, "n_blocks": 3, "base_channels": base_channels},
        "slots": [{"slot_id": sid, "channels": model.seed_slots[sid].channels} for sid in SLOT_IDS],
        "gates": dataclasses.asdict(gates),
        "steps": steps,
    }


def governor_constructor_errors(es: Esper) -> list[dict[str, Any]]:
    """Constructor arguments the governor refuses, with its exception."""
    import torch

    out = []
    for kwargs in ({"history_window": 9}, {"history_window": 1}, {"history_window": 0}):
        model = torch.nn.Linear(2, 2)
        try:
            es.governor.TolariaGovernor(model, **kwargs)
        except Exception as exc:
            out.append({"args": kwargs, "raised": {"type": type(exc).__name__, "message": str(exc)}})
        else:
            out.append({"args": kwargs, "raised": None})
    return out


# --------------------------------------------------------------------------------------------------
# Meta, coverage and README
# --------------------------------------------------------------------------------------------------


def enum_table(e: Any) -> dict[str, int]:
    return {name: int(member.value) for name, member in e.__members__.items()}


def constants(es: Esper) -> dict[str, Any]:
    ley = es.leyline
    names = (
        "DEFAULT_MIN_FOSSILIZE_CONTRIBUTION",
        "DEFAULT_GRADIENT_RATIO_THRESHOLD",
        "DEFAULT_MIN_PROBATION_STABILITY",
        "DEFAULT_GRADIENT_EMA_DECAY",
        "DEFAULT_BLENDING_TOTAL_STEPS",
        "DEFAULT_MIN_TRAINING_IMPROVEMENT",
        "DEFAULT_MIN_BLENDING_EPOCHS",
        "DEFAULT_MIN_GRADIENT_HEALTH_FOR_BLENDING",
        "DEFAULT_EMBARGO_EPOCHS_AFTER_PRUNE",
        "DEFAULT_GOVERNOR_SENSITIVITY",
        "DEFAULT_GOVERNOR_ABSOLUTE_THRESHOLD",
        "DEFAULT_GOVERNOR_DEATH_PENALTY",
        "DEFAULT_GOVERNOR_HISTORY_WINDOW",
        "MIN_GOVERNOR_HISTORY_SAMPLES",
        "DEFAULT_MIN_PANICS_BEFORE_ROLLBACK",
        "DEFAULT_GOVERNOR_LOSS_MULTIPLIER",
        "DEFAULT_STABILIZATION_THRESHOLD",
        "DEFAULT_STABILIZATION_EPOCHS",
    )
    out: dict[str, Any] = {n: getattr(ley, n) for n in names}
    out["MAX_GRADIENT_RATIO"] = es.slot_mod.MAX_GRADIENT_RATIO
    out["GRADIENT_EPSILON"] = es.slot_mod.GRADIENT_EPSILON
    out["VALID_TRANSITIONS"] = {k.name: [v.name for v in vs] for k, vs in ley.VALID_TRANSITIONS.items()}
    return out


_NUM = re.compile(r"-?\d+(\.\d+)?")


def shape(check: str) -> str:
    """A check string with its numbers replaced by ``N`` (for coverage counts)."""
    return _NUM.sub("N", check)


def lifecycle_coverage(traces: list[dict[str, Any]]) -> dict[str, Any]:
    ops: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    transitions: Counter[str] = Counter()
    gate_checks: Counter[str] = Counter()
    gate_results: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    refusals: Counter[str] = Counter()
    changed = 0
    stage_names = {v: k for k, v in ALL_STAGE_VALUES.items()}
    fossilized: Counter[str] = Counter()
    traces_fossilized: Counter[str] = Counter()
    recycled = 0
    germinations: Counter[str] = Counter()
    retargets: Counter[str] = Counter()
    for trace in traces:
        mode = "permissive" if trace["gates"]["permissive"] else "strict"
        reached: set[str] = set()
        algorithms_fossilized: set[str] = set()
        saw_dormant_after_state = False
        prev_after: dict[str, Any] | None = None
        for rec in trace["ops"]:
            op = rec["op"]
            ops[op] += 1
            after = rec["after"]
            args = rec["args"]
            if op == "germinate" and "raised" not in rec and after is not None:
                germinations[
                    f"{after['slot']['resolved_topology']} {args['alpha_algorithm']} {args['blend_algorithm_id']}"
                ] += 1
            if op == "set_alpha_target" and rec.get("returned") is True and prev_after is not None:
                old = ALGORITHM_NAMES[prev_after["seed_state"]["alpha_algorithm"]]
                new = args["alpha_algorithm"] or old
                stage = stage_names[prev_after["seed_state"]["stage"]]
                target = args["alpha_target"]
                kind = "full" if isinstance(target, float) and target >= 1.0 - 1e-6 else "partial"
                retargets[f"from {stage}, {kind} target, {old}->{new}"] += 1
            if "raised" in rec:
                outcomes[f"{op}: raised {rec['raised']['type']}"] += 1
                exceptions[f"{op}: {rec['raised']['type']}: {shape(rec['raised']['message'])[:110]}"] += 1
            elif isinstance(rec["returned"], bool):
                outcomes[f"{op}: {'accepted' if rec['returned'] else 'refused'}"] += 1
                if not rec["returned"]:
                    refusals[f"{op}: {refusal_path(op, rec['args'], prev_after)}"] += 1
            elif isinstance(rec["returned"], dict):
                r = rec["returned"]
                outcomes[f"{op}: gate {'passed' if r['passed'] else 'failed'}"] += 1
                gate_results[f"{r['gate']} {mode} {'passed' if r['passed'] else 'failed'}"] += 1
                for c in r["checks_passed"]:
                    gate_checks[f"{r['gate']} {mode} pass {shape(c)}"] += 1
                for c in r["checks_failed"]:
                    gate_checks[f"{r['gate']} {mode} fail {shape(c)}"] += 1
            if rec.get("refused_but_changed"):
                changed += 1
            for ev in rec["events"]:
                if ev["type"] == "SEED_STAGE_CHANGED":
                    transitions[f"{ev['data']['from_stage']}->{ev['data']['to_stage']}"] += 1
            if after is not None:
                name = stage_names[after["seed_state"]["stage"]]
                stages[name] += 1
                reached.add(name)
                if name == "FOSSILIZED":
                    algorithms_fossilized.add(ALGORITHM_NAMES[after["seed_state"]["alpha_algorithm"]])
                if saw_dormant_after_state and name == "GERMINATED":
                    recycled += 1
                    saw_dormant_after_state = False
            elif prev_after is not None:
                saw_dormant_after_state = True
            prev_after = after
        if "FOSSILIZED" in reached:
            traces_fossilized[mode] += 1
            for a in algorithms_fossilized:
                fossilized[f"{mode} {a}"] += 1
    return {
        "traces": len(traces),
        "ops": sum(ops.values()),
        "op_counts": dict(sorted(ops.items())),
        "outcomes": dict(sorted(outcomes.items())),
        "stages_after_op": dict(sorted(stages.items())),
        "transitions": dict(sorted(transitions.items())),
        "gate_results": dict(sorted(gate_results.items())),
        "gate_checks": dict(sorted(gate_checks.items())),
        "refusal_paths": dict(sorted(refusals.items())),
        "exceptions": dict(sorted(exceptions.items())),
        "refused_but_changed": changed,
        "traces_reaching_fossilized": dict(sorted(traces_fossilized.items())),
        "fossilized_by_mode_and_algorithm": dict(sorted(fossilized.items())),
        "regerminations_after_cooldown": recycled,
        "germinations": dict(sorted(germinations.items())),
        "accepted_retargets": dict(sorted(retargets.items())),
        "scenario_traces": sum(t["scenario"] is not None for t in traces),
        "traces_by_mode": dict(Counter("permissive" if t["gates"]["permissive"] else "strict" for t in traces)),
    }


ALL_STAGE_VALUES = {
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
ALGORITHM_NAMES = {1: "ADD", 2: "MULTIPLY", 3: "GATE"}


def refusal_path(op: str, args: dict[str, Any], before: dict[str, Any] | None) -> str:
    """Which of esper-lite's refusal branches a refused request took (derived from the state before it)."""
    if before is None:
        return "no_state"
    stage = {v: k for k, v in ALL_STAGE_VALUES.items()}[before["seed_state"]["stage"]]
    mode = before["seed_state"]["alpha_controller"]["alpha_mode"]
    if stage == "FOSSILIZED":
        return "fossilized"
    if op == "prune":
        return f"transition_invalid_from_{stage}"
    if op == "schedule_prune":
        if args["steps"] <= 0 or before["alpha"] <= 0.0:
            return f"delegated_to_prune_from_{stage}"
        if mode != 0:
            return "controller_not_hold"
        return f"delegated_to_prune_from_{stage}"
    if op == "set_alpha_target":
        target = args["alpha_target"]
        if isinstance(target, float) and not math.isnan(target) and target <= 0.0:
            return "target_not_positive"
        if mode != 0:
            return "controller_not_hold"
        return f"stage_{stage}"
    return stage


def controller_coverage(traces: list[dict[str, Any]]) -> dict[str, Any]:
    actions: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    applied: Counter[str] = Counter()
    gates: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    fossilized_traces = 0
    epochs = 0
    stage_names = {v: k for k, v in ALL_STAGE_VALUES.items()}
    for trace in traces:
        mode = "permissive" if trace["gates"]["permissive"] else "strict"
        fossil = False
        for ep in trace["epochs"]:
            epochs += 1
            d = ep["decision"]
            actions[d["op"]] += 1
            reasons[shape(d["reason"])] += 1
            a = ep["applied"]
            if "skipped" in a:
                applied[f"{a['op']}: skipped {a['skipped']}"] += 1
            elif "raised" in a:
                applied[f"{a['op']}: raised {a['raised']['type']}"] += 1
            elif isinstance(a.get("returned"), dict):
                r = a["returned"]
                applied[f"{a['op']}: gate {'passed' if r['passed'] else 'failed'}"] += 1
                gates[f"{r['gate']} {mode} {'passed' if r['passed'] else 'failed'}"] += 1
            elif "returned" in a:
                applied[f"{a['op']}: {'accepted' if a['returned'] else 'refused'}"] += 1
            else:
                applied[a["op"]] += 1
            for st in ep["slots"].values():
                if st is not None:
                    name = stage_names[st["seed_state"]["stage"]]
                    stages[name] += 1
                    fossil |= name == "FOSSILIZED"
        fossilized_traces += fossil
    return {
        "traces": len(traces),
        "epochs": epochs,
        "decisions": dict(sorted(actions.items())),
        "decision_reasons": dict(sorted(reasons.items())),
        "applied": dict(sorted(applied.items())),
        "gate_results": dict(sorted(gates.items())),
        "slot_stages_after_epoch": dict(sorted(stages.items())),
        "traces_with_a_fossil": fossilized_traces,
        "traces_with_counterfactual": sum(t["counterfactual"] for t in traces),
        "traces_with_telemetry_sync": sum(t["sync_telemetry"] for t in traces),
        "traces_by_mode": dict(Counter("permissive" if t["gates"]["permissive"] else "strict" for t in traces)),
    }


def governor_coverage(data: dict[str, Any]) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    panics: Counter[str] = Counter()
    prunes: Counter[str] = Counter()
    before_stages: Counter[str] = Counter()
    snapshots = 0
    steps = 0
    single_spikes = 0
    stage_names = {v: k for k, v in ALL_STAGE_VALUES.items()}
    for trace in data["traces"]:
        for st in trace["steps"]:
            steps += 1
            kinds[st["kind"]] += 1
            snapshots += st["snapshot"]
            if st["returned"]:
                panics[st["governor"]["panic_reason"] or "none"] += 1
                for p in st["rollback"]["prunes"]:
                    prunes[f"{p['reason']} {p['initiator']} {'accepted' if p['returned'] else 'refused'}"] += 1
                for s in st["rollback"]["slots_before"].values():
                    before_stages["empty" if s is None else stage_names[s["seed_state"]["stage"]]] += 1
            elif st["governor"]["pending_panic"]:
                single_spikes += 1
    return {
        "traces": len(data["traces"]),
        "steps": steps,
        "loss_kinds": dict(sorted(kinds.items())),
        "rollbacks_by_reason": dict(sorted(panics.items())),
        "pending_panics_without_rollback": single_spikes,
        "snapshots": snapshots,
        "slot_stages_at_rollback": dict(sorted(before_stages.items())),
        "rollback_prunes": dict(sorted(prunes.items())),
        "constructor_errors": len(data["constructor_errors"]),
    }


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def record(
    out: Path,
    *,
    n_lifecycle: int,
    n_controller: int,
    n_governor: int,
    base_seed: int,
    extra_state_every: int,
    allow_other_source: bool,
) -> dict[str, Any]:
    import torch

    es = import_esper_lite()
    prints = fingerprints(es.src)
    mismatched = [rel for rel, digest in EXPECTED_SHA256.items() if prints[rel] != digest]
    if mismatched and not allow_other_source:
        raise RecorderError(
            f"ESPER_LITE_SRC is not esper-lite {COMMIT}: {', '.join(mismatched)} "
            f"{'differs' if len(mismatched) == 1 else 'differ'} from {COMMIT}'s. "
            "Pass --allow-other-source to record it anyway (then the data no longer describes the reference)."
        )
    torch.use_deterministic_algorithms(True)
    out.mkdir(parents=True, exist_ok=True)

    lifecycle = [lifecycle_trace(es, i, base_seed + i, extra_state_every=extra_state_every) for i in range(n_lifecycle)]
    lifecycle += [scenario_trace(es, name, gates, script) for name, gates, script in SCENARIOS]
    controller = [controller_trace(es, i, base_seed + 10_000 + i) for i in range(n_controller)]
    governor = {
        "traces": [governor_trace(es, i, base_seed + 20_000 + i) for i in range(n_governor)],
        "constructor_errors": governor_constructor_errors(es),
    }
    files: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
        "lifecycle.jsonl.xz": ({"format": FORMAT_VERSION, "kind": "lifecycle", "commit": COMMIT}, lifecycle),
        "controller.jsonl.xz": ({"format": FORMAT_VERSION, "kind": "controller", "commit": COMMIT}, controller),
        "governor.jsonl.xz": (
            {
                "format": FORMAT_VERSION,
                "kind": "governor",
                "commit": COMMIT,
                "constructor_errors": governor["constructor_errors"],
            },
            governor["traces"],
        ),
    }
    file_meta: dict[str, Any] = {}
    for name, (header, records) in files.items():
        write_jsonl_xz(out / name, header, records)
        file_meta[name] = {
            "kind": header["kind"],
            "records": len(records),
            "sha256": sha256_file(out / name),
            "bytes": (out / name).stat().st_size,
        }
    coverage = {
        "lifecycle": lifecycle_coverage(lifecycle),
        "controller": controller_coverage(controller),
        "governor": governor_coverage(governor),
    }
    meta = {
        "format": FORMAT_VERSION,
        "esper_lite_commit": COMMIT,
        "source_sha256": prints,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "recorder": {
            "script": "tools/record_esper_lite.py",
            "settings": {
                "lifecycle_traces": n_lifecycle,
                "controller_traces": n_controller,
                "governor_traces": n_governor,
                "base_seed": base_seed,
                "lifecycle_rng_seeds": f"base_seed + i (i < {n_lifecycle})",
                "controller_rng_seeds": f"base_seed + 10000 + i (i < {n_controller})",
                "governor_rng_seeds": f"base_seed + 20000 + i (i < {n_governor})",
                "extra_state_every": extra_state_every,
                "dropped_event_fields": sorted(DROPPED_EVENT_FIELDS),
            },
        },
        "enums": {
            "SeedStage": enum_table(es.SeedStage),
            "GateLevel": enum_table(es.GateLevel),
            "AlphaAlgorithm": enum_table(es.AlphaAlgorithm),
            "AlphaCurve": enum_table(es.AlphaCurve),
            "AlphaMode": enum_table(es.AlphaMode),
        },
        "constants": constants(es),
        "files": {**file_meta},
        "counts": {"lifecycle": len(lifecycle), "controller": len(controller), "governor": len(governor["traces"])},
        "coverage": coverage,
    }
    (out / "meta.json").write_text(json.dumps(enc(meta), indent=1, allow_nan=False) + "\n")
    write_readme(out / "README.md", meta)
    return meta


COVERAGE_BEGIN = "<!-- coverage:begin (written by tools/record_esper_lite.py) -->"
COVERAGE_END = "<!-- coverage:end -->"


def _kv(counts: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _table(title: str, counts: dict[str, Any]) -> list[str]:
    lines = [f"**{title}**", "", "| case | count |", "| --- | ---: |"]
    lines += [f"| `{k}` | {v} |" for k, v in counts.items()]
    return [*lines, ""]


def render_coverage(meta: dict[str, Any]) -> str:
    """The README's coverage section, from ``meta["coverage"]``."""
    cov = meta["coverage"]
    lc, ct, gv = cov["lifecycle"], cov["controller"], cov["governor"]
    sizes = ", ".join(
        f"`{name}` {info['bytes'] / 1e6:.2f} MB ({info['records']} traces)" for name, info in meta["files"].items()
    )
    out = [
        COVERAGE_BEGIN,
        "",
        f"Recorded with torch {meta['torch_version']}, Python {meta['python_version']}. Files: {sizes}.",
        "",
        "### Lifecycle traces",
        "",
        f"{lc['traces']} traces ({lc['scenario_traces']} of them scripted scenarios; gate modes: "
        f"{_kv(lc['traces_by_mode'])}), {lc['ops']} operations. Traces reaching FOSSILIZED: "
        f"{_kv(lc['traces_reaching_fossilized'])}; traces fossilizing a seed, by gate mode and algorithm: "
        f"{_kv(lc['fossilized_by_mode_and_algorithm'])}. Re-germinations after a full cooldown: "
        f"{lc['regerminations_after_cooldown']}. Refused or failed operations that still changed the state "
        f"(`refused_but_changed`): {lc['refused_but_changed']}.",
        "",
    ]
    out += _table("Operations", lc["op_counts"])
    out += _table("Germinations (topology, algorithm, blend)", lc["germinations"])
    out += _table(
        "Accepted `set_alpha_target` calls (stage before, target, algorithm switch)", lc["accepted_retargets"]
    )
    out += _table("Outcomes", lc["outcomes"])
    out += _table("Stage after an operation", lc["stages_after_op"])
    out += _table("Stage transitions (SEED_STAGE_CHANGED events)", lc["transitions"])
    out += _table("Gate results", lc["gate_results"])
    out += _table("Gate checks (numbers shown as N)", lc["gate_checks"])
    out += _table("Refusals (`returned: false`), by the branch the state before them selects", lc["refusal_paths"])
    out += _table("Exceptions (numbers shown as N, messages cut at 110 characters)", lc["exceptions"])
    out += [
        "### Controller traces",
        "",
        f"{ct['traces']} traces (gate modes: {_kv(ct['traces_by_mode'])}), {ct['epochs']} epochs; {ct['traces_with_counterfactual']} "
        f"with counterfactual contributions, {ct['traces_with_telemetry_sync']} with telemetry sync; "
        f"{ct['traces_with_a_fossil']} traces fossilize at least one seed.",
        "",
    ]
    out += _table("Decisions", ct["decisions"])
    out += _table("Decision reasons (numbers shown as N)", ct["decision_reasons"])
    out += _table("Decisions as applied", ct["applied"])
    out += _table("Gate results of applied decisions", ct["gate_results"])
    out += _table("Slot stages after an epoch", ct["slot_stages_after_epoch"])
    out += [
        "### Governor traces",
        "",
        f"{gv['traces']} traces, {gv['steps']} steps, {gv['snapshots']} snapshots, "
        f"{gv['pending_panics_without_rollback']} steps with a pending (not yet rolled back) divergence panic, "
        f"{gv['constructor_errors']} refused constructor calls.",
        "",
    ]
    out += _table("Loss kinds drawn", gv["loss_kinds"])
    out += _table("Rollbacks by panic reason", gv["rollbacks_by_reason"])
    out += _table("Slot stages at a rollback", gv["slot_stages_at_rollback"])
    out += _table("Prunes during rollbacks (reason, initiator, result)", gv["rollback_prunes"])
    return "\n".join([*out, COVERAGE_END])


def write_readme(path: Path, meta: dict[str, Any]) -> None:
    """Replace the coverage section of the README (between its markers); the rest is hand-written."""
    section = render_coverage(meta)
    if path.exists():
        text = path.read_text()
        if COVERAGE_BEGIN in text and COVERAGE_END in text:
            head, rest = text.split(COVERAGE_BEGIN, 1)
            _, tail = rest.split(COVERAGE_END, 1)
            path.write_text(head + section + tail)
            return
    path.write_text(f"# esper-lite {COMMIT} reference data\n\n## Coverage\n\n{section}\n")


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="output directory, e.g. tests/data/esper-lite-2016337e")
    parser.add_argument("--lifecycle", type=int, default=100, help="number of lifecycle traces")
    parser.add_argument("--controller", type=int, default=200, help="number of controller traces")
    parser.add_argument("--governor", type=int, default=200, help="number of governor traces")
    parser.add_argument("--seed", type=int, default=2016337, help="base random seed")
    parser.add_argument("--extra-state-every", type=int, default=10, help="record get_extra_state() every N operations")
    parser.add_argument(
        "--allow-other-source", action="store_true", help="record even if the esper-lite files differ from 2016337e's"
    )
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        meta = record(
            args.out,
            n_lifecycle=args.lifecycle,
            n_controller=args.controller,
            n_governor=args.governor,
            base_seed=args.seed,
            extra_state_every=args.extra_state_every,
            allow_other_source=args.allow_other_source,
        )
    except RecorderError as exc:
        print(f"record_esper_lite: {exc}", file=sys.stderr)
        return 2
    total = sum(f["bytes"] for f in meta["files"].values())
    print(f"wrote {args.out} ({total / 1e6:.2f} MB): {meta['counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
