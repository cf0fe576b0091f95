"""Live differential tests against esper-lite itself (run when ``ESPER_LITE_SRC`` is set).

CI replays recorded traces (``test_esper_lite_replay.py``); these tests draw
*fresh* ones by running esper-lite 2016337e now, with the recorder's own code
and seeds the recorded data did not use, and replay them through esper_func
the same way. To run them::

    ESPER_LITE_SRC=/path/to/esper-lite/src python -m pytest tests/test_esper_lite_live.py

``ESPER_LITE_LIVE_TRACES`` (default 40) sets how many traces of each kind are
drawn, ``ESPER_LITE_LIVE_SEED`` (default 90210) their base seed. esper-lite
needs torch and numpy; the recorder checks that the source is commit
2016337e.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _esper_lite_data import loads
from _esper_lite_replay import ReplayStats, replay_controller, replay_governor, replay_lifecycle

pytestmark = pytest.mark.skipif(
    not os.environ.get("ESPER_LITE_SRC"),
    reason="live differential tests need esper-lite: set ESPER_LITE_SRC to its src/ directory (CI replays recorded data)",
)

N = int(os.environ.get("ESPER_LITE_LIVE_TRACES", "40"))
SEED = int(os.environ.get("ESPER_LITE_LIVE_SEED", "90210"))


def _recorder() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "tools" / "record_esper_lite.py"
    spec = importlib.util.spec_from_file_location("record_esper_lite", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve their annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recorder() -> tuple[ModuleType, Any]:
    rec = _recorder()
    return rec, rec.import_esper_lite()


def _as_recorded(rec: ModuleType, trace: dict[str, Any]) -> dict[str, Any]:
    """The trace exactly as the data files hold it (the same encoding of floats and enums)."""
    result: dict[str, Any] = loads(rec.dumps(trace))
    return result


@pytest.mark.parametrize("i", range(N))
def test_fresh_lifecycle_trace_matches(recorder: tuple[ModuleType, Any], i: int) -> None:
    rec, es = recorder
    trace = _as_recorded(rec, rec.lifecycle_trace(es, i, SEED + i, extra_state_every=10))
    stats = replay_lifecycle(trace, ReplayStats())
    assert stats.compared > 0 or stats.stopped


@pytest.mark.parametrize("i", range(N))
def test_fresh_controller_trace_matches(recorder: tuple[ModuleType, Any], i: int) -> None:
    rec, es = recorder
    trace = _as_recorded(rec, rec.controller_trace(es, i, SEED + 10_000 + i))
    assert replay_controller(trace, ReplayStats()).compared == len(trace["epochs"])


@pytest.mark.parametrize("i", range(N))
def test_fresh_governor_trace_matches(recorder: tuple[ModuleType, Any], i: int) -> None:
    rec, es = recorder
    trace = _as_recorded(rec, rec.governor_trace(es, i, SEED + 20_000 + i))
    stats = replay_governor(trace, ReplayStats())
    assert stats.compared > 0 or stats.stopped
