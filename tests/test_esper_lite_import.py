"""Real esper-lite 2016337e checkpoints, opened by esper_func and written back.

The checkpoints were saved by esper-lite itself (``torch.save(model.state_dict())``,
see ``tools/record_esper_lite_checkpoints.py``) with seeds in every stage, every
alpha algorithm, measured and unmeasured telemetry, and trained weights; each
comes with esper-lite's own predictions, including counterfactual ones made with
``SeedSlot.force_alpha``. Nothing here needs esper-lite.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _esper_lite_checkpoints import Checkpoint, checkpoints, json_form

import esper_func as ef
from esper_func.interop import from_esper_lite, to_state_dict

CHECKPOINTS = {c.name: c for c in checkpoints()}


@pytest.fixture(autouse=True)
def one_thread():
    """esper-lite made its predictions on one thread; with more, torch sums reductions in another order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# _extra_state values esper_func rewrites: wall-clock times become epoch counters, and the
# telemetry block holds what esper-lite's last sync derived from the state at the time.
TELEMETRY_DERIVED = (
    "accuracy", "accuracy_delta", "epochs_in_stage", "stage", "alpha", "alpha_target", "alpha_mode",
    "alpha_steps_total", "alpha_steps_done", "time_to_target", "alpha_velocity", "alpha_algorithm",
    "captured_at", "blend_tempo_epochs", "blending_velocity", "alpha_curve",
)


def opened(ckpt: Checkpoint) -> tuple[Any, ...]:
    return from_esper_lite(ckpt.state_dict(), ckpt.esper_func_host())


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_imported_checkpoints_predict_bitwise_as_esper_lite(name: str) -> None:
    ckpt = CHECKPOINTS[name]
    model, params, buffers, states = opened(ckpt)
    outputs = ckpt.outputs()
    x = outputs["inputs"]
    assert model.slot_order == ckpt.execution_order
    for output, spec in ckpt.output_specs.items():
        wanted = ckpt.alphas(output)
        alphas = torch.tensor([wanted[sid] for sid in model.slot_order])
        if output == "prediction":
            assert torch.equal(alphas, ef.alphas_of(model, states))
        with torch.no_grad():  # as esper-lite made them (torch picks other kernels with autograd on)
            got = ef.predict(model, params, buffers, alphas, x)
        assert torch.equal(got, outputs[output]), f"{name} {output} ({spec.forced}): {(got - outputs[output]).abs().max()}"


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_imported_states_are_esper_lites(name: str) -> None:
    ckpt = CHECKPOINTS[name]
    model, params, _buffers, states = opened(ckpt)
    for sid, record in ckpt.slot_states.items():
        state = states.get(sid)
        if record.stage == "DORMANT":
            assert state is None or state.stage == ef.SeedStage.DORMANT
            assert model.slot(sid) is None
            continue
        assert state is not None and state.stage.name == record.stage
        assert state.alpha == record.alpha and state.blueprint_id == record.blueprint
        assert state.alpha_algorithm.name == record.algorithm
        assert (model.slot(sid) is not None) == record.seed_module
        assert ef.has_gate(state) == record.gate_network == ("gate" in params["slots"].get(sid, {}))
        assert state.telemetry.gradient_measured == bool(record.telemetry_measured)


def _without(extra: dict[str, Any]) -> dict[str, Any]:
    """An ``_extra_state`` (JSON form) without the values esper_func rewrites."""
    extra = json_form(extra)
    seed = extra.get("seed_state")
    if seed is not None:
        seed = dict(seed)
        seed.pop("stage_entered_at")
        seed["stage_history"] = [stage for stage, _ in seed["stage_history"]]
        if seed["telemetry"] is not None:
            seed["telemetry"] = {k: v for k, v in seed["telemetry"].items() if k not in TELEMETRY_DERIVED}
        extra = {**extra, "seed_state": seed}
    return extra


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_written_back_checkpoints_are_what_esper_lite_saved(name: str) -> None:
    # esper-lite's strict load_state_dict needs exactly its keys, in its order, with its shapes,
    # and an _extra_state it can read: written back, the checkpoint is esper-lite's own.
    ckpt = CHECKPOINTS[name]
    original = ckpt.state_dict()
    model, params, buffers, states = opened(ckpt)
    written = to_state_dict(model, params, buffers, states=states)
    # Same keys; the host's in esper-lite's order, the slots' in execution order (esper-lite lists
    # them in the order the model was built with).
    assert sorted(written) == sorted(original)
    assert [k for k in written if k.startswith("host.")] == [k for k in original if k.startswith("host.")]
    for key, value in original.items():
        if key.endswith("._extra_state"):
            assert _without(written[key]) == _without(value), key
        else:
            assert torch.equal(written[key], value), key
    # ... and reads back into the same model, states and predictions.
    model2, params2, buffers2, states2 = from_esper_lite(written, ckpt.esper_func_host())
    assert model2 == model and states2.keys() == states.keys()
    x = ckpt.outputs()["inputs"]
    assert torch.equal(
        ef.predict(model2, params2, buffers2, ef.alphas_of(model2, states2), x),
        ef.predict(model, params, buffers, ef.alphas_of(model, states), x),
    )
