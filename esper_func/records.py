"""Typed epoch records: what each epoch of :func:`esper_func.fit.fit` reports, and their JSON form.

An :class:`EpochRecord` is a frozen value holding one epoch's measurements
(training and validation loss and accuracy, bits per token for a language
model), every slot's state after the epoch (:class:`SlotRecord`: stage,
alpha, blueprint, counterfactual contribution), the controller's action
(:class:`ActionRecord`), the governor's verdict, the lifecycle events as
typed values, the grown model's parameter count and the epoch's wall-clock
time. :meth:`EpochRecord.to_dict` is exactly the JSON object the command
line writes as one line of ``metrics.jsonl`` (and a run checkpoint keeps);
:meth:`EpochRecord.from_dict` reads it back.

JSON conventions: stages, actions and verdicts by their full enum name
(``"BLENDING"``), accuracies as fractions in ``[0, 1]``, contributions in
accuracy *points* (percent), and a non-finite float as its ``repr``
(``"nan"``, ``"inf"``, ``"-inf"``), so every line is strict JSON.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from esper_func._validate import check_choice, check_enum, check_int, check_str, describe
from esper_func.errors import InvalidArgumentError, InvalidTypeError
from esper_func.governor import Verdict
from esper_func.lifecycle.actions import Action, ActionKind
from esper_func.lifecycle.alpha import AlphaCurve
from esper_func.lifecycle.events import (
    GateEvaluated,
    LifecycleEvent,
    SeedFossilized,
    SeedGerminated,
    SeedPruned,
    StageChanged,
    TournamentDecided,
)
from esper_func.lifecycle.gates import GateLevel
from esper_func.lifecycle.stages import SeedStage

__all__ = [
    "EVENT_KINDS",
    "TASKS",
    "ActionRecord",
    "EpochRecord",
    "SlotRecord",
    "Task",
    "event_from_dict",
    "event_to_dict",
]

#: What a run trains: ``"classification"`` (one label per sample, outputs ``[B, C]``) or
#: ``"language_model"`` (next-token prediction, tokens ``[B, T]``, outputs ``[B, T, V]``).
Task = Literal["classification", "language_model"]
TASKS: Final[tuple[str, ...]] = get_args(Task)


# --------------------------------------------------------------------------- JSON helpers


def _number(value: float) -> float | str:
    """A float as JSON: itself when finite, else its ``repr`` (``"nan"``, ``"inf"``, ``"-inf"``)."""
    return value if math.isfinite(value) else repr(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return _number(value)
    return value


def _float(name: str, value: Any) -> float:
    """A JSON number (or ``"nan"``/``"inf"``/``"-inf"``) as a float."""
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} must be a number (or 'nan', 'inf', '-inf'); got {describe(value)}")
    return float(value)


def _optional_float(name: str, value: Any) -> float | None:
    return None if value is None else _float(name, value)


def _optional_str(name: str, value: Any) -> str | None:
    return None if value is None else check_str(name, value)


def _fraction(name: str, value: Any) -> float:
    """A float in ``[0, 1]`` (or NaN: a diverged epoch)."""
    result = _float(name, value)
    if not (math.isnan(result) or 0.0 <= result <= 1.0):
        raise InvalidArgumentError(f"{name} must be a fraction in [0, 1] (accuracies are not percentages); got {result}")
    return result


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidTypeError(f"{name} must be a JSON object (a dict); got {describe(value)}")
    return value


# --------------------------------------------------------------------------- events


_EVENT_TYPES: dict[str, type] = {
    cls.__name__: cls for cls in (SeedGerminated, GateEvaluated, StageChanged, SeedFossilized, SeedPruned, TournamentDecided)
}
_ENUM_FIELDS: dict[str, type[enum.Enum]] = {
    "gate": GateLevel,
    "target_stage": SeedStage,
    "from_stage": SeedStage,
    "to_stage": SeedStage,
    "alpha_curve": AlphaCurve,
}


#: The short ``kind`` of each event type in :func:`event_to_dict`'s output.
EVENT_KINDS: Final[dict[str, str]] = {
    "SeedGerminated": "germinated",
    "GateEvaluated": "gate",
    "StageChanged": "stage_changed",
    "SeedFossilized": "fossilized",
    "SeedPruned": "pruned",
    "TournamentDecided": "tournament",
}


def _event_reason(event: LifecycleEvent) -> str:
    """Why ``event`` happened, in words (a pruned seed's own ``reason``)."""
    if isinstance(event, SeedGerminated):
        return f"germinated {event.blueprint_id} ({event.params} parameters)"
    if isinstance(event, GateEvaluated):
        verdict = "passed" if event.passed else "failed: " + ", ".join(event.checks_failed)
        return f"gate {event.gate.name} {verdict}"
    if isinstance(event, StageChanged):
        return f"{event.from_stage.name} -> {event.to_stage.name}"
    if isinstance(event, SeedFossilized):
        contribution = "not measured" if event.counterfactual is None else f"{event.counterfactual:+.2f} points"
        return f"fossilized {event.blueprint_id}: contribution {contribution}, improvement {event.improvement:+.2f} points"
    return event.reason  # SeedPruned, TournamentDecided


def event_to_dict(event: LifecycleEvent, epoch: int) -> dict[str, Any]:
    """A JSON-compatible dict of ``event`` with its ``type`` and the run's ``epoch``.

    The event's own ``epoch`` field (the seed's epoch counter) is written as
    ``seed_epoch``; enums by name, tuples as lists, non-finite floats as
    their ``repr``. Three summary keys come first: ``kind`` (a short name,
    :data:`EVENT_KINDS`), ``slot`` (the slot id) and ``reason`` (why, in
    words; a pruned seed's own ``reason`` field). :func:`event_from_dict`
    ignores ``kind`` and ``slot`` (and reads ``reason`` only where it is a field),
    so dicts written without them read back the same.
    """
    body = {k: _jsonable(v) for k, v in dataclasses.asdict(event).items()}
    body["seed_epoch"] = body.pop("epoch")
    summary = {"kind": EVENT_KINDS[type(event).__name__], "slot": event.slot_id, "reason": _event_reason(event)}
    return {"type": type(event).__name__, "epoch": epoch, **summary, **body}


#: How ``event_to_dict`` spells the non-finite floats JSON cannot hold.
_NON_FINITE = ("nan", "inf", "-inf")


def event_from_dict(data: Mapping[str, Any]) -> tuple[LifecycleEvent, int]:
    """Rebuild ``(event, run_epoch)`` from :func:`event_to_dict`'s output.

    Raises:
        InvalidArgumentError: an unknown ``type``, a missing field or a value
            that does not fit the field (the message shows the dict).
    """
    try:
        cls = _EVENT_TYPES[data["type"]]
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = data["seed_epoch"] if f.name == "epoch" else data[f.name]
            if f.name in _ENUM_FIELDS:
                raw = _ENUM_FIELDS[f.name][raw]
            elif isinstance(raw, list):
                # JSON has no nan/inf: event_to_dict wrote them as strings, in scalars and in tuples
                raw = tuple(float(v) if "float" in str(f.type) and v in _NON_FINITE else v for v in raw)
            elif isinstance(raw, str) and "float" in str(f.type) and raw in _NON_FINITE:
                raw = float(raw)
            values[f.name] = raw
        return cls(**values), check_int("event epoch", data["epoch"], minimum=0)
    except (KeyError, TypeError, ValueError) as exc:
        known = sorted(_EVENT_TYPES)
        raise InvalidArgumentError(
            f"malformed lifecycle event {dict(data)!r} ({exc!r}); an event has a 'type' in {known}, "
            "the run 'epoch', 'seed_epoch' and the fields of that event type"
        ) from exc


# --------------------------------------------------------------------------- records


@dataclasses.dataclass(frozen=True)
class SlotRecord:
    """One slot after an epoch.

    Attributes:
        slot_id: the slot (``"r0c0"``, ...).
        stage: the stage of the model's seed there (DORMANT for an empty slot).
        alpha: the seed's blend weight (0 for an empty slot).
        blueprint: the blueprint of the seed in the model, ``None`` when empty.
        contribution: this epoch's counterfactual contribution, validation
            accuracy with the seed minus without it, in percentage points;
            ``None`` when not measured (the seed was not blended in).
    """

    slot_id: str
    stage: SeedStage
    alpha: float
    blueprint: str | None = None
    contribution: float | None = None

    def __post_init__(self) -> None:
        check_str("SlotRecord.slot_id", self.slot_id, nonempty=True)
        object.__setattr__(self, "stage", check_enum("SlotRecord.stage", self.stage, SeedStage))
        object.__setattr__(self, "alpha", _float("SlotRecord.alpha", self.alpha))
        _optional_str("SlotRecord.blueprint", self.blueprint)
        object.__setattr__(self, "contribution", _optional_float("SlotRecord.contribution", self.contribution))

    def to_dict(self) -> dict[str, Any]:
        """``{"stage", "alpha", "blueprint", "contribution"}`` (the record keys it by ``slot_id``)."""
        return {
            "stage": self.stage.name,
            "alpha": _number(self.alpha),
            "blueprint": self.blueprint,
            "contribution": None if self.contribution is None else _number(self.contribution),
        }

    @classmethod
    def from_dict(cls, slot_id: str, data: Mapping[str, Any]) -> SlotRecord:
        """The slot ``slot_id`` of a record from :meth:`to_dict`'s output."""
        where = f"slots[{slot_id!r}]"
        data = _mapping(where, data)
        _require_keys(where, data, ("stage", "alpha", "blueprint", "contribution"), ())
        return cls(
            slot_id,
            check_enum(f"{where}.stage", data["stage"], SeedStage),
            _float(f"{where}.alpha", data["alpha"]),
            _optional_str(f"{where}.blueprint", data["blueprint"]),
            _optional_float(f"{where}.contribution", data["contribution"]),
        )


@dataclasses.dataclass(frozen=True)
class ActionRecord:
    """What the controller decided in an epoch (the fields of :class:`esper_func.Action` a report needs)."""

    kind: ActionKind
    slot_id: str | None = None
    blueprint: str | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", check_enum("ActionRecord.kind", self.kind, ActionKind))
        _optional_str("ActionRecord.slot_id", self.slot_id)
        _optional_str("ActionRecord.blueprint", self.blueprint)
        check_str("ActionRecord.reason", self.reason)

    @classmethod
    def of(cls, action: Action) -> ActionRecord:
        """The record of ``action``."""
        return cls(action.kind, action.slot_id, action.blueprint, action.reason)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": name, "slot", "blueprint", "reason"}``."""
        return {"kind": self.kind.name, "slot": self.slot_id, "blueprint": self.blueprint, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ActionRecord:
        """Read :meth:`to_dict`'s output back."""
        data = _mapping("action", data)
        _require_keys("action", data, ("kind", "slot", "blueprint", "reason"), ())
        return cls(
            check_enum("action.kind", data["kind"], ActionKind),
            _optional_str("action.slot", data["slot"]),
            _optional_str("action.blueprint", data["blueprint"]),
            check_str("action.reason", data["reason"]),
        )


_KEYS: Final = (
    "epoch", "step", "task", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_bits_per_token",
    "params", "seconds", "slots", "contributions", "action", "governor", "events",
)
#: Keys a record written before they existed may lack, and what they read as.
_OPTIONAL: Final[dict[str, Any]] = {"task": "classification", "val_bits_per_token": None, "params": None, "seconds": None}


def _require_keys(where: str, data: Mapping[str, Any], keys: tuple[str, ...], optional: tuple[str, ...]) -> None:
    missing = [k for k in keys if k not in data and k not in optional]
    unknown = sorted(set(data) - set(keys))
    if missing or unknown:
        raise InvalidArgumentError(
            f"{where} has " + "; ".join(
                part for part in (
                    f"missing key(s) {missing}" if missing else "",
                    f"unknown key(s) {unknown}" if unknown else "",
                ) if part
            ) + f"; the keys are {list(keys)}"
        )


@dataclasses.dataclass(frozen=True, eq=False)
class EpochRecord:
    """What one epoch of :func:`esper_func.fit.run_epoch` did; a frozen value.

    Attributes:
        epoch: the run's epoch, counted from 1.
        step: optimizer steps taken by the end of the epoch.
        task: ``"classification"`` or ``"language_model"``.
        train_loss, train_accuracy: the mean over the epoch's training
            batches of each batch's loss and accuracy (a fraction in ``[0, 1]``;
            for a language model, of its tokens).
        val_loss, val_accuracy: over the whole validation set (every sample,
            or every target token that is not ``ef.data.IGNORE_INDEX``),
            with the seeds at their alphas; accuracy a fraction in ``[0, 1]``.
        val_bits_per_token: ``val_loss / ln 2`` for a language model (bits
            per character for byte or character tokens), else ``None``.
        params: parameters of the grown model after the epoch (host, seeds
            and gates); ``None`` in records written before it was recorded.
        seconds: the epoch's wall-clock time; ``None`` when not measured.
            The only field that differs between two runs of the same
            configuration, so equality ignores it.
        slots: every slot of the model in execution order (:class:`SlotRecord`).
        action: the controller's decision, ``None`` in an epoch the governor
            rolled back.
        verdict, verdict_reason: the governor's verdict on the validation loss.
        events: the lifecycle events of the epoch, in order.

    Equality: two records are equal when every field but ``seconds`` is
    (NaN equals NaN), i.e. when their JSON forms without ``seconds`` are.
    """

    epoch: int
    step: int
    task: Task
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_bits_per_token: float | None = None
    params: int | None = None
    seconds: float | None = None
    slots: tuple[SlotRecord, ...] = ()
    action: ActionRecord | None = None
    verdict: Verdict = Verdict.OK
    verdict_reason: str = ""
    events: tuple[LifecycleEvent, ...] = ()

    def __post_init__(self) -> None:
        check_int("EpochRecord.epoch", self.epoch, minimum=0)
        check_int("EpochRecord.step", self.step, minimum=0)
        check_choice("EpochRecord.task", self.task, TASKS)
        for name in ("train_loss", "val_loss"):
            object.__setattr__(self, name, _float(f"EpochRecord.{name}", getattr(self, name)))
        for name in ("train_accuracy", "val_accuracy"):
            object.__setattr__(self, name, _fraction(f"EpochRecord.{name}", getattr(self, name)))
        bits = _optional_float("EpochRecord.val_bits_per_token", self.val_bits_per_token)
        if (bits is None) != (self.task == "classification"):
            raise InvalidArgumentError(
                "EpochRecord.val_bits_per_token is reported for task 'language_model' only (val_loss / ln 2); "
                f"got {bits!r} for task {self.task!r}"
            )
        object.__setattr__(self, "val_bits_per_token", bits)
        if self.params is not None:
            check_int("EpochRecord.params", self.params, minimum=0)
        if self.seconds is not None:
            object.__setattr__(self, "seconds", _float("EpochRecord.seconds", self.seconds))
        object.__setattr__(self, "slots", tuple(self.slots))
        object.__setattr__(self, "events", tuple(self.events))
        for slot in self.slots:
            if not isinstance(slot, SlotRecord):
                raise InvalidTypeError(f"EpochRecord.slots must hold SlotRecords; got {describe(slot)}")
        ids = [s.slot_id for s in self.slots]
        if len(set(ids)) != len(ids):
            raise InvalidArgumentError(f"EpochRecord.slots names a slot twice: {ids}")
        if self.action is not None and not isinstance(self.action, ActionRecord):
            raise InvalidTypeError(f"EpochRecord.action must be an ActionRecord or None; got {describe(self.action)}")
        object.__setattr__(self, "verdict", check_enum("EpochRecord.verdict", self.verdict, Verdict))
        check_str("EpochRecord.verdict_reason", self.verdict_reason)
        for event in self.events:
            if type(event).__name__ not in _EVENT_TYPES:
                raise InvalidTypeError(f"EpochRecord.events must hold lifecycle events; got {describe(event)}")

    @property
    def contributions(self) -> dict[str, float]:
        """``{slot_id: contribution}`` for the slots whose contribution was measured."""
        return {s.slot_id: s.contribution for s in self.slots if s.contribution is not None}

    def slot(self, slot_id: str) -> SlotRecord:
        """The record of slot ``slot_id``.

        Raises:
            InvalidArgumentError: no such slot (the message lists the slots).
        """
        for s in self.slots:
            if s.slot_id == slot_id:
                return s
        raise InvalidArgumentError(f"no slot {slot_id!r} in this record; its slots are {[s.slot_id for s in self.slots]}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record (one line of ``metrics.jsonl``); see the module docstring.

        Keys: ``epoch``, ``step``, ``task``, ``train_loss``, ``train_accuracy``,
        ``val_loss``, ``val_accuracy``, ``val_bits_per_token`` (``null`` for
        classification), ``params``, ``seconds``, ``slots`` (``{slot_id:
        {"stage", "alpha", "blueprint", "contribution"}}``), ``contributions``
        (``{slot_id: points}``, the measured ones), ``action`` (``{"kind",
        "slot", "blueprint", "reason"}`` or ``null``), ``governor``
        (``{"verdict", "reason"}``) and ``events`` (see :func:`event_to_dict`).
        """
        return {
            "epoch": self.epoch,
            "step": self.step,
            "task": self.task,
            "train_loss": _number(self.train_loss),
            "train_accuracy": _number(self.train_accuracy),
            "val_loss": _number(self.val_loss),
            "val_accuracy": _number(self.val_accuracy),
            "val_bits_per_token": None if self.val_bits_per_token is None else _number(self.val_bits_per_token),
            "params": self.params,
            "seconds": None if self.seconds is None else _number(self.seconds),
            "slots": {s.slot_id: s.to_dict() for s in self.slots},
            "contributions": {sid: _number(c) for sid, c in self.contributions.items()},
            "action": None if self.action is None else self.action.to_dict(),
            "governor": {"verdict": self.verdict.name, "reason": self.verdict_reason},
            "events": [event_to_dict(e, self.epoch) for e in self.events],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpochRecord:
        """The record whose :meth:`to_dict` is ``data``.

        ``task``, ``val_bits_per_token``, ``params`` and ``seconds`` may be
        missing (records written before they existed): they read as
        ``"classification"``, ``None``, ``None``, ``None``.

        Raises:
            InvalidTypeError, InvalidArgumentError: not a dict, a missing or
                unknown key, or a value that does not fit its field (the
                message names the key); ``contributions`` that disagree with
                the slots' contributions.
        """
        data = _mapping("an epoch record", data)
        _require_keys("the epoch record", data, _KEYS, tuple(_OPTIONAL))
        get = {**_OPTIONAL, **data}.__getitem__
        slots = tuple(SlotRecord.from_dict(sid, info) for sid, info in _mapping("slots", get("slots")).items())
        governor = _mapping("governor", get("governor"))
        _require_keys("governor", governor, ("verdict", "reason"), ())
        events_data = get("events")
        if not isinstance(events_data, list):
            raise InvalidTypeError(f"events must be a JSON list; got {describe(events_data)}")
        events = tuple(event_from_dict(_mapping(f"events[{i}]", e))[0] for i, e in enumerate(events_data))
        action = get("action")
        record = cls(
            epoch=check_int("epoch", get("epoch"), minimum=0),
            step=check_int("step", get("step"), minimum=0),
            task=check_choice("task", get("task"), TASKS),  # type: ignore[arg-type]
            train_loss=_float("train_loss", get("train_loss")),
            train_accuracy=_fraction("train_accuracy", get("train_accuracy")),
            val_loss=_float("val_loss", get("val_loss")),
            val_accuracy=_fraction("val_accuracy", get("val_accuracy")),
            val_bits_per_token=_optional_float("val_bits_per_token", get("val_bits_per_token")),
            params=None if get("params") is None else check_int("params", get("params"), minimum=0),
            seconds=_optional_float("seconds", get("seconds")),
            slots=slots,
            action=None if action is None else ActionRecord.from_dict(action),
            verdict=check_enum("governor.verdict", governor["verdict"], Verdict),
            verdict_reason=check_str("governor.reason", governor["reason"]),
            events=events,
        )
        contributions = {sid: _float(f"contributions[{sid!r}]", v) for sid, v in _mapping("contributions", get("contributions")).items()}
        if _canonical(contributions) != _canonical(record.contributions):
            raise InvalidArgumentError(
                f"contributions {contributions} disagree with the slots' contributions {record.contributions}"
            )
        return record

    def _identity(self) -> str:
        body = self.to_dict()
        del body["seconds"]
        return _canonical(body)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EpochRecord):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())


def _canonical(value: Any) -> str:
    return json.dumps(_jsonable(value) if not isinstance(value, dict) else {k: _jsonable(v) for k, v in value.items()},
                      sort_keys=True, allow_nan=False)
