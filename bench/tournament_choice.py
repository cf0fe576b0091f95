"""How well does a tournament choose? Digits, K = 3, against forcing each candidate as the first germination.

For each seed: one run of the digits demo's grown model (no baselines) with
``tournament=3``; then, for each candidate of its first tournament, a run
with single germinations whose rotation starts with that candidate. The
final validation accuracy of those runs is the ground truth the first
choice is compared with.

Run: ``python bench/tournament_choice.py [--seeds 0,1,2] [--threads 2]`` (about 20 s per seed on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import print_table, setup_threads

import esper_func as ef
from esper_func.cli import RunConfig, _load_data
from esper_func.controller import DEFAULT_BLUEPRINT_ROTATION, HeuristicConfig, heuristic
from esper_func.fit import LoopState, run_epoch


def grow(seed: int, *, tournament: int = 1, first: str | None = None) -> tuple[float, list[ef.TournamentDecided]]:
    """``(final validation accuracy, tournaments decided)`` of the digits demo's grown run."""
    config = dataclasses.replace(RunConfig.for_task("digits", seed=seed), tournament=tournament)
    data = _load_data(config.dataset, config.seed)
    model, state = config.build(data)
    rotation = DEFAULT_BLUEPRINT_ROTATION["cnn"]
    if first is not None:
        rotation = (first, *(b for b in rotation if b != first))
    controller = heuristic(HeuristicConfig(stabilization_epochs=0, blueprint_rotation=rotation))
    loop, fit_config, registry = LoopState(), config.fit_config(), ef.default_registry()
    decided: list[ef.TournamentDecided] = []
    record: Any = None
    while loop.epoch < config.epochs:
        model, state, loop, record = run_epoch(model, state, loop, data, optimizer=config.optimizer(loop.epoch + 1),
                                               config=fit_config, registry=registry, controller=controller)
        decided += [e for e in record.events if isinstance(e, ef.TournamentDecided)]
    return record.val_accuracy, decided


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    setup_threads(args.threads)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        accuracy, decided = grow(seed, tournament=3)
        if not decided:
            rows.append([seed, "-", "no tournament", "-", f"{100 * accuracy:.1f}%"])
            continue
        first = decided[0]
        truth = {name: grow(seed, first=name)[0] for name in first.candidates}
        best = max(truth, key=lambda name: truth[name])
        chosen = first.candidates[first.winner]
        rows.append([
            seed,
            ", ".join(f"{name} {100 * acc:.1f}%" for name, acc in truth.items()),
            chosen,
            "yes" if truth[chosen] >= truth[best] else f"no ({best})",
            f"{100 * accuracy:.1f}%",
        ])
    print("digits, K = 3: the first tournament's choice against each candidate forced as the first germination")
    print_table(["seed", "final accuracy with each candidate first", "chosen", "best?", "tournament run"], rows)


if __name__ == "__main__":
    main()
