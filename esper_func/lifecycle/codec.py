"""``SeedState`` to and from JSON-compatible dicts, and a reader for esper-lite's layout.

:func:`state_to_dict` writes only ``dict``/``list``/``str``/``int``/
``float``/``bool``/``None`` (enums as their integer values), tagged with
``"schema": "esper_func.SeedState"`` and ``"schema_version"``.
:func:`state_from_dict` checks every field: a missing, unknown or wrongly
typed field, or an unknown version, raises
:class:`~esper_func.errors.CheckpointError` naming the field (dotted path,
e.g. ``metrics.epochs_total``). ``state_from_dict(state_to_dict(s)) == s``.

:func:`seed_state_from_esper_lite` reads esper-lite's ``SeedState.to_dict()``
plus, optionally, the slot's ``_extra_state`` fields;
:func:`seed_state_to_esper_lite` writes that layout back (see its docstring for
what the esper-lite layout cannot carry).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any, Final

from esper_func.errors import CheckpointError
from esper_func.lifecycle.alpha import DEFAULT_STEEPNESS, AlphaAlgorithm, AlphaController, AlphaCurve, AlphaMode
from esper_func.lifecycle.stages import TOPOLOGIES, SeedStage
from esper_func.lifecycle.state import BLEND_ALGORITHMS, STAGE_HISTORY_MAXLEN, SeedMetrics, SeedState

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "state_to_dict",
    "state_from_dict",
    "seed_state_from_esper_lite",
    "seed_state_to_esper_lite",
    "epoch_timestamp",
    "ESPER_LITE_METRICS_SCHEMA_VERSION",
    "ESPER_LITE_TELEMETRY_SCHEMA_VERSION",
]

SCHEMA: Final[str] = "esper_func.SeedState"
SCHEMA_VERSION: Final[int] = 1

# --------------------------------------------------------------------------- field codecs
# A codec is (encode, decode); decode(value, path) raises CheckpointError.

Codec = tuple[Callable[[Any], Any], Callable[[Any, str], Any]]


def _fail(path: str, expected: str, value: Any) -> CheckpointError:
    return CheckpointError(f"seed state field {path!r}: expected {expected}, got {type(value).__name__} {value!r}")


def _dec_str(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise _fail(path, "a string", value)
    return value


def _dec_int(value: Any, path: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(path, "an integer", value)
    return value


def _dec_float(value: Any, path: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise _fail(path, "a number", value)
    return float(value)


def _dec_bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, "true or false", value)
    return value


def _optional(decode: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    def dec(value: Any, path: str) -> Any:
        return None if value is None else decode(value, path)

    return dec


def _enum(cls: type[IntEnum]) -> Codec:
    def dec(value: Any, path: str) -> IntEnum:
        number = _dec_int(value, path)
        try:
            return cls(number)
        except ValueError:
            raise CheckpointError(
                f"seed state field {path!r}: {number} is not a {cls.__name__}; "
                f"expected one of {[int(m) for m in cls]}"
            ) from None

    return int, dec


def _choice(options: tuple[str, ...]) -> Codec:
    def dec(value: Any, path: str) -> str:
        text = _dec_str(value, path)
        if text not in options:
            raise CheckpointError(f"seed state field {path!r}: {text!r} is not one of {list(options)}")
        return text

    return str, dec


def _history_dec(value: Any, path: str) -> tuple[tuple[SeedStage, int], ...]:
    if not isinstance(value, list):
        raise _fail(path, "a list of [stage, epoch] pairs", value)
    if len(value) > STAGE_HISTORY_MAXLEN:
        raise CheckpointError(f"seed state field {path!r}: {len(value)} entries, at most {STAGE_HISTORY_MAXLEN}")
    entries = []
    for i, item in enumerate(value):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise _fail(f"{path}[{i}]", "a [stage, epoch] pair", item)
        stage = _enum(SeedStage)[1](item[0], f"{path}[{i}][0]")
        entries.append((stage, _dec_int(item[1], f"{path}[{i}][1]")))
    return tuple(entries)


def _history_enc(history: tuple[tuple[SeedStage, int], ...]) -> list[list[int]]:
    return [[int(stage), int(epoch)] for stage, epoch in history]


def _ident(value: Any) -> Any:
    return value


def _raw(value: Any, path: str) -> Any:
    return value


STR: Final[Codec] = (_ident, _dec_str)
INT: Final[Codec] = (_ident, _dec_int)
FLOAT: Final[Codec] = (_ident, _dec_float)
BOOL: Final[Codec] = (_ident, _dec_bool)
OPT_FLOAT: Final[Codec] = (_ident, _optional(_dec_float))
OPT_STR: Final[Codec] = (_ident, _optional(_dec_str))

_CONTROLLER_FIELDS: Final[dict[str, Codec]] = {
    "alpha": FLOAT,
    "alpha_start": FLOAT,
    "alpha_target": FLOAT,
    "alpha_mode": _enum(AlphaMode),
    "alpha_curve": _enum(AlphaCurve),
    "alpha_steepness": FLOAT,
    "alpha_steps_total": INT,
    "alpha_steps_done": INT,
}

_METRICS_FIELDS: Final[dict[str, Codec]] = {
    "epochs_total": INT,
    "epochs_in_current_stage": INT,
    "initial_val_accuracy": FLOAT,
    "current_val_accuracy": FLOAT,
    "best_val_accuracy": FLOAT,
    "accuracy_at_stage_start": FLOAT,
    "accuracy_at_blending_start": FLOAT,
    "blending_started": BOOL,
    "gradient_norm_avg": FLOAT,
    "seed_gradient_norm_ratio": OPT_FLOAT,
    "host_param_count": INT,
    "seed_param_count": INT,
    "current_alpha": FLOAT,
    "alpha_ramp_step": INT,
    "counterfactual_contribution": OPT_FLOAT,
    "prev_contribution": OPT_FLOAT,
    "contribution_velocity": FLOAT,
    "auto_pruned": BOOL,
    "auto_prune_reason": STR,
    "interaction_sum": FLOAT,
    "boost_received": FLOAT,
    "upstream_alpha_sum": FLOAT,
    "downstream_alpha_sum": FLOAT,
}

_STATE_FIELDS: Final[dict[str, Codec]] = {
    "slot_id": STR,
    "seed_id": STR,
    "blueprint_id": STR,
    "stage": _enum(SeedStage),
    "previous_stage": _enum(SeedStage),
    "previous_epochs_in_stage": INT,
    "stage_entered_epoch": INT,
    "stage_history": (_history_enc, _history_dec),
    "alpha": FLOAT,
    "alpha_algorithm": _enum(AlphaAlgorithm),
    "blend_algorithm_id": _choice(BLEND_ALGORITHMS),
    "blend_tempo_epochs": INT,
    "blend_alpha_target": FLOAT,
    "topology": _choice(TOPOLOGIES),
    "isolate_gradients": BOOL,
    "is_healthy": BOOL,
    "is_paused": BOOL,
    "pending_prune_reason": OPT_STR,
    "pending_prune_initiator": OPT_STR,
    "gradient_health": FLOAT,
    "has_exploding": BOOL,
    "has_vanishing": BOOL,
}


def _encode(obj: Any, fields: Mapping[str, Codec]) -> dict[str, Any]:
    return {name: encode(getattr(obj, name)) for name, (encode, _) in fields.items()}


def _decode_fields(
    data: Any, fields: Mapping[str, Codec], path: str, *, extra: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise _fail(path or "<root>", "an object (dict)", data)
    prefix = f"{path}." if path else ""
    unknown = sorted(set(data) - set(fields) - extra)
    if unknown:
        raise CheckpointError(
            f"seed state {path or 'dict'} has unknown field(s) {unknown}; known fields are {sorted(fields)}"
        )
    out = {}
    for name, (_, decode) in fields.items():
        if name not in data:
            raise CheckpointError(f"seed state field {prefix + name!r} is missing")
        out[name] = decode(data[name], prefix + name)
    return out


# --------------------------------------------------------------------------- own format


def state_to_dict(state: SeedState) -> dict[str, Any]:
    """A JSON-compatible dict of every field of ``state`` (see the module docstring)."""
    out: dict[str, Any] = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION}
    out.update(_encode(state, _STATE_FIELDS))
    out["metrics"] = _encode(state.metrics, _METRICS_FIELDS)
    out["alpha_controller"] = _encode(state.alpha_controller, _CONTROLLER_FIELDS)
    return out


def state_from_dict(data: Mapping[str, Any]) -> SeedState:
    """Rebuild a ``SeedState`` written by :func:`state_to_dict`.

    Raises:
        CheckpointError: not a dict; wrong ``schema``; unknown
            ``schema_version``; a field missing, unknown or of the wrong type
            (the message names it).
    """
    if not isinstance(data, Mapping):
        raise CheckpointError(f"a seed state must be a dict; got {type(data).__name__}")
    if data.get("schema") != SCHEMA:
        raise CheckpointError(f"not a seed state: field 'schema' is {data.get('schema')!r}, expected {SCHEMA!r}")
    if "schema_version" not in data:
        raise CheckpointError("seed state field 'schema_version' is missing")
    version = data["schema_version"]
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise CheckpointError(
            f"seed state schema_version {version!r} is not supported; this esper_func reads version {SCHEMA_VERSION}"
        )
    nested = frozenset({"schema", "schema_version", "metrics", "alpha_controller"})
    kwargs = _decode_fields(data, _STATE_FIELDS, "", extra=nested)
    for name in ("metrics", "alpha_controller"):
        if name not in data:
            raise CheckpointError(f"seed state field {name!r} is missing")
    kwargs["metrics"] = SeedMetrics(**_decode_fields(data["metrics"], _METRICS_FIELDS, "metrics"))
    ctrl = _decode_fields(data["alpha_controller"], _CONTROLLER_FIELDS, "alpha_controller")
    kwargs["alpha_controller"] = AlphaController(**ctrl)
    return SeedState(**kwargs)


# --------------------------------------------------------------------------- esper-lite


def _get(data: Mapping[str, Any], key: str, path: str, decode: Callable[[Any, str], Any]) -> Any:
    if not isinstance(data, Mapping):
        raise _fail(path.rpartition(".")[0] or "<root>", "an object (dict)", data)
    if key not in data:
        raise CheckpointError(f"esper-lite seed state field {path!r} is missing")
    return decode(data[key], path)


_EL_METRICS: Final[dict[str, tuple[str, Callable[[Any, str], Any]]]] = {
    # our name: (esper-lite key, decoder)
    "epochs_total": ("epochs_total", _dec_int),
    "epochs_in_current_stage": ("epochs_in_current_stage", _dec_int),
    "initial_val_accuracy": ("initial_val_accuracy", _dec_float),
    "current_val_accuracy": ("current_val_accuracy", _dec_float),
    "best_val_accuracy": ("best_val_accuracy", _dec_float),
    "accuracy_at_stage_start": ("accuracy_at_stage_start", _dec_float),
    "accuracy_at_blending_start": ("accuracy_at_blending_start", _dec_float),
    "blending_started": ("_blending_started", _dec_bool),
    "gradient_norm_avg": ("gradient_norm_avg", _dec_float),
    "seed_gradient_norm_ratio": ("seed_gradient_norm_ratio", _optional(_dec_float)),
    "host_param_count": ("host_param_count", _dec_int),
    "seed_param_count": ("seed_param_count", _dec_int),
    "current_alpha": ("current_alpha", _dec_float),
    "alpha_ramp_step": ("alpha_ramp_step", _dec_int),
    "interaction_sum": ("interaction_sum", _dec_float),
    "boost_received": ("boost_received", _dec_float),
    "upstream_alpha_sum": ("upstream_alpha_sum", _dec_float),
    "downstream_alpha_sum": ("downstream_alpha_sum", _dec_float),
}
_EL_METRICS_VERSION: Final[int] = 2


def _esper_lite_metrics(data: Any) -> SeedMetrics:
    version = _get(data, "_schema_version", "metrics._schema_version", _dec_int)
    if version != _EL_METRICS_VERSION:
        raise CheckpointError(
            f"esper-lite SeedMetrics schema version {version} is not supported; expected {_EL_METRICS_VERSION}"
        )
    kwargs = {ours: _get(data, key, f"metrics.{key}", dec) for ours, (key, dec) in _EL_METRICS.items()}
    # Optional in esper-lite (absent in early-lifecycle checkpoints).
    kwargs["counterfactual_contribution"] = _optional(_dec_float)(
        data.get("counterfactual_contribution"), "metrics.counterfactual_contribution"
    )
    kwargs["prev_contribution"] = _optional(_dec_float)(data.get("_prev_contribution"), "metrics._prev_contribution")
    kwargs["contribution_velocity"] = _dec_float(
        data.get("contribution_velocity", 0.0), "metrics.contribution_velocity"
    )
    return SeedMetrics(**kwargs)


def _esper_lite_controller(data: Any, alpha: float) -> AlphaController:
    path = "alpha_controller"
    steepness = DEFAULT_STEEPNESS
    if isinstance(data, Mapping) and "alpha_steepness" in data:  # absent before esper-lite added it
        steepness = _dec_float(data["alpha_steepness"], f"{path}.alpha_steepness")
    return AlphaController(
        alpha=alpha,  # the state's scalar alpha is authoritative, as in esper-lite
        alpha_start=_get(data, "alpha_start", f"{path}.alpha_start", _dec_float),
        alpha_target=_get(data, "alpha_target", f"{path}.alpha_target", _dec_float),
        alpha_mode=_get(data, "alpha_mode", f"{path}.alpha_mode", _enum(AlphaMode)[1]),
        alpha_curve=_get(data, "alpha_curve", f"{path}.alpha_curve", _enum(AlphaCurve)[1]),
        alpha_steepness=steepness,
        alpha_steps_total=_get(data, "alpha_steps_total", f"{path}.alpha_steps_total", _dec_int),
        alpha_steps_done=_get(data, "alpha_steps_done", f"{path}.alpha_steps_done", _dec_int),
    )


def _default_isolation(stage: SeedStage, topology: str) -> bool:
    if stage == SeedStage.TRAINING:
        return True
    if stage in (SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED):
        return topology == "cnn"
    return False


def seed_state_from_esper_lite(data: Mapping[str, Any], *, extra: Mapping[str, Any] | None = None) -> SeedState:
    """Convert esper-lite's ``SeedState.to_dict()`` into a :class:`SeedState`.

    ``extra`` is the slot's ``_extra_state`` (keys ``isolate_gradients``,
    ``blend_algorithm_id``, ``blend_tempo_epochs``, ``blend_alpha_target``,
    ``resolved_topology``; others are ignored); a missing ``extra`` or a
    ``None`` value falls back to what esper-lite would use: blend ``"gated"``
    for GATE else ``"sigmoid"``, the state's tempo, target 1, topology
    ``"cnn"``, isolation from the stage and topology.

    Wall-clock timestamps become epoch counters: ``stage_entered_epoch`` is
    ``epochs_total - epochs_in_current_stage``; history entries before the
    last get epoch ``-1`` (unknown). Gradient telemetry comes from the
    ``telemetry`` sub-dict when present.

    Raises:
        CheckpointError: a required field is missing or of the wrong type.
    """
    if not isinstance(data, Mapping):
        raise CheckpointError(f"an esper-lite seed state must be a dict; got {type(data).__name__}")
    if extra is not None and not isinstance(extra, Mapping):
        raise CheckpointError(f"extra must be the slot's _extra_state dict or None; got {type(extra).__name__}")
    extra = extra or {}
    stage_dec = _enum(SeedStage)[1]
    stage = _get(data, "stage", "stage", stage_dec)
    previous = _get(data, "previous_stage", "previous_stage", _raw)
    previous_stage = SeedStage.UNKNOWN if previous is None else stage_dec(previous, "previous_stage")
    alpha = _get(data, "alpha", "alpha", _dec_float)
    algorithm = _get(data, "alpha_algorithm", "alpha_algorithm", _enum(AlphaAlgorithm)[1])

    metrics_data = data.get("metrics")
    metrics = SeedMetrics() if not metrics_data else _esper_lite_metrics(metrics_data)
    controller = _esper_lite_controller(_get(data, "alpha_controller", "alpha_controller", _raw), alpha)

    raw_history = _get(data, "stage_history", "stage_history", _raw)
    if not isinstance(raw_history, (list, tuple)):
        raise _fail("stage_history", "a list of [stage, timestamp] pairs", raw_history)
    entered = metrics.epochs_total - metrics.epochs_in_current_stage
    history = []
    for i, item in enumerate(raw_history[-STAGE_HISTORY_MAXLEN:]):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise _fail(f"stage_history[{i}]", "a [stage, timestamp] pair", item)
        history.append([stage_dec(item[0], f"stage_history[{i}][0]"), -1])
    if history:
        history[-1][1] = entered

    telemetry = data.get("telemetry") or {}
    if not isinstance(telemetry, Mapping):
        raise _fail("telemetry", "an object (dict) or null", telemetry)

    def from_extra(key: str, decode: Callable[[Any, str], Any], default: Any) -> Any:
        value = extra.get(key)
        return default if value is None else decode(value, f"extra.{key}")

    topology = from_extra("resolved_topology", _choice(TOPOLOGIES)[1], "cnn")
    tempo = _get(data, "blend_tempo_epochs", "blend_tempo_epochs", _dec_int)
    return SeedState(
        slot_id=_get(data, "slot_id", "slot_id", _dec_str),
        seed_id=_get(data, "seed_id", "seed_id", _dec_str),
        blueprint_id=_get(data, "blueprint_id", "blueprint_id", _dec_str),
        stage=stage,
        previous_stage=previous_stage,
        previous_epochs_in_stage=_get(data, "previous_epochs_in_stage", "previous_epochs_in_stage", _dec_int),
        stage_entered_epoch=entered,
        stage_history=tuple((s, e) for s, e in history),
        alpha=controller.alpha,
        metrics=metrics,
        alpha_controller=controller,
        alpha_algorithm=algorithm,
        blend_algorithm_id=from_extra(
            "blend_algorithm_id",
            _choice(BLEND_ALGORITHMS)[1],
            "gated" if algorithm == AlphaAlgorithm.GATE else "sigmoid",
        ),
        blend_tempo_epochs=from_extra("blend_tempo_epochs", _dec_int, tempo),
        blend_alpha_target=from_extra("blend_alpha_target", _dec_float, 1.0),
        topology=topology,
        isolate_gradients=from_extra("isolate_gradients", _dec_bool, _default_isolation(stage, topology)),
        is_healthy=_get(data, "is_healthy", "is_healthy", _dec_bool),
        is_paused=_get(data, "is_paused", "is_paused", _dec_bool),
        gradient_health=_dec_float(telemetry.get("gradient_health", 1.0), "telemetry.gradient_health"),
        has_exploding=_dec_bool(telemetry.get("has_exploding", False), "telemetry.has_exploding"),
        has_vanishing=_dec_bool(telemetry.get("has_vanishing", False), "telemetry.has_vanishing"),
    )


# --------------------------------------------------------------------------- esper-lite writer

#: ``SeedMetrics._SCHEMA_VERSION`` of the esper-lite layout written and read here.
ESPER_LITE_METRICS_SCHEMA_VERSION: Final[int] = _EL_METRICS_VERSION
#: ``STAGE_SCHEMA_VERSION`` that esper-lite stamps on ``SeedTelemetry.to_dict()``.
ESPER_LITE_TELEMETRY_SCHEMA_VERSION: Final[int] = 1
#: esper-lite's ``SeedTelemetry.max_epochs`` default (telemetry context only).
_EL_TELEMETRY_MAX_EPOCHS: Final[int] = 25

_UNIX_EPOCH: Final[datetime] = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_timestamp(epoch: int) -> str:
    """The synthetic ISO-8601 timestamp that stands for epoch counter ``epoch``.

    esper-lite stores wall-clock datetimes; esper_func counts epochs and never
    reads a clock. The writer encodes epoch ``n`` as ``n`` seconds after
    1970-01-01T00:00:00 UTC, so the output is deterministic and still parses
    with ``datetime.fromisoformat``.
    """
    return (_UNIX_EPOCH + timedelta(seconds=int(epoch))).isoformat()


def _el_metrics_dict(m: SeedMetrics) -> dict[str, Any]:
    return {
        "_schema_version": _EL_METRICS_VERSION,
        "epochs_total": m.epochs_total,
        "epochs_in_current_stage": m.epochs_in_current_stage,
        "initial_val_accuracy": m.initial_val_accuracy,
        "current_val_accuracy": m.current_val_accuracy,
        "best_val_accuracy": m.best_val_accuracy,
        "accuracy_at_stage_start": m.accuracy_at_stage_start,
        "accuracy_at_blending_start": m.accuracy_at_blending_start,
        "gradient_norm_avg": m.gradient_norm_avg,
        "current_alpha": m.current_alpha,
        "alpha_ramp_step": m.alpha_ramp_step,
        "counterfactual_contribution": m.counterfactual_contribution,
        "_prev_contribution": m.prev_contribution,
        "contribution_velocity": m.contribution_velocity,
        "_blending_started": m.blending_started,
        "seed_gradient_norm_ratio": m.seed_gradient_norm_ratio,
        "host_param_count": m.host_param_count,
        "seed_param_count": m.seed_param_count,
        "interaction_sum": m.interaction_sum,
        "boost_received": m.boost_received,
        "upstream_alpha_sum": m.upstream_alpha_sum,
        "downstream_alpha_sum": m.downstream_alpha_sum,
    }


def _el_controller_dict(c: AlphaController, alpha: float) -> dict[str, Any]:
    return {
        "alpha": alpha,  # esper-lite keeps the controller in sync with the scalar alpha
        "alpha_start": c.alpha_start,
        "alpha_target": c.alpha_target,
        "alpha_mode": int(c.alpha_mode),
        "alpha_curve": int(c.alpha_curve),
        "alpha_steepness": c.alpha_steepness,
        "alpha_steps_total": c.alpha_steps_total,
        "alpha_steps_done": c.alpha_steps_done,
    }


def _el_telemetry_dict(state: SeedState) -> dict[str, Any]:
    # The values esper-lite's SeedState.sync_telemetry() derives from the state.
    m, c = state.metrics, state.alpha_controller
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
        "gradient_norm": m.gradient_norm_avg,
        "gradient_health": state.gradient_health,
        "has_vanishing": state.has_vanishing,
        "has_exploding": state.has_exploding,
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
        "epoch": m.epochs_total,
        "max_epochs": _EL_TELEMETRY_MAX_EPOCHS,
        "captured_at": epoch_timestamp(m.epochs_total),
        "blend_tempo_epochs": state.blend_tempo_epochs,
        "blending_velocity": blending_velocity,
    }


def seed_state_to_esper_lite(state: SeedState) -> dict[str, Any]:
    """``state`` in esper-lite's ``SeedState.to_dict()`` layout (JSON-compatible).

    The result has esper-lite's keys: identity, ``stage`` / ``previous_stage``
    as integers, ``stage_entered_at`` and ``stage_history`` with ISO
    timestamps, ``alpha``, ``metrics`` (``SeedMetrics.to_dict()``, schema
    version 2), ``telemetry`` (``SeedTelemetry.to_dict()``), ``alpha_controller``
    (``AlphaController.to_dict()``, including ``alpha_steepness``),
    ``alpha_algorithm``, ``blend_tempo_epochs``, ``is_healthy``, ``is_paused``
    and ``previous_epochs_in_stage``.

    What the layout cannot carry (so :func:`seed_state_from_esper_lite` of the
    result differs from ``state`` there):

    - time: timestamps are synthetic (:func:`epoch_timestamp`); the reader
      recomputes ``stage_entered_epoch`` as ``epochs_total -
      epochs_in_current_stage`` and gives history entries before the last
      epoch ``-1``;
    - ``pending_prune_reason`` / ``pending_prune_initiator`` (esper-lite keeps
      them on the slot object, outside the checkpoint): read back as ``None``;
    - ``metrics.auto_pruned`` / ``metrics.auto_prune_reason`` (not in
      esper-lite's ``SeedMetrics.to_dict()``): read back as ``False`` / ``""``;
    - blend settings, topology and the isolation flag live in the slot's
      ``_extra_state`` next to this dict, not in it (pass that as ``extra``
      when reading).

    Pure: ``state`` is a frozen value and is only read.
    """
    if not isinstance(state, SeedState):
        raise TypeError(f"seed_state_to_esper_lite takes a SeedState; got {type(state).__name__}")
    return {
        "seed_id": state.seed_id,
        "blueprint_id": state.blueprint_id,
        "slot_id": state.slot_id,
        "stage": int(state.stage),
        "previous_stage": int(state.previous_stage),
        "stage_entered_at": epoch_timestamp(state.stage_entered_epoch),
        "alpha": state.alpha,
        "stage_history": [[int(stage), epoch_timestamp(epoch)] for stage, epoch in state.stage_history],
        "metrics": _el_metrics_dict(state.metrics),
        "telemetry": _el_telemetry_dict(state),
        "alpha_controller": _el_controller_dict(state.alpha_controller, state.alpha),
        "alpha_algorithm": int(state.alpha_algorithm),
        "blend_tempo_epochs": state.blend_tempo_epochs,
        "is_healthy": state.is_healthy,
        "is_paused": state.is_paused,
        "previous_epochs_in_stage": state.previous_epochs_in_stage,
    }
