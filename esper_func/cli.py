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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.nn.functional as F

__all__ = ["main"]

DEFAULT_OUT = "runs/demo"


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

    def host(self, data: Any) -> Any:
        import esper_func as ef

        return ef.CNNHost(
            in_channels=int(data.x_train.shape[1]),
            num_classes=int(data.num_classes),
            n_blocks=self.n_blocks,
            base_channels=self.base_channels,
            memory_format="contiguous_format",
        )

    def optimizer(self) -> Any:
        import esper_func as ef

        return ef.optim.sgd(self.lr, momentum=self.momentum, weight_decay=self.weight_decay)

    def fit_config(self) -> Any:
        import esper_func as ef
        from esper_func.fit import FitConfig

        return FitConfig(
            epochs=self.epochs, batch_size=self.batch_size, seed=self.seed,
            gates=ef.Gates(min_blending_epochs=self.min_blending_epochs, permissive=self.permissive_gates),
        )

    def controller(self) -> Any:
        from esper_func.controller import HeuristicConfig, heuristic

        # The validation loss of a small CNN keeps wobbling by more than esper-lite's 3 %
        # stabilisation band, so the demo germinates on the accuracy plateau alone.
        return heuristic(HeuristicConfig(stabilization_epochs=0))


def _load_data(name: str, seed: int) -> Any:
    import esper_func as ef

    if name == "digits":
        return ef.data.load_digits(seed=seed)
    if name == "synthetic":
        return ef.data.synthetic_images(600, classes=4, size=8, seed=seed)
    raise SystemExit(f"esper-func: unknown dataset {name!r}; choose 'digits' or 'synthetic'")


# --------------------------------------------------------------------------- output


class Console:
    """Progress bar, event lines and tables; only rank 0 prints."""

    def __init__(self, stream: TextIO = sys.stdout, *, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()

    def line(self, text: str = "") -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def progress(self, epoch: int, total_epochs: int) -> Callable[[int, int], None]:
        def show(done: int, total: int) -> None:
            if not self.tty:
                return
            width = 24
            filled = int(width * done / max(1, total))
            bar = "#" * filled + "." * (width - filled)
            print(f"\repoch {epoch:3d}/{total_epochs} [{bar}] {done}/{total}", end="", file=self.stream, flush=True)

        return show

    def end_progress(self) -> None:
        if self.tty:
            print("\r" + " " * 60 + "\r", end="", file=self.stream, flush=True)

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
        return f"{slot}: fossilized {event['blueprint_id']}, contribution {event['counterfactual']}"
    if kind == "SeedPruned":
        return f"{slot}: pruned {event['blueprint_id']} ({event['reason']}, by {event['initiator']})"
    if kind == "GateEvaluated" and not event["passed"]:
        return f"{slot}: gate {event['gate']} held it back ({', '.join(event['checks_failed'])})"
    return None


def _epoch_line(record: Mapping[str, Any], seconds: float) -> str:
    live = [
        f"{sid}:{info['stage'][:5].lower()}@{info['alpha']:.2f}"
        for sid, info in record["slots"].items()
        if info["stage"] not in ("DORMANT", "UNKNOWN")
    ]
    return (
        f"epoch {record['epoch']:3d}  train loss {float(record['train_loss']):.4f}  "
        f"val loss {float(record['val_loss']):.4f}  val acc {100 * record['val_accuracy']:5.1f}%  "
        f"{' '.join(live) or 'no seeds'}  ({seconds:.1f}s)"
    )


def _write_metrics(out: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    path = out / "metrics.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def _summary(console: Console, model: Any, state: Any, records: Sequence[Mapping[str, Any]]) -> None:
    last = records[-1]
    rows = []
    for sid in model.slot_order:
        info = last["slots"][sid]
        slot = model.slot(sid)
        seed_state = state.seeds.get(sid)
        contribution = None if seed_state is None else seed_state.metrics.counterfactual_contribution
        rows.append(
            [
                sid,
                info["blueprint"] or "-",
                info["stage"],
                f"{info['alpha']:.2f}",
                "-" if contribution is None else f"{contribution:+.2f}",
                "-" if slot is None else slot.num_params(),
            ]
        )
    console.line()
    console.table(["slot", "blueprint", "stage", "alpha", "contribution (pts)", "params"], rows)
    best = max(r["val_accuracy"] for r in records)
    console.line(f"\nfinal validation accuracy {100 * last['val_accuracy']:.1f}% (best {100 * best:.1f}%) after {last['epoch']} epochs")


# --------------------------------------------------------------------------- training commands


def _train(
    out: Path,
    config: RunConfig,
    *,
    resume: bool,
    console: Console,
) -> int:
    import esper_func as ef
    from esper_func import distributed
    from esper_func.fit import epochs as run_epochs
    from esper_func.report import write_report
    from esper_func.runs import load_run, save_run
    from esper_func.train import init_train_state

    world = distributed.from_environment()
    console.enabled = console.enabled and world.rank == 0
    registry = ef.default_registry()
    data = _load_data(config.dataset, config.seed)
    optimizer = config.optimizer()
    checkpoints = out / "checkpoints"
    if resume:
        saved = load_run(checkpoints, registry=registry)
        model, state, loop = saved.restore(optimizer)
        console.line(f"resuming {out} after epoch {loop.epoch}, training to epoch {config.epochs}")
    else:
        host = config.host(data)
        model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(config.seed))
        state = init_train_state(model, params, buffers, optimizer=optimizer, key=config.seed)
        loop = None
        console.line(
            f"esper-func demo: {config.dataset} ({data.x_train.shape[0]} train / {data.x_val.shape[0]} validation), "
            f"{host}, slots {', '.join(host.slot_ids)}, {config.epochs} epochs"
            + (f", {world.size} ranks" if world.size > 1 else "")
        )
    world.check_consistent(model, registry)
    fit_config = config.fit_config()
    out.mkdir(parents=True, exist_ok=True)
    extra = {"run_config": dataclasses.asdict(config)}
    started = time.perf_counter()
    epoch_start = started
    records = list(loop.records) if loop is not None else []
    rank_log = distributed.RankLog(out, world.rank)
    steps = run_epochs(
        model, state, data, optimizer=optimizer, config=fit_config, registry=registry,
        controller=config.controller(), loss_fn=F.cross_entropy, loop=loop, reducer=world.reducer(),
        rank=world.rank, world_size=world.size,
        on_step=console.progress((loop.epoch + 1) if loop is not None else 1, config.epochs),
    )
    for model, state, loop, record in steps:
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
            save_run(checkpoints, model, state, loop, extra=extra)
            _write_metrics(out, records)
    if not records:
        console.line(f"nothing to do: the run already has {config.epochs} epochs")
        return 0
    if world.rank == 0:
        write_report(records, out / "report.png", title=f"esper-func {config.dataset}, seed {config.seed}")
        _summary(console, model, state, records)
        console.line(
            f"{time.perf_counter() - started:.1f}s; wrote {out / 'metrics.jsonl'}, {out / 'report.png'}, {checkpoints}"
        )
    world.finish()
    return 0


def _demo(args: argparse.Namespace) -> int:
    config = RunConfig(epochs=args.epochs, seed=args.seed, dataset=args.dataset)
    out = Path(args.out)
    if (out / "checkpoints").exists() and not args.overwrite:
        raise SystemExit(
            f"esper-func: {out} already holds a run; use 'esper-func resume {out}', another --out, or --overwrite"
        )
    if args.overwrite and out.exists():
        import shutil

        shutil.rmtree(out)
    return _train(out, config, resume=False, console=Console())


def _resume(args: argparse.Namespace) -> int:
    import esper_func as ef
    from esper_func.runs import load_run

    out = Path(args.dir)
    saved = load_run(out / "checkpoints", registry=ef.default_registry())
    stored = saved.extra.get("run_config")
    if stored is None:
        raise SystemExit(
            f"esper-func: {out} has no training configuration (an imported checkpoint?); "
            "it can be swept ('esper-func sweep') but not resumed"
        )
    config = dataclasses.replace(RunConfig(**stored), epochs=args.epochs if args.epochs is not None else stored["epochs"])
    return _train(out, config, resume=True, console=Console())


# --------------------------------------------------------------------------- sweep


def _sweep(args: argparse.Namespace) -> int:
    import esper_func as ef
    from esper_func.runs import load_run

    out = Path(args.dir)
    saved = load_run(out / "checkpoints", registry=ef.default_registry())
    stored = saved.extra.get("run_config") or {}
    dataset = args.data or stored.get("dataset")
    if dataset is None:
        raise SystemExit("esper-func: this run does not name its data; pass --data digits|synthetic")
    data = _load_data(dataset, int(stored.get("seed", 0)))
    model, state, _ = saved.restore(None)
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
    import esper_func as ef

    fields: dict[str, Any] = {}
    for item in args.host_arg or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"esper-func: --host-arg takes KEY=VALUE, got {item!r}")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    cls = ef.CNNHost if args.host == "cnn" else ef.TransformerHost
    try:
        return cls(**fields)
    except TypeError as exc:
        raise SystemExit(f"esper-func: bad --host-arg for {cls.__name__}: {exc}") from exc


def _import(args: argparse.Namespace) -> int:
    import esper_func as ef
    from esper_func.fit import LoopState
    from esper_func.runs import save_run
    from esper_func.train import init_train_state

    path = Path(args.checkpoint)
    if not path.is_file():
        raise SystemExit(f"esper-func: {path} is not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unsafe or corrupt files
        raise SystemExit(f"esper-func: cannot read {path} as a weights-only torch checkpoint: {exc}") from exc
    state_dict = loaded
    if isinstance(loaded, Mapping):
        for key in ("model_state_dict", "state_dict", "model"):
            if key in loaded and isinstance(loaded[key], Mapping):
                state_dict = loaded[key]
                break
    host = _host_from_args(args)
    model, params, buffers, states = ef.from_esper_lite(state_dict, host)
    optimizer = ef.optim.sgd(0.0)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=states)
    out = Path(args.dir)
    save_run(out / "checkpoints", model, state, LoopState(last_good=(model, state)),
             extra={"imported_from": str(path), "host": type(host).__name__})
    console = Console()
    console.line(f"imported {path} into {out / 'checkpoints'}")
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esper-func", description="Grow, blend and attribute seed modules in a host network."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="train a small CNN on handwritten digits, growing seeds")
    demo.add_argument("--epochs", type=int, default=RunConfig.epochs, help=f"epochs (default {RunConfig.epochs})")
    demo.add_argument("--seed", type=int, default=0, help="seed for data split, order and weights (default 0)")
    demo.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    demo.add_argument("--dataset", choices=["digits", "synthetic"], default="digits", help="built-in data (default digits)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    demo.set_defaults(run=_demo)

    resume = sub.add_parser("resume", help="continue a run from its checkpoint")
    resume.add_argument("dir", help="the run directory (as given to demo --out)")
    resume.add_argument("--epochs", type=int, default=None, help="train until this many epochs in total")
    resume.set_defaults(run=_resume)

    sweep = sub.add_parser("sweep", help="attribution table for a run's seeds")
    sweep.add_argument("dir", help="the run directory")
    sweep.add_argument("--data", choices=["digits", "synthetic"], default=None, help="validation data (default: the run's)")
    sweep.set_defaults(run=_sweep)

    imp = sub.add_parser("import-esper-lite", help="import an esper-lite MorphogeneticModel checkpoint")
    imp.add_argument("checkpoint", help="a torch file holding the esper-lite state dict")
    imp.add_argument("dir", help="the run directory to create")
    imp.add_argument("--host", choices=["cnn", "transformer"], default="cnn", help="the host esper-lite used")
    imp.add_argument("--host-arg", action="append", metavar="KEY=VALUE", help="a host constructor argument (repeatable)")
    imp.set_defaults(run=_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``esper-func`` console script (exit 2 on bad input, with a message)."""
    from esper_func.errors import EsperFuncError

    args = _parser().parse_args(argv)
    try:
        return int(args.run(args))
    except (EsperFuncError, FileNotFoundError, ImportError) as exc:
        print(f"esper-func {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
