"""Benchmark: one train step with K candidate seeds in one slot, against the step with one seed there.

The 3-slot CNN of ``bench/table.py`` (``CNNHost(n_blocks=3,
base_channels=32)``, batch 128 of 32x32, SGD with momentum 0.9 and weight
decay 5e-4, cross entropy): ``conv_light`` seeds BLENDING at alpha 0.3 in
``r0c1`` and ``r0c2``; in ``r0c0`` (32 channels at 32x32, the widest
activations) either one ``conv_light`` seed in TRAINING (the baseline) or
a group of K ``conv_light`` candidates (:func:`esper_func.add_candidates`),
run as one ``vmap`` (the default) or one at a time (``vectorize=False``).

Every variant is timed in the same interleaved rounds (``bench/_timing.py``)
and each ratio is the median over rounds of the per-round ratio to the
one-seed step. Running K trials one after another costs K one-seed steps
(ratio K); the goal is K = 4 at most 1.6x.

Run: ``python bench/tournament.py [--rounds N] [--threads N] [--clock cpu] [--ks 2,4,8] [--sequential]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
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


def _base() -> tuple[ef.Model, dict, dict, dict]:
    """The host with BLENDING seeds in the other slots, the tournament slot empty."""
    registry = ef.default_registry()
    model, params, buffers = ef.build_model(HOST, SLOTS, generator=torch.Generator().manual_seed(0))
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--ks", default="2,4,8")
    parser.add_argument("--sequential", action="store_true",
                        help="also time every K run one candidate at a time (the epoch loop's choice on CPU)")
    args = parser.parse_args()
    threads = setup_threads(1 if args.clock == "cpu" else args.threads)
    ks = [int(k) for k in args.ks.split(",")]
    registry = ef.default_registry()
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(128, 3, 32, 32, generator=g), torch.randint(0, 10, (128,), generator=g))
    model, params, buffers, seeds = _base()
    slot_state = _state(TOURNAMENT_SLOT, ef.SeedStage.TRAINING)

    fns = {}
    one_model, one_params = ef.add_seed(model, params, TOURNAMENT_SLOT, registry, BLUEPRINT, stage=ef.SeedStage.TRAINING)
    fns["1 seed"] = _step(one_model, one_params, buffers, {**seeds, TOURNAMENT_SLOT: slot_state}, batch)
    variants = [(k, True) for k in ks] + ([(k, False) for k in ks] if args.sequential else [])
    for k, vectorize in variants:
        m, p = ef.add_candidates(model, params, TOURNAMENT_SLOT, registry, [BLUEPRINT] * k, vectorize=vectorize)
        name = f"K={k}" + ("" if vectorize else " one at a time")
        fns[name] = _step(m, p, buffers, {**seeds, TOURNAMENT_SLOT: slot_state}, batch)

    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    timings = measure(fns, rounds=args.rounds, min_time_s=0.2, warmup=1, clock=clock)
    rows = []
    for name in fns:
        k = 1 if name == "1 seed" else int(name.split("=")[1].split()[0])
        ratio = 1.0 if name == "1 seed" else timings.ratio(name, "1 seed")
        goal = f"<= {GOAL_K4}" if k == 4 else ""
        rows.append([name, timings.ms(name), ratio, float(k), goal])
    print(
        f"train step, {type(HOST).__name__}(n_blocks=3, base_channels=32), batch 128 of 32x32, "
        f"{BLUEPRINT} candidates in {TOURNAMENT_SLOT}; {threads} thread(s), {args.clock} clock, {args.rounds} rounds; "
        f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
    )
    print_table(["variant", "ms/step", "x 1 seed", "K trials in a row", "goal"], rows)


if __name__ == "__main__":
    main()
