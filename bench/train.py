"""Benchmark: the functional train step, and the demo's time budget.

1. ``ef.train_step`` (plain autograd on the functional model, the pure
   optimizer, per-slot masks, gradient telemetry kept as tensors) against
   an equivalent stateful loop (an ``nn.Module`` holding the host, the seeds
   and the alphas, ``torch.optim.SGD``, ``loss.backward()``) and, when
   ``ESPER_LITE_SRC`` points at esper-lite's source tree, against
   esper-lite's own ``MorphogeneticModel``: same weights, same data, same
   run. Two models: the 3-slot CNN (batch 128 of 32x32, ``conv_light``
   seeds BLENDING) and the small CNN (``n_blocks=2, base_channels=8``,
   batch 64 of 16x16). ``bench/table.py`` adds the compiled step, the sweep
   and the language-model step.
2. The demo (``esper-func demo`` defaults): wall time, and the time each
   epoch spends in validation with the counterfactual sweep, next to the
   time a plain validation pass would take.

Run: ``[ESPER_LITE_SRC=...] python bench/train.py [--threads N] [--rounds N] [--skip-demo]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _esper_lite
import table
from _timing import print_table, setup_threads, stable_allocator

import esper_func as ef
from esper_func.train import init_train_state


def compare_steps(label: str, host: ef.CNNHost, slot_ids: list[str], batch: int, size: int, rounds: int, with_lite: bool) -> list[object]:
    pair = table.build(host, slot_ids, "conv_light", with_lite)
    x, y = table.images(host, batch, size, torch.device("cpu"))
    t = table.Settings(rounds=rounds).measure(table.step_variants(pair, x, y, torch.device("cpu"), compiled=False))
    lite = [t.ms("esper-lite"), t.ratio("esper_func", "esper-lite")] if with_lite else ["-", "-"]
    return [label, t.ms("stateful"), t.ms("esper_func"), t.ratio("esper_func", "stateful"), *lite]


def demo_budget() -> list[list[object]]:
    """Time the demo's epochs, splitting out validation with the counterfactual sweep."""
    import esper_func.fit as fit_module
    from esper_func.cli import RunConfig

    config = RunConfig.for_task("digits")
    data = ef.data.load_digits(seed=config.seed)
    host = config.host(data)
    optimizer = config.optimizer()
    model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(config.seed))
    state = init_train_state(model, params, buffers, optimizer=optimizer, key=config.seed)
    timings: list[tuple[float, float, int]] = []
    original = fit_module._validate

    def timed_validate(model, state, *args, **kwargs):
        start = time.perf_counter()
        out = original(model, state, *args, **kwargs)
        sweep_s = time.perf_counter() - start
        start = time.perf_counter()
        batches = ef.data.batches(data.val, 512, shuffle=False)
        for xb, _ in batches:
            ef.predict(model, state.params, state.buffers, ef.alphas_of(model, state.seeds), xb)
        plain_s = time.perf_counter() - start
        timings.append((sweep_s, plain_s, len(out[2])))
        return out

    fit_module._validate = timed_validate
    try:
        start = time.perf_counter()
        for _ in fit_module.epochs(model, state, data, optimizer=optimizer, config=config.fit_config(),
                                   registry=ef.default_registry(), controller=config.controller()):
            pass
        total = time.perf_counter() - start
    finally:
        fit_module._validate = original
    with_seeds = [t for t in timings if t[2] > 0]
    rows = [
        ["epochs", len(timings)],
        ["training loop (in process), s", f"{total:.1f}"],
        ["validation + counterfactual sweep per epoch, ms (mean)", f"{1e3 * sum(t[0] for t in timings) / len(timings):.1f}"],
        ["plain validation per epoch, ms (mean)", f"{1e3 * sum(t[1] for t in timings) / len(timings):.1f}"],
        ["epochs with seeds to attribute", len(with_seeds)],
    ]
    if with_seeds:
        rows.append(["  validation + sweep on those epochs, ms (mean)", f"{1e3 * sum(t[0] for t in with_seeds) / len(with_seeds):.1f}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--skip-demo", action="store_true", help="skip the demo timing (section 2)")
    args = parser.parse_args()
    stable_allocator()
    threads = setup_threads(args.threads)
    with_lite = _esper_lite.available() is not None
    print(f"functional train step vs stateful nn.Module + torch.optim{' and esper-lite' if with_lite else ''}; "
          f"torch {torch.__version__}, {threads} threads\n")
    rows = [
        compare_steps("3-slot CNN, batch 128x3x32x32", table.CNN_BIG, ["r0c0", "r0c1", "r0c2"], 128, 32, args.rounds, with_lite),
        compare_steps("small CNN, batch 64x3x16x16", table.CNN_SMALL, ["r0c0", "r0c1"], 64, 16, args.rounds, with_lite),
    ]
    print_table(["model", "stateful ms/step", "functional ms/step", "x stateful", "esper-lite ms/step", "x esper-lite"], rows)
    if args.skip_demo:
        return
    print("\nthe demo (esper-func demo defaults)")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "esper_func", "demo", "--out", str(Path("/tmp") / "esper_func_bench_demo"), "--overwrite"],
        capture_output=True, text=True,
    )
    wall = time.perf_counter() - start
    final = [line for line in done.stdout.splitlines() if line.startswith("final validation accuracy")]
    print_table(["measure", "value"], [["esper-func demo wall time, s (incl. start-up)", f"{wall:.1f}"],
                                       ["result", final[0] if final else f"exit {done.returncode}"], *demo_budget()])


if __name__ == "__main__":
    main()
