"""Interop with esper-lite's ``MorphogeneticModel`` state dicts and checkpoints."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn

import esper_func as ef
import esper_func.testing as eft
from esper_func.interop import from_esper_lite, from_state_dict, to_state_dict
from esper_func.lifecycle.codec import seed_state_to_esper_lite
from esper_func.testing import assert_pure

S = ef.SeedStage
A = ef.AlphaAlgorithm
REGISTRY = ef.default_registry()
GATES = ef.Gates(permissive=True, min_blending_epochs=1)

CNN_HOST = ef.CNNHost(num_classes=5, n_blocks=2, base_channels=8)  # slots r0c0 r1c0 (8 ch), r0c1 r1c1 (16 ch)
TF_HOST = ef.TransformerHost(vocab_size=40, n_embd=16, n_head=2, n_layer=2, block_size=16, dropout=0.0, num_segments=2)

TEMPO = 3
LIVE = (S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED)


# --------------------------------------------------------------------------- helpers


def drive(slot_id: str, blueprint: str, algorithm: A, stage: S, topology: str) -> ef.SeedState:
    """A lifecycle state of ``slot_id`` in ``stage``, reached through the public transitions."""
    blend = "gated" if algorithm == A.GATE else "linear"
    s = ef.germinate(
        slot_id, blueprint, algorithm=algorithm, blend=blend, tempo=TEMPO, topology=topology,
        seed_params=100, host_params=10_000,
    )
    if stage == S.GERMINATED:
        return s
    s, result, _ = ef.advance(s, GATES, S.TRAINING)
    assert result.passed
    s = ef.record_gradients(s, host_grad_norm=1.0, seed_grad_norm=0.5, gradient_health=0.9)
    s = ef.record_accuracy(s, 50.0)
    if stage == S.TRAINING:
        return s
    if stage in (S.PRUNED, S.EMBARGOED):
        s, _ = ef.prune(s, "policy_choice")
        if stage == S.EMBARGOED:
            s, _ = ef.step_epoch(s, GATES)
        assert s.stage == stage
        return s
    s, result, _ = ef.advance(s, GATES, S.BLENDING)
    assert result.passed
    s, _ = ef.step_epoch(s, GATES)
    s = ef.record_accuracy(s, 52.0)
    if stage == S.BLENDING:
        assert 0.0 < s.alpha < 1.0
        return s
    for _ in range(TEMPO):
        s, _ = ef.step_epoch(s, GATES)
    s, result, _ = ef.advance(s, GATES, S.HOLDING)
    assert result.passed
    if stage == S.HOLDING:
        return s
    s = ef.record_contribution(s, 3.0)
    s, result, _ = ef.advance(s, GATES, S.FOSSILIZED)
    assert result.passed
    return s


Spec = Mapping[str, "tuple[str, A, S] | None"]


def make(host: ef.CNNHost | ef.TransformerHost, spec: Spec, *, seed: int = 0):
    """``(model, params, buffers, states)`` with the seeds of ``spec`` in their stages.

    Buffers come from one training-mode step, so BatchNorm statistics are not
    the defaults.
    """
    gen = torch.Generator().manual_seed(seed)
    slots = {}
    for sid, entry in spec.items():
        if entry is None:
            slots[sid] = None
            continue
        blueprint, algorithm, _ = entry
        slots[sid], _ = ef.germinate_slot(REGISTRY, host.topology, blueprint, host.slot_channels(sid), algorithm=algorithm)
    model, params, buffers = ef.build_model(host, slots, generator=gen)
    states = {
        sid: drive(sid, entry[0], entry[1], entry[2], host.topology) for sid, entry in spec.items() if entry is not None
    }
    model, params = ef.set_stages(model, params, states)
    # Non-trivial multiply seeds: their last layer starts at zero.
    params = {
        "host": params["host"],
        "slots": {
            sid: {g: {k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
                      for k, v in grp.items()} for g, grp in sp.items()}
            for sid, sp in params["slots"].items()
        },
    }
    x = example(host, 4)
    _, buffers = ef.apply(model, params, buffers, ef.alphas_of(model, states), x, train=True)
    return model, params, buffers, states


def example(host: Any, batch: int) -> Tensor:
    gen = torch.Generator().manual_seed(123)
    if isinstance(host, ef.CNNHost):
        return host.example_input(batch, gen, image_size=8)
    return host.example_input(batch, gen, seq_len=6)


def same(a: Any, b: Any) -> bool:
    """Bitwise equality of nested dicts/lists of tensors and plain values (dtype included)."""
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return (
            isinstance(a, Tensor) and isinstance(b, Tensor) and a.dtype == b.dtype
            and a.shape == b.shape and torch.equal(a, b)
        )
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return (
            isinstance(a, Mapping) and isinstance(b, Mapping) and list(a) == list(b)
            and all(same(a[k], b[k]) for k in a)
        )
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def lossless(state: ef.SeedState) -> ef.SeedState:
    """``state`` with the fields esper-lite's layout cannot carry set as the import sets them."""
    entered = state.metrics.epochs_total - state.metrics.epochs_in_current_stage
    history = tuple((stage, -1) for stage, _ in state.stage_history)
    if history:
        history = (*history[:-1], (history[-1][0], entered))
    return dataclasses.replace(
        state,
        stage_history=history,
        pending_prune_reason=None,
        pending_prune_initiator=None,
        # esper-lite re-derives the blend-out freeze from the controller on load.
        blend_out_frozen=state.alpha_controller.alpha_mode == ef.AlphaMode.DOWN,
        metrics=dataclasses.replace(state.metrics, auto_pruned=False, auto_prune_reason=""),
    )


CNN_SPEC: dict[str, Any] = {
    "r0c0": ("conv_light", A.ADD, S.BLENDING),
    "r1c0": ("norm", A.MULTIPLY, S.HOLDING),
    "r0c1": ("attention", A.GATE, S.FOSSILIZED),
    "r1c1": None,
}
TF_SPEC: dict[str, Any] = {
    "r0c0": ("lora", A.GATE, S.BLENDING),
    "r0c1": ("mlp_small", A.MULTIPLY, S.TRAINING),
}
MIXED_STAGES_SPEC: dict[str, Any] = {
    "r0c0": ("conv_small", A.GATE, S.TRAINING),
    "r1c0": ("norm", A.ADD, S.PRUNED),
    "r0c1": ("depthwise", A.ADD, S.GERMINATED),
    "r1c1": ("bottleneck", A.MULTIPLY, S.EMBARGOED),
}
CASES = {
    "cnn": (CNN_HOST, CNN_SPEC),
    "transformer": (TF_HOST, TF_SPEC),
    "cnn-mixed-stages": (CNN_HOST, MIXED_STAGES_SPEC),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest):
    host, spec = CASES[request.param]
    return (host, *make(host, spec))


# --------------------------------------------------------------------------- to_state_dict / from_state_dict


def test_round_trip_is_bitwise_and_passes_tensors_through(case) -> None:
    host, model, params, buffers, _ = case
    sd = assert_pure(to_state_dict, model, params, buffers)
    new_params, new_buffers = assert_pure(from_state_dict, model, sd)
    assert same(new_params, params)
    assert same(new_buffers, buffers)
    # No copies: the very tensors come back.
    for name, tensor in params["host"].items():
        assert new_params["host"][name] is tensor
    for sid, groups in params["slots"].items():
        for group, named in groups.items():
            for name, tensor in named.items():
                assert sd[f"seed_slots.{sid}.{ {'seed': 'seed', 'gate': 'alpha_schedule'}[group] }.{name}"] is tensor
    x = example(host, 3)
    alphas = torch.tensor([0.3] * model.n_slots)
    assert torch.equal(ef.predict(model, new_params, new_buffers, alphas, x), ef.predict(model, params, buffers, alphas, x))


def test_key_names_and_order_follow_esper_lite(case) -> None:
    host, model, params, buffers, _ = case
    sd = to_state_dict(model, params, buffers)
    keys = list(sd)
    host_keys = [k for k in keys if k.startswith("host.")]
    assert keys[: len(host_keys)] == host_keys == ["host." + k for k in host.build_module().state_dict()]
    slot_keys = keys[len(host_keys):]
    slot_ids = [k.split(".")[1] for k in slot_keys]
    assert slot_ids == sorted(slot_ids, key=model.slot_order.index)
    for sid in model.seeded:
        slot = model.slot(sid)
        seed_names = [k.split(".seed.", 1)[1] for k in slot_keys if k.startswith(f"seed_slots.{sid}.seed.")]
        assert seed_names == list(slot.blueprint.build(slot.channels).state_dict())
        gate_names = [k.split(".alpha_schedule.", 1)[1] for k in slot_keys if k.startswith(f"seed_slots.{sid}.alpha_schedule.")]
        assert gate_names == (["gate.0.weight", "gate.0.bias", "gate.2.weight", "gate.2.bias"] if slot.gated else [])


def test_tied_head_is_listed_and_is_the_embedding() -> None:
    model, params, buffers = ef.build_model(TF_HOST, ["r0c0"])
    sd = to_state_dict(model, params, buffers)
    assert sd["host.head.weight"] is sd["host.tok_emb.weight"] is params["host"]["tok_emb.weight"]
    assert "head.weight" not in params["host"]
    # A tied pair read back from a real torch.save / torch.load (shared storage) is accepted.
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    new_params, _ = from_state_dict(model, loaded)
    assert same(new_params, params)


ALGORITHMS = st.sampled_from(list(A))


@given(drawn=eft.models(host=CNN_HOST, stages=(*LIVE, S.DORMANT), min_seeds=0), data=st.data())
def test_round_trip_property(drawn: eft.DrawnModel, data: st.DataObject) -> None:
    model, params, buffers = drawn
    states = data.draw(eft.slot_states(model))
    sd = to_state_dict(model, params, buffers, states=states)
    assert same(from_state_dict(model, sd), (params, buffers))
    model2, params2, buffers2, states2 = from_esper_lite(sd, CNN_HOST)
    assert model2 == model
    assert same(params2, params) and same(buffers2, buffers)
    assert states2 == {sid: lossless(s) for sid, s in states.items()}


# --------------------------------------------------------------------------- from_esper_lite round trips


def test_esper_lite_round_trip_restores_structure_states_and_predictions(case) -> None:
    host, model, params, buffers, states = case
    sd = assert_pure(to_state_dict, model, params, buffers, states=states)
    for sid in model.slot_order:
        assert f"seed_slots.{sid}._extra_state" in sd
    json.dumps({k: v for k, v in sd.items() if not isinstance(v, Tensor)})  # primitives only
    model2, params2, buffers2, states2 = assert_pure(from_esper_lite, sd, host)
    assert model2 == model
    assert model2.stages == model.stages
    assert same(params2, params) and same(buffers2, buffers)
    assert set(states2) == set(states)  # DORMANT (empty) slots are omitted
    for sid, state in states.items():
        assert states2[sid] == lossless(state)
        assert ef.state_to_dict(states2[sid]) == ef.state_to_dict(lossless(state))
    x = example(host, 3)
    alphas = ef.alphas_of(model, states)
    assert torch.equal(ef.alphas_of(model2, states2), alphas)
    assert torch.equal(ef.predict(model2, params2, buffers2, alphas, x), ef.predict(model, params, buffers, alphas, x))
    # and once more through torch.save / torch.load(weights_only=True), as esper-lite checkpoints travel
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    model3, params3, _buffers3, states3 = from_esper_lite(torch.load(buf, weights_only=True), host)
    assert model3 == model and states3 == states2 and same(params3, params)


def test_lossy_fields_are_the_documented_ones() -> None:
    s = drive("r0c0", "norm", A.ADD, S.BLENDING, "cnn")
    for _ in range(TEMPO):
        s, _ = ef.step_epoch(s, GATES)
    s, _ = ef.schedule_prune(s, steps=4, reason="too_slow", initiator="governor")
    assert s.pending_prune_reason == "too_slow"
    s = dataclasses.replace(s, metrics=dataclasses.replace(s.metrics, auto_pruned=True, auto_prune_reason="governor_nan"))
    model, params, buffers = ef.build_model(CNN_HOST, {"r0c0": ef.germinate_slot(REGISTRY, "cnn", "norm", 8)[0]})
    model, params = ef.set_stages(model, params, {"r0c0": s})
    sd = to_state_dict(model, params, buffers, states={"r0c0": s})
    _, _, _, states = from_esper_lite(sd, CNN_HOST)
    got = states["r0c0"]
    assert got != s
    assert got == lossless(s)
    assert got.pending_prune_reason is None and got.pending_prune_initiator is None
    assert not got.metrics.auto_pruned and got.metrics.auto_prune_reason == ""
    assert [e for _, e in got.stage_history[:-1]] == [-1] * (len(s.stage_history) - 1)
    # everything the forward pass and the gates read survives
    assert got.alpha == s.alpha and got.alpha_controller == s.alpha_controller and got.stage == s.stage


def test_dormant_slots_after_a_full_cooldown() -> None:
    s = drive("r0c0", "norm", A.ADD, S.EMBARGOED, "cnn")
    while s.stage != S.DORMANT:
        s, _ = ef.step_epoch(s, GATES)
    model, params, buffers = ef.build_model(CNN_HOST, ["r0c0", "r0c1"])
    sd = to_state_dict(model, params, buffers, states={"r0c0": s})
    extra = sd["seed_slots.r0c0._extra_state"]
    assert extra["seed_state"] is None and extra["blend_algorithm_id"] == "linear"
    assert sd["seed_slots.r0c1._extra_state"]["seed_state"] is None
    model2, params2, buffers2, states2 = from_esper_lite(sd, CNN_HOST)
    # The freed slot comes back DORMANT with its last seed's blend settings (esper-lite keeps them);
    # the never-used slot has no state.
    assert model2 == model and set(states2) == {"r0c0"}
    freed = states2["r0c0"]
    assert freed.stage == S.DORMANT and ef.is_free(freed) and not ef.has_seed(freed)
    assert (freed.blend_algorithm_id, freed.blend_tempo_epochs, freed.topology) == ("linear", TEMPO, "cnn")
    assert to_state_dict(model2, params2, buffers2, states=states2)["seed_slots.r0c0._extra_state"] == extra
    assert torch.equal(ef.alphas_of(model2, states2), torch.zeros(2))


@pytest.mark.parametrize("host", [CNN_HOST, TF_HOST], ids=["cnn", "transformer"])
def test_a_gate_seed_gains_its_gate_network_when_blending_starts(host: Any) -> None:
    # esper-lite creates a GATE seed's gate network at BLENDING: before, neither the model
    # nor the checkpoint has one (esper-lite's strict load would reject the keys).
    sid = host.slot_ids[0]
    model, params, buffers, states = make(host, {sid: ("norm", A.GATE, S.TRAINING)})
    assert not model.slot(sid).gated and set(params["slots"][sid]) == {"seed"}
    sd = to_state_dict(model, params, buffers, states=states)
    assert not any(".alpha_schedule." in k for k in sd)
    assert sd[f"seed_slots.{sid}._extra_state"]["alpha_schedule_config"] is None
    model2, params2, _buffers2, states2 = from_esper_lite(sd, host)
    assert model2 == model and set(params2["slots"][sid]) == {"seed"}

    # Entering BLENDING: set_stages adds a fresh gate, deterministically from its generator.
    blending, result, _ = ef.advance(states2[sid], GATES, S.BLENDING)
    assert result.passed and ef.has_gate(blending)
    model3, params3 = ef.set_stages(model2, params2, {sid: blending}, generator=torch.Generator().manual_seed(3))
    again = ef.set_stages(model2, params2, {sid: blending}, generator=torch.Generator().manual_seed(3))[1]
    other = ef.set_stages(model2, params2, {sid: blending}, generator=torch.Generator().manual_seed(4))[1]
    gate = params3["slots"][sid]["gate"]
    assert model3.slot(sid).gated and sorted(gate) == ["gate.0.bias", "gate.0.weight", "gate.2.bias", "gate.2.weight"]
    assert same(again, params3)
    assert not torch.equal(other["slots"][sid]["gate"]["gate.0.weight"], gate["gate.0.weight"])
    assert params3["slots"][sid]["seed"] is params2["slots"][sid]["seed"]  # the seed keeps its weights

    # From BLENDING on the gate is part of the checkpoint and required.
    model_b, params_b, buffers_b, states_b = make(host, {sid: ("norm", A.GATE, S.BLENDING)})
    sd_b = to_state_dict(model_b, params_b, buffers_b, states=states_b)
    assert sd_b[f"seed_slots.{sid}._extra_state"]["alpha_schedule_config"]["algorithm_id"] == "gated"
    with pytest.raises(ef.CheckpointError, match=rf"seed_slots\.{sid}\.alpha_schedule\.gate\.0\.weight"):
        from_esper_lite({k: v for k, v in sd_b.items() if ".alpha_schedule." not in k}, host)


@pytest.mark.parametrize("switch", [(A.ADD, A.GATE), (A.GATE, A.MULTIPLY), (A.MULTIPLY, A.ADD)])
def test_switching_the_algorithm_while_holding_gains_or_drops_the_gate(switch: tuple[A, A]) -> None:
    before, after = switch
    sid = CNN_HOST.slot_ids[0]
    model, params, buffers, states = make(CNN_HOST, {sid: ("norm", before, S.HOLDING)})
    state, _events = ef.set_alpha_target(states[sid], alpha_target=1.0, steps=2, alpha_algorithm=after)
    assert state.alpha_algorithm == after and ef.has_gate(state) == (after == A.GATE)
    model2, params2 = ef.set_stages(model, params, {sid: state})
    assert model2.slot(sid).algorithm == after and model2.slot(sid).gated == (after == A.GATE)
    assert set(params2["slots"][sid]) == ({"seed", "gate"} if after == A.GATE else {"seed"})
    assert params2["slots"][sid]["seed"] is params["slots"][sid]["seed"]
    sd = to_state_dict(model2, params2, buffers, states={sid: state})
    model3, params3, _, states3 = from_esper_lite(sd, CNN_HOST)
    assert model3 == model2 and same(params3, params2) and states3[sid].alpha_algorithm == after


# --------------------------------------------------------------------------- a hand-built esper-lite checkpoint

HAND_X = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))


def esper_lite_checkpoint() -> tuple[dict[str, Any], dict[str, nn.Module]]:
    """A checkpoint in esper-lite's exact layout, with the real modules it was built from.

    Slots: r0c0 empty (DORMANT), r1c0 a ``conv_light`` seed BLENDING at alpha
    0.4 (ADD), r1c1 a ``norm`` seed HOLDING with a GATE network, r0c1 a seed
    pruned (module gone, lifecycle kept).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        host = CNN_HOST.build_module()
        with torch.no_grad():  # non-default BatchNorm statistics
            for block in host.blocks:
                block.bn.running_mean.uniform_(-0.5, 0.5)
                block.bn.running_var.uniform_(0.5, 1.5)
        seed_a = REGISTRY.get("cnn", "conv_light").build(8)
        seed_b = REGISTRY.get("cnn", "norm").build(16)
        with torch.no_grad():
            for p in list(seed_a.parameters()) + list(seed_b.parameters()):
                p.add_(0.1 * torch.randn_like(p))
        gate = nn.Module()  # esper-lite's GatedBlend holds its network as ``self.gate``
        gate.gate = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid())
    modules = {"host": host, "seed_a": seed_a, "seed_b": seed_b, "gate": gate}

    def metrics(**overrides: Any) -> dict[str, Any]:
        out = {
            "_schema_version": 2,
            "epochs_total": 9,
            "epochs_in_current_stage": 2,
            "initial_val_accuracy": 41.0,
            "current_val_accuracy": 57.5,
            "best_val_accuracy": 58.0,
            "accuracy_at_stage_start": 55.0,
            "accuracy_at_blending_start": 55.0,
            "gradient_norm_avg": 0.12,
            "current_alpha": 0.4,
            "alpha_ramp_step": 2,
            "counterfactual_contribution": None,
            "_prev_contribution": None,
            "contribution_velocity": 0.0,
            "_blending_started": True,
            "seed_gradient_norm_ratio": 0.8,
            "host_param_count": 25_000,
            "seed_param_count": 600,
            "interaction_sum": 0.0,
            "boost_received": 0.0,
            "upstream_alpha_sum": 0.0,
            "downstream_alpha_sum": 0.0,
        }
        out.update(overrides)
        return out

    sd: dict[str, Any] = {f"host.{k}": v for k, v in host.state_dict().items()}
    sd["seed_slots.r0c0._extra_state"] = {
        "_extra_state_version": 1,
        "isolate_gradients": False,
        "blend_algorithm_id": None,
        "blend_tempo_epochs": None,
        "blend_alpha_target": None,
        "resolved_topology": None,
        "seed_state": None,
        "alpha_schedule_config": None,
    }
    sd["seed_slots.r1c0._extra_state"] = {
        "_extra_state_version": 1,
        "isolate_gradients": True,
        "blend_algorithm_id": "linear",
        "blend_tempo_epochs": 5,
        "blend_alpha_target": 1.0,
        "resolved_topology": "cnn",
        "seed_state": {
            "seed_id": "env0-seed-3",
            "blueprint_id": "conv_light",
            "slot_id": "r1c0",
            "stage": 4,
            "previous_stage": 3,
            "stage_entered_at": "2025-06-01T12:00:07+00:00",
            "alpha": 0.4,
            "stage_history": [
                (2, "2025-06-01T12:00:00+00:00"),
                (3, "2025-06-01T12:00:01+00:00"),
                (4, "2025-06-01T12:00:07+00:00"),
            ],
            "metrics": metrics(),
            "telemetry": None,
            "alpha_controller": {
                "alpha": 0.4,
                "alpha_start": 0.0,
                "alpha_target": 1.0,
                "alpha_mode": 1,
                "alpha_curve": 1,
                "alpha_steepness": 12.0,
                "alpha_steps_total": 5,
                "alpha_steps_done": 2,
            },
            "alpha_algorithm": 1,
            "blend_tempo_epochs": 5,
            "is_healthy": True,
            "is_paused": False,
            "previous_epochs_in_stage": 6,
        },
        "alpha_schedule_config": None,
    }
    sd.update({f"seed_slots.r1c0.seed.{k}": v for k, v in seed_a.state_dict().items()})
    sd["seed_slots.r0c1._extra_state"] = {
        "_extra_state_version": 1,
        "isolate_gradients": False,
        "blend_algorithm_id": "sigmoid",
        "blend_tempo_epochs": 8,
        "blend_alpha_target": 1.0,
        "resolved_topology": "cnn",
        "seed_state": {
            "seed_id": "env0-seed-1",
            "blueprint_id": "attention",
            "slot_id": "r0c1",
            "stage": 8,
            "previous_stage": 3,
            "stage_entered_at": "2025-06-01T11:00:00+00:00",
            "alpha": 0.0,
            "stage_history": [(2, "2025-06-01T10:00:00+00:00"), (3, "2025-06-01T10:30:00+00:00"),
                              (8, "2025-06-01T11:00:00+00:00")],
            "metrics": metrics(epochs_in_current_stage=0, current_alpha=0.0, _blending_started=False),
            "telemetry": None,
            "alpha_controller": {
                "alpha": 0.0, "alpha_start": 0.0, "alpha_target": 0.0, "alpha_mode": 0,
                "alpha_curve": 1, "alpha_steepness": 12.0, "alpha_steps_total": 0, "alpha_steps_done": 0,
            },
            "alpha_algorithm": 1,
            "blend_tempo_epochs": 8,
            "is_healthy": True,
            "is_paused": False,
            "previous_epochs_in_stage": 4,
        },
        "alpha_schedule_config": None,
    }
    sd["seed_slots.r1c1._extra_state"] = {
        "_extra_state_version": 1,
        "isolate_gradients": True,
        "blend_algorithm_id": "gated",
        "blend_tempo_epochs": 3,
        "blend_alpha_target": 1.0,
        "resolved_topology": "cnn",
        "seed_state": {
            "seed_id": "env0-seed-2",
            "blueprint_id": "norm",
            "slot_id": "r1c1",
            "stage": 6,
            "previous_stage": 4,
            "stage_entered_at": "2025-06-01T12:00:09+00:00",
            "alpha": 1.0,
            "stage_history": [(2, "2025-06-01T12:00:00+00:00"), (3, "2025-06-01T12:00:01+00:00"),
                              (4, "2025-06-01T12:00:05+00:00"), (6, "2025-06-01T12:00:09+00:00")],
            "metrics": metrics(epochs_in_current_stage=1, current_alpha=1.0, alpha_ramp_step=3,
                               counterfactual_contribution=2.5),
            "telemetry": None,
            "alpha_controller": {
                "alpha": 1.0, "alpha_start": 1.0, "alpha_target": 1.0, "alpha_mode": 0,
                "alpha_curve": 1, "alpha_steepness": 12.0, "alpha_steps_total": 3, "alpha_steps_done": 3,
            },
            "alpha_algorithm": 3,
            "blend_tempo_epochs": 3,
            "is_healthy": True,
            "is_paused": False,
            "previous_epochs_in_stage": 3,
        },
        "alpha_schedule_config": {"algorithm_id": "gated", "total_steps": 3, "current_step": 0},
    }
    sd.update({f"seed_slots.r1c1.seed.{k}": v for k, v in seed_b.state_dict().items()})
    sd.update({f"seed_slots.r1c1.alpha_schedule.{k}": v for k, v in gate.state_dict().items()})
    return sd, modules


def hand_forward(modules: dict[str, nn.Module], x: Tensor) -> Tensor:
    """esper-lite's forward for the checkpoint above, computed with the real modules."""
    host, seed_a, seed_b, gate = (modules[k].eval() for k in ("host", "seed_a", "seed_b", "gate"))
    with torch.no_grad():
        h = host(x, 0, CNN_HOST.surface_index("r1c0"))  # r0c0 is empty
        h = torch.lerp(h, seed_a(h.detach()), torch.tensor(0.4))  # BLENDING, ADD
        h = host(h, CNN_HOST.surface_index("r1c0"), CNN_HOST.surface_index("r1c1"))  # r0c1 was pruned
        g = gate.gate(h.mean(dim=(2, 3))).view(-1, 1, 1, 1)
        h = torch.lerp(h, seed_b(h), (1.0 * g).clamp(0.0, 1.0))  # HOLDING, GATE
        return host(h, CNN_HOST.surface_index("r1c1"), None)


def test_hand_built_esper_lite_checkpoint_imports_and_predicts_the_same() -> None:
    sd, modules = esper_lite_checkpoint()
    model, params, buffers, states = assert_pure(from_esper_lite, sd, CNN_HOST)
    assert model.slot_order == ("r0c0", "r1c0", "r0c1", "r1c1")
    assert model.stages == (S.DORMANT, S.BLENDING, S.PRUNED, S.HOLDING)
    assert model.slot("r0c0") is None and model.slot("r0c1") is None
    assert model.slot("r1c0").blueprint_id == "conv_light" and model.slot("r1c0").algorithm == A.ADD
    assert model.slot("r1c1").blueprint_id == "norm" and model.slot("r1c1").algorithm == A.GATE
    assert set(states) == {"r1c0", "r0c1", "r1c1"}

    blending = states["r1c0"]
    assert (blending.seed_id, blending.blueprint_id, blending.slot_id) == ("env0-seed-3", "conv_light", "r1c0")
    assert blending.stage == S.BLENDING and blending.previous_stage == S.TRAINING
    assert blending.alpha == 0.4 and blending.alpha_controller.alpha_steps_done == 2
    assert blending.alpha_controller.alpha_steepness == 12.0
    assert (blending.blend_algorithm_id, blending.blend_tempo_epochs, blending.topology) == ("linear", 5, "cnn")
    assert blending.isolate_gradients and blending.metrics.blending_started
    assert blending.metrics.current_val_accuracy == 57.5 and blending.metrics.seed_gradient_norm_ratio == 0.8
    assert blending.stage_entered_epoch == 9 - 2
    assert [s for s, _ in blending.stage_history] == [S.GERMINATED, S.TRAINING, S.BLENDING]
    assert states["r0c1"].stage == S.PRUNED and not ef.has_seed(states["r0c1"])
    assert states["r1c1"].metrics.counterfactual_contribution == 2.5

    # The tensors are the checkpoint's own.
    assert params["host"]["blocks.0.conv.weight"] is sd["host.blocks.0.conv.weight"]
    assert buffers["host"]["blocks.1.bn.num_batches_tracked"] is sd["host.blocks.1.bn.num_batches_tracked"]
    assert params["slots"]["r1c1"]["gate"]["gate.2.bias"] is sd["seed_slots.r1c1.alpha_schedule.gate.2.bias"]

    alphas = ef.alphas_of(model, states)
    assert alphas.tolist() == pytest.approx([0.0, 0.4, 0.0, 1.0])
    got = ef.predict(model, params, buffers, alphas, HAND_X)
    torch.testing.assert_close(got, hand_forward(modules, HAND_X), rtol=1e-5, atol=1e-6)
    host_only = ef.predict(model, params, buffers, torch.zeros(4), HAND_X)
    assert not torch.allclose(got, host_only, atol=1e-4)  # the seeds matter
    # and it writes back to the same layout
    again = to_state_dict(model, params, buffers, states=states)
    assert list(k for k in again if not k.endswith("_extra_state")) == list(
        k for k in sd if not k.endswith("_extra_state")
    )
    for key in (k for k in sd if k.endswith("_extra_state")):
        for field in ("_extra_state_version", "isolate_gradients", "blend_algorithm_id", "blend_tempo_epochs",
                      "blend_alpha_target", "alpha_schedule_config"):
            assert again[key][field] == sd[key][field], (key, field)


# --------------------------------------------------------------------------- malformed checkpoints


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(sd: dict[str, Any]) -> dict[str, Any]:
        sd = copy.deepcopy(sd)
        target = sd
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return sd

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda sd: {k: v for k, v in sd.items() if k != key}


def _add(key: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda sd: {**sd, key: value}


def _drop_field(key: str, field: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def mutate(sd: dict[str, Any]) -> dict[str, Any]:
        sd = dict(sd)
        sd[key] = {k: v for k, v in sd[key].items() if k != field}
        return sd

    return mutate


R1C0 = "seed_slots.r1c0._extra_state"
MALFORMED = {
    "unknown _extra_state_version": (
        _set((R1C0, "_extra_state_version"), 2), r"seed_slots\.r1c0\._extra_state.*_extra_state_version 2.*version 1"
    ),
    "missing _extra_state": (_drop(R1C0), r"missing 'seed_slots\.r1c0\._extra_state'"),
    "missing _extra_state field": (
        _drop_field(R1C0, "resolved_topology"), r"seed_slots\.r1c0\._extra_state.*lacks.*resolved_topology"
    ),
    "missing seed key": (
        _drop("seed_slots.r1c0.seed.enhance.conv.weight"), r"missing 1 key.*seed_slots\.r1c0\.seed\.enhance\.conv\.weight"
    ),
    "missing host key": (_drop("host.classifier.bias"), r"missing.*host\.classifier\.bias"),
    "unexpected key": (_add("host.blocks.0.extra", torch.zeros(1)), r"unexpected.*host\.blocks\.0\.extra"),
    "unexpected key outside the layout": (_add("optimizer.lr", torch.zeros(1)), r"unexpected checkpoint key 'optimizer\.lr'"),
    "wrong shape": (
        _set(("seed_slots.r1c0.seed.enhance.gn.weight",), torch.ones(9)),
        r"seed_slots\.r1c0\.seed\.enhance\.gn\.weight.*shape \(9,\), expected \(8,\)",
    ),
    "integer weights": (
        _set(("host.classifier.weight",), torch.zeros(5, 16, dtype=torch.int64)),
        r"host\.classifier\.weight.*int64.*floating",
    ),
    "float counter": (
        _set(("host.blocks.0.bn.num_batches_tracked",), torch.tensor(3.0)),
        r"num_batches_tracked.*float32, expected torch\.int64",
    ),
    "not a tensor": (_set(("host.classifier.bias",), [0.0] * 5), r"host\.classifier\.bias.*torch\.Tensor.*list"),
    "unknown slot id": (
        _add("seed_slots.r7c7._extra_state", {}), r"slot 'r7c7'.*\['r0c0', 'r1c0', 'r0c1', 'r1c1'\]"
    ),
    "unknown blueprint": (
        _set((R1C0, "seed_state", "blueprint_id"), "conv_mega"),
        r"seed_slots\.r1c0\._extra_state.*'conv_mega'.*available.*conv_light",
    ),
    "SeedMetrics schema version": (
        _set((R1C0, "seed_state", "metrics", "_schema_version"), 3),
        r"seed_slots\.r1c0\._extra_state.*SeedMetrics schema version 3.*expected 2",
    ),
    "missing seed_state field": (
        lambda sd: _set((R1C0, "seed_state"), {
            k: v for k, v in sd[R1C0]["seed_state"].items() if k != "alpha_controller"
        })(sd),
        r"seed_slots\.r1c0\._extra_state.*missing.*alpha_controller",
    ),
    "seed tensors in a pruned slot": (
        _add("seed_slots.r0c1.seed.w", torch.zeros(1)), r"slot 'r0c1' has no seed in stage PRUNED.*seed_slots\.r0c1\.seed\.w"
    ),
    "seed tensors in an empty slot": (
        _add("seed_slots.r0c0.seed.w", torch.zeros(1)), r"slot 'r0c0' has no seed \(seed_state is None\)"
    ),
    "legacy alpha_schedule_config": (
        _set((R1C0, "alpha_schedule_config"), {"algorithm_id": "sigmoid", "total_steps": 5, "current_step": 2}),
        r"alpha_schedule_config.*'sigmoid'.*gated",
    ),
    "seed state of another slot": (
        _set((R1C0, "seed_state", "slot_id"), "r1c1"), r"seed_slots\.r1c0\._extra_state.*slot 'r1c1', expected 'r1c0'"
    ),
    "topology mismatch": (_set((R1C0, "resolved_topology"), "transformer"), r"resolved_topology 'transformer'"),
    "missing gate in HOLDING": (
        _drop("seed_slots.r1c1.alpha_schedule.gate.0.bias"), r"missing.*seed_slots\.r1c1\.alpha_schedule\.gate\.0\.bias"
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_checkpoints_raise_a_clear_error_naming_the_key(name: str) -> None:
    mutate, pattern = MALFORMED[name]
    sd, _ = esper_lite_checkpoint()
    bad = mutate(sd)
    with pytest.raises(ef.CheckpointError, match=pattern):
        assert_pure(from_esper_lite, bad, CNN_HOST)  # refused, and the checkpoint left as it was


def test_checkpoint_error_is_a_value_error() -> None:
    sd, _ = esper_lite_checkpoint()
    with pytest.raises(ValueError):
        from_esper_lite(_drop(R1C0)(sd), CNN_HOST)
    with pytest.raises(ef.CheckpointError, match="mapping"):
        from_esper_lite([("host.x", torch.zeros(1))], CNN_HOST)  # type: ignore[arg-type]


def test_from_state_dict_is_strict() -> None:
    host, spec = CASES["transformer"]
    model, params, buffers, _ = make(host, spec)
    sd = to_state_dict(model, params, buffers)
    with pytest.raises(ef.CheckpointError, match=r"missing 1 key.*'host\.ln_f\.bias'"):
        from_state_dict(model, _drop("host.ln_f.bias")(sd))
    with pytest.raises(ef.CheckpointError, match=r"unexpected.*seed_slots\.r0c9\.seed\.w.*not enabled"):
        from_state_dict(model, _add("seed_slots.r0c9.seed.w", torch.zeros(1))(sd))
    with pytest.raises(ef.CheckpointError, match=r"host\.pos_emb\.weight.*shape \(8, 16\), expected \(16, 16\)"):
        from_state_dict(model, _set(("host.pos_emb.weight",), torch.zeros(8, 16))(sd))
    tampered = _set(("host.head.weight",), sd["host.head.weight"] + 1.0)(sd)
    with pytest.raises(ef.CheckpointError, match=r"host\.head\.weight.*tied to 'host\.tok_emb\.weight'"):
        from_state_dict(model, tampered)
    # _extra_state of the model's slots is ignored; floating tensors may come in another precision
    ok = {**sd, "seed_slots.r0c0._extra_state": {"anything": 1}}
    half = {k: v.double() if v.is_floating_point() else v for k, v in ok.items() if isinstance(v, Tensor)}
    half["seed_slots.r0c0._extra_state"] = ok["seed_slots.r0c0._extra_state"]
    new_params, _ = from_state_dict(model, half)
    assert new_params["host"]["ln_f.weight"].dtype == torch.float64


def test_to_state_dict_checks_states_against_the_model() -> None:
    model, params, buffers, states = make(CNN_HOST, CNN_SPEC)
    with pytest.raises(ef.CheckpointError, match=r"slot 'r0c0' is in stage BLENDING but states has no SeedState"):
        to_state_dict(model, params, buffers, states={k: v for k, v in states.items() if k != "r0c0"})
    with pytest.raises(ef.CheckpointError, match=r"r9c9.*not enabled"):
        to_state_dict(model, params, buffers, states={**states, "r9c9": states["r0c0"]})
    moved = {**states, "r0c0": drive("r0c0", "conv_light", A.ADD, S.HOLDING, "cnn")}
    with pytest.raises(ef.CheckpointError, match=r"stage HOLDING but the model has the slot in stage BLENDING.*set_stages"):
        to_state_dict(model, params, buffers, states=moved)
    other = {**states, "r0c0": drive("r0c0", "norm", A.ADD, S.BLENDING, "cnn")}
    with pytest.raises(ef.CheckpointError, match=r"'norm' seed.*'conv_light' seed"):
        to_state_dict(model, params, buffers, states=other)
    with pytest.raises(ef.ParamsMismatchError):
        to_state_dict(model, {"host": params["host"], "slots": {}}, buffers)
    reshaped = {**params, "host": {**params["host"], "classifier.weight": torch.zeros(3, 3)}}
    with pytest.raises(ef.ParamsMismatchError, match=r"classifier\.weight"):
        to_state_dict(model, reshaped, buffers)


# --------------------------------------------------------------------------- the SeedState writer

EL_STATE_KEYS = [
    "seed_id", "blueprint_id", "slot_id", "stage", "previous_stage", "stage_entered_at", "alpha",
    "stage_history", "metrics", "telemetry", "alpha_controller", "alpha_algorithm", "blend_tempo_epochs",
    "is_healthy", "is_paused", "previous_epochs_in_stage",
]
EL_METRICS_KEYS = [
    "_schema_version", "epochs_total", "epochs_in_current_stage", "initial_val_accuracy", "current_val_accuracy",
    "best_val_accuracy", "accuracy_at_stage_start", "accuracy_at_blending_start", "gradient_norm_avg",
    "current_alpha", "alpha_ramp_step", "counterfactual_contribution", "_prev_contribution",
    "contribution_velocity", "_blending_started", "seed_gradient_norm_ratio", "host_param_count",
    "seed_param_count", "interaction_sum", "boost_received", "upstream_alpha_sum", "downstream_alpha_sum",
]
EL_CONTROLLER_KEYS = [
    "alpha", "alpha_start", "alpha_target", "alpha_mode", "alpha_curve", "alpha_steepness",
    "alpha_steps_total", "alpha_steps_done",
]
EL_TELEMETRY_KEYS = [
    "schema_version", "seed_id", "blueprint_id", "layer_id", "gradient_norm", "gradient_health", "has_vanishing",
    "has_exploding", "accuracy", "accuracy_delta", "epochs_in_stage", "stage", "alpha", "alpha_target",
    "alpha_mode", "alpha_steps_total", "alpha_steps_done", "time_to_target", "alpha_velocity", "alpha_algorithm",
    "epoch", "max_epochs", "captured_at", "blend_tempo_epochs", "blending_velocity", "alpha_curve",
]


def test_writer_layout_is_esper_lites() -> None:
    s = drive("r0c1", "attention", A.GATE, S.BLENDING, "cnn")
    d = assert_pure(seed_state_to_esper_lite, s)
    assert list(d) == EL_STATE_KEYS
    assert list(d["metrics"]) == EL_METRICS_KEYS and d["metrics"]["_schema_version"] == 2
    assert list(d["alpha_controller"]) == EL_CONTROLLER_KEYS
    assert list(d["telemetry"]) == EL_TELEMETRY_KEYS and d["telemetry"]["schema_version"] == 1
    assert d["stage"] == 4 and d["alpha_algorithm"] == 3 and d["previous_stage"] == 3
    assert d["telemetry"]["gradient_health"] == 0.9
    assert d["stage_entered_at"] == "1970-01-01T00:00:01+00:00"  # epoch counters as synthetic seconds
    json.loads(json.dumps(d))


@given(state=eft.seed_states())
def test_writer_then_reader_round_trips_up_to_the_documented_losses(state: ef.SeedState) -> None:
    d = seed_state_to_esper_lite(state)
    json.loads(json.dumps(d))
    extra = {
        "isolate_gradients": state.isolate_gradients,
        "blend_algorithm_id": state.blend_algorithm_id,
        "blend_tempo_epochs": state.blend_tempo_epochs,
        "blend_alpha_target": state.blend_alpha_target,
        "resolved_topology": state.topology,
        # esper-lite keeps a gated blend's schedule (GatedBlend's total_steps) next to the seed state
        "alpha_schedule_config": (
            {"algorithm_id": "gated", "total_steps": state.gate_total_steps, "current_step": 0}
            if ef.has_gate(state)
            else None
        ),
    }
    assert ef.seed_state_from_esper_lite(d, extra=extra) == lossless(state)
