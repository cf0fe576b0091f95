"""Benchmark: one train step with K candidate seeds in one slot, against the step with one seed there.

The 3-slot CNN of ``bench/table.py`` (``CNNHost(n_blocks=3,
base_channels=32)``, batch 128 of 32x32, SGD with momentum 0.9 and weight
decay 5e-4, cross entropy): ``conv_light`` seeds BLENDING at alpha 0.3 in
``r0c1`` and ``r0c2``; in ``r0c0`` (32 channels at 32x32, the widest
activations) either one ``conv_light`` seed in TRAINING (the baseline) or
a group of K ``conv_light`` candidates (:func:`esper_func.add_candidates`)
with the default ``vectorize=None`` (on CPU: one at a time over
micro-batches), or with ``--vectorize true`` (one ``vmap`` per blueprint)
or ``--vectorize false`` (one at a time on the whole batch, bit-exact). Time
one mode per process: the C allocator's state carries over between
variants, so a mode that allocates large blocks slows the others.

Every variant is timed in the same interleaved rounds (``bench/_timing.py``)
and each ratio is the median over rounds of the per-round ratio to the
one-seed step. Running K trials one after another costs K one-seed steps
(ratio K); the goal is K = 4 at most 1.6x.

Run: ``python bench/tournament.py [--rounds N] [--threads N] [--clock cpu] [--ks 2,4,8] [--vectorize none|true|false]
[--device cuda]`` (``bench/cuda_check.py`` runs it on the GPU too).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import measure, print_table, setup_threads

import esper_func as ef

HOST = ef.CNNHost(n_blocks=3, base_channels=32)
SLOTS = ["r0c0", "r0c1", "r0c2"]
TOURNAMENT_SLOT = "r0c0"
BLUEPRINT = "conv_light"
OPT = ef.optim.sgd(0.01, momentum=0.9, weight_decay=5e-4)
GOAL_K4 = 1.6


def _state(slot_id: str, stage: ef.SeedStage, alpha: float = 0.0) -> ef.SeedState:
    state = ef.germinate(slot_id, BLUEPRINT, topology="cnn")
    state, _, _ = ef.advance(state, ef.Gates(permissive=True), ef.SeedStage.TRAINING)
    return dataclasses.replace(state, stage=stage, alpha_controller=ef.AlphaController(alpha=alpha))


def _to(tree: object, device: torch.device) -> object:
    return torch.utils._pytree.tree_map(lambda t: t.to(device) if isinstance(t, torch.Tensor) else t, tree)


def _base(device: torch.device) -> tuple[ef.Model, dict, dict, dict]:
    """The host with BLENDING seeds in the other slots, the tournament slot empty, on ``device``."""
    registry = ef.default_registry()
    model, params, buffers = ef.build_model(HOST, SLOTS, generator=torch.Generator().manual_seed(0), device=device)
    seeds = {}
    for k, sid in enumerate(SLOTS[1:]):
        model, params = ef.add_seed(model, params, sid, registry, BLUEPRINT, generator=torch.Generator().manual_seed(k + 1))
        seeds[sid] = _state(sid, ef.SeedStage.BLENDING, 0.3)
    model, params = ef.set_stages(model, params, seeds)
    return model, params, buffers, seeds


def _step(model: ef.Model, params: dict, buffers: dict, seeds: dict, batch: tuple[torch.Tensor, torch.Tensor]):
    state = ef.init_train_state(model, params, buffers, optimizer=OPT, seeds=seeds)

    def run() -> object:
        return ef.train_step(model, state, batch, optimizer=OPT, loss_fn=F.cross_entropy)

    return run


def rows(ks: list[int], vectorize: bool | None, *, rounds: int, device: torch.device,
         clock: Callable[[], float] = time.perf_counter) -> list[list[object]]:
    """``[variant, ms/step, x one-seed step, K trials in a row, goal]`` for one seed and each K."""
    registry = ef.default_registry()
    g = torch.Generator().manual_seed(0)
    batch = _to((torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g)), device)
    model, params, buffers, seeds = _base(device)
    slot_state = _state(TOURNAMENT_SLOT, ef.SeedStage.TRAINING)
    fns = {}
    one_model, one_params = ef.add_seed(model, params, TOURNAMENT_SLOT, registry, BLUEPRINT, stage=ef.SeedStage.TRAINING)
    fns["1 seed"] = _step(one_model, one_params, buffers, {**seeds, TOURNAMENT_SLOT: slot_state}, batch)
    for k in ks:
        m, p = ef.add_candidates(model, params, TOURNAMENT_SLOT, registry, [BLUEPRINT] * k, vectorize=vectorize)
        fns[f"K={k}"] = _step(m, p, buffers, {**seeds, TOURNAMENT_SLOT: slot_state}, batch)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    timings = measure(fns, rounds=rounds, min_time_s=0.2, warmup=1, clock=clock, sync=sync)
    out: list[list[object]] = []
    for name in fns:
        k = 1 if name == "1 seed" else int(name.split("=")[1])
        ratio = 1.0 if name == "1 seed" else timings.ratio(name, "1 seed")
        out.append([name, timings.ms(name), ratio, float(k), f"<= {GOAL_K4}" if k == 4 else ""])
    return out


HEADER = ["variant", "ms/step", "x 1 seed", "K trials in a row", "goal"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--ks", default="2,4,8")
    parser.add_argument("--vectorize", choices=["none", "true", "false"], default="none",
                        help="the candidates' mode: none (default: the faster for the device), true (vmap), "
                             "false (one at a time on the whole batch, bit-exact)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    threads = setup_threads(1 if args.clock == "cpu" else args.threads)
    vectorize = {"none": None, "true": True, "false": False}[args.vectorize]
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    table = rows([int(k) for k in args.ks.split(",")], vectorize, rounds=args.rounds, device=torch.device(args.device),
                 clock=clock)
    print(
        f"train step, {type(HOST).__name__}(n_blocks=3, base_channels=32), batch 128 of 32x32, "
        f"{BLUEPRINT} candidates in {TOURNAMENT_SLOT} (vectorize={vectorize}) on {args.device}; {threads} thread(s), "
        f"{args.clock} clock, {args.rounds} rounds; "
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
    )
    print_table(HEADER, table)


if __name__ == "__main__":
    main()
