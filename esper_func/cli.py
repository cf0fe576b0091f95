"""Command line: ``esper-func`` (also ``python -m esper_func``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from torch.func import vmap

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    """A vmapped counterfactual alpha sweep of one seed slot, on built-in random features."""
    import esper_func as ef

    registry = ef.default_registry()
    generator = torch.Generator().manual_seed(args.seed)
    slot, params = ef.germinate_slot(registry, "cnn", args.blueprint, 32, generator=generator)
    x = torch.randn(64, 32, 16, 16, generator=torch.Generator().manual_seed(args.seed + 1))
    alphas = torch.linspace(0.0, 1.0, args.points)

    def run(alpha: torch.Tensor) -> torch.Tensor:
        return ef.slot_apply(slot, params, alpha, x, stage=ef.SeedStage.BLENDING)

    swept = vmap(run)(alphas)  # [K, B, C, H, W] in one batched call
    looped = torch.stack([run(a) for a in alphas])
    max_diff = (swept - looped).abs().max().item()

    print(f"seed slot: cnn:{slot.blueprint_id}, {slot.num_params()} parameters, 32 channels")
    print(f"{'alpha':>6}  {'mean |out - host|':>18}")
    for alpha, out in zip(alphas.tolist(), swept, strict=True):
        print(f"{alpha:6.2f}  {(out - x).abs().mean().item():18.6f}")
    print(f"vmap over {len(alphas)} alphas vs a Python loop: max difference {max_diff:.2e}")
    return 0 if max_diff <= 1e-5 else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="esper-func", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="show a vmapped counterfactual alpha sweep of one seed slot")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--blueprint", default="conv_light", help="CNN blueprint name (default conv_light)")
    demo.add_argument("--points", type=int, default=6, help="number of alpha values (default 6)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``esper-func`` console script."""
    args = _parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
