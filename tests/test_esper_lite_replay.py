"""esper-lite 2016337e, recorded, replayed through esper_func on every run (no esper-lite needed).

Every lifecycle operation, heuristic decision and governor verdict recorded by
``tools/record_esper_lite.py`` is replayed and compared field by field (see
``tests/_esper_lite_replay.py`` for what is compared and for the documented
deviations, which are counted rather than skipped silently).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest
from _esper_lite_data import load_header, load_traces
from _esper_lite_replay import ReplayStats, replay_controller, replay_governor, replay_lifecycle

import esper_func as ef
from esper_func.governor import GovernorConfig


@cache
def traces(kind: str) -> dict[str, Any]:
    return {trace["id"]: trace for trace in load_traces(kind)}


@pytest.mark.parametrize("trace_id", sorted(traces("lifecycle")))
def test_lifecycle_trace_replays(trace_id: str) -> None:
    stats = replay_lifecycle(traces("lifecycle")[trace_id])
    assert stats.compared > 0 or stats.stopped


@pytest.mark.parametrize("trace_id", sorted(traces("controller")))
def test_controller_trace_replays(trace_id: str) -> None:
    trace = traces("controller")[trace_id]
    stats = replay_controller(trace)
    assert stats.compared == len(trace["epochs"])  # no deviation applies to the heuristic loop


@pytest.mark.parametrize("trace_id", sorted(traces("governor")))
def test_governor_trace_replays(trace_id: str) -> None:
    stats = replay_governor(traces("governor")[trace_id])
    assert stats.compared > 0 or stats.stopped  # stopped: a documented half-applied refusal came first


def test_replays_compare_nearly_everything_and_meet_every_documented_deviation() -> None:
    lifecycle, governor = ReplayStats(), ReplayStats()
    for trace in traces("lifecycle").values():
        replay_lifecycle(trace, lifecycle)
    for trace in traces("governor").values():
        replay_governor(trace, governor)
    # What cannot be compared is what esper-lite half-applies and esper_func refuses up front.
    assert lifecycle.compared / lifecycle.operations > 0.8
    assert governor.compared / governor.operations > 0.9
    assert set(lifecycle.deviations) == {"alpha lag", "refused prune", "NaN target", "half-applied germinate"}
    assert set(lifecycle.stopped) <= {"half-applied germinate", "half-applied advance_stage", "half-applied step_epoch"}


def test_governor_constructor_refusals_match() -> None:
    for case in load_header("governor")["constructor_errors"]:
        with pytest.raises(ef.InvalidArgumentError, match="history_window"):
            GovernorConfig(**case["args"])
