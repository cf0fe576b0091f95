"""Check the GPU path: train step eager and compiled, sweep, no host synchronisation, and the ratios on the GPU.

Prepared to run in well under 10 minutes on one CUDA GPU (most of it
``torch.compile``); exits with status 0 and a message where CUDA is absent,
so CI (CPU only) can call it.

1. the eager train step on the GPU equals the CPU step (3-slot CNN, SGD and
   AdamW, a few steps);
2. the compiled step equals the eager one on the GPU and is not recompiled
   when the alphas, the data and the learning rate change;
3. no host synchronisation inside the step: steady-state eager and compiled
   steps run under ``torch.cuda.set_sync_debug_mode("error")`` (any
   implicit device-to-host wait raises);
4. ``ef.sweep`` on the GPU equals stacking ``ef.predict``;
5. the rows of ``bench/table.py`` measured on the GPU: train step (3-slot
   and small CNN), compiled step, the K = 8 sweep and the language-model
   step at TinyStories size, against esper-lite when ``ESPER_LITE_SRC``
   points at its source tree (else against the in-repo stateful baselines);
6. tournaments: K candidates trained together on the GPU equal each trained
   alone, and ``bench/tournament.py``'s rows (K = 2, 4, 8 against one seed)
   for the default mode (``vmap`` on the GPU) and one at a time.

Run: ``[ESPER_LITE_SRC=...] python bench/cuda_check.py [--rounds N] [--skip-ratios] [--skip-lm]``.
Prints ``CHECKS PASSED`` (exit 0) or the first failure (exit 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _esper_lite
import table
import tournament
from _timing import print_table

import esper_func as ef
from esper_func.train import init_train_state, train_step


def to(tree: object, device: torch.device) -> object:
    return torch.utils._pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)


def close(a: object, b: object, *, rtol: float, atol: float, what: str) -> None:
    for x, y in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b), strict=True):
        torch.testing.assert_close(x.cpu() if isinstance(x, torch.Tensor) else x, y.cpu() if isinstance(y, torch.Tensor) else y,
                                   rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


def problem() -> tuple[table._esper_lite.Pair, torch.Tensor, torch.Tensor]:
    pair = table.build(table.CNN_BIG, ["r0c0", "r0c1", "r0c2"], "conv_light", False)
    x, y = table.images(table.CNN_BIG, 128, 32, torch.device("cpu"))
    return pair, x, y


def check_eager_matches_cpu(device: torch.device) -> None:
    pair, x, y = problem()
    for make in (table.sgd, lambda: ef.optim.adamw(1e-3)):
        optimizer = make()
        cpu = init_train_state(pair.model, pair.params, pair.buffers, optimizer=optimizer, seeds=pair.seeds)
        gpu = init_train_state(pair.model, to(pair.params, device), to(pair.buffers, device), optimizer=optimizer, seeds=pair.seeds)
        for _ in range(3):
            cpu, m_cpu = train_step(pair.model, cpu, (x, y), optimizer=optimizer, loss_fn=F.cross_entropy)
            gpu, m_gpu = train_step(pair.model, gpu, (x.to(device), y.to(device)), optimizer=optimizer, loss_fn=F.cross_entropy)
        # cuDNN may use TF32 and other algorithms: agreement to a few parts in a thousand
        close(gpu.params, cpu.params, rtol=2e-2, atol=2e-3, what=f"{type(optimizer).__name__} params after 3 steps")
        close(m_gpu.loss, m_cpu.loss, rtol=2e-2, atol=2e-3, what="loss")


def check_compiled(device: torch.device) -> None:
    from torch._dynamo.testing import CompileCounterWithBackend

    pair, x, y = problem()
    params, buffers = to(pair.params, device), to(pair.buffers, device)
    box = {"opt": table.sgd()}
    counter = CompileCounterWithBackend("inductor")
    torch._dynamo.reset()
    step = torch.compile(lambda s, b: train_step(pair.model, s, b, optimizer=box["opt"], loss_fn=F.cross_entropy), backend=counter)
    state = eager = init_train_state(pair.model, params, buffers, optimizer=box["opt"], seeds=pair.seeds)
    g = torch.Generator().manual_seed(1)
    compiled_once = None
    for i in range(4):
        seeds = {sid: dataclasses.replace(s, alpha_controller=ef.AlphaController(alpha=0.2 + 0.15 * i)) for sid, s in state.seeds.items()}
        box["opt"] = ef.optim.sgd(0.01 / (i + 1), momentum=table.MOMENTUM, weight_decay=table.WEIGHT_DECAY)
        batch = (torch.randn(x.shape, generator=g).to(device), y.to(device))
        state, m_c = step(dataclasses.replace(state, seeds=seeds), batch)
        eager, m_e = train_step(pair.model, dataclasses.replace(eager, seeds=seeds), batch, optimizer=box["opt"], loss_fn=F.cross_entropy)
        close((state.params, m_c.loss), (eager.params, m_e.loss), rtol=1e-2, atol=1e-3, what=f"compiled vs eager, step {i + 1}")
        compiled_once = compiled_once or counter.frame_count
    if counter.frame_count != compiled_once:
        raise AssertionError(f"the compiled step recompiled: {compiled_once} -> {counter.frame_count} frames")


def check_no_sync(device: torch.device) -> None:
    pair, x, y = problem()
    params, buffers = to(pair.params, device), to(pair.buffers, device)
    batch = (x.to(device), y.to(device))
    for make in (table.sgd, lambda: ef.optim.adamw(1e-3)):
        optimizer = make()
        state = init_train_state(pair.model, params, buffers, optimizer=optimizer, seeds=pair.seeds)
        compiled = torch.compile(lambda s, b, opt=optimizer: train_step(pair.model, s, b, optimizer=opt, loss_fn=F.cross_entropy))
        eager_state, compiled_state = state, state
        for _ in range(2):  # warm up: memos, compilation
            eager_state, _ = train_step(pair.model, eager_state, batch, optimizer=optimizer, loss_fn=F.cross_entropy)
            compiled_state, _ = compiled(compiled_state, batch)
        torch.cuda.synchronize()
        losses = []
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(3):
                eager_state, metrics = train_step(pair.model, eager_state, batch, optimizer=optimizer, loss_fn=F.cross_entropy)
                losses.append(metrics.loss)
                compiled_state, metrics = compiled(compiled_state, batch)
                losses.append(metrics.loss)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        if not bool(torch.isfinite(torch.stack(losses)).all()):
            raise AssertionError("non-finite losses")


def check_sweep(device: torch.device) -> None:
    pair, x, _ = problem()
    params, buffers = to(pair.params, device), to(pair.buffers, device)
    grid = ef.alpha_grid("full_factorial", 3).to(device)
    xd = x.to(device)
    with torch.inference_mode():
        got = ef.sweep(pair.model, params, buffers, xd, grid)
        want = torch.stack([ef.predict(pair.model, params, buffers, row, xd) for row in grid])
    close(got, want, rtol=1e-4, atol=1e-4, what="sweep vs stacked predict")


def check_tournament(device: torch.device) -> None:
    registry = ef.default_registry()
    host = ef.CNNHost(n_blocks=2, base_channels=16)
    model, params, buffers = ef.build_model(host, ["r0c0"], generator=torch.Generator().manual_seed(0), device=device)
    names = ["conv_light", "norm", "conv_light"]
    gens = [torch.Generator().manual_seed(i) for i in range(len(names))]
    state, _, _ = ef.advance(ef.germinate("r0c0", "candidates"), ef.Gates(permissive=True), ef.SeedStage.TRAINING)
    g = torch.Generator().manual_seed(3)
    data = [to((torch.randn(32, 3, 16, 16, generator=g), torch.randint(0, 10, (32,), generator=g)), device) for _ in range(3)]
    opt = ef.optim.adamw(1e-3)

    def train(m: ef.Model, p: dict) -> ef.TrainState:
        s = ef.init_train_state(m, p, buffers, optimizer=opt, seeds={"r0c0": state})
        for batch in data:
            s, _ = ef.train_step(m, s, batch, optimizer=opt, loss_fn=F.cross_entropy)
        return s

    group_model, group_params = ef.add_candidates(model, params, "r0c0", registry, names, generators=gens)
    together = ef.candidate_params(group_model, train(group_model, group_params).params, "r0c0")
    for i, name in enumerate(names):
        alone_model, alone_params = ef.add_seed(model, params, "r0c0", registry, name, generator=gens[i],
                                                stage=ef.SeedStage.TRAINING)
        alone = train(alone_model, alone_params).params["slots"]["r0c0"]["seed"]
        close(together[i]["seed"], alone, rtol=1e-3, atol=1e-4, what=f"candidate {i} ({name}) vs alone")


def ratios(device: torch.device, rounds: int, skip_lm: bool) -> None:
    lite = _esper_lite.available()
    settings = table.Settings(rounds=rounds, min_time_s=0.2, device=device)
    rows = table.train_rows(settings, lite is not None, True)
    rows.append(table.sweep_row(settings, lite is not None))
    if not skip_lm:
        rows += table.lm_rows(settings, lite is not None, True, True)
    print(f"\nratios on {torch.cuda.get_device_name(device)} against {'esper-lite' if lite else 'the in-repo stateful baselines'}:")
    table.print_rows(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-ratios", action="store_true")
    parser.add_argument("--skip-lm", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("CUDA is not available on this machine: nothing to check (run this script where a GPU is).")
        return 0
    device = torch.device("cuda")
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name(device)}")
    checks: list[tuple[str, Callable[[torch.device], None]]] = [
        ("eager train step on the GPU equals the CPU step", check_eager_matches_cpu),
        ("compiled train step equals eager, no recompiles for new alphas / data / lr", check_compiled),
        ('no host synchronisation in the step (set_sync_debug_mode("error"))', check_no_sync),
        ("ef.sweep on the GPU equals stacked ef.predict", check_sweep),
        ("tournament candidates trained together equal each alone", check_tournament),
    ]
    results = []
    for name, check in checks:
        start = time.perf_counter()
        try:
            check(device)
        except Exception:
            traceback.print_exc()
            print(f"FAILED: {name}")
            return 1
        results.append([name, "ok", f"{time.perf_counter() - start:.1f}"])
    print_table(["check", "result", "seconds"], results)
    if not args.skip_ratios:
        ratios(device, args.rounds, args.skip_lm)
        for vectorize in (None, False):
            print(f"\ntournament step (bench/tournament.py), vectorize={vectorize}:")
            print_table(tournament.HEADER, tournament.rows([2, 4, 8], vectorize, rounds=args.rounds, device=device))
    print("CHECKS PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
