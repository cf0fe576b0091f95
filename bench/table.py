"""Benchmark: esper_func against esper-lite itself and against the in-repo stateful baselines, side by side.

Every row times its variants in interleaved rounds in this one process
(each round runs every variant, in shuffled order) and reports the median
over rounds of the per-round ratio, so a slow phase of a shared machine hits
all variants alike.

Rows (``conv_light`` seeds BLENDING at alpha 0.3, SGD with momentum 0.9 and
weight decay 5e-4, cross entropy):

1. train step, 3-slot CNN: ``CNNHost(n_blocks=3, base_channels=32)``, seeds
   in ``r0c0 r0c1 r0c2``, batch 128 of 32x32;
2. train step, small CNN (overhead-bound): ``CNNHost(n_blocks=2,
   base_channels=8)``, seeds in ``r0c0 r0c1``, batch 64 of 16x16;
3. ``torch.compile`` of the train step (the 3-slot CNN), against esper-lite eager;
4. full-factorial counterfactual sweep (the 3-slot CNN in eval, K = 8),
   against the faster of esper-lite's ``force_alpha`` loop and
   ``fused_forward`` in each round;
5. the language-model step, tokens per second: a ``TransformerHost`` with
   ``lora`` seeds BLENDING in every slot, eager and compiled (dropout 0 so
   both runs draw no randomness).

esper-lite's side is its own code, imported from ``ESPER_LITE_SRC`` (its
source tree, the directory holding the ``esper`` package; commit
2016337e): ``MorphogeneticModel``, ``torch.optim.SGD``, ``loss.backward()``.
The in-repo baseline (``bench/_baselines.py``) is a stateful ``nn.Module``
with the same weights, for runs without esper-lite. esper_func's train
step includes its per-step gradient telemetry (host norm, per-seed norm and
health, as tensors); esper-lite's step as its training loop runs it (no
gradient collection by default).

Run: ``ESPER_LITE_SRC=/path/to/esper-lite/src python bench/table.py``
[``--rounds N``] [``--threads N``] [``--clock cpu``] [``--skip-compile``]
[``--skip-lm``] [``--lm-full``] [``--json PATH``].
``--clock cpu`` times the calling thread's CPU time with one intra-op thread
(for a machine shared with other jobs); the default is wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _esper_lite
from _baselines import StatefulModel
from _timing import Timings, measure, print_table, setup_threads, stable_allocator

import esper_func as ef
from esper_func.train import init_train_state, train_step

CNN_BIG = ef.CNNHost(n_blocks=3, base_channels=32)
CNN_SMALL = ef.CNNHost(n_blocks=2, base_channels=8)
LM = ef.TransformerHost(vocab_size=4096, n_embd=256, n_head=4, n_layer=6, block_size=128, dropout=0.0, num_segments=3)
LM_FULL = ef.TransformerHost(vocab_size=50257, n_embd=384, n_head=6, n_layer=6, block_size=256, dropout=0.0, num_segments=3)
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 5e-4


@dataclasses.dataclass
class Row:
    """One line of the table: a measure, the times, the ratio and its goal."""

    measure: str
    baseline: str
    baseline_ms: float
    ours: str
    ours_ms: float
    ratio: float
    goal: float | None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def cells(self) -> list[object]:
        met = "" if self.goal is None else ("yes" if self.ratio <= self.goal else "NO")
        goal = "" if self.goal is None else f"<= {self.goal:.2f}"
        return [self.measure, self.baseline, self.baseline_ms, self.ours, self.ours_ms, self.ratio, goal, met]


@dataclasses.dataclass(frozen=True)
class Settings:
    rounds: int = 9
    min_time_s: float = 0.3
    clock: Callable[[], float] = time.perf_counter
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    def measure(self, fns: dict[str, Callable[[], object]], *, warmup: int = 2) -> Timings:
        sync = torch.cuda.synchronize if self.device.type == "cuda" else None
        return measure(fns, rounds=self.rounds, min_time_s=self.min_time_s, warmup=warmup, clock=self.clock, sync=sync)


def sgd() -> ef.optim.SGD:
    return ef.optim.sgd(LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def torch_sgd(params: Any) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def images(host: ef.CNNHost, batch: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, host.num_classes, (batch,), generator=g)
    return x.to(device), y.to(device)


def tokens(host: ef.TransformerHost, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, host.vocab_size, (batch, host.block_size), generator=g)
    y = torch.randint(0, host.vocab_size, (batch, host.block_size), generator=g)
    return x.to(device), y.to(device)


def to_device(tree: Any, device: torch.device) -> Any:
    return torch.utils._pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)


def build(host: ef.CNNHost | ef.TransformerHost, slot_ids: list[str], blueprint: str, with_lite: bool) -> _esper_lite.Pair:
    """An esper_func model (and, if available, esper-lite's with the same weights), seeds BLENDING."""
    if with_lite:
        return _esper_lite.blending_pair(host, slot_ids, blueprint)
    # esper_func only: the same construction, no esper-lite model
    registry = ef.default_registry()
    model, params, buffers = ef.build_model(host, slot_ids, generator=torch.Generator().manual_seed(0))
    seeds = {}
    for k, sid in enumerate(model.slot_order):
        model, params = ef.add_seed(model, params, sid, registry, blueprint, generator=torch.Generator().manual_seed(k + 1))
        state = ef.germinate(sid, blueprint, topology=host.topology)
        state, _, _ = ef.advance(state, ef.Gates(permissive=True, min_blending_epochs=0), ef.SeedStage.TRAINING)
        seeds[sid] = dataclasses.replace(state, stage=ef.SeedStage.BLENDING, alpha_controller=ef.AlphaController(alpha=0.3))
    model, params = ef.set_stages(model, params, seeds)
    g = torch.Generator().manual_seed(7)
    params = {
        "host": params["host"],
        "slots": {s: {grp: {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in d.items()} for grp, d in sp.items()} for s, sp in params["slots"].items()},
    }
    return _esper_lite.Pair(model, params, buffers, seeds, None, tuple(slot_ids))


def step_variants(pair: _esper_lite.Pair, x: torch.Tensor, y: torch.Tensor, device: torch.device, *, compiled: bool) -> dict[str, Callable[[], None]]:
    """esper-lite's step (if present), the in-repo stateful step, esper_func's eager (and compiled) step."""
    loss_fn = F.cross_entropy
    optimizer = sgd()
    params, buffers = to_device(pair.params, device), to_device(pair.buffers, device)
    state = init_train_state(pair.model, params, buffers, optimizer=optimizer, seeds=pair.seeds)
    fns: dict[str, Callable[[], None]] = {}
    if pair.lite is not None:
        pair.lite.to(device)
        fns["esper-lite"] = _esper_lite.lite_train_step(pair, x, y, torch_sgd)

    stateful = StatefulModel(pair.model, pair.params, pair.buffers, ef.alphas_of(pair.model, pair.seeds)).to(device).train()
    stateful_opt = torch_sgd(stateful.parameters())

    def stateful_step() -> None:
        stateful_opt.zero_grad(set_to_none=True)
        out = stateful(x)
        F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1)).backward()
        stateful_opt.step()

    fns["stateful"] = stateful_step
    box = {"eager": state, "compiled": state}

    def eager_step() -> None:
        box["eager"], _ = train_step(pair.model, box["eager"], (x, y), optimizer=optimizer, loss_fn=loss_fn)

    fns["esper_func"] = eager_step
    if compiled:
        if pair.lite is not None:
            start = time.perf_counter()
            fns["esper-lite compiled"] = _esper_lite.lite_train_step(pair, x, y, torch_sgd, compiled=True)
            fns["esper-lite compiled"]()
            print(f"  (compiled esper-lite's forward in {time.perf_counter() - start:.0f} s)", flush=True)
        step = torch.compile(lambda s, b: train_step(pair.model, s, b, optimizer=optimizer, loss_fn=loss_fn))
        start = time.perf_counter()
        box["compiled"], _ = step(box["compiled"], (x, y))
        print(f"  (compiled the train step in {time.perf_counter() - start:.0f} s)", flush=True)

        def compiled_step() -> None:
            box["compiled"], _ = step(box["compiled"], (x, y))

        fns["esper_func compiled"] = compiled_step
    return fns


def train_rows(settings: Settings, with_lite: bool, compile_: bool) -> list[Row]:
    rows = []
    base = "esper-lite" if with_lite else "stateful"
    for label, host, slot_ids, batch, size, goal, with_compile in (
        ("train step, 3-slot CNN, batch 128 of 32x32", CNN_BIG, ["r0c0", "r0c1", "r0c2"], 128, 32, 1.05, compile_),
        ("train step, small CNN, batch 64 of 16x16", CNN_SMALL, ["r0c0", "r0c1"], 64, 16, 1.30, False),
    ):
        print(f"- {label}", flush=True)
        pair = build(host, slot_ids, "conv_light", with_lite)
        x, y = images(host, batch, size, settings.device)
        if pair.lite is not None:
            _esper_lite.check_same_outputs(pair, x.cpu())
        fns = step_variants(pair, x, y, settings.device, compiled=with_compile)
        t = settings.measure(fns)
        rows.append(Row(label, base, t.ms(base), "esper_func", t.ms("esper_func"), t.ratio("esper_func", base), goal,
                        {"stateful_ms": t.ms("stateful"), "vs_stateful": t.ratio("esper_func", "stateful")}))
        if with_compile:
            extra = {"vs_esper_func_eager": t.ratio("esper_func compiled", "esper_func")}
            if "esper-lite compiled" in t.rounds:
                extra["lite_compiled_vs_lite_eager"] = t.ratio("esper-lite compiled", "esper-lite")
            rows.append(Row("torch.compile'd train step, 3-slot CNN", f"{base} eager", t.ms(base), "compiled",
                            t.ms("esper_func compiled"), t.ratio("esper_func compiled", base), 0.85, extra))
    return rows


def sweep_row(settings: Settings, with_lite: bool) -> Row:
    label = "full-factorial sweep, 3-slot CNN eval, K = 8"
    print(f"- {label}", flush=True)
    pair = build(CNN_BIG, ["r0c0", "r0c1", "r0c2"], "conv_light", with_lite)
    x, _ = images(CNN_BIG, 128, 32, settings.device)
    grid = ef.alpha_grid("full_factorial", 3).to(settings.device)
    params, buffers = to_device(pair.params, settings.device), to_device(pair.buffers, settings.device)
    fns: dict[str, Callable[[], object]] = {}
    if pair.lite is not None:
        pair.lite.to(settings.device)
        fns.update(_esper_lite.lite_sweeps(pair, x, grid))

    def predict_loop() -> torch.Tensor:
        with torch.inference_mode():
            return torch.stack([ef.predict(pair.model, params, buffers, row, x) for row in grid])

    def ours() -> torch.Tensor:
        with torch.inference_mode():
            return ef.sweep(pair.model, params, buffers, x, grid)

    fns["predict loop"] = predict_loop
    fns["ef.sweep"] = ours
    reference = predict_loop()
    for name, fn in fns.items():
        torch.testing.assert_close(fn(), reference, rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
    t = settings.measure(fns, warmup=1)
    baselines = ["force_alpha loop", "fused_forward"] if pair.lite is not None else ["predict loop"]
    best = min(baselines, key=t.ms)
    name = "best of esper-lite force_alpha loop / fused_forward" if pair.lite is not None else "ef.predict loop"
    extra = {f"{b}_ms": t.ms(b) for b in baselines} | {"vs_predict_loop": t.ratio("ef.sweep", "predict loop")}
    return Row(label, name, t.ms(best), "ef.sweep", t.ms("ef.sweep"), t.ratio("ef.sweep", baselines), 0.35, extra)


def lm_rows(settings: Settings, with_lite: bool, compile_: bool, full: bool) -> list[Row]:
    host = LM_FULL if full else LM
    batch = 32 if full else 8
    label = f"LM step, TransformerHost(n_embd={host.n_embd}, n_layer={host.n_layer}, vocab {host.vocab_size}), {batch}x{host.block_size} tokens"
    print(f"- {label}", flush=True)
    pair = build(host, list(host.slot_ids), "lora", with_lite)
    x, y = tokens(host, batch, settings.device)
    fns = step_variants(pair, x, y, settings.device, compiled=compile_)
    t = settings.measure(fns, warmup=1)
    base = "esper-lite" if pair.lite is not None else "stateful"
    n = batch * host.block_size
    rows = [Row(label, base, t.ms(base), "esper_func", t.ms("esper_func"), t.ratio("esper_func", base), 1.05,
                {"tokens_per_s": {k: n / (t.ms(k) / 1e3) for k in fns}})]
    if compile_:
        extra = {"vs_esper_func_eager": t.ratio("esper_func compiled", "esper_func")}
        if "esper-lite compiled" in t.rounds:
            extra["lite_compiled_vs_lite_eager"] = t.ratio("esper-lite compiled", "esper-lite")
        rows.append(Row("torch.compile'd LM step", f"{base} eager", t.ms(base), "compiled", t.ms("esper_func compiled"),
                        t.ratio("esper_func compiled", base), None, extra))
    return rows


def print_rows(rows: list[Row]) -> None:
    print_table(["measure", "baseline", "ms", "esper_func", "ms", "ratio", "goal", "met"], [r.cells() for r in rows])
    for r in rows:
        if "tokens_per_s" in r.extra:
            rates = ", ".join(f"{k} {v:,.0f}" for k, v in r.extra["tokens_per_s"].items())
            print(f"  tokens/s: {rates}")
        if "vs_stateful" in r.extra and r.baseline != "stateful":
            print(f"  {r.measure}: in-repo stateful baseline {r.extra['stateful_ms']:.2f} ms, esper_func / stateful {r.extra['vs_stateful']:.3f}")
        if "vs_esper_func_eager" in r.extra:
            print(f"  {r.measure}: compiled / esper_func eager {r.extra['vs_esper_func_eager']:.3f}")
        if "lite_compiled_vs_lite_eager" in r.extra:
            print(f"  {r.measure}: esper-lite's own compiled step / esper-lite eager {r.extra['lite_compiled_vs_lite_eager']:.3f}"
                  " (what torch.compile gives this model on this machine)")
        if "vs_predict_loop" in r.extra:
            print(f"  ef.sweep / ef.predict loop: {r.extra['vs_predict_loop']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-lm", action="store_true")
    parser.add_argument("--lm-full", action="store_true", help="the TinyStories-sized host (vocab 50257, 384 wide, 256 tokens)")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args()
    stable_allocator()
    threads = setup_threads(1 if args.clock == "cpu" else args.threads)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    settings = Settings(rounds=args.rounds, clock=clock)
    lite = _esper_lite.available()
    print(f"esper_func vs {'esper-lite at ' + lite if lite else 'the in-repo stateful baselines (set ESPER_LITE_SRC for esper-lite)'}")
    print(f"torch {torch.__version__}, {threads} threads, {args.clock} clock, {args.rounds} interleaved rounds, medians of per-round ratios\n")
    rows = train_rows(settings, lite is not None, not args.skip_compile)
    rows.append(sweep_row(settings, lite is not None))
    if not args.skip_lm:
        rows += lm_rows(settings, lite is not None, not args.skip_compile, args.lm_full)
    print()
    print_rows(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
