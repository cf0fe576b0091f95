"""The morphogenetic model: pure predict/apply, structure changes, vmap and compile."""

from __future__ import annotations

import pickle
import threading
from functools import cache

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch._dynamo.testing import CompileCounter
from torch.func import vmap

import esper_func as ef
from esper_func.errors import DTypeError, ParamsMismatchError, ShapeError
from esper_func.hosts import UnknownSlotError

S = ef.SeedStage
A = ef.AlphaAlgorithm
CNN = ef.CNNHost(n_blocks=2, base_channels=8)
TFM = ef.TransformerHost(vocab_size=32, n_embd=16, n_head=2, n_layer=2, block_size=8, num_segments=2, dropout=0.0)


@cache
def registry() -> ef.Registry:
    return ef.default_registry()


def perturbed(params: dict, scale: float = 0.1, seed: int = 0) -> dict:
    """Seed parameters moved off their identity-at-birth initialisation."""
    g = torch.Generator().manual_seed(seed)

    def shake(tree):
        return {k: shake(v) if isinstance(v, dict) else v + scale * torch.randn(v.shape, generator=g) for k, v in tree.items()}

    return {"host": params["host"], "slots": shake(params["slots"])}


def seeded_model(host, blueprints: dict, *, stage=S.BLENDING, algorithm=A.ADD, enabled=None):
    """A model with the given seeds, built once per distinct request (callers never mutate it)."""
    return _seeded_model(host, tuple(blueprints.items()), stage, algorithm, tuple(enabled or host.slot_ids))


@cache
def _seeded_model(host, blueprints, stage, algorithm, enabled):
    model, params, buffers = ef.build_model(host, enabled, generator=torch.Generator().manual_seed(0))
    for k, (sid, name) in enumerate(blueprints):
        model, params = ef.add_seed(
            model, params, sid, registry(), name, algorithm=algorithm, stage=stage,
            generator=torch.Generator().manual_seed(10 + k),
        )
    return model, perturbed(params), buffers


def inputs(host, batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if host.topology == "cnn":
        return host.example_input(batch, g, image_size=8)
    return host.example_input(batch, g, seq_len=6)


def clone_tree(tree):
    return {k: clone_tree(v) if isinstance(v, dict) else v.clone() for k, v in tree.items()}


def assert_tree_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], dict):
            assert_tree_equal(a[k], b[k])
        else:
            assert torch.equal(a[k], b[k]), k


def bare_host_output(host, params, buffers, x):
    module = host.build_module()
    module.load_state_dict({**params["host"], **buffers["host"]}, strict=False)
    with torch.no_grad():
        return module.eval()(x)


topologies = st.sampled_from(["cnn", "transformer"])
algorithms = st.sampled_from(list(A))
all_stages = st.sampled_from([S.GERMINATED, S.TRAINING, S.BLENDING, S.HOLDING, S.FOSSILIZED])


def host_for(topology: str):
    return CNN if topology == "cnn" else TFM


def blueprint_for(topology: str, data) -> str:
    return data.draw(st.sampled_from(registry().names(topology)))


# --------------------------------------------------------------------------- semantics


@pytest.mark.parametrize("host", [CNN, TFM], ids=["cnn", "transformer"])
def test_all_alphas_zero_is_exactly_the_bare_host(host):
    blueprints = {sid: ("conv_light" if host.topology == "cnn" else "mlp_small") for sid in host.slot_ids}
    model, params, buffers = seeded_model(host, blueprints)
    x = inputs(host)
    out = ef.predict(model, params, buffers, torch.zeros(model.n_slots), x)
    assert torch.equal(out, bare_host_output(host, params, buffers, x))


@given(topologies, algorithms, all_stages, st.data())
def test_a_seed_never_changes_the_output_at_alpha_zero(topology, algorithm, stage, data):
    host = host_for(topology)
    sid = data.draw(st.sampled_from(host.slot_ids))
    model, params, buffers = seeded_model(host, {sid: blueprint_for(topology, data)}, stage=stage, algorithm=algorithm)
    bare, bare_params, bare_buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(0))
    x = inputs(host, seed=data.draw(st.integers(0, 20)))
    out = ef.predict(model, params, buffers, torch.zeros(model.n_slots), x)
    assert torch.equal(out, ef.predict(bare, bare_params, bare_buffers, torch.zeros(bare.n_slots), x))


@given(topologies, algorithms, st.sampled_from([S.TRAINING, S.BLENDING, S.HOLDING]), st.data())
def test_per_sample_alpha_rows_equal_separate_calls(topology, algorithm, stage, data):
    host = host_for(topology)
    model, params, buffers = seeded_model(
        host, {sid: blueprint_for(topology, data) for sid in host.slot_ids}, stage=stage, algorithm=algorithm
    )
    x = inputs(host, batch=3)
    alphas = torch.rand(3, model.n_slots, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 9))))
    together = ef.predict(model, params, buffers, alphas, x)
    for i in range(3):
        alone = ef.predict(model, params, buffers, alphas[i], x[i : i + 1])
        torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-5, atol=1e-5)


# CPU scaled_dot_product_attention has no vmap batching rule: torch warns and
# falls back to a (correct) loop.
SDPA_VMAP_WARNING = "ignore:There is a performance drop because we have not yet implemented the batching rule"


@pytest.mark.filterwarnings(SDPA_VMAP_WARNING)
@given(topologies, algorithms, st.data())
def test_vmap_over_an_alpha_grid_equals_a_loop(topology, algorithm, data):
    host = host_for(topology)
    model, params, buffers = seeded_model(host, {sid: blueprint_for(topology, data) for sid in host.slot_ids}, algorithm=algorithm)
    x = inputs(host)
    grid = torch.rand(5, model.n_slots, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 9))))
    batched = vmap(lambda a: ef.predict(model, params, buffers, a, x))(grid)
    looped = torch.stack([ef.predict(model, params, buffers, a, x) for a in grid])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)


def test_vmap_over_stacked_params_equals_a_loop():
    model, params, buffers = seeded_model(CNN, {"r0c0": "conv_light", "r1c1": "norm"})
    population = [perturbed(params, seed=k) for k in range(3)]
    stacked = torch.utils._pytree.tree_map(lambda *ts: torch.stack(ts), *population)
    x = inputs(CNN)
    alphas = torch.tensor([0.5] * model.n_slots)
    batched = vmap(lambda p: ef.predict(model, p, buffers, alphas, x))(stacked)
    looped = torch.stack([ef.predict(model, p, buffers, alphas, x) for p in population])
    torch.testing.assert_close(batched, looped, rtol=1e-5, atol=1e-5)


def test_blended_output_matches_a_hand_built_forward():
    model, params, buffers = seeded_model(CNN, {"r0c0": "conv_light"}, enabled=["r0c0"])
    x = inputs(CNN)
    host = CNN.build_module()
    host.load_state_dict({**params["host"], **buffers["host"]})
    seed = registry().get("cnn", "conv_light").build(8)
    seed.load_state_dict(params["slots"]["r0c0"]["seed"])
    with torch.no_grad():
        h = host.eval()(x, 0, 1)
        expected = host(torch.lerp(h, seed(h), 0.3), 1, None)
    torch.testing.assert_close(ef.predict(model, params, buffers, torch.tensor([0.3]), x), expected)


# --------------------------------------------------------------------------- apply, buffers, purity


def test_train_mode_apply_returns_new_buffers_and_leaves_inputs_alone():
    model, params, buffers = seeded_model(CNN, {"r0c0": "conv_light"})
    x = inputs(CNN)
    alphas = torch.full((model.n_slots,), 0.5)
    before = (clone_tree(params), clone_tree(buffers), x.clone(), alphas.clone())
    _out, new_buffers = ef.apply(model, params, buffers, alphas, x, train=True)
    assert_tree_equal(params, before[0])
    assert_tree_equal(buffers, before[1])
    assert torch.equal(x, before[2]) and torch.equal(alphas, before[3])
    assert new_buffers["host"].keys() == buffers["host"].keys()
    assert not torch.equal(new_buffers["host"]["blocks.0.bn.running_mean"], buffers["host"]["blocks.0.bn.running_mean"])
    assert int(new_buffers["host"]["blocks.0.bn.num_batches_tracked"]) == 1
    # The same forward on a stateful module updates its own buffers identically.
    host = CNN.build_module()
    host.load_state_dict({**params["host"], **buffers["host"]})
    host.train()(x)
    torch.testing.assert_close(host.state_dict()["blocks.0.bn.running_var"], new_buffers["host"]["blocks.0.bn.running_var"])


def test_eval_mode_apply_returns_the_buffers_it_was_given():
    model, params, buffers = seeded_model(CNN, {"r0c0": "norm"})
    _, same = ef.apply(model, params, buffers, torch.zeros(model.n_slots), inputs(CNN), train=False)
    assert same is buffers


@given(topologies, algorithms, all_stages, st.data())
def test_predict_and_apply_leave_every_input_bitwise_unchanged(topology, algorithm, stage, data):
    host = host_for(topology)
    model, params, buffers = seeded_model(host, {host.slot_ids[0]: blueprint_for(topology, data)}, stage=stage, algorithm=algorithm)
    x = inputs(host)
    alphas = torch.rand(model.n_slots, generator=torch.Generator().manual_seed(3))
    before = (clone_tree(params), clone_tree(buffers), x.clone(), alphas.clone())
    ef.predict(model, params, buffers, alphas, x)
    ef.apply(model, params, buffers, alphas, x, train=True)
    assert_tree_equal(params, before[0])
    assert_tree_equal(buffers, before[1])
    assert torch.equal(x, before[2]) and torch.equal(alphas, before[3])


def test_gradients_flow_to_per_sample_alphas_in_training():
    model, params, buffers = seeded_model(CNN, {"r0c0": "conv_light", "r0c1": "conv_light"})
    x = inputs(CNN)
    alphas = torch.full((4, model.n_slots), 0.5, requires_grad=True)
    out, _ = ef.apply(model, params, buffers, alphas, x, train=True)
    (grad,) = torch.autograd.grad(out.square().sum(), alphas)
    seeded_columns = [model.index("r0c0"), model.index("r0c1")]
    assert bool((grad[:, seeded_columns] != 0).all())
    empty = [i for i in range(model.n_slots) if i not in seeded_columns]
    assert bool((grad[:, empty] == 0).all())


def test_transformer_dropout_is_driven_by_the_rng_argument():
    host = ef.TransformerHost(vocab_size=32, n_embd=16, n_head=2, n_layer=2, block_size=8, num_segments=2, dropout=0.5)
    model, params, buffers = ef.build_model(host, host.slot_ids)
    x = inputs(host)
    a = torch.zeros(model.n_slots)
    state = torch.get_rng_state()
    one, _ = ef.apply(model, params, buffers, a, x, train=True, rng=torch.Generator().manual_seed(1))
    again, _ = ef.apply(model, params, buffers, a, x, train=True, rng=torch.Generator().manual_seed(1))
    other, _ = ef.apply(model, params, buffers, a, x, train=True, rng=torch.Generator().manual_seed(2))
    assert torch.equal(one, again) and not torch.equal(one, other)
    assert torch.equal(torch.get_rng_state(), state)


def test_concurrent_predicts_from_threads_match_sequential_ones():
    model, params, buffers = seeded_model(CNN, {sid: "conv_light" for sid in CNN.slot_ids})
    x = inputs(CNN, batch=8)
    grids = [torch.full((model.n_slots,), k / 7) for k in range(8)]
    expected = [ef.predict(model, params, buffers, a, x) for a in grids]
    results: dict[int, torch.Tensor] = {}

    def work(k: int) -> None:
        for _ in range(5):
            results[k] = ef.predict(model, params, buffers, grids[k], x)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(8):
        assert torch.equal(results[k], expected[k])


# --------------------------------------------------------------------------- structure


def test_model_is_static_hashable_and_pickles():
    model, params, buffers = seeded_model(CNN, {"r0c0": "conv_light"}, algorithm=A.GATE)
    again, _, _ = seeded_model(CNN, {"r0c0": "conv_light"}, algorithm=A.GATE)
    assert model == again and hash(model) == hash(again)
    restored = pickle.loads(pickle.dumps(model))
    assert restored == model
    x = inputs(CNN)
    a = torch.full((model.n_slots,), 0.4)
    torch.testing.assert_close(ef.predict(restored, params, buffers, a, x), ef.predict(model, params, buffers, a, x))


def test_build_model_orders_slots_by_execution_and_starts_empty():
    model, params, buffers = ef.build_model(CNN, ["r1c1", "r0c0"])
    assert model.slot_order == ("r0c0", "r1c1")
    assert model.slots == (None, None) and model.stages == (S.DORMANT, S.DORMANT)
    assert params["slots"] == {} and set(buffers) == {"host"}


def test_add_remove_and_set_stages_are_pure_and_consistent():
    model, params, _buffers = ef.build_model(CNN, CNN.slot_ids)
    before = clone_tree(params)
    m1, p1 = ef.add_seed(model, params, "r0c1", registry(), "conv_small")
    assert_tree_equal(params, before) and model.slot("r0c1") is None
    assert m1.slot("r0c1").blueprint_id == "conv_small" and m1.stage("r0c1") == S.GERMINATED
    assert set(p1["slots"]) == {"r0c1"}
    with pytest.raises(ValueError, match="already holds"):
        ef.add_seed(m1, p1, "r0c1", registry(), "norm")

    m2, p2 = ef.set_stages(m1, p1, {"r0c1": S.BLENDING})
    assert m2.stage("r0c1") == S.BLENDING and p2 is p1
    assert m1.routed == () and m2.routed == ("r0c1",)  # a GERMINATED seed is not in the forward pass
    m3, p3 = ef.set_stages(m2, p2, {"r0c1": S.PRUNED})
    assert m3.slot("r0c1") is None and m3.stage("r0c1") == S.PRUNED and p3["slots"] == {}
    m4, p4 = ef.remove_seed(m2, p2, "r0c1")
    assert m4.slot("r0c1") is None and p4["slots"] == {} and "r0c1" in p2["slots"]
    with pytest.raises(ValueError, match="empty"):
        ef.set_stages(m4, p4, {"r0c1": S.TRAINING})


def test_set_stages_reads_seed_states_and_alphas_of_reads_their_alpha():
    model, params, _ = ef.build_model(CNN, ["r0c0", "r0c1"])
    model, params = ef.add_seed(model, params, "r0c0", registry(), "norm")
    state = ef.germinate("r0c0", "norm")
    state, _, _ = ef.advance(state, ef.Gates())
    model, params = ef.set_stages(model, params, {"r0c0": state})
    assert model.stage("r0c0") == S.TRAINING
    assert ef.alphas_of(model, {"r0c0": state}).tolist() == [state.alpha, 0.0]


# --------------------------------------------------------------------------- compile


@pytest.mark.parametrize("host", [CNN, TFM], ids=["cnn", "transformer"])
def test_compiled_predict_is_one_graph_for_twenty_alpha_values(host):
    blueprints = {sid: ("conv_light" if host.topology == "cnn" else "lora") for sid in host.slot_ids}
    model, params, buffers = seeded_model(host, blueprints)
    x = inputs(host)
    counter = CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(lambda a: ef.predict(model, params, buffers, a, x), backend=counter, fullgraph=True)
    for k in range(20):
        alphas = torch.full((model.n_slots,), k / 19)
        torch.testing.assert_close(compiled(alphas), ef.predict(model, params, buffers, alphas, x), rtol=1e-5, atol=1e-5)
    assert counter.frame_count == 1


def test_compile_recompiles_once_per_structure_and_never_reuses_a_wrong_graph():
    """Every (algorithm, stage) structure gets a correct graph: values and gradients match eager."""
    x = inputs(CNN)
    base, params0, buffers = ef.build_model(CNN, ["r0c0"])
    models = []
    for algorithm in A:
        model, params = ef.add_seed(base, params0, "r0c0", registry(), "conv_light", algorithm=algorithm)
        params = perturbed(params)
        for stage in (S.TRAINING, S.BLENDING, S.GERMINATED):
            models.append(ef.set_stages(model, params, {"r0c0": stage}))  # a GATE seed's gate follows the stage

    def loss(model, params, alphas):
        keep = sum(t.sum() for t in params["slots"]["r0c0"]["seed"].values()) * 0
        return ef.predict(model, params, buffers, alphas, x).square().sum() + keep

    counter = CompileCounter()
    torch._dynamo.reset()
    compiled = torch.compile(loss, backend=counter, fullgraph=True)
    for alpha in (0.0, 0.4):
        for model, params in models:
            leaf = {"host": params["host"], "slots": {"r0c0": {g: {k: v.clone().requires_grad_() for k, v in d.items()} for g, d in params["slots"]["r0c0"].items()}}}
            seed_leaves = list(leaf["slots"]["r0c0"]["seed"].values())
            a = torch.tensor([alpha])
            got, want = compiled(model, leaf, a), loss(model, leaf, a)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            for g_c, g_e in zip(torch.autograd.grad(got, seed_leaves), torch.autograd.grad(want, seed_leaves), strict=True):
                torch.testing.assert_close(g_c, g_e, rtol=1e-4, atol=1e-5)
    # 9 models, but GERMINATED ADD and MULTIPLY run the same computation (the seed is unused).
    assert counter.frame_count <= len(models)


# --------------------------------------------------------------------------- bad input


def test_bad_alphas_and_params_raise_clear_errors():
    model, params, buffers = seeded_model(CNN, {"r0c0": "norm"})
    x = inputs(CNN)
    n = model.n_slots
    with pytest.raises(DTypeError, match=r"torch\.Tensor"):
        ef.predict(model, params, buffers, [0.0] * n, x)
    with pytest.raises(DTypeError, match="floating"):
        ef.predict(model, params, buffers, torch.zeros(n, dtype=torch.long), x)
    with pytest.raises(ShapeError, match=f"\\[{n}\\]"):
        ef.predict(model, params, buffers, torch.zeros(n + 1), x)
    with pytest.raises(ShapeError):
        ef.predict(model, params, buffers, torch.zeros(x.shape[0] + 1, n), x)
    with pytest.raises(ParamsMismatchError, match="host"):
        ef.predict(model, {"slots": params["slots"]}, buffers, torch.zeros(n), x)
    broken = {"host": dict(list(params["host"].items())[1:]), "slots": params["slots"]}
    with pytest.raises(ParamsMismatchError, match="missing"):
        ef.predict(model, broken, buffers, torch.zeros(n), x)
    with pytest.raises(ParamsMismatchError, match="r0c0"):
        ef.predict(model, {"host": params["host"], "slots": {}}, buffers, torch.zeros(n), x)
    seedless = {"host": params["host"], "slots": {"r0c0": {"seed": {}}}}
    with pytest.raises(ParamsMismatchError, match="missing"):
        ef.predict(model, seedless, buffers, torch.zeros(n), x)


def test_unknown_slots_and_mismatched_seeds_are_refused():
    with pytest.raises(UnknownSlotError, match="r0c0"):
        ef.build_model(CNN, ["r9c9"])
    model, params, _ = ef.build_model(CNN, ["r0c0"])
    with pytest.raises(UnknownSlotError, match="not enabled"):
        ef.add_seed(model, params, "r1c0", registry(), "norm")
    wrong_width, _ = ef.germinate_slot(registry(), "cnn", "norm", 5)
    with pytest.raises(ShapeError, match="channels"):
        ef.Model(CNN, ("r0c0",), (wrong_width,), (S.BLENDING,))
    tfm_slot, _ = ef.germinate_slot(registry(), "transformer", "norm", 8)
    with pytest.raises(ValueError, match="transformer"):
        ef.Model(CNN, ("r0c0",), (tfm_slot,), (S.BLENDING,))


def test_example_inputs_read_their_generator_without_advancing_it():
    g = torch.Generator().manual_seed(3)
    state = g.get_state().clone()
    global_state = torch.get_rng_state().clone()
    for host in (CNN, TFM):
        assert torch.equal(host.example_input(2, g), host.example_input(2, g))
        assert torch.equal(host.example_input(2), host.example_input(2))
    assert torch.equal(g.get_state(), state) and torch.equal(torch.get_rng_state(), global_state)
