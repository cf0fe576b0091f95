"""Seed tournaments: candidates incubated together train exactly as each would alone."""

from __future__ import annotations

import json
import math
import pickle
import runpy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import esper_func as ef
from esper_func.fit import LoopState
from esper_func.lifecycle.stages import SeedStage
from esper_func.model import model_from_dict, model_to_dict
from esper_func.records import event_to_dict
from esper_func.runs import load_run, save_run

REG = ef.default_registry()
CNN = ef.CNNHost(n_blocks=2, base_channels=8)
LM = ef.TransformerHost(vocab_size=32, n_embd=16, n_head=2, n_layer=2, block_size=8, dropout=0.0, num_segments=2)
OPT = ef.optim.Adam(lr=1e-2)
ROOT = Path(__file__).resolve().parent.parent


def _training_state(slot_id: str, topology: str) -> ef.SeedState:
    state = ef.germinate(slot_id, "candidates", topology=topology)
    state, result, _ = ef.advance(state, ef.Gates(permissive=True), SeedStage.TRAINING)
    assert result.passed
    return state


def _data(host: ef.CNNHost | ef.TransformerHost, n: int, seed: int, batch: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    if isinstance(host, ef.CNNHost):
        return [(torch.randn(batch, 3, 16, 16, generator=g), torch.randint(0, 10, (batch,), generator=g)) for _ in range(n)]
    return [
        (torch.randint(0, 32, (batch, 8), generator=g), torch.randint(0, 32, (batch, 8), generator=g)) for _ in range(n)
    ]


def _train(model: ef.Model, params, buffers, seeds, data, *, compile: bool = False) -> ef.TrainState:
    state = ef.init_train_state(model, params, buffers, optimizer=OPT, seeds=seeds)

    def step(s, b):
        return ef.train_step(model, s, b, optimizer=OPT, loss_fn=F.cross_entropy)

    run = step
    if compile:
        from torch._dynamo.testing import CompileCounterWithBackend

        torch._dynamo.reset()
        counter = CompileCounterWithBackend("aot_eager")
        run = torch.compile(step, backend=counter)
    for batch in data:
        state, _ = run(state, batch)
    if compile:  # the step's two graphs (forward with its backward, then the update): no graph break
        assert sum(1 for g in counter.graphs if any(n.op == "call_function" for n in g.graph.nodes)) == 2
        assert counter.frame_count <= 3
    return state


def _check_exact(
    host, slot_id: str, blueprints: list[str | ef.Blueprint], seeds: list[int], *, vectorize: bool | None,
    steps: int = 2, compile: bool = False, registry: ef.Registry = REG,
) -> None:
    """K candidates trained together equal each trained alone; the host equals the empty slot's."""
    model, params, buffers = ef.build_model(host, list(host.slot_ids), generator=torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    data = _data(host, steps, seed=sum(seeds))
    group_model, group_params = ef.add_candidates(model, params, slot_id, registry, blueprints, generators=gens,
                                                  vectorize=vectorize)
    state = _training_state(slot_id, host.topology)
    together = _train(group_model, group_params, buffers, {slot_id: state}, data, compile=compile)
    empty = _train(model, params, buffers, {}, data)
    for name, tensor in empty.params["host"].items():
        assert torch.equal(tensor, together.params["host"][name]), name  # the host never sees the candidates
    for name, tensor in empty.buffers["host"].items():
        assert torch.equal(tensor, together.buffers["host"][name]), name
    candidates = ef.candidate_params(group_model, together.params, slot_id)
    for i, blueprint in enumerate(blueprints):
        alone_model, alone_params = ef.add_seed(
            model, params, slot_id, registry, blueprint, generator=gens[i], stage=SeedStage.TRAINING
        )
        alone = _train(alone_model, alone_params, buffers, {slot_id: state}, data)
        for name, tensor in alone.params["slots"][slot_id]["seed"].items():
            got = candidates[i]["seed"][name]
            if vectorize is False:
                assert torch.equal(got, tensor), (i, blueprint, name)
            else:  # vmap's batched kernels, or sums over micro-batches, round differently
                torch.testing.assert_close(got, tensor, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("vectorize", [False, True])
def test_cnn_mixed_and_repeated_blueprints_train_as_alone(vectorize: bool) -> None:
    _check_exact(CNN, "r0c0", ["conv_light", "norm", "conv_light", "depthwise"], [11, 12, 13, 14], vectorize=vectorize)


@pytest.mark.parametrize("vectorize", [False, True])
def test_transformer_candidates_train_as_alone(vectorize: bool) -> None:
    _check_exact(LM, LM.slot_ids[0], ["lora", "mlp_small", "lora"], [3, 4, 5], vectorize=vectorize)


@pytest.fixture
def micro_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Micro-batches of 3 samples on CPU; records how many pieces each candidate loop ran over."""
    from esper_func import candidates

    pieces: list[int] = []
    original = candidates.CandidatesModule._micro_batches

    def spy(self, group, seed_input, grad, **mode):
        out = original(self, group, seed_input, grad, **mode)
        pieces.append(len(out))
        return out

    monkeypatch.setattr(candidates, "MICRO_BATCH_BYTES", 3 * 8 * 16 * 16 * 4)  # 3 samples of r0c0's features
    monkeypatch.setattr(candidates.CandidatesModule, "_micro_batches", spy)
    return pieces


def test_default_mode_on_cpu_incubates_over_micro_batches(micro_batches: list[int]) -> None:
    _check_exact(CNN, "r0c0", ["conv_light", "norm", "conv_light", "depthwise"], [11, 12, 13, 14], vectorize=None)
    assert micro_batches and set(micro_batches) == {3}  # batch 8 in pieces of 3, 3, 2


def test_the_bit_exact_mode_never_splits_the_batch(micro_batches: list[int]) -> None:
    _check_exact(CNN, "r0c0", ["conv_light", "norm"], [1, 2], vectorize=False, steps=1)
    assert set(micro_batches) == {1}


def test_vmap_on_cpu_splits_the_batch_by_the_stacked_size(micro_batches: list[int]) -> None:
    # 3 samples' worth of bytes: a vmap over 2 candidates gets micro-batches of 1, a lone one of 3
    _check_exact(CNN, "r0c0", ["conv_light", "norm", "conv_light"], [1, 2, 3], vectorize=True, steps=1)
    assert micro_batches == [8, 3]


class _BatchCentred(torch.nn.Module):
    """A seed that reads statistics across the batch (not per sample)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.full((dim, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * (x - x.mean(0, keepdim=True)) ** 2


def build_batch_centred(dim: int) -> torch.nn.Module:
    return _BatchCentred(dim)


def test_a_blueprint_not_declared_per_sample_is_never_split(micro_batches: list[int]) -> None:
    coupled = ef.Blueprint("centred", "cnn", build_batch_centred, 8)
    registry = REG.with_blueprint(coupled)
    _check_exact(CNN, "r0c0", ["centred", "norm"], [1, 2], vectorize=None, steps=1, registry=registry)
    assert micro_batches == [1, 3]  # its own loop on the whole batch (bit-exact), the built-in one split
    with pytest.raises(ef.InvalidTypeError, match="per_sample must be a bool"):
        ef.Blueprint("centred", "cnn", build_batch_centred, 8, per_sample=1)  # type: ignore[arg-type]


def _leaves(params):
    return torch.utils._pytree.tree_map(lambda t: t.detach().clone().requires_grad_(), params)


def _slot_leaves(params, slot_id: str) -> list[torch.Tensor]:
    return [t for group in params["slots"][slot_id].values() for t in group.values()]


def test_second_order_gradients_equal_the_lone_seeds() -> None:
    model, params, buffers = ef.build_model(CNN, ["r0c0"], generator=torch.Generator().manual_seed(0))
    x, y = _data(CNN, 1, 3)[0]
    gen = torch.Generator().manual_seed(7)
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["conv_light"], generators=[gen])
    lone_model, lone_params = ef.add_seed(model, params, "r0c0", REG, "conv_light", generator=gen, stage=SeedStage.TRAINING)

    def second_order(m, p):
        q = _leaves(p)
        leaves = list(q["host"].values()) + _slot_leaves(q, "r0c0")
        loss = F.cross_entropy(ef.apply(m, q, buffers, torch.zeros(1), x, train=True)[0], y)
        grads = torch.autograd.grad(loss, leaves, create_graph=True)
        return torch.autograd.grad(sum((g**2).sum() for g in grads), leaves)

    for a, b in zip(second_order(group_model, group_params), second_order(lone_model, lone_params), strict=True):
        torch.testing.assert_close(a.reshape(b.shape), b, rtol=1e-4, atol=1e-6)


def test_backwards_in_other_threads_equal_serial_ones() -> None:
    import threading

    model, params, buffers = ef.build_model(CNN, ["r0c0"], generator=torch.Generator().manual_seed(0))
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["conv_light", "norm"])
    x, y = _data(CNN, 1, 3, batch=16)[0]

    def graph(scale: float):
        q = _leaves(group_params)
        q["slots"]["r0c0"] = torch.utils._pytree.tree_map(lambda t: (t.detach() * scale).requires_grad_(), q["slots"]["r0c0"])
        return F.cross_entropy(ef.apply(group_model, q, buffers, torch.zeros(1), x, train=True)[0], y), _slot_leaves(q, "r0c0")

    serial = {s: torch.autograd.grad(*graph(s)) for s in (1.0, -3.0)}
    def backward(graphs: dict, results: dict, s: float) -> None:
        results[s] = torch.autograd.grad(*graphs[s])

    for _ in range(5):  # forwards here, their backwards at once in two other threads
        graphs: dict = {s: graph(s) for s in serial}
        results: dict = {}
        threads = [threading.Thread(target=backward, args=(graphs, results, s)) for s in serial]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s, expected in serial.items():
            assert all(torch.equal(a, b) for a, b in zip(results[s], expected, strict=True))


@pytest.mark.parametrize("vectorize", [None, True, False])
def test_autocast_forward_with_backward_outside_it(vectorize: bool | None) -> None:
    model, params, buffers = ef.build_model(CNN, ["r0c0"], generator=torch.Generator().manual_seed(0))
    x, y = _data(CNN, 1, 3)[0]
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["conv_light", "norm"], generators=gens,
                                                  vectorize=vectorize)

    def grads(m, p):
        q = _leaves(p)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(ef.apply(m, q, buffers, torch.zeros(1), x, train=True)[0], y)
        return torch.autograd.grad(loss, _slot_leaves(q, "r0c0"))  # outside autocast, as torch recommends

    together = iter(grads(group_model, group_params))  # autocast makes every mode run one at a time
    tree = {key: {n: next(together) for n in group} for key, group in group_params["slots"]["r0c0"].items()}
    for i, name in enumerate(["conv_light", "norm"]):
        lone_model, lone_params = ef.add_seed(model, params, "r0c0", REG, name, generator=gens[i], stage=SeedStage.TRAINING)
        alone = dict(zip(lone_params["slots"]["r0c0"]["seed"], grads(lone_model, lone_params), strict=True))
        own = group_model.slot("r0c0").unstack(tree, i)
        assert own.keys() == alone.keys()
        assert all(torch.equal(own[k], alone[k]) for k in own), name


def test_torch_func_grad_differentiates_a_model_with_candidates() -> None:
    model, params, buffers = ef.build_model(CNN, ["r0c0"], generator=torch.Generator().manual_seed(0))
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["conv_light", "norm"])
    x, y = _data(CNN, 1, 3)[0]

    def loss(p):
        return F.cross_entropy(ef.apply(group_model, p, buffers, torch.zeros(1), x, train=True)[0], y)

    functional = torch.func.grad(loss)(group_params)
    q = _leaves(group_params)
    eager = torch.autograd.grad(loss(q), torch.utils._pytree.tree_leaves(q))
    for a, b in zip(torch.utils._pytree.tree_leaves(functional), eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_compiled_train_step_with_candidates() -> None:
    _check_exact(CNN, "r1c0", ["conv_small", "conv_small"], [1, 2], vectorize=True, steps=2, compile=True)


@given(
    blueprints=st.lists(st.sampled_from(["norm", "depthwise", "conv_small", "attention"]), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=5)
def test_any_k_trains_bitwise_as_alone(blueprints: list[str], seed: int) -> None:
    _check_exact(CNN, "r0c1", blueprints, [seed + i for i in range(len(blueprints))], vectorize=False, steps=1)


@given(k=st.integers(1, 4), seed=st.integers(0, 2**16))
@settings(max_examples=5)
def test_generators_initialise_each_candidate_as_add_seed(k: int, seed: int) -> None:
    model, params, _ = ef.build_model(CNN, ["r0c0"])
    names = ["conv_light", "norm", "conv_light", "bottleneck"][:k]
    gens = [torch.Generator().manual_seed(seed + i) for i in range(k)]
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, names, generators=gens)
    assert group_model.stage("r0c0") == SeedStage.TRAINING
    for i, (name, cand) in enumerate(zip(names, ef.candidate_params(group_model, group_params, "r0c0"), strict=True)):
        _, single = ef.add_seed(model, params, "r0c0", REG, name, generator=gens[i])
        assert cand.keys() == single["slots"]["r0c0"].keys()
        for key, tensor in single["slots"]["r0c0"]["seed"].items():
            assert torch.equal(cand["seed"][key], tensor)


def test_default_generators_start_repeated_blueprints_apart() -> None:
    model, params, _ = ef.build_model(CNN, ["r0c0"])
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["conv_light", "conv_light"])
    a, b = ef.candidate_params(group_model, group_params, "r0c0")
    assert a["seed"].keys() == b["seed"].keys()
    assert any(not torch.equal(a["seed"][k], b["seed"][k]) for k in a["seed"])


def test_forward_is_the_hosts_at_any_alpha() -> None:
    model, params, buffers = ef.build_model(CNN, list(CNN.slot_ids))
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["conv_light", "norm"])
    x = _data(CNN, 1, 0)[0][0]
    base = ef.predict(model, params, buffers, torch.zeros(4), x)
    for value in (0.0, 0.5, 1.0):
        alphas = torch.tensor([value, 0.0, 0.0, 0.0])
        assert torch.equal(ef.predict(group_model, group_params, buffers, alphas, x), base)


# --------------------------------------------------------------------------- structure and checkpoints


def test_structure_round_trips_and_pickles(tmp_path: Path) -> None:
    model, params, buffers = ef.build_model(CNN, list(CNN.slot_ids))
    group_model, group_params = ef.add_candidates(model, params, "r1c0", REG, ["conv_light", "norm", "conv_light"])
    assert model_from_dict(json.loads(json.dumps(model_to_dict(group_model))), REG) == group_model
    assert pickle.loads(pickle.dumps(group_model)) == group_model
    for vectorize in (True, False):
        explicit, _ = ef.add_candidates(model, params, "r1c0", REG, ["norm"], vectorize=vectorize)
        assert model_from_dict(json.loads(json.dumps(model_to_dict(explicit))), REG).slot("r1c0").vectorize is vectorize
    spec = model_to_dict(group_model)
    spec["slots"][[e is not None and "candidates" in e for e in spec["slots"]].index(True)]["vectorize"] = "yes"
    with pytest.raises(ef.CheckpointError, match="'vectorize' must be true, false or null; got 'yes'"):
        model_from_dict(spec, REG)
    state = _train(group_model, group_params, buffers, {"r1c0": _training_state("r1c0", "cnn")}, _data(CNN, 1, 0))
    save_run(tmp_path / "run", group_model, state, LoopState())
    restored_model, restored, _ = load_run(tmp_path / "run", registry=REG).restore(OPT)
    assert restored_model == group_model
    for a, b in zip(ef.candidate_params(group_model, state.params, "r1c0"),
                    ef.candidate_params(restored_model, restored.params, "r1c0"), strict=True):
        assert all(torch.equal(a["seed"][k], b["seed"][k]) for k in a["seed"])
    # and training resumes from the restored optimizer state
    _train(restored_model, restored.params, restored.buffers, restored.seeds, _data(CNN, 1, 1))


@pytest.mark.parametrize("stage", [SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED])
def test_group_lives_in_germinated_and_training_only(stage: SeedStage) -> None:
    model, params, _ = ef.build_model(CNN, ["r0c0"])
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["norm"])
    germinated, _ = ef.set_stages(group_model, group_params, {"r0c0": SeedStage.GERMINATED})
    assert germinated.stage("r0c0") == SeedStage.GERMINATED and germinated.routed == ()
    with pytest.raises(ef.IllegalTransitionError, match="GERMINATED and TRAINING only"):
        ef.set_stages(group_model, group_params, {"r0c0": stage})
    pruned_model, pruned_params = ef.set_stages(group_model, group_params, {"r0c0": SeedStage.PRUNED})
    assert pruned_model.slot("r0c0") is None and "r0c0" not in pruned_params["slots"]


def test_esper_lite_export_refuses_a_group_with_a_clear_error() -> None:
    model, params, buffers = ef.build_model(CNN, ["r0c0"])
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["norm", "conv_light"])
    with pytest.raises(ef.IllegalTransitionError, match=r"2 tournament candidates.*select_candidate"):
        ef.to_state_dict(group_model, group_params, buffers)


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors() -> None:
    model, params, _ = ef.build_model(CNN, ["r0c0", "r1c0"])
    with pytest.raises(ef.UnknownBlueprintError, match="conv_light"):
        ef.add_candidates(model, params, "r0c0", REG, ["conv_light", "nope"])
    with pytest.raises(ef.InvalidArgumentError, match="K >= 1"):
        ef.add_candidates(model, params, "r0c0", REG, [])
    with pytest.raises(ef.InvalidTypeError, match="sequence"):
        ef.add_candidates(model, params, "r0c0", REG, "conv_light")
    with pytest.raises(ef.UnknownTopologyError, match="transformer"):
        ef.add_candidates(model, params, "r0c0", REG, [REG.get("transformer", "lora")])
    with pytest.raises(ef.UnknownBlueprintError):
        ef.add_candidates(model, params, "r0c0", REG, ["lora"])  # a transformer-only name
    with pytest.raises(ef.InvalidArgumentError, match="2 blueprints but 1 generators"):
        ef.add_candidates(model, params, "r0c0", REG, ["norm", "norm"], generators=[torch.Generator()])
    seeded, seeded_params = ef.add_seed(model, params, "r0c0", REG, "norm")
    with pytest.raises(ef.IllegalTransitionError, match="already holds"):
        ef.add_candidates(seeded, seeded_params, "r0c0", REG, ["norm"])
    group, group_params = ef.add_candidates(model, params, "r0c0", REG, ["norm"])
    with pytest.raises(ef.IllegalTransitionError, match="already holds"):
        ef.add_candidates(group, group_params, "r0c0", REG, ["norm"])
    with pytest.raises(ef.IllegalTransitionError, match="not candidate seeds"):
        ef.candidate_params(seeded, seeded_params, "r0c0")
    with pytest.raises(ef.UnknownSlotError):
        ef.add_candidates(model, params, "r9c9", REG, ["norm"])


# --------------------------------------------------------------------------- selection


def _clone(tree):
    return torch.utils._pytree.tree_map(lambda t: t.clone() if isinstance(t, torch.Tensor) else t, tree)


def _assert_same(a, b) -> None:
    la, lb = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    assert len(la) == len(lb)
    assert all(x is y is None or torch.equal(x, y) for x, y in zip(la, lb, strict=True))


def test_scores_equal_predict_with_each_candidate_blending() -> None:
    model, params, buffers = ef.build_model(CNN, list(CNN.slot_ids))
    model, params = ef.add_seed(model, params, "r1c1", REG, "norm", stage=SeedStage.BLENDING)
    names = ["conv_light", "norm", "conv_light"]
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    group_model, group_params = ef.add_candidates(model, params, "r0c1", REG, names, generators=gens)
    states = {"r0c1": _training_state("r0c1", "cnn")}
    val = _data(CNN, 2, 5, batch=16)
    scores = ef.score_candidates(group_model, group_params, buffers, states, "r0c1", val, loss_fn=F.cross_entropy, alpha=0.7)
    alphas = torch.tensor([0.0, 0.0, 0.7, 0.0])  # r1c1 (BLENDING) at alpha 0 in both
    for i, name in enumerate(names):
        m, p = ef.add_seed(model, params, "r0c1", REG, name, generator=gens[i], stage=SeedStage.BLENDING)
        result = ef.evaluate(m, p, buffers, val, alphas[None], loss_fn=F.cross_entropy)
        torch.testing.assert_close(scores.loss[i], result.loss[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(scores.accuracy[i], result.accuracy[0])
    base = ef.evaluate(model, params, buffers, val, torch.zeros(1, 4), loss_fn=F.cross_entropy)
    torch.testing.assert_close(scores.baseline_loss, base.loss[0])


def test_max_batch_scores_in_chunks_with_the_same_result() -> None:
    model, params, buffers = ef.build_model(CNN, ["r0c0", "r1c0"])
    model, params = ef.add_seed(model, params, "r1c0", REG, "conv_small", stage=SeedStage.BLENDING)
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["norm", "conv_light", "conv_light"])
    trained = _train(group_model, group_params, buffers, {"r0c0": _training_state("r0c0", "cnn")}, _data(CNN, 2, 0))
    states = {"r0c0": _training_state("r0c0", "cnn"), "r1c0": _training_state("r1c0", "cnn")}
    val = _data(CNN, 2, 5, batch=10)
    whole = ef.score_candidates(group_model, trained.params, buffers, states, "r0c0", val, loss_fn=F.cross_entropy, alpha=0.5)
    chunked = ef.score_candidates(group_model, trained.params, buffers, states, "r0c0", val, loss_fn=F.cross_entropy,
                                  alpha=0.5, max_batch=3)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ef.InvalidArgumentError, match=f"max_batch must be a positive int \\(samples\\) or None; got {bad!r}"):
            ef.score_candidates(group_model, trained.params, buffers, states, "r0c0", val, loss_fn=F.cross_entropy,
                                max_batch=bad)
    with pytest.raises(ef.InvalidArgumentError, match="one row per input"):
        ef.score_candidates(group_model, trained.params, buffers, states, "r0c0", [(val[0][0], val[0][1][:4])],
                            loss_fn=F.cross_entropy, max_batch=3)


def test_alpha_may_be_a_tensor_and_bad_alphas_are_refused() -> None:
    model, params, buffers = ef.build_model(CNN, ["r0c0"])
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["norm", "conv_light"])
    states = {"r0c0": _training_state("r0c0", "cnn")}
    val = _data(CNN, 1, 5, batch=8)
    as_float = ef.score_candidates(group_model, group_params, buffers, states, "r0c0", val, loss_fn=F.cross_entropy, alpha=0.3)
    as_tensor = ef.score_candidates(group_model, group_params, buffers, states, "r0c0", val, loss_fn=F.cross_entropy,
                                    alpha=torch.tensor(0.3))
    assert torch.equal(as_float.loss, as_tensor.loss)
    for bad, error in [(1.5, ef.InvalidArgumentError), (float("nan"), ef.InvalidArgumentError),
                       (torch.tensor([0.3]), ef.InvalidTypeError), (True, ef.InvalidTypeError), ("0.3", ef.InvalidTypeError)]:
        with pytest.raises(error, match="alpha"):
            ef.score_candidates(group_model, group_params, buffers, states, "r0c0", val, loss_fn=F.cross_entropy, alpha=bad)


def test_a_diverged_candidate_never_passes_g2() -> None:
    model, params, buffers = ef.build_model(CNN, ["r0c0"])
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, ["conv_light", "norm"])
    states = {"r0c0": _training_state("r0c0", "cnn")}
    trained = _train(group_model, group_params, buffers, states, _data(CNN, 2, 0))
    stacks = trained.params["slots"]["r0c0"]
    broken = {**stacks, "conv_light": {n: torch.full_like(t, float("nan")) for n, t in stacks["conv_light"].items()}}
    nan_params = {**trained.params, "slots": {**trained.params["slots"], "r0c0": broken}}
    gates = ef.Gates(permissive=True, min_blending_epochs=0, min_gradient_health_for_blending=0.0)
    _, _, _, (event,) = ef.select_candidate(group_model, nan_params, trained.buffers, states, "r0c0",
                                            _data(CNN, 1, 9, batch=16), gates=gates, loss_fn=F.cross_entropy)
    assert not event.gate_passed[0] and "non_finite_measurement" in event.gate_checks_failed[0]
    assert event.winner == 1
    # and the event's non-finite scores survive the JSON round trip as floats
    from esper_func.records import event_from_dict

    back, _ = event_from_dict(json.loads(json.dumps(event_to_dict(event, 3))))
    assert all(isinstance(v, float) for v in back.losses) and math.isnan(back.losses[0])


def test_select_candidate_keeps_the_winner_and_is_pure() -> None:
    model, params, buffers = ef.build_model(CNN, list(CNN.slot_ids))
    names = ["conv_light", "norm", "depthwise"]
    group_model, group_params = ef.add_candidates(model, params, "r0c0", REG, names)
    states = {"r0c0": _training_state("r0c0", "cnn")}
    trained = _train(group_model, group_params, buffers, states, _data(CNN, 2, 0))
    val = _data(CNN, 2, 9, batch=16)
    before = _clone((trained.params, trained.buffers))
    gates = ef.Gates(permissive=True, min_blending_epochs=0)
    new_model, new_params, new_states, events = ef.select_candidate(
        group_model, trained.params, trained.buffers, states, "r0c0", val, gates=gates, loss_fn=F.cross_entropy
    )
    _assert_same(before, (trained.params, trained.buffers))
    (event,) = events
    assert isinstance(event, ef.TournamentDecided)
    assert event.candidates == tuple(names) and len(event.contributions) == 3 and event.reason
    json.dumps(event_to_dict(event, 0))
    winner = event.winner
    assert event.blueprint_id == names[winner]
    slot = new_model.slot("r0c0")
    assert type(slot) is ef.Slot and slot.blueprint_id == names[winner]
    assert new_model.stage("r0c0") == SeedStage.TRAINING
    assert new_states["r0c0"].blueprint_id == names[winner]
    kept = ef.candidate_params(group_model, trained.params, "r0c0")[winner]
    _assert_same(kept, new_params["slots"]["r0c0"])
    passing = [i for i, p in enumerate(event.gate_passed) if p]
    pool = passing or list(range(3))
    assert min(event.losses[i] for i in pool) == event.losses[winner]
    # scored where the blend ramp stands after one BLENDING epoch, each exactly as predict would see it
    assert event.alpha == 1.0 / states["r0c0"].blend_tempo_epochs
    scores = ef.score_candidates(group_model, trained.params, trained.buffers, states, "r0c0", val,
                                 loss_fn=F.cross_entropy, alpha=event.alpha)
    assert event.losses == tuple(scores.loss.tolist())
    # the winner trains on as an ordinary seed, from the narrowed optimizer state, and can blend
    opt_state = ef.keep_candidate_tree(group_model, trained.opt_state.exp_avg, "r0c0", winner)
    assert opt_state["slots"]["r0c0"].keys() == {"seed"}
    before_opt = _clone(trained.opt_state)
    narrowed = ef.keep_candidate_opt_state(group_model, trained.opt_state, "r0c0", winner)
    _assert_same(before_opt, trained.opt_state)
    for name in ("exp_avg", "exp_avg_sq"):
        stacked = getattr(trained.opt_state, name)["slots"]["r0c0"][names[winner]]
        mine = getattr(narrowed, name)["slots"]["r0c0"]["seed"]
        _assert_same({k: v[0] for k, v in stacked.items()}, mine)  # each blueprint appears once: row 0
    state = ef.TrainState(new_params, trained.buffers, narrowed, new_states, trained.step)
    state, _ = ef.train_step(new_model, state, _data(CNN, 1, 3)[0], optimizer=OPT, loss_fn=F.cross_entropy)
    advanced, result, _ = ef.advance(new_states["r0c0"], gates, SeedStage.BLENDING)
    assert result.passed == event.gate_passed[winner]
    if result.passed:
        assert advanced.stage == SeedStage.BLENDING
        ef.set_stages(new_model, new_params, {"r0c0": advanced})  # an ordinary seed blends as usual


def test_docs_example_runs() -> None:
    runpy.run_path(str(ROOT / "docs" / "examples" / "tournament.py"), run_name="__main__")
