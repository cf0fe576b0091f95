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


_BASELINE_STYLES = (("#636363", "--"), ("#9e9ac8", ":"), ("#41ab5d", "-."))
_EVENT_COLOURS = {"germinated": "#3182bd", "tournament": "#756bb1", "fossilized": "#31a354", "pruned": "#de2d26"}


def _events(records: Sequence[Mapping[str, Any]]) -> list[tuple[int, str, str]]:
    """``(epoch, kind, label)`` of the germinations, tournaments, fossilizations and prunes in ``records``."""
    out = []
    for r in records:
        for e in r.get("events", ()):
            kind = e.get("kind") or {"SeedGerminated": "germinated", "SeedFossilized": "fossilized",
                                     "SeedPruned": "pruned", "TournamentDecided": "tournament"}.get(e.get("type", ""), "")
            if kind in _EVENT_COLOURS:
                slot = e.get("slot") or e.get("slot_id", "?")
                if kind == "tournament":
                    reason = f"{e.get('blueprint_id')} won of {len(e.get('candidates') or ())} candidates"
                else:
                    reason = str(e.get("reason") or e.get("blueprint_id") or "")
                if len(reason) > 48:
                    reason = reason[:47] + "…"
                out.append((int(r["epoch"]), kind, f"{slot}: {reason}"))
    return out


def write_report(
    records: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    shapley: Mapping[str, float] | None = None,
    baseline_names: Mapping[str, str] | None = None,
    baseline_params: Mapping[str, int] | None = None,
) -> Path:
    """Draw the run in ``records`` (one dict per epoch) into a PNG at ``path``; returns the path.

    Panels: validation accuracy of the grown model and of each baseline in
    ``records[i]["baseline"]`` (when present), with the seeds' events marked
    and labelled with their reasons; validation bits per character (records
    with ``val_bits_per_token``) or loss; every slot's alpha and stage (full
    stage names); contributions; parameters over time; and, when
    ``shapley`` is given, each slot's final Shapley value. Accuracy,
    contributions and Shapley values are all in percentage points.
    """
    if not records:
        raise InvalidArgumentError("write_report needs at least one epoch record; got none")
    plt = _pyplot()
    names = dict(baseline_names or {})
    epochs = [int(r["epoch"]) for r in records]
    slot_ids = list(records[-1]["slots"])
    text = records[-1].get("val_bits_per_token") is not None
    baselines = list(records[-1].get("baseline") or {})
    fig, axes = plt.subplots(
        6, 1, figsize=(10, 17), gridspec_kw={"height_ratios": [3, 2.2, 1.6, 1.2, 1.8, 1.6]},
    )
    ax_acc, ax_q, ax_alpha, ax_stage, ax_contrib, ax_params = axes
    for ax in (ax_q, ax_alpha, ax_stage, ax_contrib):
        ax.sharex(ax_acc)

    def curve(key: str, scale: float, src: str | None) -> tuple[list[int], list[float]]:
        xs, ys = [], []
        for r in records:
            row = r if src is None else (r.get("baseline") or {}).get(src)
            if row is not None and row.get(key) is not None:
                xs.append(int(r["epoch"]))
                ys.append(scale * float(row[key]))
        return xs, ys

    q_key = "val_bits_per_token" if text else "val_loss"
    ax_acc.plot(*curve("val_accuracy", 100.0, None), color="#08519c", linewidth=2, label="grown")
    ax_q.plot(*curve(q_key, 1.0, None), color="#08519c", linewidth=2, label="grown")
    for (colour, style), name in zip(_BASELINE_STYLES, baselines, strict=False):
        label = names.get(name, name)
        ax_acc.plot(*curve("val_accuracy", 100.0, name), color=colour, linestyle=style, label=label)
        ax_q.plot(*curve("val_bpc" if text else "val_loss", 1.0, name), color=colour, linestyle=style, label=label)
    low, high = ax_acc.get_ylim()
    for i, (epoch, kind, label) in enumerate(_events(records)):
        for ax in (ax_acc, ax_q):
            ax.axvline(epoch, color=_EVENT_COLOURS[kind], linewidth=0.8, alpha=0.7)
        ax_acc.annotate(label, (epoch, low + (high - low) * (0.05 + 0.09 * (i % 6))), fontsize=7, rotation=0,
                        color=_EVENT_COLOURS[kind], xytext=(3, 0), textcoords="offset points")
    ax_acc.set_ylabel("validation accuracy (%)" if not text else "validation token accuracy (%)")
    ax_acc.legend(fontsize=8, loc="lower right")
    ax_acc.set_title(title or "esper_func run")
    ax_q.set_ylabel("validation bits per character" if text else "validation loss")
    ax_q.legend(fontsize=8, loc="upper right")

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

    # The last panel: parameters over time (left) and final Shapley values (right).
    ax_params.remove()
    spec = axes[-1].get_subplotspec()
    left, right = spec.subgridspec(1, 2, wspace=0.3).subplots()
    params = [(int(r["epoch"]), int(r["params"])) for r in records if r.get("params") is not None]
    if params:
        left.plot([e for e, _ in params], [n for _, n in params], color="#08519c", drawstyle="steps-post", label="grown")
    for (colour, style), (name, n) in zip(_BASELINE_STYLES, (baseline_params or {}).items(), strict=False):
        left.axhline(n, color=colour, linestyle=style, label=names.get(name, name))
    left.set_xlabel("epoch")
    left.set_ylabel("parameters")
    left.legend(fontsize=7)
    if shapley:
        ids = list(shapley)
        right.bar(ids, [float(shapley[i]) for i in ids], color="#31a354")
        right.axhline(0.0, color="black", linewidth=0.5)
    else:
        right.text(0.5, 0.5, "no seed in the\nforward pass", ha="center", va="center", transform=right.transAxes)
    right.set_ylabel("final Shapley value\n(accuracy points)")
    right.set_title("final Shapley value per slot", fontsize=9)

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
