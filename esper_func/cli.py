"""Command line: ``esper-func`` (also ``python -m esper_func``).

Commands:

- ``demo [--epochs N] [--seed S] [--out DIR]``: grow seeds into a small CNN
  on scikit-learn's handwritten digits; writes ``DIR/metrics.jsonl``,
  ``DIR/report.png`` and a checkpoint under ``DIR/checkpoints``;
- ``resume DIR [--epochs N]``: continue a run from its checkpoint;
- ``sweep DIR``: an attribution table (ablation, Shapley, interactions) for a
  run's seeds;
- ``import-esper-lite CHECKPOINT DIR``: turn an esper-lite
  ``MorphogeneticModel`` state dict into a run directory.

Under ``torchrun`` the training commands run data-parallel (see
``docs/scaling.md``).

Every user error (a bad argument, a directory that cannot be used, a
damaged checkpoint, a missing optional package) is reported as one line on
stderr, ``esper-func <command>: <what is wrong and what is allowed>``, with
exit status 2; nothing already saved is lost. The run directory layout and
its guarantees are described in :mod:`esper_func.runs`: ``--overwrite``
replaces only a run's own files, a second writer is locked out, and
``resume`` continues from the newest complete checkpoint after a crash at
any point (or starts over when there is none).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO, TypeVar

import torch
import torch.nn.functional as F

from esper_func.errors import (
    CheckpointError,
    DTypeError,
    EsperFuncError,
    InvalidArgumentError,
    MissingDependencyError,
    RunDirectoryError,
    ShapeError,
)
from esper_func.hosts import BUILTIN_HOSTS

__all__ = ["main"]

PROG = "esper-func"
DEFAULT_OUT = "runs/demo"
MAX_EPOCHS = 1_000_000
MAX_SEED = 2**63 - 1
#: The most candidate seeds ``demo --tournament`` germinates in a slot at once.
MAX_TOURNAMENT = 16
#: ``(image channels, classes)`` of the built-in datasets.
DATASET_SHAPES: dict[str, tuple[int, int]] = {"digits": (1, 10), "synthetic": (1, 4)}
#: The built-in host classes by topology name (``import-esper-lite --host``).
_BUILTIN_HOST_CLASSES: dict[str, type[Any]] = {cls.topology.name: cls for cls in BUILTIN_HOSTS.values()}
#: The text task's dataset: the Python standard library's source, byte tokens.
TEXT = "text"
#: What ``demo --task`` takes.
DEMO_TASKS = ("digits", TEXT)

_T = TypeVar("_T")

try:  # the progress bar; optional (pip install 'esper-func[demo]'), with a plain fallback
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover - depends on the environment
    _tqdm = None


# --------------------------------------------------------------------------- run configuration


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything needed to rebuild a demo run; stored in the checkpoint's ``extra``."""

    dataset: str = "digits"
    epochs: int = 70
    seed: int = 0
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    base_channels: int = 4
    n_blocks: int = 2
    min_blending_epochs: int = 3
    permissive_gates: bool = True
    #: Batches per epoch (0: one pass over the data); the text task draws this many random windows.
    steps_per_epoch: int = 0
    #: The text task's transformer: context length, width, heads, layers.
    block_size: int = 64
    n_embd: int = 64
    n_head: int = 4
    n_layer: int = 2
    #: Learning rate at the last epoch (cosine from ``lr``); 0 keeps ``lr`` throughout.
    min_lr: float = 0.0
    #: Validation windows of the text task (evenly spaced, full).
    val_windows: int = 256
    #: Train and compare the two baselines after the grown model.
    baselines: bool = True
    #: Also report bits per character over the whole held-out text at the end (text task).
    full_eval: bool = False
    #: Candidate seeds per germination (``FitConfig.tournament``); 1: a single seed, as esper-lite.
    tournament: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int):
                low = 0 if f.name in ("seed", "min_blending_epochs", "steps_per_epoch") else 1
                high = MAX_SEED if f.name == "seed" else MAX_EPOCHS if f.name == "epochs" else 2**31 - 1
                if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                    raise InvalidArgumentError(f"{f.name} must be a whole number from {low} to {high}; got {value!r}")
            elif f.type in ("float", float):
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                    raise InvalidArgumentError(f"{f.name} must be a finite number >= 0; got {value!r}")
            elif f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise InvalidArgumentError(f"{f.name} must be true or false; got {value!r}")
        if self.dataset not in (*DATASET_SHAPES, TEXT):
            raise InvalidArgumentError(f"dataset must be one of {sorted((*DATASET_SHAPES, TEXT))}; got {self.dataset!r}")
        if self.dataset == TEXT and self.n_embd % self.n_head:
            raise InvalidArgumentError(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.lr <= 0:
            raise InvalidArgumentError(f"lr must be > 0; got {self.lr!r}")
        if self.tournament > MAX_TOURNAMENT:
            raise InvalidArgumentError(f"tournament must be a whole number from 1 to {MAX_TOURNAMENT}; got {self.tournament}")
        if self.tournament > 1 and self.min_blending_epochs < 1:
            raise InvalidArgumentError(
                "a tournament needs min_blending_epochs >= 1 (the epochs the candidates incubate in TRAINING before "
                f"they are compared); got min_blending_epochs={self.min_blending_epochs}"
            )

    @classmethod
    def from_dict(cls, stored: Any, where: str) -> RunConfig:
        """Rebuild a stored configuration; a missing field takes its default.

        Raises:
            CheckpointError: not a dict, an unknown field, or a value of the
                wrong type or out of range (the message names ``where`` and the field).
        """
        if not isinstance(stored, Mapping):
            raise CheckpointError(f"{where}: the run configuration must be a JSON object; got {type(stored).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(stored) - known)
        if unknown:
            raise CheckpointError(f"{where}: the run configuration has unknown field(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**dict(stored))
        except InvalidArgumentError as exc:
            raise CheckpointError(f"{where}: the run configuration is invalid: {exc}") from None

    @classmethod
    def for_task(
        cls, task: str, *, epochs: int | None = None, seed: int = 0, quick: bool = False, tournament: int = 1
    ) -> RunConfig:
        """The demo's configuration of ``task`` (``digits``, ``text``, or the test-only ``synthetic``).

        ``quick`` shrinks it to run in seconds (for tests); ``epochs`` replaces the default count;
        ``tournament`` is the number of candidate seeds per germination.
        """
        import esper_func as ef

        if task == "digits":
            config = cls(dataset="digits", epochs=100, permissive_gates=False,
                         min_blending_epochs=ef.Gates().min_blending_epochs)
            if quick:
                config = dataclasses.replace(config, epochs=6)
        elif task == TEXT:
            config = cls(dataset=TEXT, epochs=20, batch_size=32, lr=3e-3, min_lr=3e-4, weight_decay=0.0,
                         steps_per_epoch=80, min_blending_epochs=1, permissive_gates=True, full_eval=True)
            if quick:
                config = dataclasses.replace(config, epochs=4, batch_size=8, steps_per_epoch=3, block_size=16,
                                             n_embd=16, n_head=2, val_windows=16, full_eval=False)
        elif task == "synthetic":
            config = cls(dataset="synthetic")
            if quick:
                config = dataclasses.replace(config, epochs=2)
        else:
            raise InvalidArgumentError(f"task must be one of {sorted((*DATASET_SHAPES, TEXT))}; got {task!r}")
        return dataclasses.replace(
            config, seed=seed, epochs=config.epochs if epochs is None else epochs, tournament=tournament
        )

    @property
    def task(self) -> str:
        """The :class:`~esper_func.fit.FitConfig` task: ``"language_model"`` for text, else ``"classification"``."""
        return "language_model" if self.dataset == TEXT else "classification"

    @property
    def gates_name(self) -> str:
        return "permissive" if self.permissive_gates else "strict"

    def host(self, data: Any) -> Any:
        import esper_func as ef

        if self.dataset == TEXT:
            return ef.TransformerHost(
                vocab_size=256, n_embd=self.n_embd, n_head=self.n_head, n_layer=self.n_layer,
                block_size=self.block_size, dropout=0.0, num_segments=self.n_layer,
            )
        return ef.CNNHost(
            in_channels=int(data.x_train.shape[1]),
            num_classes=int(data.num_classes),
            n_blocks=self.n_blocks,
            base_channels=self.base_channels,
            memory_format="contiguous_format",
        )

    def widened(self, width: int) -> RunConfig:
        """This configuration with the host's width (``n_embd`` for text, else ``base_channels``) set to ``width``."""
        if self.dataset == TEXT:
            return dataclasses.replace(self, n_embd=width)
        return dataclasses.replace(self, base_channels=width)

    @property
    def width(self) -> int:
        return self.n_embd if self.dataset == TEXT else self.base_channels

    def widths(self) -> range:
        """Widths the widened baseline may take (at least the host's own)."""
        if self.dataset == TEXT:
            return range(self.n_embd, 3 * self.n_embd + 1, self.n_head)
        return range(self.base_channels, 4 * self.base_channels + 1)

    def build(self, data: Any) -> tuple[Any, Any]:
        """``(model, train state)`` at initialisation: a pure function of the configuration (and data shape)."""
        import esper_func as ef
        from esper_func.demo import gpt_init
        from esper_func.train import init_train_state

        host = self.host(data)
        model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(self.seed))
        if self.dataset == TEXT:  # the library's init follows esper-lite's and starts far from a byte model's loss
            params = {**params, "host": gpt_init(params["host"], self.n_layer, seed=self.seed)}
        return model, init_train_state(model, params, buffers, optimizer=self.optimizer(), key=self.seed)

    def optimizer(self, epoch: int = 1) -> Any:
        """The optimizer of ``epoch`` (its learning rate follows the schedule; its state carries over)."""
        import esper_func as ef
        from esper_func.demo import cosine_lr

        lr = cosine_lr(min(epoch, self.epochs), self.epochs, self.lr, self.min_lr) if self.min_lr > 0 else self.lr
        if self.dataset == TEXT:
            return ef.optim.adamw(lr, betas=(0.9, 0.99), weight_decay=self.weight_decay)
        return ef.optim.sgd(lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def fit_config(self) -> Any:
        import esper_func as ef
        from esper_func.fit import FitConfig
        from esper_func.governor import GovernorConfig

        gates = (
            ef.Gates(min_blending_epochs=self.min_blending_epochs, permissive=self.permissive_gates)
        )
        if self.dataset == TEXT:
            return FitConfig(epochs=self.epochs, batch_size=self.batch_size, seed=self.seed, gates=gates,
                             task="language_model", governor=GovernorConfig(random_guess_loss=math.log(256)),
                             val_batch_size=256, tournament=self.tournament)
        return FitConfig(epochs=self.epochs, batch_size=self.batch_size, seed=self.seed, gates=gates,
                         tournament=self.tournament)

    def controller(self) -> Any:
        from esper_func.controller import HeuristicConfig, heuristic

        if self.dataset == TEXT:
            # Germinate early and often: a 20-epoch text run has no time for esper-lite's plateau waits.
            return heuristic(HeuristicConfig(
                stabilization_epochs=0, min_epochs_before_germinate=2, plateau_epochs_to_germinate=0,
                blueprint_rotation=("attention", "mlp"), tempo=3, min_improvement_to_fossilize=0.0,
            ))
        # The validation loss of a small CNN keeps wobbling by more than esper-lite's 3 %
        # stabilisation band, so the demo germinates on the accuracy plateau alone.
        return heuristic(HeuristicConfig(stabilization_epochs=0))

    def sources(self, data: Any, rank: int = 0, world_size: int = 1) -> tuple[Any, Any]:
        """``(train, val)`` for :func:`esper_func.fit.run_epoch` (``val`` None: the dataset's own split)."""
        if self.dataset != TEXT:
            return data, None
        from esper_func.demo import fixed_windows

        train = data.train_batches(self.batch_size, self.block_size, seed=self.seed,
                                   steps=self.steps_per_epoch or None, rank=rank, world_size=world_size)
        x, y = fixed_windows(data.val, self.val_windows, self.block_size)
        return train, [(x, y)]

    def val_batches(self, data: Any) -> list[tuple[Any, Any]]:
        """The validation batches the grown model is measured on (for the Shapley sweep)."""
        import esper_func as ef

        val = self.sources(data)[1]
        return val if val is not None else list(ef.data.batches(data.val, 512, shuffle=False))


def _load_data(name: str, seed: int) -> Any:
    import esper_func as ef

    if name == "digits":
        _require("sklearn", "scikit-learn", "the 'digits' dataset")
        return ef.data.load_digits(seed=seed)
    if name == "synthetic":
        return ef.data.synthetic_images(600, classes=DATASET_SHAPES["synthetic"][1], size=8, seed=seed)
    if name == TEXT:
        return ef.data.load_stdlib_text()
    raise InvalidArgumentError(f"unknown dataset {name!r}; choose one of {sorted(DATASET_SHAPES)}")


def _require(module: str, package: str, purpose: str) -> None:
    """Import ``module`` now, so a missing optional package is reported before any work is done."""
    try:
        __import__(module)
    except ImportError:
        raise MissingDependencyError(
            f"{purpose} needs the '{package}' package, which is not installed: pip install 'esper-func[demo]'"
        ) from None


def _require_for_training(dataset: str) -> None:
    _require("safetensors.torch", "safetensors", "saving checkpoints")
    _require("matplotlib.pyplot", "matplotlib", "the PNG report")
    if dataset == "digits":
        _require("sklearn", "scikit-learn", "the 'digits' dataset")


# --------------------------------------------------------------------------- output


class Console:
    """Progress bar, event lines and tables; only rank 0 prints."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = sys.stdout if stream is None else stream  # looked up now: stdout may be redirected
        self.enabled = enabled
        self.tty = enabled and self.stream.isatty()

    def line(self, text: str = "") -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def progress(self, label: str) -> Callable[[int, int], None]:
        """An ``on_step(done, total)`` callback drawing a bar for one epoch (tqdm when installed, else plain)."""
        bar: Any = None

        def show(done: int, total: int) -> None:
            nonlocal bar
            if not self.tty:
                return
            if _tqdm is not None:
                if bar is None:
                    bar = _tqdm(total=total, desc=label, file=self.stream, leave=False, dynamic_ncols=True,
                                unit="step")
                    self._bar = bar
                bar.n = done
                bar.refresh()
                return
            width = 24
            filled = int(width * done / max(1, total))
            text = "#" * filled + "." * (width - filled)
            print(f"\r{label} [{text}] {done}/{total}", end="", file=self.stream, flush=True)

        return show

    def end_progress(self) -> None:
        bar = getattr(self, "_bar", None)
        if bar is not None:
            bar.close()
            self._bar = None
        elif self.tty:
            print("\r" + " " * 72 + "\r", end="", file=self.stream, flush=True)

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        for i, row in enumerate(cells):
            self.line("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)))
            if i == 0:
                self.line("  ".join("-" * w for w in widths))


def _describe_event(event: Mapping[str, Any]) -> str | None:
    kind = event["type"]
    slot = event["slot_id"]
    if kind == "SeedGerminated":
        return f"{slot}: germinated {event['blueprint_id']} ({event['params']} parameters)"
    if kind == "StageChanged":
        return f"{slot}: {event['from_stage']} -> {event['to_stage']} (alpha {event['alpha']:.2f})"
    if kind == "SeedFossilized":
        contribution = event["counterfactual"]
        shown = "not measured" if contribution is None else f"{float(contribution):+.2f} pts"
        return f"{slot}: fossilized {event['blueprint_id']}, contribution {shown}"
    if kind == "SeedPruned":
        return f"{slot}: pruned {event['blueprint_id']} ({event['reason']}, by {event['initiator']})"
    if kind == "GateEvaluated" and not event["passed"]:
        return f"{slot}: gate {event['gate']} held it back ({', '.join(event['checks_failed'])})"
    return None


def _epoch_line(record: Mapping[str, Any], seconds: float) -> str:
    live = [
        f"{sid} {info['blueprint'] or '(cooling down)'} {info['stage']} alpha {info['alpha']:.2f}"
        for sid, info in record["slots"].items()
        if info["stage"] not in ("DORMANT", "UNKNOWN")
    ]
    bits = record.get("val_bits_per_token")
    quality = f"val bpc {float(bits):.3f}" if bits is not None else f"val acc {100 * record['val_accuracy']:5.1f}%"
    return (
        f"epoch {record['epoch']:3d}  train loss {float(record['train_loss']):.3f}  "
        f"val loss {float(record['val_loss']):.3f}  {quality}  params {record.get('params') or '-'}  "
        f"{'; '.join(live) or 'all slots empty'}  ({seconds:.1f}s)"
    )


METRICS_FILE = "metrics.jsonl"
REPORT_FILE = "report.png"
SUMMARY_FILE = "summary.json"
BASELINES_FILE = "baselines.json"
#: The files a demo run writes next to its checkpoints (all owned by the run).
OUTPUT_FILES = (METRICS_FILE, REPORT_FILE, SUMMARY_FILE, BASELINES_FILE)
#: The baselines, in the order they are trained, and their words.
BASELINE_NAMES = {"no_seeds": "no seeds", "widened": "widened static host"}


def _metrics_bytes(records: Sequence[Mapping[str, Any]]) -> bytes:
    return "".join(json.dumps(record, sort_keys=True) + "\n" for record in records).encode("utf-8")


def _write_metrics(out: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """Replace ``metrics.jsonl`` with ``records``, atomically and durably."""
    from esper_func.runs import write_atomic

    path = out / METRICS_FILE
    write_atomic(path, _metrics_bytes(records))
    return path


def _write_report(out: Path, records: Sequence[Mapping[str, Any]], title: str, **extra: Any) -> Path:
    """Draw ``report.png`` into a temporary file and rename it into place (``extra`` goes to ``write_report``)."""
    import secrets

    from esper_func.checkpoint import _fsync_dir
    from esper_func.report import write_report
    from esper_func.runs import TMP_PREFIX

    path = out / REPORT_FILE
    tmp = out / f"{TMP_PREFIX}{secrets.token_hex(4)}-{REPORT_FILE}"
    try:
        write_report(records, tmp, title=title, **extra)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    _fsync_dir(out)
    return path


def _trim_rank_log(path: Path, epochs_done: int) -> None:
    """Keep the lines of a rank log for epochs ``<= epochs_done`` (and stop at a torn line).

    Each rank appends its line before rank 0 writes the epoch's checkpoint,
    so a crash in between leaves lines for epochs the resumed run trains
    again; they are dropped here, before the log is appended to.
    """
    from esper_func.runs import write_atomic

    if not path.is_file():
        return
    data = path.read_bytes()
    kept: list[tuple[int, bytes]] = []
    for line in data.splitlines(keepends=True):
        try:
            epoch = json.loads(line)["epoch"]
        except (ValueError, KeyError, TypeError):
            break
        if not line.endswith(b"\n") or isinstance(epoch, bool) or not isinstance(epoch, int):
            break
        # An epoch written again (a run resumed from an earlier checkpoint) replaces what followed it.
        kept = [(e, text) for e, text in kept if e < epoch]
        if epoch <= epochs_done:
            kept.append((epoch, line))
    trimmed = b"".join(text for _, text in kept)
    if trimmed != data:
        write_atomic(path, trimmed)


def _metrics_of(record: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The validation metrics of an epoch record a baseline entry keeps."""
    out = {"epoch": record["epoch"], "val_loss": record["val_loss"], "val_accuracy": record["val_accuracy"]}
    if task == TEXT:
        out["val_bpc"] = record["val_bits_per_token"]
    return out


def _demo_lines(config: RunConfig, records: Sequence[Mapping[str, Any]],
                baselines: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The lines of ``metrics.jsonl``: each epoch record (``EpochRecord.to_dict()``) plus ``baseline``
    (``{name: {"val_loss", "val_accuracy"[, "val_bpc"]}}`` for the baselines already trained) and, for
    text, ``val_bpc``."""
    runs = (baselines or {})
    lines = []
    for record in records:
        line = dict(record)
        if config.dataset == TEXT:
            line["val_bpc"] = record["val_bits_per_token"]
        epoch = int(record["epoch"])
        line["baseline"] = {
            name: {k: v for k, v in run["history"][epoch - 1].items() if k != "epoch"}
            for name, run in runs.items()
            if len(run["history"]) >= epoch
        }
        lines.append(line)
    return lines


def _dataset_info(data: Any) -> dict[str, Any]:
    """``{"name", "bytes" | "samples", "sha256", ...}`` of the data a run used."""
    import hashlib

    info = getattr(data, "info", None)
    if info is not None:
        return dict(info.to_dict())
    digest = hashlib.sha256()
    for t in (data.x_train, data.y_train, data.x_val, data.y_val):
        digest.update(t.contiguous().numpy().tobytes())
    return {"name": "unnamed", "samples": int(data.x_train.shape[0] + data.x_val.shape[0]), "sha256": digest.hexdigest()}


def _host_param_count(config: RunConfig, data: Any) -> int:
    import esper_func as ef

    host = config.host(data)
    _, params, _ = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(0))
    return sum(t.numel() for t in params["host"].values())


def _full_val_bpc(config: RunConfig, data: Any, model: Any, state: Any) -> float | None:
    """Bits per character over the whole held-out text (text task with ``full_eval``), else ``None``."""
    import esper_func as ef

    if config.dataset != TEXT or not config.full_eval:
        return None
    grid = ef.alphas_of(model, state.seeds).unsqueeze(0)
    result = ef.evaluate(model, state.params, state.buffers, data.val_batches(256, config.block_size), grid,
                         loss_fn=F.cross_entropy)
    return float(result.loss[0]) / math.log(2)


def _wait(observation: Any) -> Any:
    """The baselines' controller: never germinate."""
    from esper_func.lifecycle import Action, ActionKind

    return Action(kind=ActionKind.WAIT, reason="baseline: no seeds")


def _run_baseline(name: str, config: RunConfig, data: Any, grown_params: int, console: Console) -> dict[str, Any]:
    """Train baseline ``name`` (``no_seeds``: the grown model's host, never germinating; ``widened``: a
    static host of the width whose parameter count is closest to ``grown_params``) with the grown model's
    data, epochs, steps and optimizer; its per-epoch validation metrics."""
    import esper_func as ef
    from esper_func.demo import closest_width
    from esper_func.fit import LoopState, run_epoch

    if name == "widened":
        width, _ = closest_width(lambda w: _host_param_count(config.widened(w), data), grown_params, config.widths())
        cfg = config.widened(width)
    else:
        cfg = config
    started = time.perf_counter()
    model, state = cfg.build(data)
    train, val = cfg.sources(data)
    fit_config, registry = cfg.fit_config(), ef.default_registry()
    loop = LoopState()
    history = []
    label = BASELINE_NAMES[name]
    while loop.epoch < cfg.epochs:
        epoch = loop.epoch + 1
        model, state, loop, record = run_epoch(
            model, state, loop, train, val=val, optimizer=cfg.optimizer(epoch), config=fit_config, registry=registry,
            controller=_wait, loss_fn=F.cross_entropy, on_step=console.progress(f"{label}: epoch {epoch}/{cfg.epochs}"),
        )
        console.end_progress()
        history.append(_metrics_of(record.to_dict(), cfg.dataset))
    params = int(record.params or 0)
    full = _full_val_bpc(cfg, data, model, state)
    seconds = time.perf_counter() - started
    last = history[-1]
    quality = f"{float(last['val_bpc']):.3f} bpc" if cfg.dataset == TEXT else f"{100 * float(last['val_accuracy']):.1f}%"
    console.line(f"baseline {label} (width {cfg.width}, {params} parameters): {quality} after {cfg.epochs} epochs ({seconds:.1f}s)")
    return {"width": cfg.width, "params": params, "history": history, "full_val_bpc": full, "seconds": seconds}


def _read_baselines(out: Path, key: Mapping[str, Any]) -> dict[str, Any]:
    """The baselines already trained for this run (``{}`` when none, or when they were for another run)."""
    path = out / BASELINES_FILE
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict) or stored.get("for") != json.loads(json.dumps(key)):
        return {}
    runs = stored.get("runs")
    return dict(runs) if isinstance(runs, dict) else {}


def _final_and_best(history: Sequence[Mapping[str, Any]], task: str) -> tuple[dict[str, Any], dict[str, Any]]:
    final = {k: v for k, v in history[-1].items()}
    best: dict[str, Any] = {
        "val_loss": min(float(h["val_loss"]) for h in history),
        "val_accuracy": max(float(h["val_accuracy"]) for h in history),
    }
    if task == TEXT:
        best["val_bpc"] = min(float(h["val_bpc"]) for h in history)
    return final, best


def _finish(
    out: Path, config: RunConfig, data: Any, model: Any, state: Any, records: Sequence[Mapping[str, Any]],
    console: Console,
) -> None:
    """After the grown model's last epoch (rank 0): train the baselines not yet trained (each saved to
    ``baselines.json`` once complete), then write ``metrics.jsonl``, ``summary.json`` and ``report.png``
    and print the comparison. Run again by ``resume`` until everything is there."""
    from esper_func.demo import slot_shapley, verdict
    from esper_func.runs import write_atomic

    began = time.perf_counter()
    trained_now = 0.0
    grown_params = int(records[-1].get("params") or sum(t.numel() for t in state.params["host"].values()))
    key = {"config": dataclasses.asdict(config), "grown_params": grown_params}
    runs = _read_baselines(out, key) if config.baselines else {}
    for name in BASELINE_NAMES if config.baselines else ():
        if name not in runs:
            runs[name] = _run_baseline(name, config, data, grown_params, console)
            trained_now += float(runs[name]["seconds"])
            write_atomic(out / BASELINES_FILE, json.dumps({"for": key, "runs": runs}, sort_keys=True, indent=1).encode())
    shapley = slot_shapley(model, state.params, state.buffers, state.seeds, config.val_batches(data), loss_fn=F.cross_entropy)
    lines = _demo_lines(config, records, runs)
    _write_metrics(out, lines)

    grown_history = [_metrics_of(r, config.dataset) for r in records]
    final, best = _final_and_best(grown_history, config.dataset)
    if config.dataset == TEXT:
        final["full_val_bpc"] = _full_val_bpc(config, data, model, state)
    finals = {"grown": final}
    bests = {"grown": best}
    params = {"grown": grown_params}
    for name, run in runs.items():
        finals[name], bests[name] = _final_and_best(run["history"], config.dataset)
        if config.dataset == TEXT:
            finals[name]["full_val_bpc"] = run.get("full_val_bpc")
        params[name] = run["params"]
    events = [e for r in records for e in r["events"] if e.get("kind") in ("fossilized", "pruned")]
    last = records[-1]
    grown_seconds = sum(float(r["seconds"]) for r in records if isinstance(r.get("seconds"), (int, float)))
    summary = {
        "task": config.dataset,
        "gates": config.gates_name,
        "dataset": _dataset_info(data),
        "epochs": config.epochs,
        "config": dataclasses.asdict(config),
        "final": finals,
        "best": bests,
        "params": params,
        "widths": {"grown": config.width, **{n: r["width"] for n, r in runs.items()}},
        "slots": {sid: {k: info[k] for k in ("stage", "blueprint", "alpha")} for sid, info in last["slots"].items()},
        "decisions": [{k: e[k] for k in ("epoch", "kind", "slot", "reason")} for e in events],
        "tournaments": [
            {k: e[k] for k in ("epoch", "slot", "candidates", "winner", "blueprint_id", "alpha", "baseline_loss",
                               "losses", "contributions", "gate_passed", "reason")}
            for r in records for e in r["events"] if e.get("kind") == "tournament"
        ],
        "shapley_points": shapley,
        # The grown epochs, every baseline and this final evaluation (each counted once over resumes).
        "wall_seconds": round(grown_seconds + sum(float(r["seconds"]) for r in runs.values())
                              + (time.perf_counter() - began - trained_now), 2),
        "verdict": verdict(config.dataset if config.dataset == TEXT else "accuracy",
                           final, {n: finals[n] for n in runs}, names=BASELINE_NAMES),
    }
    write_atomic(out / SUMMARY_FILE, (json.dumps(summary, indent=2, sort_keys=True) + "\n").encode())
    _write_report(out, lines, title=_title(config), shapley=shapley, baseline_names=BASELINE_NAMES,
                  baseline_params={n: r["params"] for n, r in runs.items()})
    _final_table(console, config, summary)


def _title(config: RunConfig) -> str:
    return f"esper-func demo: {config.dataset}, {config.gates_name} gates, seed {config.seed}"


def _final_table(console: Console, config: RunConfig, summary: Mapping[str, Any]) -> None:
    text = config.dataset == TEXT
    console.line()
    console.table(
        ["slot", "blueprint", "stage", "alpha", "Shapley (pts)"],
        [[sid, info["blueprint"] or "-", info["stage"], f"{float(info['alpha']):.2f}",
          f"{summary['shapley_points'][sid]:+.2f}" if sid in summary["shapley_points"] else "-"]
         for sid, info in summary["slots"].items()],
    )
    for t in summary["tournaments"]:
        console.line(f"\ntournament in {t['slot']} at epoch {t['epoch']}: {t['blueprint_id']} won "
                     f"(validation loss at alpha {float(t['alpha']):.2f}; without the slot {float(t['baseline_loss']):.4f})")
        console.table(
            ["candidate", "blueprint", "val loss", "contribution (pts)", "passes G2"],
            [[("* " if i == t["winner"] else "") + str(i), name, f"{float(t['losses'][i]):.4f}",
              f"{float(t['contributions'][i]):+.2f}", "yes" if t["gate_passed"][i] else "no"]
             for i, name in enumerate(t["candidates"])],
        )
    console.line()
    headers = ["model", "params", "final val acc", "best val acc", "final val loss"]
    if text:
        headers += ["final bpc", "best bpc"] + (["held-out bpc"] if config.full_eval else [])
    rows = []
    for name in summary["final"]:
        final, best = summary["final"][name], summary["best"][name]
        row = [
            "grown" if name == "grown" else BASELINE_NAMES.get(name, name),
            summary["params"][name],
            f"{100 * float(final['val_accuracy']):.1f}%",
            f"{100 * float(best['val_accuracy']):.1f}%",
            f"{float(final['val_loss']):.3f}",
        ]
        if text:
            row += [f"{float(final['val_bpc']):.3f}", f"{float(best['val_bpc']):.3f}"]
            if config.full_eval:
                full = final.get("full_val_bpc")
                row.append("-" if full is None else f"{float(full):.3f}")
        rows.append(row)
    console.table(headers, rows)
    final, best = summary["final"]["grown"], summary["best"]["grown"]
    console.line(
        f"\nfinal validation accuracy {100 * float(final['val_accuracy']):.1f}% (best "
        f"{100 * float(best['val_accuracy']):.1f}%) after {summary['epochs']} epochs"
        + (f", {float(final['val_bpc']):.3f} bits per character" if text else "")
    )
    console.line(summary["verdict"])


# --------------------------------------------------------------------------- ranks


def _all_ranks_ok(world: Any, ok: bool) -> bool:
    """Whether ``ok`` holds on every rank (one all-reduce when launched by torchrun)."""
    if not world.launched:
        return ok
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=world.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=world.group)
    return bool(flag.item())


def _together(world: Any, fn: Callable[[], _T]) -> _T:
    """Run ``fn`` on this rank; if it fails on any rank, raise on every rank (no rank is left waiting)."""
    error: BaseException | None = None
    result: Any = None
    try:
        result = fn()
    except (EsperFuncError, OSError) as exc:
        error = exc
    if not _all_ranks_ok(world, error is None):
        if error is not None:
            raise error
        raise RunDirectoryError("another rank could not go on (see its message); nothing was changed here")
    return result


# --------------------------------------------------------------------------- training commands


def _checkpoints(out: Path) -> Path:
    from esper_func.runs import CHECKPOINTS_DIR

    return out / CHECKPOINTS_DIR


def _rank_log_names(world: Any) -> tuple[str, ...]:
    # Mirrors distributed.RankLog: rank logs are written when torchrun set RANK.
    return tuple(f"rank{r}.jsonl" for r in range(world.size)) if "RANK" in os.environ else ()


def _train(
    out: Path,
    config: RunConfig,
    data: Any,
    world: Any,
    model: Any,
    state: Any,
    loop: Any,
    *,
    console: Console,
    claim: Any = None,
) -> int:
    """Train from ``(model, state, loop)`` to ``config.epochs``, checkpointing after every epoch, then
    (:func:`_finish`) the baselines, the summary and the report."""
    import esper_func as ef
    from esper_func import distributed
    from esper_func.fit import LoopState, run_epoch
    from esper_func.runs import save_run

    registry = ef.default_registry()
    world.check_consistent(model, registry)
    fit_config = config.fit_config()
    controller = config.controller()
    reducer = world.reducer()
    train, val = config.sources(data, world.rank, world.size)
    extra = {"run_config": dataclasses.asdict(config)}
    started = time.perf_counter()
    epoch_start = started
    records = [r.to_dict() for r in loop.records] if loop is not None else []
    loop = loop if loop is not None else LoopState()
    if world.rank == 0:
        # What the checkpoint holds: repairs a crash between save and metrics.
        _write_metrics(out, _demo_lines(config, records, None))
    _trim_rank_log(out / f"rank{world.rank}.jsonl", loop.epoch)
    rank_log = distributed.RankLog(out, world.rank)
    while loop.epoch < config.epochs:
        epoch = loop.epoch + 1
        model, state, loop, epoch_record = run_epoch(
            model, state, loop, train, val=val, optimizer=config.optimizer(epoch), config=fit_config,
            registry=registry, controller=controller, loss_fn=F.cross_entropy, reducer=reducer,
            rank=world.rank, world_size=world.size, on_step=console.progress(f"epoch {epoch}/{config.epochs}"),
        )
        record = epoch_record.to_dict()  # the JSON object metrics.jsonl holds (plus the demo's keys)
        console.end_progress()
        now = time.perf_counter()
        console.line(_epoch_line(record, now - epoch_start))
        epoch_start = now
        for event in record["events"]:
            text = _describe_event(event)
            if text:
                console.line(f"          {text}")
        if record["governor"]["verdict"] != "OK":
            console.line(f"          governor: {record['governor']['verdict']} ({record['governor']['reason']})")
        records.append(record)
        rank_log.write(record, state)
        if world.rank == 0:
            save_run(_checkpoints(out), model, state, loop, extra=extra)
            if claim is not None:
                claim.commit()  # the new run has a checkpoint: a run it replaced can go now
            _write_metrics(out, _demo_lines(config, records, None))
    if world.rank == 0 and records:
        _finish(out, config, data, model, state, records, console)
        console.line(
            f"{time.perf_counter() - started:.1f}s; wrote {out / METRICS_FILE}, {out / SUMMARY_FILE}, "
            f"{out / REPORT_FILE}, {_checkpoints(out)}"
        )
    return 0


@contextlib.contextmanager
def _threads(config: RunConfig) -> Any:
    """Pin the demo to one CPU thread while it trains (its small matrices gain little from more, and
    lose much when the cores are shared: waiting threads spin); the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _header(config: RunConfig, data: Any, model: Any, state: Any) -> str:
    """The first line a demo prints: data, host, budget, gates and baselines, in words."""
    params = sum(int(t.numel()) for t in state.params["host"].values())
    if config.dataset == TEXT:
        where = f"{int(data.train.numel()):,} training / {int(data.val.numel()):,} held-out bytes of Python source"
        host = (f"transformer host (width {config.n_embd}, {config.n_layer} layers, {config.n_head} heads, "
                f"context {config.block_size})")
        steps = f"{config.steps_per_epoch} steps of {config.batch_size} windows"
    else:
        where = f"{int(data.x_train.shape[0])} training / {int(data.x_val.shape[0])} validation images"
        host = f"CNN host ({config.n_blocks} blocks, {config.base_channels} base channels)"
        steps = f"batches of {config.batch_size}"
    return (
        f"esper-func demo: {config.dataset} ({where}); {host}, {params:,} parameters; slots "
        f"{', '.join(model.slot_order)}; {config.epochs} epochs, {steps}; {config.gates_name} gates; "
        f"baselines: {', '.join(BASELINE_NAMES.values()) if config.baselines else 'none'}"
    )


def _note(command: str, text: str) -> None:
    print(f"{PROG} {command}: note: {text}", file=sys.stderr, flush=True)


def _demo(args: argparse.Namespace) -> int:
    from esper_func import distributed
    from esper_func.checkpoint import _make_dirs
    from esper_func.runs import (
        CHECKPOINTS_DIR,
        RunManifest,
        check_run_directory,
        claim_run_directory,
        lock_run_directory,
    )
    task = args.dataset or args.task
    if args.dataset and args.task not in (None, args.dataset):
        raise InvalidArgumentError(f"--task {args.task} and --dataset {args.dataset} disagree; pass one of them")
    config = RunConfig.for_task(task or "digits", epochs=args.epochs, seed=args.seed, quick=args.quick,
                                tournament=args.tournament)
    out = Path(args.out)
    _require_for_training(config.dataset)
    world = distributed.from_environment()
    console = Console(enabled=world.rank == 0)
    claim = None
    try:
        # Every rank looks before rank 0 writes, so that all ranks see the same directory.
        _together(world, lambda: check_run_directory(out, overwrite=args.overwrite))
        data = _together(world, lambda: _load_data(config.dataset, config.seed))
        with contextlib.ExitStack() as stack:
            manifest = RunManifest(
                kind="trained",
                owns=(CHECKPOINTS_DIR, *OUTPUT_FILES, *_rank_log_names(world)),
                config=dataclasses.asdict(config),
            )

            def claim_directory() -> Any:
                try:
                    _make_dirs(out)
                except OSError as exc:
                    raise RunDirectoryError(f"cannot create {out}: {exc.strerror or exc}; choose a writable --out") from None
                stack.enter_context(lock_run_directory(out))
                return claim_run_directory(out, manifest, overwrite=args.overwrite)

            claim = _together(world, claim_directory if world.rank == 0 else lambda: None)
            model, state = config.build(data)
            console.line(_header(config, data, model, state) + (f", {world.size} ranks" if world.size > 1 else ""))
            try:
                with _threads(config):
                    return _train(out, config, data, world, model, state, None, console=console, claim=claim)
            except BaseException as exc:
                if claim is not None and not claim.committed:
                    replaced = claim.replaced
                    left = claim.rollback()
                    if left:
                        exc.add_note(f"{', '.join(left)} of the replaced run could not be put back; they are in {replaced}")
                    elif replaced is not None:
                        exc.add_note(f"the run that was in {out} has been put back")
                raise
    finally:
        world.finish()


def _check_is_run(out: Path) -> None:
    """Raise unless ``out`` is a directory holding a run (a manifest or a checkpoint directory)."""
    from esper_func.runs import MANIFEST_FILE, interrupted_overwrite_hint

    if not os.path.lexists(out):
        raise RunDirectoryError(f"there is no run at {out}: the directory does not exist")
    if not out.is_dir():
        raise RunDirectoryError(f"{out} is not a directory; pass a run directory (as given to 'demo --out')")
    if not (out / MANIFEST_FILE).exists() and not _checkpoints(out).exists():
        raise RunDirectoryError(
            f"{out} holds no esper-func run (neither {MANIFEST_FILE} nor checkpoints/); pass a directory made by "
            "'esper-func demo --out' or 'esper-func import-esper-lite'" + interrupted_overwrite_hint(out)
        )


def _open_run(out: Path, command: str, *, notes: bool = True) -> tuple[Any, Any]:
    """``(manifest, saved)`` for the run in ``out``; ``saved`` is ``None`` when no checkpoint is complete
    and the manifest holds a configuration to start over from.

    Raises:
        RunDirectoryError: ``out`` holds no run.
        CheckpointError: no complete checkpoint and nothing to start over from,
            or a complete checkpoint that cannot be used.
    """
    import esper_func as ef
    from esper_func.checkpoint import list_checkpoints
    from esper_func.runs import load_run, read_manifest

    _check_is_run(out)
    manifest = read_manifest(out)
    checkpoints = _checkpoints(out)
    try:
        saved = load_run(checkpoints, registry=ef.default_registry(), recover=True)
    except CheckpointError:
        # A checkpoint directory only ever gets its ckpt-NNNNNN name once complete, so none at all means
        # the run was stopped before its first save finished: start over. Damaged ones are refused, not
        # trained over (they may still be repaired by hand).
        if not list_checkpoints(checkpoints) and manifest is not None and manifest.config is not None:
            return manifest, None
        raise
    if notes:
        for name, reason in saved.skipped:
            _note(command, f"passed over {name}: {reason}")
    return manifest, saved


def _resume_target(out: Path, manifest: Any, saved: Any, epochs: int | None) -> tuple[RunConfig, int]:
    """``(config, epochs done)`` for resuming: the checkpoint's configuration (or the manifest's when
    starting over), with ``epochs`` as the new total."""
    from esper_func.runs import MANIFEST_FILE

    if manifest is not None and manifest.kind != "trained":
        raise RunDirectoryError(
            f"{out} is an imported run ({MANIFEST_FILE} says {manifest.kind!r}); it has no training "
            "configuration, so it can be swept ('esper-func sweep') but not resumed"
        )
    if saved is None:
        config = RunConfig.from_dict(manifest.config, str(out / MANIFEST_FILE))
        done = 0
    else:
        stored = saved.extra.get("run_config")
        if stored is None:
            raise RunDirectoryError(
                f"{out} has no training configuration (an imported checkpoint?); "
                "it can be swept ('esper-func sweep') but not resumed"
            )
        config = RunConfig.from_dict(stored, f"{saved.path / 'meta.json'} (extra.run_config)")
        done = saved.epoch
    if epochs is not None:
        if epochs <= done:
            raise InvalidArgumentError(
                f"the run in {out} already has {done} epoch{'' if done == 1 else 's'}; --epochs is the total "
                f"to train to, so it must be greater than {done} (got {epochs})"
            )
        config = dataclasses.replace(config, epochs=epochs)
    return config, done


def _resume(args: argparse.Namespace) -> int:
    from esper_func import distributed
    from esper_func.runs import CHECKPOINTS_DIR, RunManifest, lock_run_directory, write_manifest

    out = Path(args.dir)
    _require("safetensors.torch", "safetensors", "loading checkpoints")
    world = distributed.from_environment()
    console = Console(enabled=world.rank == 0)
    try:
        with contextlib.ExitStack() as stack:

            def lock() -> None:
                _check_is_run(out)
                stack.enter_context(lock_run_directory(out))

            _together(world, lock if world.rank == 0 else lambda: None)
            manifest, saved = _together(world, lambda: _open_run(out, "resume", notes=world.rank == 0))
            config, done = _resume_target(out, manifest, saved, args.epochs)
            _require_for_training(config.dataset)
            data = _together(world, lambda: _load_data(config.dataset, config.seed))
            if done >= config.epochs:
                model, state, loop = saved.restore(None)
                console.line(
                    f"nothing to do: the run in {out} already has {done} of {config.epochs} epochs; "
                    f"pass --epochs N with N > {done} to train further (training any missing baseline, "
                    "repairing the outputs)"
                )
                if world.rank == 0:
                    with _threads(config):
                        _finish(out, config, data, model, state, [r.to_dict() for r in loop.records], console)
                return 0
            if saved is None:
                if world.rank == 0:
                    _note("resume", f"no complete checkpoint in {_checkpoints(out)}; starting the run over")
                model, state = config.build(data)
                loop = None
                console.line(f"starting {out} over, training to epoch {config.epochs}")
            else:
                model, state, loop = saved.restore(config.optimizer(saved.epoch + 1))
                console.line(f"resuming {out} after epoch {loop.epoch}, training to epoch {config.epochs}")

            def record_ownership() -> None:
                owns = (CHECKPOINTS_DIR, *OUTPUT_FILES, *_rank_log_names(world))
                if manifest is None:  # a run written before run directories had a manifest
                    write_manifest(out, RunManifest(kind="trained", owns=owns, config=dataclasses.asdict(config)))
                elif not set(owns) <= set(manifest.owns):
                    write_manifest(out, manifest.owning(*owns))

            _together(world, record_ownership if world.rank == 0 else lambda: None)
            with _threads(config):
                return _train(out, config, data, world, model, state, loop, console=console)
    finally:
        world.finish()


# --------------------------------------------------------------------------- sweep


def _takes(host: Any, sample: Any, classes: int) -> str | None:
    """Why ``host`` cannot classify ``sample``-shaped inputs into ``classes`` classes (``None``: it can)."""
    try:
        shapes = host.surface_shapes(sample)
    except (ShapeError, DTypeError) as exc:
        return str(exc)
    outputs = shapes[-1][-1] if shapes[-1] else None
    if outputs != classes:
        return f"its output has {outputs} classes, the dataset {classes}"
    return None


def _check_data_fits(model: Any, data: Any, dataset: str, out: Path) -> None:
    host = model.host
    channels, classes = int(data.x_val.shape[1]), int(data.num_classes)
    sample = data.x_val[:1]
    if not hasattr(host, "surface_shapes"):  # a host of your own without HostBase: let the forward say it
        return
    problem = _takes(host, sample, classes)
    if problem is None:
        return
    fits = [
        name
        for name, (c, k) in DATASET_SHAPES.items()
        if name != dataset and _takes(host, torch.empty((1, c, *sample.shape[2:]), dtype=sample.dtype, device="meta"), k) is None
    ]
    known = "; ".join(f"{n}: {c} channel(s), {k} classes" for n, (c, k) in DATASET_SHAPES.items())
    raise InvalidArgumentError(
        f"dataset {dataset!r} ({channels} channel(s), {classes} classes) does not fit the run's model "
        f"({host!r}: {problem}); "
        + (f"use --data {' or '.join(fits)}" if fits else f"none of the built-in datasets fits it ({known})")
    )


def _sweep(args: argparse.Namespace) -> int:
    import esper_func as ef

    out = Path(args.dir)
    _require("safetensors.torch", "safetensors", "loading checkpoints")
    _, saved = _open_run(out, "sweep")
    if saved is None:
        raise CheckpointError(f"no complete checkpoint in {_checkpoints(out)}; there is nothing to sweep yet")
    stored = saved.extra.get("run_config")
    config = RunConfig.from_dict(stored, f"{saved.path / 'meta.json'} (extra.run_config)") if stored is not None else None
    dataset = args.data or (config.dataset if config is not None else None)
    if dataset is None:
        raise InvalidArgumentError(
            f"the run in {out} does not name its data; pass --data {' or --data '.join(sorted(DATASET_SHAPES))}"
        )
    data = _load_data(dataset, config.seed if config is not None else 0)
    model, state, _ = saved.restore(None)
    _check_data_fits(model, data, dataset, out)
    seeded = [sid for sid in model.seeded if model.stage(sid) != ef.SeedStage.GERMINATED]
    console = Console()
    if not seeded:
        console.line(f"{out}: no seed is in the forward pass; nothing to attribute")
        return 0
    columns = [model.index(sid) for sid in seeded]
    base = ef.alphas_of(model, state.seeds)
    n = len(seeded)
    if n <= 10:
        coalitions = ef.alpha_grid("full_factorial", n)
        permutations = None
    else:
        coalitions, permutations = ef.alpha_grid("shapley", n, seed=0, return_permutations=True)
    grid = ef.counterfactual.coalition_grid(base, columns, coalitions)
    batches = ef.data.batches(data.val, 512, shuffle=False)
    result = ef.evaluate(model, state.params, state.buffers, batches, grid, loss_fn=F.cross_entropy)
    values = 100.0 * result.accuracy.double()
    phi = ef.shapley(coalitions, values, permutations=permutations)
    full = coalitions.shape[0] == 2**n
    banzhaf = ef.banzhaf(coalitions, values) if full else None
    inter = ef.interactions(coalitions, values) if full else None
    everything = int(torch.nonzero((coalitions == 1).all(dim=1))[0])
    rows = []
    for j, sid in enumerate(seeded):
        without = (coalitions == 1).clone()
        without[:, j] = False
        row_without = int(torch.nonzero((coalitions == without[everything].float()).all(dim=1))[0])
        slot = model.slot(sid)
        rows.append(
            [
                sid,
                slot.blueprint_id if slot else "-",
                model.stage(sid).name,
                f"{float(base[model.index(sid)]):.2f}",
                f"{float(values[everything] - values[row_without]):+.2f}",
                f"{float(phi.mean[j]):+.2f}" + ("" if full else f" ± {float(phi.std[j]):.2f}"),
                "-" if banzhaf is None else f"{float(banzhaf[j]):+.2f}",
            ]
        )
    console.line(f"{out}: attribution on {dataset} validation accuracy (points), {coalitions.shape[0]} configurations")
    console.line(f"all seeds at their alphas: {float(values[everything]):.2f}%  all off: {float(values[0]):.2f}%\n")
    console.table(["slot", "blueprint", "stage", "alpha", "remove-one", "Shapley", "Banzhaf"], rows)
    if inter is not None and n > 1:
        pairs = [
            (float(inter.pairwise[i, j]), seeded[i], seeded[j]) for i in range(n) for j in range(i + 1, n)
        ]
        pairs.sort(key=lambda p: -abs(p[0]))
        console.line("\nstrongest pairwise interactions f(ij) - f(i) - f(j) + f(empty):")
        for value, a, b in pairs[:5]:
            console.line(f"  {a} x {b}: {value:+.2f}")
    return 0


# --------------------------------------------------------------------------- import


def _host_from_args(args: argparse.Namespace) -> Any:

    cls = _BUILTIN_HOST_CLASSES[args.host]
    known = sorted(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else []
    fields: dict[str, Any] = {}
    for item in args.host_arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--host-arg takes KEY=VALUE (KEY one of {known}); got {item!r}")
        if known and key not in known:
            raise InvalidArgumentError(f"--host-arg {key!r} is not a {cls.__name__} argument; known: {known}")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    try:
        return cls(**fields)
    except EsperFuncError as exc:
        raise InvalidArgumentError(f"bad --host-arg for {cls.__name__}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"bad --host-arg for {cls.__name__}: {exc} (known arguments: {known})") from None


def _read_esper_lite(path: Path) -> Mapping[str, Any]:
    """The state dict in an esper-lite checkpoint file (``torch.load`` with ``weights_only=True``)."""
    if not path.is_file():
        raise InvalidArgumentError(
            f"{path} is not a file; pass the torch file holding an esper-lite MorphogeneticModel state dict"
            if path.exists() else f"{path} does not exist; pass the torch file holding an esper-lite state dict"
        )
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unsafe or corrupt files
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"cannot read {path} as a weights-only torch checkpoint (a torch.save file of tensors): {detail}"
        ) from None
    if isinstance(loaded, Mapping):
        for key in ("model_state_dict", "state_dict", "model"):
            if key in loaded and isinstance(loaded[key], Mapping):
                return loaded[key]
        return loaded
    raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a state dict (a dict of tensors)")


def _import(args: argparse.Namespace) -> int:
    import esper_func as ef
    from esper_func.checkpoint import _make_dirs
    from esper_func.fit import LoopState
    from esper_func.runs import (
        CHECKPOINTS_DIR,
        RunManifest,
        check_run_directory,
        claim_run_directory,
        lock_run_directory,
        save_run,
    )
    from esper_func.train import init_train_state

    _require("safetensors.torch", "safetensors", "saving checkpoints")
    path = Path(args.checkpoint)
    out = Path(args.dir)
    command = "import-esper-lite"
    check_run_directory(out, overwrite=False, command=command)  # refuse before reading anything big
    state_dict = _read_esper_lite(path)
    host = _host_from_args(args)
    try:
        model, params, buffers, states = ef.from_esper_lite(state_dict, host)
    except (EsperFuncError, KeyError, ValueError, TypeError, AttributeError, IndexError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:400]
        kind = "" if isinstance(exc, EsperFuncError) else f"{type(exc).__name__}: "
        raise CheckpointError(
            f"cannot import {path} into {host}: {kind}{detail} (pass the host esper-lite used with --host and --host-arg)"
        ) from None
    optimizer = ef.optim.sgd(0.0)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=states)
    try:
        _make_dirs(out)
    except OSError as exc:
        raise RunDirectoryError(f"cannot create {out}: {exc.strerror or exc}; choose a writable directory") from None
    with lock_run_directory(out):
        claim = claim_run_directory(out, RunManifest(kind="imported", owns=(CHECKPOINTS_DIR,)), command=command)
        try:
            save_run(_checkpoints(out), model, state, LoopState(last_good=(model, state)),
                     extra={"imported_from": str(path), "host": type(host).__name__})
        except BaseException:
            claim.rollback()
            raise
        claim.commit()
    console = Console()
    console.line(f"imported {path} into {_checkpoints(out)}")
    console.table(
        ["slot", "blueprint", "stage", "alpha"],
        [
            [sid, (slot.blueprint_id if (slot := model.slot(sid)) else "-"), model.stage(sid).name,
             f"{states[sid].alpha:.2f}" if sid in states else "0.00"]
            for sid in model.slot_order
        ],
    )
    return 0


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``esper-func <command>: <message>``, exit 2."""

    commands: dict[str, argparse.ArgumentParser]

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}; got {text!r}")
        return value

    return parse


def _directory_arg(text: str) -> str:
    if not text.strip() or "\0" in text:
        raise argparse.ArgumentTypeError(f"must be a directory path (not empty, no NUL characters); got {text!r}")
    return text


def _parser() -> _Parser:
    from esper_func import __version__

    parser = _Parser(prog=PROG, description="Grow, blend and attribute seed modules in a host network.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{demo,resume,sweep,import-esper-lite}")
    epochs = _whole_number(1, MAX_EPOCHS)
    datasets = sorted(DATASET_SHAPES)

    demo = sub.add_parser(
        "demo", help="grow seeds on handwritten digits (a CNN) or Python source (a transformer), against two baselines",
    )
    demo.add_argument("--task", choices=DEMO_TASKS, default=None,
                      help="digits: a small CNN on scikit-learn's digits, strict gates (default); text: a byte-level "
                           "transformer on the Python standard library's source, permissive gates")
    demo.add_argument("--epochs", type=epochs, default=None, help="epochs (default: the task's, 100 digits, 20 text)")
    demo.add_argument("--quick", action="store_true", help="tiny sizes that run in seconds (for tests)")
    demo.add_argument("--seed", type=_whole_number(0, MAX_SEED), default=0,
                      help="seed for data split, order and weights (default 0)")
    demo.add_argument("--out", type=_directory_arg, default=DEFAULT_OUT,
                      help=f"output directory: missing, empty, or a run to --overwrite (default {DEFAULT_OUT})")
    demo.add_argument("--dataset", choices=datasets, default=None,
                      help="built-in image data instead of --task (synthetic: tiny random images, for tests)")
    demo.add_argument("--overwrite", action="store_true",
                      help="replace the run in --out (only the run's own files; refused if anything else is there)")
    demo.add_argument("--tournament", type=_whole_number(1, MAX_TOURNAMENT), default=1, metavar="K",
                      help="germinate K candidate seeds in a slot at once, incubate them together and keep the best "
                           "(default 1: one seed, as esper-lite)")
    demo.set_defaults(run=_demo)

    resume = sub.add_parser("resume", help="continue a run from its newest complete checkpoint")
    resume.add_argument("dir", type=_directory_arg, help="the run directory (as given to demo --out)")
    resume.add_argument("--epochs", type=epochs, default=None,
                        help="train until this many epochs in total (more than the run has)")
    resume.set_defaults(run=_resume)

    sweep = sub.add_parser("sweep", help="attribution table for a run's seeds")
    sweep.add_argument("dir", type=_directory_arg, help="the run directory")
    sweep.add_argument("--data", choices=datasets, default=None, help="validation data (default: the run's)")
    sweep.set_defaults(run=_sweep)

    imp = sub.add_parser("import-esper-lite", help="import an esper-lite MorphogeneticModel checkpoint")
    imp.add_argument("checkpoint", help="a torch file holding the esper-lite state dict")
    imp.add_argument("dir", type=_directory_arg, help="the run directory to create (missing or empty)")
    imp.add_argument("--host", choices=sorted(_BUILTIN_HOST_CLASSES), default="cnn", help="the host esper-lite used")
    imp.add_argument("--host-arg", action="append", metavar="KEY=VALUE", help="a host constructor argument (repeatable)")
    imp.set_defaults(run=_import)
    parser.commands = {"demo": demo, "resume": resume, "sweep": sweep, "import-esper-lite": imp}
    for name, command in parser.commands.items():
        command.prog = f"{PROG} {name}"
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror}:{where}" if where else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    notes = getattr(exc, "__notes__", None) or []
    if notes:
        text += f" ({'; '.join(notes)})"
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``esper-func`` console script.

    Returns 0 on success and 2 on a user error (bad arguments, an unusable
    directory, a damaged checkpoint, a missing optional package), reported as
    one line on stderr: ``esper-func <command>: <message>``. An interrupt
    returns 130. Anything else is a bug and propagates with its traceback.
    """
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the command's parser, so the message names the command
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    command = f"{PROG} {args.command}"
    try:
        return int(args.run(args))
    except (EsperFuncError, ImportError, OSError) as exc:
        print(f"{command}: {_one_line(exc)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt as exc:
        exc.add_note("every checkpoint already written is intact")
        print(f"{command}: interrupted ({'; '.join(exc.__notes__)})", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
