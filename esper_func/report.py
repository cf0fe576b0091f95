"""A PNG report of a run: accuracy, per-slot alpha and stage timelines, contributions.

Reads the per-epoch records that ``esper-func`` writes to ``metrics.jsonl``
(dicts with ``epoch``, ``train_loss``, ``val_loss``, ``val_accuracy`` and
``slots: {slot_id: {"stage", "alpha", "contribution", "blueprint"}}``).
Needs matplotlib (``pip install 'esper-func[demo]'``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from esper_func.errors import InvalidArgumentError, MissingDependencyError
from esper_func.lifecycle.stages import SeedStage

__all__ = ["write_report"]

_STAGE_COLOURS = {
    "DORMANT": "#eeeeee",
    "GERMINATED": "#c6dbef",
    "TRAINING": "#6baed6",
    "BLENDING": "#fd8d3c",
    "HOLDING": "#fdd0a2",
    "FOSSILIZED": "#31a354",
    "PRUNED": "#de2d26",
    "EMBARGOED": "#fcbba1",
    "RESETTING": "#bdbdbd",
}


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "the PNG report needs the 'matplotlib' package, which is not installed: pip install 'esper-func[demo]'"
        ) from exc
    return plt


def write_report(records: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Draw the run in ``records`` (one dict per epoch) into a PNG at ``path``; returns the path."""
    if not records:
        raise InvalidArgumentError("write_report needs at least one epoch record; got none")
    plt = _pyplot()
    epochs = [int(r["epoch"]) for r in records]
    slot_ids = list(records[-1]["slots"])
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.2, 2]})
    ax_acc, ax_alpha, ax_stage, ax_contrib = axes

    ax_acc.plot(epochs, [100 * float(r["val_accuracy"]) for r in records], color="#08519c", label="validation accuracy (%)")
    ax_acc.set_ylabel("accuracy (%)")
    ax_loss = ax_acc.twinx()
    ax_loss.plot(epochs, [float(r["train_loss"]) for r in records], color="#a50f15", alpha=0.6, label="train loss")
    ax_loss.plot(epochs, [float(r["val_loss"]) for r in records], color="#fb6a4a", alpha=0.6, label="validation loss")
    ax_loss.set_ylabel("loss")
    lines = ax_acc.get_lines() + ax_loss.get_lines()
    ax_acc.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=8)
    ax_acc.set_title(title or "esper_func run")

    for sid in slot_ids:
        ax_alpha.plot(epochs, [float(r["slots"][sid]["alpha"]) for r in records], label=sid, drawstyle="steps-post")
    ax_alpha.set_ylabel("alpha")
    ax_alpha.set_ylim(-0.05, 1.05)
    ax_alpha.legend(fontsize=8, ncol=max(1, len(slot_ids)), loc="upper left")

    for row, sid in enumerate(slot_ids):
        for r in records:
            stage = str(r["slots"][sid]["stage"])
            ax_stage.barh(row, 1, left=int(r["epoch"]) - 0.5, color=_STAGE_COLOURS.get(stage, "#ffffff"), edgecolor="none")
    ax_stage.set_yticks(range(len(slot_ids)), slot_ids)
    ax_stage.set_ylabel("stage")
    seen = {str(r["slots"][sid]["stage"]) for r in records for sid in slot_ids}
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=_STAGE_COLOURS[s.name]) for s in SeedStage if s.name in seen and s.name in _STAGE_COLOURS
    ]
    labels = [s.name for s in SeedStage if s.name in seen and s.name in _STAGE_COLOURS]
    ax_stage.legend(handles, labels, fontsize=7, ncol=len(labels) or 1, loc="upper left", bbox_to_anchor=(0, -0.15))

    for sid in slot_ids:
        values = [r["slots"][sid].get("contribution") for r in records]
        xs = [e for e, v in zip(epochs, values, strict=True) if v is not None]
        ys = [float(v) for v in values if v is not None]
        if xs:
            ax_contrib.plot(xs, ys, marker="o", markersize=3, label=sid)
    ax_contrib.axhline(0.0, color="black", linewidth=0.5)
    ax_contrib.set_ylabel("contribution\n(accuracy points)")
    ax_contrib.set_xlabel("epoch")
    if ax_contrib.get_lines()[1:]:
        ax_contrib.legend(fontsize=8, loc="upper left")

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
