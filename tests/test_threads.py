"""Seeded building and training forwards are thread-safe and never touch torch's global RNG.

Every public function that draws random numbers (``germinate_slot``,
``build_model``, ``add_seed``, ``apply(train=True, rng=...)``,
``from_esper_lite``, ``Host.build_module``) draws from an explicit generator
derived from the caller's. These tests check that:

- results computed from many threads at once equal the serial results
  bitwise, even while another thread reseeds and draws from the global RNG;
- torch's global RNG is neither read nor written (its state and seed are
  unchanged, and the Python entry points that read, write, save or restore it
  are never called);
- the caller's generator is read, never advanced;
- dropout draws from its generator under ``torch.func.grad_and_value`` and
  follows ``vmap``'s ``randomness`` flag.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.func import grad_and_value, vmap
from torch.utils._pytree import tree_flatten, tree_map

import esper_func as ef
from esper_func._rng import DEFAULT_SEED, derive_seed, drawing_from, generator_from_seed, run_seeded, split_seeds
from esper_func.blueprints import Blueprint, Registry
from esper_func.errors import BlueprintError
from esper_func.hosts.transformer import _causal_attention_dropout, _dropout

A = ef.AlphaAlgorithm
S = ef.SeedStage

CNN = ef.CNNHost(n_blocks=2, base_channels=8, num_classes=5)
TFM = ef.TransformerHost(vocab_size=32, n_embd=16, n_head=2, n_layer=2, block_size=8, num_segments=2, dropout=0.25)
REG = ef.default_registry()
TOPOLOGY_BLUEPRINTS = [tuple(key.split(":")) for key in REG]

N_THREADS = 8
REPEATS = 3


# --------------------------------------------------------------------------- helpers


def tree_equal(a: Any, b: Any) -> bool:
    leaves_a, spec_a = tree_flatten(a)
    leaves_b, spec_b = tree_flatten(b)
    if spec_a != spec_b:
        return False
    return all(
        torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in zip(leaves_a, leaves_b, strict=True)
    )


def global_rng_snapshot() -> tuple[torch.Tensor, int]:
    return torch.get_rng_state().clone(), torch.random.default_generator.initial_seed()


def assert_global_rng_is(snapshot: tuple[torch.Tensor, int]) -> None:
    state, seed = snapshot
    assert torch.equal(torch.get_rng_state(), state), "torch's global RNG state changed"
    assert torch.random.default_generator.initial_seed() == seed, "torch's global RNG was reseeded"


@contextlib.contextmanager
def global_rng_tripwire(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail on any Python-level read, write, save or restore of torch's global RNG."""

    def tripped(name: str) -> Callable[..., Any]:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(f"{name} touched torch's global RNG")

        return fail

    fork_rng = torch.random.fork_rng

    def disabled_fork_only(*args: Any, enabled: bool = True, **kwargs: Any) -> Any:
        if enabled:  # fork_rng(enabled=False) is a no-op (torch.utils.checkpoint calls it so)
            raise AssertionError("torch.random.fork_rng touched torch's global RNG")
        return fork_rng(*args, enabled=False, **kwargs)

    for owner, names in (
        (torch, ("get_rng_state", "set_rng_state", "manual_seed", "seed", "initial_seed")),
        (torch.random, ("get_rng_state", "set_rng_state", "manual_seed", "seed", "initial_seed")),
    ):
        for name in names:
            monkeypatch.setattr(owner, name, tripped(f"{owner.__name__}.{name}"))
    monkeypatch.setattr(torch.random, "fork_rng", disabled_fork_only)
    try:
        yield
    finally:
        monkeypatch.undo()


def run_in_threads(jobs: list[Callable[[], Any]], *, n_threads: int = N_THREADS, noise: bool = True) -> list[Any]:
    """Run every job from each of ``n_threads`` threads at once; returns the results per thread.

    With ``noise`` another thread keeps reseeding and drawing from torch's
    global RNG meanwhile: anything that depends on it gets other numbers.
    """
    barrier = threading.Barrier(n_threads + int(noise))
    stop = threading.Event()
    results: list[list[Any]] = [[] for _ in range(n_threads)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait()
            order = jobs[index % len(jobs) :] + jobs[: index % len(jobs)]  # threads start at different jobs
            out = {}
            for _ in range(REPEATS):
                for job in order:
                    out.setdefault(jobs.index(job), []).append(job())
            results[index] = [out[i] for i in range(len(jobs))]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def hammer() -> None:
        barrier.wait()
        k = 0
        while not stop.is_set():
            torch.manual_seed(k)
            torch.rand(64)
            k += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    noise_thread = threading.Thread(target=hammer) if noise else None
    with torch.random.fork_rng(devices=[]):  # the hammer's seeds stay inside this test
        for t in threads + ([noise_thread] if noise_thread else []):
            t.start()
        for t in threads:
            t.join()
        stop.set()
        if noise_thread is not None:
            noise_thread.join()
    assert not errors, errors
    return results


def assert_threads_equal_serial(jobs: list[Callable[[], Any]]) -> int:
    serial = [job() for job in jobs]
    compared = 0
    for per_thread in run_in_threads(jobs):
        for expected, got in zip(serial, per_thread, strict=True):
            for value in got:
                assert tree_equal(value, expected)
                compared += 1
    return compared


def gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- threads equal serial


def test_germinate_slot_from_threads_equals_serial() -> None:
    shared = gen(11)  # the same generator object, read by every thread
    jobs: list[Callable[[], Any]] = [
        (lambda t=t, b=b, a=a: ef.germinate_slot(REG, t, b, 16, algorithm=a, generator=shared)[1])
        for t, b in TOPOLOGY_BLUEPRINTS
        for a in (A.ADD, A.MULTIPLY, A.GATE)
    ]
    state = shared.get_state().clone()
    assert assert_threads_equal_serial(jobs) == N_THREADS * REPEATS * len(jobs)
    assert torch.equal(shared.get_state(), state)


def test_build_model_from_threads_equals_serial() -> None:
    shared = gen(12)
    cnn_slots = {"r0c0": ef.germinate_slot(REG, "cnn", "conv_light", 8)[0], "r1c1": None}
    tfm_slots = {"r0c0": ef.germinate_slot(REG, "transformer", "mlp", 16, algorithm=A.GATE)[0], "r0c1": None}
    jobs: list[Callable[[], Any]] = [
        lambda: ef.build_model(CNN, cnn_slots, generator=shared)[1:],
        lambda: ef.build_model(TFM, tfm_slots, generator=shared)[1:],
        lambda: ef.build_model(CNN, CNN.slot_ids)[1:],  # generator=None: the fixed default
    ]
    state = shared.get_state().clone()
    assert_threads_equal_serial(jobs)
    assert torch.equal(shared.get_state(), state)


def test_add_seed_from_threads_equals_serial() -> None:
    shared = gen(13)
    cnn_model, cnn_params, _ = ef.build_model(CNN, CNN.slot_ids)
    tfm_model, tfm_params, _ = ef.build_model(TFM, TFM.slot_ids)
    jobs: list[Callable[[], Any]] = [
        lambda: ef.add_seed(cnn_model, cnn_params, "r0c1", REG, "conv_heavy", generator=shared)[1],
        lambda: ef.add_seed(cnn_model, cnn_params, "r1c0", REG, "attention", algorithm=A.GATE, generator=shared)[1],
        lambda: ef.add_seed(tfm_model, tfm_params, "r0c0", REG, "lora", algorithm=A.MULTIPLY, generator=shared)[1],
        lambda: ef.add_seed(tfm_model, tfm_params, "r0c1", REG, "attention", generator=shared)[1],
    ]
    assert_threads_equal_serial(jobs)


def test_train_mode_apply_with_dropout_from_threads_equals_serial() -> None:
    model, params, buffers = ef.build_model(TFM, TFM.slot_ids)
    model, params = ef.add_seed(model, params, "r0c0", REG, "mlp_small", stage=S.BLENDING)
    x = TFM.example_input(4)
    alphas = torch.tensor([0.5, 0.0])
    shared = gen(14)
    jobs: list[Callable[[], Any]] = [
        lambda: ef.apply(model, params, buffers, alphas, x, train=True, rng=shared)[0],
        lambda: ef.apply(model, params, buffers, alphas, x, train=True, rng=gen(15))[0],
        lambda: ef.apply(model, params, buffers, alphas, x, train=True)[0],  # rng=None: the fixed default
    ]
    state = shared.get_state().clone()
    assert_threads_equal_serial(jobs)
    assert torch.equal(shared.get_state(), state)


def test_train_step_gradients_from_threads_equal_serial() -> None:
    model, params, buffers = ef.build_model(TFM, TFM.slot_ids)
    x = TFM.example_input(4)
    alphas = torch.zeros(model.n_slots)

    def loss_and_grads() -> Any:
        def loss(p: Any) -> torch.Tensor:
            out, _ = ef.apply(model, p, buffers, alphas, x, train=True, rng=gen(16))
            return F.cross_entropy(out.reshape(-1, TFM.vocab_size), x.reshape(-1))

        grads, value = grad_and_value(loss)(params)
        return grads, value

    assert_threads_equal_serial([loss_and_grads])


def test_host_build_and_esper_lite_import_from_threads_equal_serial() -> None:
    model, params, _buffers = ef.build_model(CNN, ("r0c0",))
    model, params = ef.add_seed(model, params, "r0c0", REG, "norm", algorithm=A.GATE)
    # A GATE seed gets a fresh gate network from the generator when blending starts.
    blending = dataclasses.replace(ef.germinate("r0c0", "norm", algorithm=A.GATE, blend="gated"), stage=ef.SeedStage.BLENDING)
    shared = gen(17)
    jobs: list[Callable[[], Any]] = [
        lambda: CNN.build_module(seed=3).state_dict(),
        lambda: TFM.build_module(seed=4).state_dict(),
        lambda: ef.set_stages(model, params, {"r0c0": blending}, generator=shared)[1],
    ]
    assert "gate" in jobs[2]()["slots"]["r0c0"]
    assert_threads_equal_serial(jobs)


# --------------------------------------------------------------------------- the global RNG is untouched


@given(
    seed=st.integers(0, 2**32),
    which=st.sampled_from(TOPOLOGY_BLUEPRINTS),
    algorithm=st.sampled_from([A.ADD, A.MULTIPLY, A.GATE]),
)
def test_germinate_slot_reads_only_its_generator(seed: int, which: tuple[str, str], algorithm: A) -> None:
    topology, blueprint = which
    g = gen(seed)
    state = g.get_state().clone()
    snapshot = global_rng_snapshot()
    with global_rng_tripwire(pytest.MonkeyPatch()):
        _, first = ef.germinate_slot(REG, topology, blueprint, 16, algorithm=algorithm, generator=g)
        _, second = ef.germinate_slot(REG, topology, blueprint, 16, algorithm=algorithm, generator=g)
    assert_global_rng_is(snapshot)
    assert torch.equal(g.get_state(), state)
    assert tree_equal(first, second)


@given(seed=st.integers(0, 2**32), host=st.sampled_from([CNN, TFM]), blueprint=st.sampled_from(["norm", "attention"]))
def test_build_model_add_seed_and_apply_read_only_their_generators(seed: int, host: Any, blueprint: str) -> None:
    g = gen(seed)
    state = g.get_state().clone()
    snapshot = global_rng_snapshot()
    x = host.example_input(2, g)
    with global_rng_tripwire(pytest.MonkeyPatch()):
        model, params, buffers = ef.build_model(host, host.slot_ids, generator=g)
        model, params = ef.add_seed(model, params, host.slot_ids[0], REG, blueprint, generator=g, stage=S.BLENDING)
        alphas = torch.full((model.n_slots,), 0.5)
        out, new_buffers = ef.apply(model, params, buffers, alphas, x, train=True, rng=g)
        again, _ = ef.apply(model, params, buffers, alphas, x, train=True, rng=g)
        ef.predict(model, params, new_buffers, alphas, x)
        host.build_module(seed=seed)
        host.build_module()
        host.build_skeleton()
    assert_global_rng_is(snapshot)
    assert torch.equal(g.get_state(), state)
    assert torch.equal(out, again)


def test_training_with_activation_checkpointing_leaves_the_global_rng_alone() -> None:
    # torch.utils.checkpoint saves and restores the global RNG by default; the mlp seed opts out.
    host = ef.TransformerHost(vocab_size=16, n_embd=8, n_head=2, n_layer=2, block_size=8, num_segments=2, dropout=0.0)
    model, params, buffers = ef.build_model(host, host.slot_ids)
    model, params = ef.add_seed(model, params, "r0c0", REG, "mlp", stage=S.BLENDING, checkpoint=True)
    leaf = tree_map(lambda t: t.clone().requires_grad_(), params)
    x = host.example_input(2)
    snapshot = global_rng_snapshot()
    with global_rng_tripwire(pytest.MonkeyPatch()):
        out, _ = ef.apply(model, leaf, buffers, torch.tensor([0.5, 0.0]), x, train=True)
        out.square().mean().backward()
    assert_global_rng_is(snapshot)
    assert leaf["slots"]["r0c0"]["seed"]["fc1.weight"].grad is not None


def test_meta_construction_draws_nothing() -> None:
    # Meta kernels of the initialisers compute shapes only: no generator is read or advanced.
    snapshot = global_rng_snapshot()
    g = gen(1)
    state = g.get_state().clone()
    with global_rng_tripwire(pytest.MonkeyPatch()), drawing_from(g), torch.device("meta"):
        for key in REG:
            REG[key].build(16)
        TFM.build_module()
        CNN.build_module()
        nn.MultiheadAttention(8, 2)
        nn.init.trunc_normal_(torch.empty(4, 4))
        torch.randn(3)
    assert torch.equal(g.get_state(), state)
    assert_global_rng_is(snapshot)
    assert all(t.device.type == "meta" for t in TFM.build_skeleton().state_dict().values())


# --------------------------------------------------------------------------- initialisation


def test_build_module_default_seed_is_fixed() -> None:
    assert tree_equal(CNN.build_module().state_dict(), CNN.build_module(seed=0).state_dict())
    assert not tree_equal(CNN.build_module(seed=1).state_dict(), CNN.build_module(seed=0).state_dict())


def test_build_module_ignores_the_default_device_for_its_values() -> None:
    expected = CNN.build_module(seed=5).state_dict()
    with torch.device("meta"):
        skeleton = CNN.build_module(seed=5)  # the default device is honoured for placement ...
    assert all(t.is_meta for t in skeleton.state_dict().values())
    assert tree_equal(CNN.build_module(seed=5, device="cpu").state_dict(), expected)  # ... not for values


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_build_module_on_cuda_has_the_cpu_weights_and_keeps_the_tie() -> None:  # pragma: no cover
    module = TFM.build_module(seed=5, device="cuda")
    assert module.head.weight is module.tok_emb.weight
    cpu = TFM.build_module(seed=5).state_dict()
    assert all(torch.equal(v.cpu(), cpu[k]) for k, v in module.state_dict().items())


@pytest.mark.parametrize("key", list(REG))
def test_germination_reproduces_the_blueprint_built_under_manual_seed(key: str) -> None:
    # The explicit generator yields exactly what esper-lite's global-RNG construction yields.
    _, params = ef.germinate_slot(REG, *key.split(":"), 16, generator=gen(21))
    (init_seed,) = split_seeds(gen(21), 1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        reference = REG[key].build(16).state_dict()
    assert tree_equal(params["seed"], dict(reference))


def _build_custom(dim: int) -> nn.Module:
    """A user blueprint with custom initialisers that draw random numbers themselves."""
    module = nn.Conv2d(dim, dim, 1)
    with torch.no_grad():
        module.weight.copy_(torch.randn(dim, dim, 1, 1) * 0.01 + torch.rand(dim, dim, 1, 1))
        module.bias.copy_(torch.randint(0, 5, (dim,)).float() + torch.randperm(dim).float())
        nn.init.orthogonal_(module.weight)
    return module


def _build_own_generator(dim: int) -> nn.Module:
    """A blueprint that brings its own generator: kept."""
    module = nn.Conv2d(dim, dim, 1, bias=False)
    with torch.no_grad():
        module.weight.copy_(torch.randn(dim, dim, 1, 1, generator=torch.Generator().manual_seed(99)))
    return module


def _build_dropout_in_init(dim: int) -> nn.Module:
    """Calls an operator that draws from the global RNG and takes no generator."""
    module = nn.Conv2d(dim, dim, 1)
    with torch.no_grad():
        module.weight.copy_(torch.ops.aten.native_dropout(module.weight, 0.5, True)[0])
    return module


def _build_functional_dropout_in_init(dim: int) -> nn.Module:
    """F.dropout on the CPU is bernoulli_, which takes a generator: it draws from ours."""
    module = nn.Conv2d(dim, dim, 1)
    with torch.no_grad():
        module.weight.copy_(F.dropout(module.weight, 0.5, training=True))
    return module


CUSTOM = Registry.of(
    Blueprint("custom", "cnn", _build_custom, 10),
    Blueprint("own", "cnn", _build_own_generator, 10),
    Blueprint("dropout_init", "cnn", _build_dropout_in_init, 10),
    Blueprint("f_dropout_init", "cnn", _build_functional_dropout_in_init, 10),
)


def test_custom_random_initialisers_of_user_blueprints_draw_from_the_generator() -> None:
    snapshot = global_rng_snapshot()
    _, a = ef.germinate_slot(CUSTOM, "cnn", "custom", 8, generator=gen(1))
    _, b = ef.germinate_slot(CUSTOM, "cnn", "custom", 8, generator=gen(1))
    _, c = ef.germinate_slot(CUSTOM, "cnn", "custom", 8, generator=gen(2))
    _, d = ef.germinate_slot(CUSTOM, "cnn", "f_dropout_init", 8, generator=gen(1))
    _, e = ef.germinate_slot(CUSTOM, "cnn", "f_dropout_init", 8, generator=gen(1))
    assert_global_rng_is(snapshot)
    assert tree_equal(a, b) and not tree_equal(a, c)
    assert tree_equal(d, e) and bool((d["seed"]["weight"] == 0).any())
    assert_threads_equal_serial([lambda: ef.germinate_slot(CUSTOM, "cnn", "custom", 8, generator=gen(1))[1]])


def test_a_blueprints_own_generator_is_kept() -> None:
    _, params = ef.germinate_slot(CUSTOM, "cnn", "own", 4, generator=gen(1))
    expected = torch.randn(4, 4, 1, 1, generator=torch.Generator().manual_seed(99))
    assert torch.equal(params["seed"]["weight"], expected)


def test_an_initialiser_that_can_only_use_the_global_rng_is_refused() -> None:
    snapshot = global_rng_snapshot()
    with pytest.raises(BlueprintError, match="global RNG"):
        ef.germinate_slot(CUSTOM, "cnn", "dropout_init", 8)
    assert_global_rng_is(snapshot)


def test_run_seeded_equals_manual_seed_and_allocates_on_the_cpu() -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(31)
        expected = (torch.randn(5), torch.rand(2, 3), torch.randint(0, 9, (4,)), torch.randperm(6))
    with torch.device("meta"):
        got = run_seeded(lambda: (torch.randn(5), torch.rand(2, 3), torch.randint(0, 9, (4,)), torch.randperm(6)), 31)
    assert tree_equal(got, expected)


def test_derive_seed_reads_the_state_only() -> None:
    g = gen(3)
    state = g.get_state().clone()
    assert derive_seed(g) == derive_seed(gen(3)) != derive_seed(gen(4))
    assert derive_seed(None) == derive_seed(gen(DEFAULT_SEED))
    assert torch.equal(g.get_state(), state)
    torch.rand(1, generator=g)  # a generator that has moved on gives another seed
    assert derive_seed(g) != derive_seed(gen(3))


# --------------------------------------------------------------------------- dropout


def test_dropout_is_inverted_dropout_drawn_from_the_generator() -> None:
    drop = nn.Dropout(0.25).train()
    x = torch.ones(200, 50)
    y = _dropout(x, drop, gen(1))
    assert torch.equal(y, _dropout(x, drop, gen(1)))
    assert bool(((y == 0) | (y == torch.tensor(1 / 0.75))).all())
    assert abs(float((y == 0).float().mean()) - 0.25) < 0.02
    assert _dropout(x, drop.eval(), gen(1)) is x
    assert _dropout(x, nn.Dropout(0.0).train(), gen(1)) is x


def test_dropout_gradient_under_grad_and_value_is_the_mask() -> None:
    drop = nn.Dropout(0.5).train()
    x = torch.randn(6, 7, generator=gen(2))
    grad, value = grad_and_value(lambda t: _dropout(t, drop, gen(3)).sum())(x)
    mask = _dropout(torch.ones_like(x), drop, gen(3))
    assert torch.equal(grad, mask)
    assert torch.allclose(value, (x * mask).sum())


def test_attention_dropout_is_sdpa_when_nothing_is_dropped() -> None:
    g = gen(4)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(_causal_attention_dropout(q, k, v, 1e-12, gen(5)), expected, rtol=1e-5, atol=1e-6)
    dropped = _causal_attention_dropout(q, k, v, 0.5, gen(5))
    assert torch.equal(dropped, _causal_attention_dropout(q, k, v, 0.5, gen(5)))
    assert not torch.allclose(dropped, expected)


def test_transformer_training_forward_depends_on_rng_only() -> None:
    model, params, buffers = ef.build_model(TFM, TFM.slot_ids)
    x = TFM.example_input(3)
    a = torch.zeros(model.n_slots)
    one = ef.apply(model, params, buffers, a, x, train=True, rng=gen(1))[0]
    assert torch.equal(one, ef.apply(model, params, buffers, a, x, train=True, rng=gen(1))[0])
    assert not torch.equal(one, ef.apply(model, params, buffers, a, x, train=True, rng=gen(2))[0])
    assert not torch.equal(one, ef.predict(model, params, buffers, a, x))
    quiet = ef.TransformerHost(vocab_size=32, n_embd=16, n_head=2, n_layer=2, block_size=8, num_segments=2, dropout=0.0)
    m0, p0, b0 = ef.build_model(quiet, quiet.slot_ids)
    assert torch.equal(ef.apply(m0, p0, b0, a, x, train=True, rng=gen(1))[0], ef.predict(m0, p0, b0, a, x))


def test_dropout_under_vmap_follows_the_randomness_flag() -> None:
    model, params, buffers = ef.build_model(TFM, TFM.slot_ids)
    x = TFM.example_input(2)
    grid = torch.rand(3, model.n_slots, generator=gen(6))

    def run(alphas: torch.Tensor) -> torch.Tensor:
        return ef.apply(model, params, buffers, alphas, x, train=True, rng=gen(7))[0]

    with pytest.raises(RuntimeError, match="randomness"):
        vmap(run)(grid)  # vmap's default, randomness="error"
    same = vmap(run, randomness="same")(grid)
    for row, alphas in zip(same, grid, strict=True):  # one mask for every row: the per-row results
        torch.testing.assert_close(row, run(alphas), rtol=1e-5, atol=1e-6)
    different = vmap(run, randomness="different")(grid)
    assert torch.equal(different, vmap(run, randomness="different")(grid))  # deterministic
    stacked = tree_map(lambda t: torch.stack([t, t]), params)
    twins = vmap(
        lambda p: ef.apply(model, p, buffers, grid[0], x, train=True, rng=gen(7))[0], randomness="different"
    )(stacked)
    assert not torch.equal(twins[0], twins[1])  # same params, independent masks


def test_dropout_generator_lives_on_the_input_device() -> None:
    g = generator_from_seed(derive_seed(gen(1)), torch.device("cpu"))
    assert g.device.type == "cpu"
    if torch.cuda.is_available():  # pragma: no cover
        assert generator_from_seed(1, "cuda").device.type == "cuda"
