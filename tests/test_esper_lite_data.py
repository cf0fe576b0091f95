"""The esper-lite 2016337e reference data is present, intact and well-formed (no esper-lite needed).

These checks guard the data itself; the replay tests that compare esper_func with it live elsewhere.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import Any

import pytest
from _esper_lite_data import COMMIT, DATA_DIR, KINDS, Kind, iter_traces, load_header, load_meta, path_of

STAGES = {
    "UNKNOWN",
    "DORMANT",
    "GERMINATED",
    "TRAINING",
    "BLENDING",
    "HOLDING",
    "FOSSILIZED",
    "PRUNED",
    "EMBARGOED",
    "RESETTING",
}
OPS = {
    "germinate",
    "advance_stage",
    "prune",
    "schedule_prune",
    "set_alpha_target",
    "step_epoch",
    "record_accuracy",
    "capture_gradients",
    "sync_telemetry",
    "record_contribution",
}
GATE_KEYS = {"gate", "passed", "score", "checks_passed", "checks_failed", "message"}
SLOT_KEYS = {
    "isolate_gradients",
    "blend_out_freeze_active",
    "frozen_param_count",
    "pending_prune_reason",
    "pending_prune_initiator",
    "blend_algorithm_id",
    "blend_tempo_epochs",
    "blend_alpha_target",
    "resolved_topology",
    "has_seed",
    "has_alpha_schedule",
    "alpha_schedule_total_steps",
    "alpha_schedule_current_step",
    "is_active",
    "active_seed_params",
}


@pytest.fixture(scope="module")
def meta() -> dict[str, Any]:
    return load_meta()


def stage_name(meta: dict[str, Any], value: int) -> str:
    return {v: k for k, v in meta["enums"]["SeedStage"].items()}[value]


def check_state(meta: dict[str, Any], state: dict[str, Any] | None) -> None:
    if state is None:
        return
    assert set(state) == {"seed_state", "auto_pruned", "auto_prune_reason", "alpha", "slot"}
    assert set(state["slot"]) == SLOT_KEYS
    seed = state["seed_state"]
    assert stage_name(meta, seed["stage"]) in STAGES
    assert "stage_entered_at" not in seed
    assert all(isinstance(s, int) for s in seed["stage_history"])
    assert seed["telemetry"] is None or "captured_at" not in seed["telemetry"]
    assert seed["alpha"] == state["alpha"]
    assert set(seed["alpha_controller"]) == {
        "alpha",
        "alpha_start",
        "alpha_target",
        "alpha_mode",
        "alpha_curve",
        "alpha_steepness",
        "alpha_steps_total",
        "alpha_steps_done",
    }


def check_outcome(record: dict[str, Any]) -> None:
    assert ("returned" in record) != ("raised" in record), record
    if "raised" in record:
        assert set(record["raised"]) == {"type", "message"} and record["raised"]["type"]
    elif isinstance(record["returned"], dict):
        assert set(record["returned"]) == GATE_KEYS


def test_meta_names_the_commit_and_the_sources(meta: dict[str, Any]) -> None:
    assert meta["esper_lite_commit"] == COMMIT == "2016337e"
    assert DATA_DIR.name == f"esper-lite-{COMMIT}"
    for rel in (
        "kasmina/slot.py",
        "kasmina/alpha_controller.py",
        "tamiyo/heuristic.py",
        "tamiyo/tracker.py",
        "tolaria/governor.py",
    ):
        assert len(meta["source_sha256"][f"esper/{rel}"]) == 64
    assert meta["torch_version"]
    assert meta["recorder"]["script"] == "tools/record_esper_lite.py"
    assert all(meta["counts"][kind] > 0 for kind in KINDS)
    assert (DATA_DIR / "README.md").read_text().count(COMMIT) >= 2


@pytest.mark.parametrize("kind", KINDS)
def test_files_are_intact(meta: dict[str, Any], kind: Kind) -> None:
    name = path_of(kind).name
    info = meta["files"][name]
    assert hashlib.sha256(path_of(kind).read_bytes()).hexdigest() == info["sha256"]
    header = load_header(kind)
    assert (header["kind"], header["commit"], header["format"]) == (kind, COMMIT, meta["format"])
    assert sum(1 for _ in iter_traces(kind)) == info["records"] == meta["counts"][kind]


def test_lifecycle_traces_are_well_formed(meta: dict[str, Any]) -> None:
    outcomes: Counter[str] = Counter()
    fossilized: Counter[bool] = Counter()
    scenarios = 0
    for trace in iter_traces("lifecycle"):
        assert trace["ops"], trace["id"]
        scenarios += trace["scenario"] is not None
        assert trace["final_extra_state"]["_extra_state_version"] == 1
        for i, rec in enumerate(trace["ops"]):
            assert rec["i"] == i and rec["op"] in OPS
            check_outcome(rec)
            check_state(meta, rec["after"])
            for event in rec["events"]:
                assert set(event) == {"type", "seed_id", "slot_id", "data"}
            outcomes[rec["op"] + (":raised" if "raised" in rec else "")] += 1
            if rec["after"] is not None and stage_name(meta, rec["after"]["seed_state"]["stage"]) == "FOSSILIZED":
                fossilized[trace["gates"]["permissive"]] += 1
    assert scenarios > 0
    assert fossilized[True] > 0 and fossilized[False] > 0  # both gate modes reach FOSSILIZED
    assert outcomes["germinate:raised"] > 0 and outcomes["advance_stage:raised"] > 0


def test_controller_traces_are_well_formed(meta: dict[str, Any]) -> None:
    ops: Counter[str] = Counter()
    for trace in iter_traces("controller"):
        assert trace["epochs"], trace["id"]
        assert [e["epoch"] for e in trace["epochs"]] == list(range(1, len(trace["epochs"]) + 1))
        for epoch in trace["epochs"]:
            assert set(epoch) >= {
                "inputs",
                "active_seeds",
                "available_slots",
                "signals",
                "decision",
                "applied",
                "events",
                "slots",
            }
            assert epoch["signals"]["available_slots"] == epoch["available_slots"]
            ops[epoch["decision"]["op"]] += 1
            assert epoch["applied"]["op"] == epoch["decision"]["op"]
            for state in epoch["slots"].values():
                check_state(meta, state)
    assert all(ops[op] > 0 for op in ("WAIT", "GERMINATE", "ADVANCE", "FOSSILIZE", "PRUNE"))


def test_governor_traces_are_well_formed(meta: dict[str, Any]) -> None:
    reasons: Counter[str] = Counter()
    header = load_header("governor")
    assert header["constructor_errors"] and all(e["raised"] for e in header["constructor_errors"])
    for trace in iter_traces("governor"):
        assert trace["steps"], trace["id"]
        for step in trace["steps"]:
            assert isinstance(step["loss"], float)
            assert set(step["governor"]) == {
                "loss_history",
                "consecutive_panics",
                "pending_panic",
                "panic_reason",
                "panic_loss",
            }
            if step["returned"]:
                rollback = step["rollback"]
                reasons[step["governor"]["panic_reason"]] += 1
                assert rollback["report"]["rollback_occurred"] is True
                assert rollback["host_restored"] is True
                assert [p["slot"] for p in rollback["prunes"]] == [s["slot_id"] for s in trace["slots"]]
                for state in (*rollback["slots_before"].values(), *rollback["slots_after"].values()):
                    check_state(meta, state)
            else:
                assert "rollback" not in step
                for rec in step["actions"]:
                    check_outcome(rec)
    assert set(reasons) == {"governor_nan", "governor_lobotomy", "governor_divergence"}
    assert any(math.isnan(s["loss"]) for t in iter_traces("governor") for s in t["steps"])
