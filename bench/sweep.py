"""Benchmark: counterfactual sweeps over an alpha grid.

Model: ``CNNHost(n_blocks=3, base_channels=32)``, batch 128 of 32x32 images,
``conv_light`` seeds BLENDING in ``r0c0, r0c1, r0c2``; grid: the full
factorial over the 3 slots (K = 8). The ways to get all K outputs:

- ``loop``: one ``ef.predict`` per grid row;
- ``repeated batch``: esper-lite's fused method, one pass over K x B rows
  with per-sample alphas;
- ``vmap``: ``torch.func.vmap`` of ``ef.predict`` over the rows;
- ``ef.sweep``: the prefix tree, walked depth first (each host segment and
  seed once per distinct prefix);
- with ``ESPER_LITE_SRC`` set: esper-lite's own ``force_alpha`` loop and
  ``fused_forward`` on its ``MorphogeneticModel`` holding the same weights.

Peak memory is the growth of the resident set while one call runs, measured
in a fresh process per variant (``/proc/self/status`` VmHWM after resetting
it), so each variant starts from the same allocator state.

Then a scaling table for n = 1..6 slots (``r0c0, r1c0, r0c1, r1c1, r0c2,
r1c2`` in turn), full factorial grids: sweep time divided by one ``predict``,
next to the loop's 2^n. Run: ``python bench/sweep.py [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch.func import vmap

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _esper_lite
from _timing import measure, print_table, setup_threads, stable_allocator

import esper_func as ef

HOST = ef.CNNHost(n_blocks=3, base_channels=32)
BATCH = 128


def make(slot_ids: list[str]) -> tuple[ef.Model, dict, dict]:
    registry = ef.default_registry()
    model, params, buffers = ef.build_model(HOST, slot_ids, generator=torch.Generator().manual_seed(0))
    for k, sid in enumerate(model.slot_order):
        model, params = ef.add_seed(model, params, sid, registry, "conv_light", generator=torch.Generator().manual_seed(k + 1))
    model, params = ef.set_stages(model, params, {sid: ef.SeedStage.BLENDING for sid in model.slot_order})
    g = torch.Generator().manual_seed(7)
    params = {
        "host": params["host"],
        "slots": {s: {grp: {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in d.items()} for grp, d in sp.items()} for s, sp in params["slots"].items()},
    }
    return model, params, buffers


def variants(model: ef.Model, params: dict, buffers: dict, x: torch.Tensor, grid: torch.Tensor) -> dict:
    k = grid.shape[0]
    x_rep = x.repeat(k, 1, 1, 1)
    alphas_rep = grid.repeat_interleave(x.shape[0], dim=0)
    return {
        "loop": lambda: torch.stack([ef.predict(model, params, buffers, row, x) for row in grid]),
        "repeated batch": lambda: ef.predict(model, params, buffers, alphas_rep, x_rep).reshape(k, x.shape[0], -1),
        "vmap": lambda: vmap(lambda a: ef.predict(model, params, buffers, a, x))(grid),
        "ef.sweep": lambda: ef.sweep(model, params, buffers, x, grid),
    }


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_child(name: str) -> None:
    """Run one variant once in this fresh process and print its peak RSS growth (MiB)."""
    torch.manual_seed(0)
    model, params, buffers = make(["r0c0", "r0c1", "r0c2"])
    x = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    grid = ef.alpha_grid("full_factorial", 3)
    fn = variants(model, params, buffers, x, grid)[name]
    with torch.no_grad():
        fn()  # warm up kernels and lazy initialisation
        baseline = _rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        fn()
        peak = _rss_kib("VmHWM")
    print(json.dumps({"peak_mib": (peak - baseline) / 1024}))


def peak_memory(name: str) -> float | None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # default allocator
    try:
        out = subprocess.run(
            [sys.executable, __file__, "--peak-memory-of", name],
            capture_output=True, text=True, check=True, env=env, timeout=600,
        ).stdout
        return float(json.loads(out.strip().splitlines()[-1])["peak_mib"])
    except (subprocess.SubprocessError, OSError, ValueError, KeyError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--peak-memory-of", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    setup_threads(args.threads)
    if args.peak_memory_of:
        peak_memory_child(args.peak_memory_of)
        return
    stable_allocator()
    threads = torch.get_num_threads()
    print(f"counterfactual sweeps, {HOST}, batch {BATCH}x3x32x32; torch {torch.__version__}, {threads} threads\n")

    x = torch.randn(BATCH, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    grid = ef.alpha_grid("full_factorial", 3)
    if _esper_lite.available():
        pair = _esper_lite.blending_pair(HOST, ["r0c0", "r0c1", "r0c2"], "conv_light")
        model, params, buffers = pair.model, pair.params, pair.buffers
        fns = {**variants(model, params, buffers, x, grid), **{f"esper-lite {k}": v for k, v in _esper_lite.lite_sweeps(pair, x, grid).items()}}
    else:
        model, params, buffers = make(["r0c0", "r0c1", "r0c2"])
        fns = variants(model, params, buffers, x, grid)
    with torch.no_grad():
        reference = fns["loop"]()
        for fn in fns.values():
            torch.testing.assert_close(fn(), reference, rtol=1e-5, atol=1e-5)
        t = measure(fns, rounds=9, min_time_s=0.2, warmup=1)
    rows = []
    for name in fns:
        mib = peak_memory(name) if name in variants(model, params, buffers, x, grid) else None
        rows.append([name, t.ms(name), t.ratio(name, "loop"), "n/a" if mib is None else f"{mib:.1f}"])
    print("3-slot CNN, full factorial K = 8 (sweep target: <= 0.35x the faster of esper-lite's force_alpha loop and")
    print("fused_forward, see bench/table.py; peak memory no higher than the repeated batch)\n")
    print_table(["variant", "ms", "x loop", "peak MiB"], rows)

    print("\nscaling: full factorial over n slots, time / one predict")
    scale_rows = []
    order = list(HOST.slot_ids)
    for n in range(1, 7):
        model, params, buffers = make(order[:n])
        grid = ef.alpha_grid("full_factorial", n)
        alphas = torch.full((n,), 0.5)
        with torch.no_grad():
            t = measure(
                {
                    # measured within this iteration, so the late binding is harmless
                    "predict": lambda: ef.predict(model, params, buffers, alphas, x),  # noqa: B023
                    "sweep": lambda: ef.sweep(model, params, buffers, x, grid),  # noqa: B023
                },
                rounds=5,
                min_time_s=0.2,
                warmup=1,
            )
        branches = ef.counterfactual.sweep_plan_stats(model, grid)
        scale_rows.append([n, 2**n, t.ratio("sweep", "predict"), t.ms("predict"), t.ms("sweep"), branches])
    print_table(["n", "loop (2^n)", "sweep / predict", "predict ms", "sweep ms", "branches per slot"], scale_rows)


if __name__ == "__main__":
    main()
