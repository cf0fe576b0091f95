"""Benchmark: ``ef.predict`` / ``ef.apply`` against an equivalent stateful ``nn.Module`` model.

Two models, each timed against a stateful baseline holding the very same
weights (a host ``nn.Module`` plus seed ``nn.Module``s and alphas as
buffers, the esper-lite shape of things), in the same run:

- CNN: ``CNNHost(n_blocks=3, base_channels=32)``, 32x32 inputs, batch 128,
  ``conv_light`` seeds BLENDING in ``r0c0, r0c1, r0c2``;
- transformer: ``TransformerHost(vocab_size=512, n_embd=128, n_head=4,
  n_layer=6, block_size=64, num_segments=3)``, batch 32 x 64 tokens,
  ``lora`` seeds BLENDING in every slot.

Rows: eval forward (``predict``), forward+backward (train-mode ``apply``,
``torch.autograd.grad`` of the mean logit over every parameter), and
``torch.compile``d ``predict`` against eager ``predict``.
Run: ``python bench/model.py [--threads N] [--no-compile]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _baselines import StatefulModel
from _timing import measure, print_table, setup_threads, stable_allocator

import esper_func as ef


def make(host: ef.CNNHost | ef.TransformerHost, blueprint: str) -> tuple:
    reg = ef.default_registry()
    model, params, buffers = ef.build_model(host, host.slot_ids if host.topology == "transformer" else ["r0c0", "r0c1", "r0c2"], generator=torch.Generator().manual_seed(0))
    for k, sid in enumerate(model.slot_order):
        model, params = ef.add_seed(model, params, sid, reg, blueprint, generator=torch.Generator().manual_seed(k + 1))
    model, params = ef.set_stages(model, params, {sid: ef.SeedStage.BLENDING for sid in model.slot_order})
    # Give the seeds non-trivial weights (several blueprints start as the identity).
    g = torch.Generator().manual_seed(7)
    params = {
        "host": params["host"],
        "slots": {sid: {grp: {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in p.items()} for grp, p in sp.items()} for sid, sp in params["slots"].items()},
    }
    return model, params, buffers


def bench(label: str, model: ef.Model, params: dict, buffers: dict, x: torch.Tensor, compile_: bool) -> list[list[object]]:
    alphas = torch.full((model.n_slots,), 0.5)
    stateful = StatefulModel(model, params, buffers, alphas)
    with torch.no_grad():
        torch.testing.assert_close(stateful.eval()(x), ef.predict(model, params, buffers, alphas, x), rtol=1e-4, atol=1e-4)

    leaf = {
        "host": {k: v.clone().requires_grad_(True) for k, v in params["host"].items()},
        "slots": {sid: {grp: {k: v.clone().requires_grad_(True) for k, v in p.items()} for grp, p in sp.items()} for sid, sp in params["slots"].items()},
    }
    fn_leaves = [v for v in torch.utils._pytree.tree_leaves(leaf)]
    mod_leaves = list(stateful.parameters())

    def fwd_stateful() -> object:
        with torch.no_grad():
            return stateful.eval()(x)

    def fwd_functional() -> object:
        with torch.no_grad():
            return ef.predict(model, params, buffers, alphas, x)

    def bwd_stateful() -> object:
        stateful.train()
        out = stateful(x)
        return torch.autograd.grad(out.float().mean(), mod_leaves)

    def bwd_functional() -> object:
        out, _ = ef.apply(model, leaf, buffers, alphas, x, train=True)
        return torch.autograd.grad(out.float().mean(), fn_leaves)

    fns = {"fs": fwd_stateful, "ff": fwd_functional, "bs": bwd_stateful, "bf": bwd_functional}
    if compile_:
        torch._dynamo.reset()
        compiled = torch.compile(lambda a: ef.predict(model, params, buffers, a, x), fullgraph=True)

        def fwd_compiled() -> object:
            with torch.no_grad():
                return compiled(alphas)

        with torch.no_grad():
            torch.testing.assert_close(compiled(alphas), ef.predict(model, params, buffers, alphas, x), rtol=1e-4, atol=1e-4)
        fns["fc"] = fwd_compiled
    t = measure(fns, rounds=11, min_time_s=0.1, warmup=2)
    rows = [
        [label, "predict (eval forward)", t.ms("fs"), t.ms("ff"), t.ratio("ff", "fs"), "<= 1.05"],
        [label, "forward+backward (train)", t.ms("bs"), t.ms("bf"), t.ratio("bf", "bs"), "<= 1.10"],
    ]
    if compile_:
        rows.append([label, "compiled predict vs eager predict", t.ms("ff"), t.ms("fc"), t.ratio("fc", "ff"), "< 1.00"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    args = parser.parse_args()
    stable_allocator()
    threads = setup_threads(args.threads)
    print(f"esper_func model vs stateful nn.Module model; torch {torch.__version__}, {threads} threads; medians in ms\n")
    rows = []
    cnn = ef.CNNHost(n_blocks=3, base_channels=32)
    x_cnn = torch.randn(128, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    rows += bench("cnn", *make(cnn, "conv_light"), x_cnn, not args.no_compile)
    tfm = ef.TransformerHost(vocab_size=512, n_embd=128, n_head=4, n_layer=6, block_size=64, num_segments=3)
    x_tfm = torch.randint(0, 512, (32, 64), generator=torch.Generator().manual_seed(2))
    rows += bench("transformer", *make(tfm, "lora"), x_tfm, not args.no_compile)
    print_table(["model", "measure", "baseline", "esper_func", "ratio", "target"], rows)


if __name__ == "__main__":
    main()
