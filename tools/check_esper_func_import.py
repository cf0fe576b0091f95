"""Import every recorded esper-lite checkpoint with ``ef.from_esper_lite`` and report what it gets wrong.

For each checkpoint in ``tests/data/esper-lite-2016337e/checkpoints``:

- ``ef.from_esper_lite(state_dict, host)``: ok, or the exact error;
- when it loads: the largest absolute difference between ``ef.predict`` and
  esper-lite's saved predictions for every saved output (same forced alphas),
  whether the imported tensors are the checkpoint's own, whether the
  imported stages and alphas are esper-lite's, and where
  ``ef.to_state_dict(..., states=...)`` of the import differs from the
  ``_extra_state`` esper-lite saved (what a read-write cycle through
  esper_func changes);
- when it fails on ``None`` gradient telemetry (esper-lite's "never
  measured"), a diagnostic second attempt with those ``None`` values replaced
  by numbers, to show what lies behind that first error.

Needs esper_func only (no esper-lite). Prints a summary; ``--report PATH``
also writes the details as JSON.

Usage::

    python tools/check_esper_func_import.py [--report PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tests"))

from _esper_lite_checkpoints import Checkpoint, checkpoints, json_form  # noqa: E402

import esper_func as ef  # noqa: E402

#: ``None`` ("never measured") replaced for the diagnostic second attempt.
_TELEMETRY_STAND_INS = {"gradient_norm": 0.0, "gradient_health": 1.0, "has_vanishing": False, "has_exploding": False}


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def json_diff(a: Any, b: Any, path: str = "") -> list[dict[str, Any]]:
    """Paths where two JSON values differ (``esper_lite`` is ``a``, ``esper_func`` is ``b``)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            sub = f"{path}.{key}" if path else key
            out.extend(json_diff(a.get(key, "<absent>"), b.get(key, "<absent>"), sub))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in json_diff(x, y, f"{path}[{i}]")]
    if a == b and type(a) is type(b):
        return []
    return [{"path": path, "esper_lite": a, "esper_func": b}]


def _without_none_telemetry(state_dict: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    patched = dict(state_dict)
    replaced = []
    for key, value in state_dict.items():
        if not key.endswith("._extra_state") or not isinstance(value, Mapping) or value.get("seed_state") is None:
            continue
        extra = copy.deepcopy(dict(value))
        telemetry = extra["seed_state"].get("telemetry") or {}
        for field, stand_in in _TELEMETRY_STAND_INS.items():
            if telemetry.get(field, 0) is None:
                telemetry[field] = stand_in
                replaced.append(f"{key}.seed_state.telemetry.{field}")
        if extra["seed_state"].get("metrics", {}).get("seed_gradient_norm_ratio", 0) is None:
            extra["seed_state"]["metrics"]["seed_gradient_norm_ratio"] = 0.0
            replaced.append(f"{key}.seed_state.metrics.seed_gradient_norm_ratio")
        patched[key] = extra
    return patched, replaced


def attempt(ckpt: Checkpoint, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Import ``state_dict`` and compare everything with what esper-lite recorded."""
    host = ckpt.esper_func_host()
    try:
        model, params, buffers, states = ef.from_esper_lite(state_dict, host)
    except Exception as exc:
        return {"imported": False, "error": _error(exc)}
    result: dict[str, Any] = {"imported": True}
    outputs = ckpt.outputs()
    diffs = {}
    for name in ckpt.output_specs:
        alphas = ckpt.alphas(name)
        vector = torch.tensor([alphas[s] for s in model.slot_order], dtype=torch.float32)
        with torch.no_grad():
            pred = ef.predict(model, params, buffers, vector, outputs["inputs"])
        diffs[name] = float((pred.double() - outputs[name].double()).abs().max())
    result["max_abs_diff"] = diffs
    result["bitwise_equal"] = all(v == 0.0 for v in diffs.values())
    flat = ef.to_state_dict(model, params, buffers)
    result["tensors_are_the_checkpoints"] = all(
        flat[k] is state_dict[k] or torch.equal(flat[k], state_dict[k]) for k in flat if k in state_dict
    )
    stage_alpha = {}
    for slot_id, rec in ckpt.slot_states.items():
        got_stage = model.stage(slot_id).name if slot_id in model.slot_order else "<not enabled>"
        got_alpha = states[slot_id].alpha if slot_id in states else 0.0
        if got_stage != rec.stage or got_alpha != rec.alpha:
            stage_alpha[slot_id] = {"esper_lite": [rec.stage, rec.alpha], "esper_func": [got_stage, got_alpha]}
    result["stage_or_alpha_differences"] = stage_alpha
    try:
        rewritten = ef.to_state_dict(model, params, buffers, states=states)
    except Exception as exc:
        result["rewrite_error"] = _error(exc)
        return result
    extra_diffs = {}
    for slot_id in ckpt.slots:
        key = f"seed_slots.{slot_id}._extra_state"
        d = json_diff(json_form(state_dict[key]), json_form(rewritten.get(key)))
        if d:
            extra_diffs[slot_id] = d
    result["rewritten_extra_state_differences"] = extra_diffs
    el_keys = [k for k, v in state_dict.items() if isinstance(v, torch.Tensor)]
    ef_keys = [k for k, v in rewritten.items() if isinstance(v, torch.Tensor)]
    if set(el_keys) != set(ef_keys):
        result["rewritten_tensor_keys"] = {
            "only_esper_lite": sorted(set(el_keys) - set(ef_keys)),
            "only_esper_func": sorted(set(ef_keys) - set(el_keys)),
        }
    return result


def check(ckpt: Checkpoint) -> dict[str, Any]:
    """:func:`attempt` on the checkpoint as saved, and, if ``None`` telemetry stops it, once more without."""
    state_dict = ckpt.state_dict()
    result = {"name": ckpt.name, **attempt(ckpt, state_dict)}
    if not result["imported"] and "NoneType" in result["error"]:
        patched, replaced = _without_none_telemetry(state_dict)
        result["with_none_telemetry_replaced"] = {"replaced": replaced, **attempt(ckpt, patched)}
    return result


def _summary_line(r: Mapping[str, Any]) -> str:
    if not r["imported"]:
        line = f"{r['name']}: REFUSED: {r['error']}"
        second = r.get("with_none_telemetry_replaced")
        if second is not None:
            line += "\n    with None telemetry replaced: " + (
                f"imported, max |diff| {max(second['max_abs_diff'].values()):.3g}" if second["imported"] else f"refused: {second['error']}"
            )
        return line
    return f"{r['name']}: imported, max |diff| {max(r['max_abs_diff'].values()):.3g}, stage/alpha differences {len(r['stage_or_alpha_differences'])}"


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="write the full JSON report here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [check(c) for c in checkpoints()]
    for r in results:
        print(_summary_line(r))
    if args.report is not None:
        args.report.write_text(json.dumps({"results": results}, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
