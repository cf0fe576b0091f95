"""Benchmark: the functional train step, and the demo's time budget.

1. ``ef.train_step`` (``torch.func.grad_and_value`` of a functional loss, the
   pure optimizer, per-slot masks and gradient telemetry) against an
   equivalent stateful loop (an ``nn.Module`` holding the host, the seeds and
   the alphas, ``torch.optim.SGD``, ``loss.backward()``, and the same
   per-step gradient norms), same model, same data, same run. Two models: the
   3-slot CNN of ``bench/model.py`` (batch 128 of 32x32, ``conv_light`` seeds
   BLENDING) and the demo's small digits CNN (batch 64 of 8x8).
2. The demo (``esper-func demo`` defaults): wall time, and the time each
   epoch spends in validation with the counterfactual sweep, next to the
   time a plain validation pass would take.

Run: ``python bench/train.py [--threads N] [--skip-demo]``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _baselines import StatefulModel
from _timing import measure, print_table, setup_threads, stable_allocator

import esper_func as ef
from esper_func.train import init_train_state, train_step


def blending_run(host: ef.CNNHost, slot_ids: list[str]) -> tuple[ef.Model, dict, dict, dict]:
    registry = ef.default_registry()
    model, params, buffers = ef.build_model(host, slot_ids, generator=torch.Generator().manual_seed(0))
    seeds = {}
    for k, sid in enumerate(model.slot_order):
        model, params = ef.add_seed(model, params, sid, registry, "conv_light", generator=torch.Generator().manual_seed(k + 1))
        state = ef.germinate(sid, "conv_light")
        gates = ef.Gates(permissive=True, min_blending_epochs=0)
        state, _, _ = ef.advance(state, gates, ef.SeedStage.TRAINING)
        state, _, _ = ef.advance(state, gates, ef.SeedStage.BLENDING)
        seeds[sid] = state
    for _ in range(2):  # ramp alpha up a little
        seeds = {sid: ef.step_epoch(s, ef.Gates())[0] for sid, s in seeds.items()}
    model, params = ef.set_stages(model, params, seeds)
    return model, params, buffers, seeds


def compare_steps(label: str, host: ef.CNNHost, slot_ids: list[str], x: torch.Tensor, y: torch.Tensor) -> list[object]:
    model, params, buffers, seeds = blending_run(host, slot_ids)
    optimizer = ef.optim.sgd(0.01, momentum=0.9, weight_decay=5e-4)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
    stateful = StatefulModel(model, params, buffers, ef.alphas_of(model, seeds)).train()
    torch_opt = torch.optim.SGD(stateful.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    host_params = list(stateful.host.parameters())
    seed_params = {sid: list(m.parameters()) for sid, m in stateful.seeds.items()}

    def stateful_step() -> None:
        torch_opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(stateful(x), y)
        loss.backward()
        host_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in host_params]))
        seed_norms = [torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in ps])) for ps in seed_params.values()]
        torch_opt.step()
        float(loss.detach()), float(host_norm), [float(n) for n in seed_norms]

    box = {"state": state}

    def functional_step() -> None:
        box["state"], _ = train_step(model, box["state"], (x, y), optimizer=optimizer, loss_fn=F.cross_entropy)

    t = measure({"stateful": stateful_step, "functional": functional_step}, rounds=9, min_time_s=0.3, warmup=2)
    return [label, t.ms("stateful"), t.ms("functional"), t.ratio("functional", "stateful")]


def demo_budget() -> list[list[object]]:
    """Time the demo's epochs, splitting out validation with the counterfactual sweep."""
    import esper_func.fit as fit_module
    from esper_func.cli import RunConfig

    config = RunConfig()
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
    parser.add_argument("--skip-demo", action="store_true", help="skip the demo timing (section 2)")
    args = parser.parse_args()
    stable_allocator()
    threads = setup_threads(args.threads)
    print(f"functional train step vs stateful nn.Module + torch.optim; torch {torch.__version__}, {threads} threads\n")
    g = torch.Generator().manual_seed(0)
    rows = [
        compare_steps(
            "3-slot CNN, batch 128x3x32x32", ef.CNNHost(n_blocks=3, base_channels=32), ["r0c0", "r0c1", "r0c2"],
            torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g),
        ),
        compare_steps(
            "demo CNN (digits), batch 64x1x8x8",
            ef.CNNHost(in_channels=1, n_blocks=2, base_channels=4, memory_format="contiguous_format"), ["r0c0", "r1c0"],
            torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g),
        ),
    ]
    print_table(["model", "stateful ms/step", "functional ms/step", "ratio (target <= 1.10)"], rows)
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
