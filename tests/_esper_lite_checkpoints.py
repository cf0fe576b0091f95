"""Read the recorded esper-lite 2016337e checkpoints in ``tests/data/esper-lite-2016337e/checkpoints``.

The data was written by ``tools/record_esper_lite_checkpoints.py`` running
esper-lite itself; this module needs neither esper-lite nor the recorder.
Every file is read with ``torch.load(..., weights_only=True)``, as an
esper-lite user loads a checkpoint.

Typical use in a test (pytest puts ``tests/`` on ``sys.path``)::

    from _esper_lite_checkpoints import checkpoints

    for ckpt in checkpoints():
        state_dict = ckpt.state_dict()          # esper-lite's model.state_dict()
        outputs = ckpt.outputs()                # {"inputs", "prediction", "without/r0c0", ...}
        for name in ckpt.output_specs:          # what each prediction means
            alphas = ckpt.alphas(name)          # {slot_id: alpha esper-lite ran that slot at}

See the README next to the data for the layout and its meaning.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "DATA_DIR",
    "ESPER_LITE_COMMIT",
    "FORWARD_STAGES",
    "LIVE_STAGES",
    "Checkpoint",
    "OutputSpec",
    "SlotRecord",
    "checkpoint",
    "checkpoints",
    "json_form",
    "load_manifest",
]

ESPER_LITE_COMMIT = "2016337e"
DATA_DIR = Path(__file__).resolve().parent / "data" / f"esper-lite-{ESPER_LITE_COMMIT}" / "checkpoints"

#: Stages in which esper-lite's slot holds a seed module (its ``seed.*`` tensors are in the state_dict).
LIVE_STAGES = frozenset({"GERMINATED", "TRAINING", "BLENDING", "HOLDING", "FOSSILIZED"})
#: Stages in which the seed runs in the forward pass.
FORWARD_STAGES = frozenset({"TRAINING", "BLENDING", "HOLDING", "FOSSILIZED"})


def json_form(value: Any) -> Any:
    """``value`` as it reads back from JSON: tuples become lists (recursively).

    esper-lite's ``_extra_state`` holds tuples (``stage_history`` entries);
    the manifest stores it as JSON. Compare ``json_form(extra) == manifest``.
    """
    if isinstance(value, (list, tuple)):
        return [json_form(v) for v in value]
    if isinstance(value, Mapping):
        return {k: json_form(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class SlotRecord:
    """What the manifest says about one enabled slot at save time.

    ``stage`` is a ``SeedStage`` name (``"DORMANT"`` for an empty slot);
    ``blueprint`` and ``algorithm`` (``"ADD"``, ``"MULTIPLY"``, ``"GATE"``)
    are ``None`` for an empty slot; ``telemetry_measured`` tells whether the
    seed's gradient-health telemetry was ever measured (``None``: no seed
    state). ``raw`` is the full manifest entry (plan, ``changes_output``,
    parameters left at initialisation ...).
    """

    slot_id: str
    stage: str
    blueprint: str | None
    algorithm: str | None
    alpha: float
    seed_module: bool
    gate_network: bool
    in_forward: bool
    telemetry_measured: bool | None
    raw: Mapping[str, Any]


@dataclass(frozen=True)
class OutputSpec:
    """One saved prediction: the alphas forced with ``SeedSlot.force_alpha``, its shape and dtype."""

    name: str
    forced: Mapping[str, float]
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class Checkpoint:
    """One recorded esper-lite checkpoint and its manifest entry."""

    name: str
    directory: Path
    entry: Mapping[str, Any]

    @property
    def host_class(self) -> str:
        """``"CNNHost"`` or ``"TransformerHost"``."""
        return str(self.entry["host"]["class"])

    @property
    def host_kwargs(self) -> dict[str, Any]:
        """The host's constructor arguments (CNN ``memory_format`` by name: ``"channels_last"``)."""
        return dict(self.entry["host"]["kwargs"])

    @property
    def topology(self) -> str:
        """``"cnn"`` or ``"transformer"``."""
        return str(self.entry["topology"])

    @property
    def slots(self) -> tuple[str, ...]:
        """Enabled slot ids, in the order passed to ``MorphogeneticModel(slots=...)``."""
        return tuple(self.entry["slots"])

    @property
    def execution_order(self) -> tuple[str, ...]:
        """Enabled slot ids in forward order."""
        return tuple(self.entry["execution_order"])

    @property
    def slot_states(self) -> dict[str, SlotRecord]:
        """Per enabled slot, its :class:`SlotRecord`."""
        out = {}
        for slot_id, s in self.entry["slot_states"].items():
            out[slot_id] = SlotRecord(
                slot_id=slot_id,
                stage=s["stage"],
                blueprint=s["blueprint"],
                algorithm=s["algorithm"],
                alpha=float(s["alpha"]),
                seed_module=bool(s["seed_module"]),
                gate_network=bool(s["gate_network"]),
                in_forward=bool(s["in_forward"]),
                telemetry_measured=s["telemetry_measured"],
                raw=s,
            )
        return out

    @property
    def extra_state(self) -> dict[str, Any]:
        """Per slot, the ``_extra_state`` esper-lite saved, in JSON form (see :func:`json_form`)."""
        return dict(self.entry["extra_state"])

    @property
    def output_specs(self) -> dict[str, OutputSpec]:
        """The saved predictions (``"prediction"``, ``"without/<slot>"``, ``"half/<slot>"``, ``"all_off"``)."""
        return {
            name: OutputSpec(name, dict(spec["forced"]), tuple(spec["shape"]), spec["dtype"])
            for name, spec in self.entry["outputs"].items()
        }

    def alphas(self, output: str) -> dict[str, float]:
        """Per enabled slot, the alpha esper-lite ran it at for ``output``: its own, unless forced."""
        forced = self.output_specs[output].forced
        return {s: float(forced.get(s, rec.alpha)) for s, rec in self.slot_states.items()}

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint, ``torch.load(path, weights_only=True)`` of esper-lite's ``model.state_dict()``."""
        return torch.load(self.directory / self.entry["file"], weights_only=True)

    def outputs(self) -> dict[str, Tensor]:
        """``{"inputs": x, <output name>: esper-lite's eval-mode prediction}``."""
        return torch.load(self.directory / self.entry["outputs_file"], weights_only=True)

    def esper_func_host(self) -> Any:
        """The matching esper_func host spec (``ef.CNNHost`` / ``ef.TransformerHost``)."""
        import esper_func as ef

        cls = {"CNNHost": ef.CNNHost, "TransformerHost": ef.TransformerHost}[self.host_class]
        return cls(**self.host_kwargs)


@cache
def _manifest(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "manifest.json").read_text())


def load_manifest(directory: Path = DATA_DIR) -> dict[str, Any]:
    """The parsed ``manifest.json`` (cached; do not mutate)."""
    return _manifest(Path(directory))


def checkpoints(directory: Path = DATA_DIR) -> list[Checkpoint]:
    """Every recorded checkpoint, in manifest order."""
    directory = Path(directory)
    return [Checkpoint(e["name"], directory, e) for e in load_manifest(directory)["checkpoints"]]


def checkpoint(name: str, directory: Path = DATA_DIR) -> Checkpoint:
    """The recorded checkpoint called ``name``."""
    for ckpt in checkpoints(directory):
        if ckpt.name == name:
            return ckpt
    raise KeyError(f"no recorded checkpoint {name!r}; recorded: {[c.name for c in checkpoints(directory)]}")
