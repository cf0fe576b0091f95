"""Benchmark: ``slot_apply`` against an equivalent stateful ``nn.Module`` slot.

For every built-in blueprint, a BLENDING slot (ADD, alpha 0.5) is timed two
ways with the same weights, in the same run:

- ``stateful``: an ``nn.Module`` holding the seed, its alpha as an attribute
  (esper-lite's shape of things);
- ``functional``: ``ef.slot_apply(slot, params, alpha, x, stage=...)``.

Forward, and forward+backward (``torch.autograd.grad`` of a sum over the seed
parameters and the host features, for both variants) are reported with the
ratio functional / stateful. Run: ``python bench/slot.py [--threads N]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import measure, print_table, setup_threads, stable_allocator

import esper_func as ef
from esper_func.slot import is_isolated


class StatefulSlot(nn.Module):
    """The baseline: a slot that owns its seed and its alpha (esper-lite clamps alpha too)."""

    def __init__(self, seed: nn.Module, alpha: float, isolate: bool) -> None:
        super().__init__()
        self.seed = seed
        self.register_buffer("alpha", torch.tensor(alpha))
        self.isolate = isolate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seed_input = x.detach() if self.isolate else x
        return torch.lerp(x, self.seed(seed_input), self.alpha.clamp(0.0, 1.0))


def bench_blueprint(registry: ef.Registry, topology: str, name: str, x: torch.Tensor) -> list[object]:
    channels = x.shape[1] if topology == "cnn" else x.shape[2]
    slot, params = ef.germinate_slot(registry, topology, name, channels, generator=torch.Generator().manual_seed(0))
    stage = ef.SeedStage.BLENDING
    seed_module = registry.get(topology, name).build(channels)
    seed_module.load_state_dict(params["seed"])
    stateful = StatefulSlot(seed_module, 0.5, is_isolated(topology, stage)).eval()
    alpha = torch.tensor(0.5)

    with torch.no_grad():
        torch.testing.assert_close(stateful(x), ef.slot_apply(slot, params, alpha, x, stage=stage))

    leaf_params = {"seed": {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in params["seed"].items()}}
    fn_leaves = [v for v in leaf_params["seed"].values() if v.requires_grad]
    mod_leaves = [p for p in stateful.parameters()]
    x_leaf = x.clone().requires_grad_(True)

    def fwd_stateful() -> object:
        with torch.no_grad():
            return stateful(x)

    def fwd_functional() -> object:
        with torch.no_grad():
            return ef.slot_apply(slot, params, alpha, x, stage=stage)

    def bwd_stateful() -> object:
        return torch.autograd.grad(stateful(x_leaf).sum(), [x_leaf, *mod_leaves])

    def bwd_functional() -> object:
        out = ef.slot_apply(slot, leaf_params, alpha, x_leaf, stage=stage)
        return torch.autograd.grad(out.sum(), [x_leaf, *fn_leaves])

    t = measure({"fs": fwd_stateful, "ff": fwd_functional, "bs": bwd_stateful, "bf": bwd_functional})
    return [
        f"{topology}:{name}",
        slot.num_params(),
        t.ms("fs"),
        t.ms("ff"),
        t.ratio("ff", "fs"),
        t.ms("bs"),
        t.ms("bf"),
        t.ratio("bf", "bs"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--only", default=None, help="run only blueprints whose key contains this text")
    args = parser.parse_args()
    stable_allocator()
    threads = setup_threads(args.threads)
    registry = ef.default_registry()
    g = torch.Generator().manual_seed(0)
    inputs = {
        "cnn": torch.randn(64, 64, 16, 16, generator=g),
        "transformer": torch.randn(32, 64, 128, generator=g),
    }
    print(f"slot_apply vs stateful nn.Module slot (BLENDING, ADD, alpha=0.5); torch {torch.__version__}, {threads} threads")
    print("inputs: cnn [64, 64, 16, 16], transformer [32, 64, 128]; medians in ms;")
    print("ratios are medians of per-round ratios (variants interleaved round by round)\n")
    rows = []
    for topology in ("cnn", "transformer"):
        for name in registry.names(topology):
            if args.only and args.only not in f"{topology}:{name}":
                continue
            rows.append(bench_blueprint(registry, topology, name, inputs[topology]))
    print_table(
        ["blueprint", "params", "fwd stateful", "fwd functional", "ratio", "fwd+bwd stateful", "fwd+bwd functional", "ratio"],
        rows,
    )
    worst_fwd = max(r[4] for r in rows)
    worst_bwd = max(r[7] for r in rows)
    print(f"\nworst ratio: forward {worst_fwd:.3f}, forward+backward {worst_bwd:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
