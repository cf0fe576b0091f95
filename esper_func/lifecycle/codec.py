"""One codec for :class:`SeedState` and its parts, derived from the dataclass fields.

Two layouts are written and read:

- **esper_func JSON** (:func:`state_to_dict` / :func:`state_from_dict`): every
  field under its own name, enums as integers, tagged with ``"schema":
  "esper_func.SeedState"`` and ``"schema_version"``. Only ``dict``/``list``/
  ``str``/``int``/``float``/``bool``/``None``. ``state_from_dict(state_to_dict(s))
  == s``.
- **esper-lite** (:func:`seed_state_to_esper_lite` /
  :func:`seed_state_from_esper_lite` for ``SeedState.to_dict()``, and
  :func:`slot_extra_state` / :func:`state_from_slot_extra_state` for a
  slot's whole ``_extra_state``): esper-lite 2016337e's keys, ``None`` for
  telemetry that was never measured, so checkpoints move both ways.

Field lists are never written out by hand: encoders and decoders walk
``dataclasses.fields`` and the type hints. A field's esper-lite key is its
own name unless its metadata says otherwise (``metadata={"esper_lite":
"_blending_started"}``; an empty name means esper-lite does not persist the
field). Decoding checks every value and raises
:class:`~esper_func.errors.CheckpointError` naming the field by its dotted
path (e.g. ``metrics.epochs_total``): a missing or unknown field, a wrong
type, NaN, a negative count, an alpha outside ``[0, 1]``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any, Final, TypeVar

from esper_func.errors import CheckpointError, EsperFuncError
from esper_func.hosts import BUILTIN_TOPOLOGIES, Topology, resolve_topology
from esper_func.lifecycle.alpha import AlphaAlgorithm, AlphaController, AlphaMode
from esper_func.lifecycle.stages import SeedStage
from esper_func.lifecycle.state import (
    BLEND_ALGORITHMS,
    STAGE_HISTORY_MAXLEN,
    SeedMetrics,
    SeedState,
    SeedTelemetry,
    has_gate,
)

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "EXTRA_STATE_VERSION",
    "ESPER_LITE_METRICS_SCHEMA_VERSION",
    "ESPER_LITE_TELEMETRY_SCHEMA_VERSION",
    "epoch_timestamp",
    "seed_state_from_esper_lite",
    "seed_state_to_esper_lite",
    "slot_extra_state",
    "state_from_dict",
    "state_from_slot_extra_state",
    "state_to_dict",
]

SCHEMA: Final[str] = "esper_func.SeedState"
#: Version 2: alpha lives in the controller, gradient telemetry may be unmeasured (None).
SCHEMA_VERSION: Final[int] = 2

#: ``SeedSlot._EXTRA_STATE_VERSION`` of esper-lite 2016337e.
EXTRA_STATE_VERSION: Final[int] = 1
#: ``SeedMetrics._SCHEMA_VERSION`` of esper-lite 2016337e.
ESPER_LITE_METRICS_SCHEMA_VERSION: Final[int] = 2
#: ``STAGE_SCHEMA_VERSION`` that esper-lite stamps on ``SeedTelemetry.to_dict()``.
ESPER_LITE_TELEMETRY_SCHEMA_VERSION: Final[int] = 1

D = TypeVar("D")

# Fields whose values must lie within bounds beyond "a count is >= 0, a float is finite".
_BOUNDS: Final[dict[str, tuple[float | None, float | None]]] = {
    "AlphaController.alpha": (0.0, 1.0),
    "AlphaController.alpha_start": (0.0, 1.0),
    "AlphaController.alpha_target": (0.0, 1.0),
    "AlphaController.alpha_steepness": (0.1, None),
    "SeedTelemetry.gradient_health": (0.0, 1.0),
    "SeedTelemetry.gradient_norm": (0.0, None),
    "SeedMetrics.gradient_norm_avg": (0.0, None),
    "SeedMetrics.seed_gradient_norm_ratio": (0.0, None),
    "SeedState.blend_alpha_target": (0.0, 1.0),
}
# Float fields that may be infinite (none: a non-finite measurement goes to the governor, not into a state).
_NON_FINITE_OK: Final[frozenset[str]] = frozenset()


@functools.cache
def _cached_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _hints(cls: Any) -> dict[str, Any]:
    """The resolved type hints of a dataclass (cached per class: decoding is frequent)."""
    return _cached_hints(cls)


def _fail(path: str, expected: str, value: Any) -> CheckpointError:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return CheckpointError(f"seed state field {path!r}: expected {expected}, got {type(value).__name__} {text}")


# --------------------------------------------------------------------------- values


def _is_builtin(topology: Topology) -> bool:
    builtin = BUILTIN_TOPOLOGIES.get(topology.name)
    return builtin is not None and builtin.rules() == topology.rules()


def _encode_topology(topology: Topology) -> Any:
    """A built-in topology as its name; a topology of your own as its full :meth:`Topology.to_dict`."""
    return topology.name if _is_builtin(topology) else topology.to_dict()


def _decode_topology(value: Any, path: str, given: str | None = None) -> Topology:
    """A topology written by :func:`_encode_topology`; the name of ``given`` stands for ``given`` itself."""
    if isinstance(value, Mapping):
        try:
            return resolve_topology(Topology.from_dict(value))
        except (EsperFuncError, KeyError) as exc:
            raise CheckpointError(f"seed state field {path!r}: not a topology ({exc})") from None
    if not isinstance(value, str):
        raise _fail(path, "a topology name or a topology object", value)
    if isinstance(given, Topology) and value == given.name:
        return given
    found = BUILTIN_TOPOLOGIES.get(value)
    if found is None:
        raise CheckpointError(
            f"seed state field {path!r}: {value!r} is not one of {list(BUILTIN_TOPOLOGIES)} "
            "(a topology of your own is stored as an object with its rules)"
        )
    return found


def _decode_value(hint: Any, value: Any, path: str, qualname: str) -> Any:
    """Decode one JSON value against the type hint ``hint``."""
    if qualname == "SeedState.topology":
        return _decode_topology(value, path)
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        (inner,) = options
        return _decode_value(inner, value, path, qualname)
    if origin is tuple:  # the stage history: tuple[tuple[SeedStage, int], ...]
        if not isinstance(value, (list, tuple)):
            raise _fail(path, "a list of [stage, epoch] pairs", value)
        if len(value) > STAGE_HISTORY_MAXLEN:
            raise CheckpointError(f"seed state field {path!r}: {len(value)} entries, at most {STAGE_HISTORY_MAXLEN}")
        entries = []
        for i, item in enumerate(value):
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise _fail(f"{path}[{i}]", "a [stage, epoch] pair", item)
            stage = _decode_value(SeedStage, item[0], f"{path}[{i}][0]", qualname)
            epoch = _decode_value(int, item[1], f"{path}[{i}][1]", "history.epoch")
            entries.append((stage, epoch))
        return tuple(entries)
    if isinstance(hint, type) and issubclass(hint, IntEnum):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(path, f"an integer {hint.__name__}", value)
        try:
            return hint(value)
        except ValueError:
            raise CheckpointError(
                f"seed state field {path!r}: {value} is not a {hint.__name__}; "
                f"expected one of {[int(m) for m in hint]}"
            ) from None
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _decode_dataclass(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(path, "true or false", value)
        return value
    if hint is str:
        if not isinstance(value, str):
            raise _fail(path, "a string", value)
        return value
    low, high = _BOUNDS.get(qualname, (None, None))
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(path, "an integer", value)
        if value < 0 and qualname != "history.epoch":
            raise _fail(path, "a count >= 0", value)
        return value
    if hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            raise _fail(path, "a number", value)
        if math.isinf(value) and qualname not in _NON_FINITE_OK:
            raise _fail(path, "a finite number", value)
        if (low is not None and value < low) or (high is not None and value > high):
            raise _fail(path, f"a number within [{low}, {high if high is not None else 'inf'}]", value)
        return float(value)
    raise TypeError(f"no decoder for {hint!r} ({path})")  # pragma: no cover - a new field type


def _encode_value(value: Any) -> Any:
    if isinstance(value, IntEnum):
        return int(value)
    if isinstance(value, Topology):
        return _encode_topology(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode_value(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_encode_value(v) for v in value]
    return value


def _decode_dataclass(cls: type[D], data: Any, path: str, *, skip: frozenset[str] = frozenset()) -> D:
    """``cls(**fields)`` from ``data``, which must hold exactly ``cls``'s fields (minus ``skip``)."""
    if not isinstance(data, Mapping):
        raise _fail(path or cls.__name__, "an object (dict)", data)
    fields = [f for f in dataclasses.fields(cls) if f.name not in skip]  # type: ignore[arg-type]
    names = {f.name for f in fields}
    unknown = sorted(set(data) - names)
    missing = sorted(names - set(data))
    where = f"{path}." if path else ""
    if missing or unknown:
        raise CheckpointError(
            f"seed state {path or cls.__name__!r}: missing field(s) {[where + m for m in missing]}, "
            f"unknown field(s) {[where + u for u in unknown]}; expected exactly {sorted(names)}"
        )
    hints = _hints(cls)
    kwargs = {
        f.name: _decode_value(hints[f.name], data[f.name], f"{where}{f.name}", f"{cls.__name__}.{f.name}")
        for f in fields
    }
    if cls is AlphaController and kwargs["alpha_steps_done"] > kwargs["alpha_steps_total"]:
        raise CheckpointError(
            f"seed state {path or 'alpha_controller'!r}: alpha_steps_done={kwargs['alpha_steps_done']} exceeds "
            f"alpha_steps_total={kwargs['alpha_steps_total']}"
        )
    return cls(**kwargs)


# --------------------------------------------------------------------------- esper_func JSON


def state_to_dict(state: SeedState) -> dict[str, Any]:
    """``state`` as a JSON-compatible dict (see the module docstring)."""
    if not isinstance(state, SeedState):
        raise CheckpointError(f"state_to_dict() takes a SeedState; got {type(state).__name__}")
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **_encode_value(state)}


def _check_consistent(state: SeedState, path: str) -> SeedState:
    if state.blend_algorithm_id not in BLEND_ALGORITHMS:
        raise CheckpointError(
            f"seed state field {path + 'blend_algorithm_id'!r}: {state.blend_algorithm_id!r} is not one of {list(BLEND_ALGORITHMS)}"
        )
    return state


def _migrate_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 dict (alpha stored three times, telemetry never unmeasured) as version 2."""
    body = dict(data)
    try:
        alpha = body.pop("alpha")
        for name in ("stage_entered_epoch", "isolate_gradients"):
            body.pop(name)
        telemetry = {
            "gradient_norm": None,
            "gradient_health": body.pop("gradient_health"),
            "has_vanishing": body.pop("has_vanishing"),
            "has_exploding": body.pop("has_exploding"),
            "epoch": 0,
            "max_epochs": 25,
        }
        metrics = dict(body["metrics"])
        metrics.pop("current_alpha")
        controller = dict(body["alpha_controller"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"version-1 seed state is incomplete: missing {exc}") from None
    # Version 1 kept the scalar alpha and the controller's apart; the controller's is the live one
    # (the scalar lagged it for an epoch after a zero-step retarget).
    del alpha
    body.update(metrics=metrics, alpha_controller=controller, telemetry=telemetry)
    body.setdefault("blend_out_frozen", controller.get("alpha_mode") == int(AlphaMode.DOWN))
    gated = body.get("alpha_algorithm") == int(AlphaAlgorithm.GATE) and body.get("stage") in {
        int(s) for s in (SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED)
    }
    body.setdefault("gate_total_steps", max(1, int(body.get("blend_tempo_epochs", 1))) if gated else 0)
    return body


def state_from_dict(data: Mapping[str, Any]) -> SeedState:
    """The :class:`SeedState` written by :func:`state_to_dict` (version 2, or version 1 migrated).

    Raises:
        CheckpointError: not a seed-state dict, an unknown version, or a
            missing, unknown or invalid field (named in the message).
    """
    if not isinstance(data, Mapping):
        raise CheckpointError(f"a seed state must be a dict; got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise CheckpointError(f"not a seed state: 'schema' is {data.get('schema')!r}, expected {SCHEMA!r}")
    version = data.get("schema_version")
    body = {k: v for k, v in data.items() if k not in ("schema", "schema_version")}
    if version == 1:
        body = _migrate_v1(body)
    elif version != SCHEMA_VERSION:
        raise CheckpointError(f"seed state schema_version {version!r} is not supported; this esper_func reads 1 and 2")
    return _check_consistent(_decode_dataclass(SeedState, body, ""), "")


# --------------------------------------------------------------------------- esper-lite layout

_UNIX_EPOCH: Final[datetime] = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_timestamp(epoch: int) -> str:
    """The synthetic ISO-8601 timestamp that stands for epoch counter ``epoch``.

    esper-lite stores wall-clock datetimes; esper_func counts epochs and never
    reads a clock. Epoch ``n`` is written as ``n`` seconds after
    1970-01-01T00:00:00 UTC, so the output is deterministic and still parses
    with ``datetime.fromisoformat``.
    """
    return (_UNIX_EPOCH + timedelta(seconds=int(epoch))).isoformat()


def _esper_lite_key(field: dataclasses.Field[Any]) -> str:
    key = field.metadata.get("esper_lite", field.name)
    return str(key)


def _to_esper_lite_fields(obj: Any) -> dict[str, Any]:
    """The fields esper-lite persists, under esper-lite's keys."""
    out = {}
    for field in dataclasses.fields(obj):
        key = _esper_lite_key(field)
        if key:
            out[key] = _encode_value(getattr(obj, field.name))
    return out


def _from_esper_lite_fields(
    cls: type[D], data: Any, path: str, *, optional: Mapping[str, Any] = types.MappingProxyType({})
) -> dict[str, Any]:
    """Keyword arguments of ``cls`` read from esper-lite keys (``optional`` keys may be absent)."""
    if not isinstance(data, Mapping):
        raise _fail(path, "an object (dict)", data)
    hints = _hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = _esper_lite_key(field)
        if not key:
            continue
        if key not in data:
            if key in optional:
                kwargs[field.name] = optional[key]
                continue
            raise CheckpointError(f"esper-lite seed state has no {path}.{key!r} (required by esper-lite 2016337e)")
        kwargs[field.name] = _decode_value(hints[field.name], data[key], f"{path}.{key}", f"{cls.__name__}.{field.name}")
    return kwargs


def _telemetry_dict(state: SeedState) -> dict[str, Any]:
    """esper-lite's ``SeedTelemetry.to_dict()``: the stored gradient fields plus what it derives from the state."""
    m, c, t = state.metrics, state.alpha_controller, state.telemetry
    moving = c.alpha_mode != AlphaMode.HOLD and c.alpha_steps_total != 0
    if state.stage in (SeedStage.TRAINING, SeedStage.GERMINATED, SeedStage.DORMANT):
        accuracy_delta = 0.0
    else:
        accuracy_delta = m.improvement_since_stage_start
    if state.stage == SeedStage.BLENDING and m.epochs_in_current_stage > 0:
        blending_velocity = state.alpha / m.epochs_in_current_stage
    else:
        blending_velocity = 0.0
    return {
        "schema_version": ESPER_LITE_TELEMETRY_SCHEMA_VERSION,
        "seed_id": state.seed_id,
        "blueprint_id": state.blueprint_id,
        "layer_id": "",
        "gradient_norm": t.gradient_norm,
        "gradient_health": t.gradient_health,
        "has_vanishing": t.has_vanishing,
        "has_exploding": t.has_exploding,
        "accuracy": m.current_val_accuracy,
        "accuracy_delta": accuracy_delta,
        "epochs_in_stage": m.epochs_in_current_stage,
        "stage": int(state.stage),
        "alpha": state.alpha,
        "alpha_target": c.alpha_target,
        "alpha_mode": int(c.alpha_mode),
        "alpha_steps_total": c.alpha_steps_total,
        "alpha_steps_done": c.alpha_steps_done,
        "time_to_target": max(c.alpha_steps_total - c.alpha_steps_done, 0),
        "alpha_velocity": (c.alpha_target - c.alpha_start) / c.alpha_steps_total if moving else 0.0,
        "alpha_algorithm": int(state.alpha_algorithm),
        "epoch": t.epoch,
        "max_epochs": t.max_epochs,
        "captured_at": epoch_timestamp(m.epochs_total),
        "blend_tempo_epochs": state.blend_tempo_epochs,
        "blending_velocity": blending_velocity,
        "alpha_curve": "LINEAR",
    }


def seed_state_to_esper_lite(state: SeedState) -> dict[str, Any]:
    """``state`` in esper-lite's ``SeedState.to_dict()`` layout.

    Keys as esper-lite 2016337e writes them: identity, ``stage`` /
    ``previous_stage`` as integers, ``stage_entered_at`` and ``stage_history``
    with timestamps, ``alpha``, ``metrics`` (``SeedMetrics.to_dict()``, schema
    version 2, ``current_alpha`` being the alpha), ``telemetry``
    (``SeedTelemetry.to_dict()``, ``None`` where unmeasured, with the fields
    esper-lite derives from the state), ``alpha_controller`` (all eight
    fields), ``alpha_algorithm``, ``blend_tempo_epochs``, ``is_healthy``,
    ``is_paused``, ``previous_epochs_in_stage``.

    What the layout cannot carry (so :func:`seed_state_from_esper_lite` of the
    result differs from ``state`` there): epoch counters of timestamps
    (synthetic, :func:`epoch_timestamp`; history entries before the last read
    back as epoch ``-1``), ``metrics.auto_pruned``/``auto_prune_reason`` (not
    persisted by esper-lite), the pending prune reason and initiator and the
    blend-out freeze (kept on esper-lite's slot object, not in a checkpoint;
    esper-lite re-derives the freeze from the controller on load), and the
    blend settings and topology, which live in the slot's ``_extra_state``
    (:func:`slot_extra_state`).
    """
    if not isinstance(state, SeedState):
        raise CheckpointError(f"seed_state_to_esper_lite() takes a SeedState; got {type(state).__name__}")
    metrics: dict[str, Any] = {"_schema_version": ESPER_LITE_METRICS_SCHEMA_VERSION}
    for key, value in _to_esper_lite_fields(state.metrics).items():
        if key == "alpha_ramp_step":
            metrics["current_alpha"] = state.alpha  # esper-lite's key order
        metrics[key] = value
    return {
        "seed_id": state.seed_id,
        "blueprint_id": state.blueprint_id,
        "slot_id": state.slot_id,
        "stage": int(state.stage),
        "previous_stage": int(state.previous_stage),
        "stage_entered_at": epoch_timestamp(state.stage_entered_epoch),
        "alpha": state.alpha,
        "stage_history": [[int(stage), epoch_timestamp(epoch)] for stage, epoch in state.stage_history],
        "metrics": metrics,
        "telemetry": _telemetry_dict(state),
        "alpha_controller": _to_esper_lite_fields(state.alpha_controller),
        "alpha_algorithm": int(state.alpha_algorithm),
        "blend_tempo_epochs": state.blend_tempo_epochs,
        "is_healthy": state.is_healthy,
        "is_paused": state.is_paused,
        "previous_epochs_in_stage": state.previous_epochs_in_stage,
    }


def _get(data: Mapping[str, Any], key: str, path: str | None = None) -> Any:
    if key not in data:
        raise CheckpointError(f"esper-lite seed state has no {path or key!r} (required by esper-lite 2016337e)")
    return data[key]


def _esper_lite_metrics(data: Any) -> SeedMetrics:
    if not isinstance(data, Mapping):
        raise _fail("metrics", "an object (dict)", data)
    version = _get(data, "_schema_version", "metrics._schema_version")
    if version != ESPER_LITE_METRICS_SCHEMA_VERSION:
        raise CheckpointError(
            f"esper-lite SeedMetrics schema version {version!r} is not supported; "
            f"expected {ESPER_LITE_METRICS_SCHEMA_VERSION}"
        )
    _get(data, "current_alpha", "metrics.current_alpha")  # required by esper-lite; the alpha is read from the state
    optional = {"counterfactual_contribution": None, "_prev_contribution": None, "contribution_velocity": 0.0}
    return SeedMetrics(**_from_esper_lite_fields(SeedMetrics, data, "metrics", optional=optional))


def _esper_lite_telemetry(data: Any) -> SeedTelemetry:
    if not data:  # esper-lite: telemetry is optional for a newly created seed
        return SeedTelemetry()
    return SeedTelemetry(**_from_esper_lite_fields(SeedTelemetry, data, "telemetry"))


def _stage_of(value: Any, path: str) -> SeedStage:
    stage: SeedStage = _decode_value(SeedStage, value, path, "")
    return stage


def seed_state_from_esper_lite(
    data: Mapping[str, Any], *, extra: Mapping[str, Any] | None = None, topology: str = "cnn"
) -> SeedState:
    """Convert esper-lite's ``SeedState.to_dict()`` into a :class:`SeedState`.

    ``extra`` is the slot's ``_extra_state`` (its keys ``blend_algorithm_id``,
    ``blend_tempo_epochs``, ``blend_alpha_target``, ``resolved_topology`` and
    ``alpha_schedule_config`` are read; see :func:`state_from_slot_extra_state`,
    which reads the whole of it); a missing ``extra`` or a ``None`` value
    falls back to what esper-lite would use: blend ``"gated"`` for GATE else
    ``"sigmoid"``, the state's tempo, target 1, ``topology`` (a built-in
    name, or a :class:`~esper_func.Topology`, which a recorded
    ``resolved_topology`` of the same name stands for).

    As esper-lite does on load, the controller's alpha is the state's
    ``alpha``, and ``None`` telemetry (never measured) stays ``None``. The
    blend-out freeze is re-derived from the controller (on while it ramps
    DOWN). Timestamps become epoch counters (see
    :func:`seed_state_to_esper_lite`).

    Raises:
        CheckpointError: a field esper-lite 2016337e requires is missing
            (e.g. ``alpha_controller.alpha_steepness``), or a value is invalid.
    """
    if not isinstance(data, Mapping):
        raise CheckpointError(f"an esper-lite seed state must be a dict; got {type(data).__name__}")
    if extra is not None and not isinstance(extra, Mapping):
        raise CheckpointError(f"extra must be the slot's _extra_state dict or None; got {type(extra).__name__}")
    extra = extra or {}
    if "alpha_algorithm" not in data:
        raise CheckpointError("esper-lite seed state is missing required 'alpha_algorithm' (esper-lite Phase 3+)")
    if not isinstance(data.get("alpha_controller"), Mapping):
        raise CheckpointError("esper-lite seed state is missing required 'alpha_controller' (esper-lite Phase 1+)")

    stage = _stage_of(_get(data, "stage"), "stage")
    previous = _get(data, "previous_stage")
    previous_stage = SeedStage.UNKNOWN if previous is None else _stage_of(previous, "previous_stage")
    alpha = _decode_value(float, _get(data, "alpha"), "alpha", "AlphaController.alpha")
    algorithm = _decode_value(AlphaAlgorithm, data["alpha_algorithm"], "alpha_algorithm", "")
    metrics = SeedMetrics() if not data.get("metrics") else _esper_lite_metrics(data["metrics"])
    controller_fields = _from_esper_lite_fields(AlphaController, data["alpha_controller"], "alpha_controller")
    controller = AlphaController(**{**controller_fields, "alpha": alpha})

    raw_history = _get(data, "stage_history")
    if not isinstance(raw_history, (list, tuple)):
        raise _fail("stage_history", "a list of [stage, timestamp] pairs", raw_history)
    history: list[tuple[SeedStage, int]] = []
    for i, item in enumerate(raw_history[-STAGE_HISTORY_MAXLEN:]):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise _fail(f"stage_history[{i}]", "a [stage, timestamp] pair", item)
        history.append((_stage_of(item[0], f"stage_history[{i}][0]"), -1))
    if history:
        history[-1] = (history[-1][0], metrics.epochs_total - metrics.epochs_in_current_stage)

    def from_extra(key: str, hint: Any, default: Any) -> Any:
        value = extra.get(key)
        return default if value is None else _decode_value(hint, value, f"extra.{key}", f"SeedState.{key}")

    gate_config = extra.get("alpha_schedule_config")
    gate_steps = 0
    blend_default = "gated" if algorithm == AlphaAlgorithm.GATE else "sigmoid"
    blend = from_extra("blend_algorithm_id", str, blend_default)
    if gate_config is not None:
        gate_steps = _check_schedule_config(gate_config, algorithm)
    state = SeedState(
        slot_id=_decode_value(str, _get(data, "slot_id"), "slot_id", ""),
        seed_id=_decode_value(str, _get(data, "seed_id"), "seed_id", ""),
        blueprint_id=_decode_value(str, _get(data, "blueprint_id"), "blueprint_id", ""),
        stage=stage,
        previous_stage=previous_stage,
        previous_epochs_in_stage=_decode_value(
            int, _get(data, "previous_epochs_in_stage"), "previous_epochs_in_stage", ""
        ),
        stage_history=tuple(history),
        metrics=metrics,
        alpha_controller=controller,
        telemetry=_esper_lite_telemetry(data.get("telemetry")),
        alpha_algorithm=algorithm,
        blend_algorithm_id=blend,
        blend_tempo_epochs=from_extra(
            "blend_tempo_epochs", int, _decode_value(int, _get(data, "blend_tempo_epochs"), "blend_tempo_epochs", "")
        ),
        blend_alpha_target=from_extra("blend_alpha_target", float, 1.0),
        topology=_recorded_topology(extra.get("resolved_topology"), topology, "extra.resolved_topology"),
        is_healthy=_decode_value(bool, _get(data, "is_healthy"), "is_healthy", ""),
        is_paused=_decode_value(bool, _get(data, "is_paused"), "is_paused", ""),
        blend_out_frozen=controller.alpha_mode == AlphaMode.DOWN,
        gate_total_steps=gate_steps,
    )
    return _check_consistent(state, "")


def _recorded_topology(recorded: Any, given: str, path: str) -> Topology:
    """The topology a slot recorded (``None``: the ``given`` one), as a :class:`Topology`."""
    if recorded is None:
        try:
            return resolve_topology(given)
        except EsperFuncError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    return _decode_topology(recorded, path, given)


def _check_schedule_config(config: Any, algorithm: AlphaAlgorithm) -> int:
    path = "extra.alpha_schedule_config"
    if not isinstance(config, Mapping):
        raise _fail(path, "an object (dict) or null", config)
    if config.get("algorithm_id") != "gated":
        raise CheckpointError(
            f"{path}: algorithm_id {config.get('algorithm_id')!r} is not supported; esper-lite 2016337e "
            "persists a schedule only for 'gated'"
        )
    if algorithm != AlphaAlgorithm.GATE:
        raise CheckpointError(f"{path}: a 'gated' schedule but the seed's alpha_algorithm is {algorithm.name}")
    steps = _decode_value(int, config.get("total_steps"), f"{path}.total_steps", "")
    if steps < 1:
        raise CheckpointError(f"{path}.total_steps must be >= 1 (esper-lite's GatedBlend); got {steps}")
    _decode_value(int, config.get("current_step"), f"{path}.current_step", "")
    return int(steps)


def slot_extra_state(state: SeedState | None, *, topology: str | None = None) -> dict[str, Any]:
    """A slot's whole ``_extra_state`` in esper-lite's ``SeedSlot.get_extra_state()`` layout (version 1).

    ``state=None`` (a slot that never held a seed) gives esper-lite's fresh
    slot: ``seed_state`` and the blend settings ``None`` (``topology`` as
    ``resolved_topology``). A DORMANT state (a slot freed after a prune) gives
    ``seed_state=None`` but keeps the last occupant's blend settings, as
    esper-lite's slot does. A seed with its gate network (GATE from BLENDING
    on, :func:`~esper_func.lifecycle.state.has_gate`) has
    ``alpha_schedule_config`` ``{"algorithm_id": "gated", "total_steps": ...,
    "current_step": 0}``; every other slot ``None``.
    """
    if state is None:
        return {
            "_extra_state_version": EXTRA_STATE_VERSION,
            "isolate_gradients": False,
            "blend_algorithm_id": None,
            "blend_tempo_epochs": None,
            "blend_alpha_target": None,
            "resolved_topology": None if topology is None else str(topology),
            "seed_state": None,
            "alpha_schedule_config": None,
        }
    if not isinstance(state, SeedState):
        raise CheckpointError(f"slot_extra_state() takes a SeedState or None; got {type(state).__name__}")
    gated = has_gate(state)
    return {
        "_extra_state_version": EXTRA_STATE_VERSION,
        "isolate_gradients": state.isolate_gradients,
        "blend_algorithm_id": state.blend_algorithm_id,
        "blend_tempo_epochs": state.blend_tempo_epochs,
        "blend_alpha_target": state.blend_alpha_target,
        "resolved_topology": str(state.topology),
        "seed_state": None if state.stage == SeedStage.DORMANT else seed_state_to_esper_lite(state),
        "alpha_schedule_config": (
            {"algorithm_id": "gated", "total_steps": max(1, state.gate_total_steps), "current_step": 0}
            if gated
            else None
        ),
    }


_EXTRA_KEYS: Final[tuple[str, ...]] = (
    "_extra_state_version",
    "isolate_gradients",
    "blend_algorithm_id",
    "blend_tempo_epochs",
    "blend_alpha_target",
    "resolved_topology",
    "seed_state",
    "alpha_schedule_config",
)


def state_from_slot_extra_state(
    extra: Any, *, topology: str = "cnn", slot_id: str = "", where: str = "_extra_state"
) -> SeedState | None:
    """The lifecycle state in a slot's esper-lite ``_extra_state``.

    ``None`` for a slot that never held a seed. A slot freed after a prune
    (no ``seed_state``, but the last seed's blend settings) is a DORMANT state
    with those settings and empty seed and blueprint ids, so that
    :func:`slot_extra_state` writes the slot back as esper-lite saved it.
    Every key esper-lite 2016337e writes is required (as its
    ``set_extra_state`` requires them); ``topology`` is used when the slot
    recorded none.

    Raises:
        CheckpointError: not such a dict, another version, a missing key, an
            invalid value, a gate schedule that does not fit the seed.
    """
    if not isinstance(extra, Mapping):
        raise CheckpointError(
            f"{where!r} must be the dict written by esper-lite's SeedSlot.get_extra_state(); got {type(extra).__name__}"
        )
    missing = [key for key in _EXTRA_KEYS if key not in extra]
    if missing:
        raise CheckpointError(f"{where!r} lacks {missing}; esper-lite's SeedSlot.get_extra_state() writes {list(_EXTRA_KEYS)}")
    version = extra["_extra_state_version"]
    if version != EXTRA_STATE_VERSION:
        raise CheckpointError(
            f"{where!r} has _extra_state_version {version!r}; this esper_func reads version {EXTRA_STATE_VERSION}"
        )
    _decode_value(bool, extra["isolate_gradients"], f"{where}.isolate_gradients", "")
    raw = extra["seed_state"]
    if raw is None:
        if extra["alpha_schedule_config"] is not None:
            raise CheckpointError(f"{where!r} has an alpha_schedule_config but no seed_state")
        if extra["blend_algorithm_id"] is None:
            return None
        freed = SeedState(
            slot_id=_decode_value(str, slot_id, "slot_id", ""),
            seed_id="",
            blueprint_id="",
            blend_algorithm_id=_decode_value(str, extra["blend_algorithm_id"], f"{where}.blend_algorithm_id", ""),
            blend_tempo_epochs=_decode_value(int, extra["blend_tempo_epochs"], f"{where}.blend_tempo_epochs", ""),
            blend_alpha_target=_decode_value(
                float, extra["blend_alpha_target"], f"{where}.blend_alpha_target", "SeedState.blend_alpha_target"
            ),
            topology=_recorded_topology(extra["resolved_topology"], topology, f"{where}.resolved_topology"),
        )
        return _check_consistent(freed, f"{where}.")
    try:
        state = seed_state_from_esper_lite(raw, extra=extra, topology=topology)
    except CheckpointError as exc:
        raise CheckpointError(f"{where!r}: {exc}") from None
    if has_gate(state) != (extra["alpha_schedule_config"] is not None):
        have = "has no" if extra["alpha_schedule_config"] is None else "has a"
        raise CheckpointError(
            f"{where!r}: a {state.alpha_algorithm.name} seed in stage {state.stage.name} {have} gate schedule "
            "(alpha_schedule_config); esper-lite gives a seed its gate network exactly when it is GATE and "
            "in BLENDING, HOLDING or FOSSILIZED"
        )
    return state
