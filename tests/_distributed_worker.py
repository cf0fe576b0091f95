"""One rank of a real multi-process run, for tests/test_distributed.py (gloo on loopback).

Usage: python _distributed_worker.py SCENARIO RANK WORLD_SIZE PORT OUT_JSON
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

import torch

import esper_func as ef
from esper_func import distributed
from esper_func.controller import HeuristicConfig, heuristic
from esper_func.fit import FitConfig, fit
from esper_func.train import init_train_state

HOST = ef.CNNHost(in_channels=1, n_blocks=2, base_channels=4, num_classes=4, memory_format="contiguous_format")
CONTROLLER = heuristic(
    HeuristicConfig(stabilization_epochs=0, min_epochs_before_germinate=2, plateau_epochs_to_germinate=1, tempo=2)
)
CONFIG = FitConfig(epochs=12, batch_size=16, gates=ef.Gates(permissive=True, min_blending_epochs=1))
#: Every germination a tournament of three candidates (compared after two epochs in TRAINING).
TOURNAMENT = dataclasses.replace(CONFIG, gates=ef.Gates(permissive=True, min_blending_epochs=2), tournament=3)


def run(host: ef.CNNHost, data_seed: int, world: distributed.World, config: FitConfig = CONFIG) -> dict:
    registry = ef.default_registry()
    data = ef.data.synthetic_images(240, classes=4, size=8, seed=data_seed)
    model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(0))
    world.check_consistent(model, registry)
    optimizer = ef.optim.adamw(1e-2)
    state = init_train_state(model, params, buffers, optimizer=optimizer, key=7)
    result = fit(model, state, data, optimizer=optimizer, config=config, registry=registry, controller=CONTROLLER,
                 reducer=world.reducer(), rank=world.rank, world_size=world.size)
    return {
        "params_digest": distributed.params_digest(result.state.params),
        # Every field but the wall-clock seconds, which differ between processes.
        "records": [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in result.history],
        "stages": [s.name for s in result.model.stages],
    }


def main() -> int:
    scenario, rank, size, port, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    torch.set_num_threads(1)
    if scenario == "plain":  # no process group at all: the non-distributed fit
        world = distributed.World()
    else:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                          LOCAL_RANK=str(rank))
        world = distributed.from_environment(timeout_s=60)
    try:
        if scenario in ("same-data", "plain"):
            report = run(HOST, 0, world)
        elif scenario == "different-data":
            report = run(HOST, 100 + rank, world)
        elif scenario == "tournament":
            report = run(HOST, 100 + rank, world, TOURNAMENT)
        elif scenario == "mismatch":
            host = HOST if rank == 0 else ef.CNNHost(in_channels=1, n_blocks=2, base_channels=6, num_classes=4)
            report = run(host, 0, world)
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
    except distributed.StructureMismatchError as exc:
        report = {"error": str(exc)}
    finally:
        world.finish()
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(report, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
