"""Tests for esper_func.hosts: host specs, surfaces, state_dict layout, segments."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import pickle

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call, vmap

from esper_func._rng import drawing_from
from esper_func.errors import DTypeError, ParamsMismatchError, ShapeError
from esper_func.hosts import (
    BLOCK_END,
    POST_POOL,
    PRE_POOL,
    CNNHost,
    CNNHostModule,
    HostConfigError,
    SegmentRangeError,
    TransformerHost,
    TransformerHostModule,
    UnknownSlotError,
)
from esper_func.interop import (
    EXTRA_STATE_KEY,
    GATE_PREFIX,
    HOST_PREFIX,
    SEED_PREFIX,
    SLOTS_PREFIX,
    extra_state_key,
    gate_key,
    host_key,
    parse_model_key,
    seed_key,
    slot_prefix,
)

# Small configurations shared by the module (built once; hypothesis-friendly).
CNN = CNNHost(n_blocks=3, base_channels=4, num_classes=5)
CNN_PARTIAL_POOL = CNNHost(n_blocks=4, base_channels=4, pool_layers=2, num_classes=3)
TFM = TransformerHost(vocab_size=37, n_embd=16, n_head=2, n_layer=6, block_size=12, num_segments=3)

_MODULES: dict[object, nn.Module] = {}


def _module(host):
    if host not in _MODULES:
        _MODULES[host] = host.build_module(seed=1234).eval()
    return _MODULES[host]


def _input(host, batch=2):
    g = torch.Generator().manual_seed(7)
    if host.topology == "cnn":
        return host.example_input(batch, g, image_size=16)
    return host.example_input(batch, g, seq_len=10)


# ---------------------------------------------------------------------------
# esper-lite facts: slot ids, order, channels
# ---------------------------------------------------------------------------


def test_cnn_default_slots_match_esper_lite():
    host = CNNHost(n_blocks=3, base_channels=32)
    assert host.topology == "cnn"
    # forward execution order: interleaved by block (pre-pool, then post-pool)
    assert host.slot_ids == ("r0c0", "r1c0", "r0c1", "r1c1", "r0c2", "r1c2")
    # esper-lite injection_specs() order: row-major (action indices)
    assert host.spec_order == ("r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2")
    assert host.segment_channels == {
        "r0c0": 32, "r1c0": 32, "r0c1": 64, "r1c1": 64, "r0c2": 128, "r1c2": 128,
    }
    assert [host.slot_channels(s) for s in host.spec_order] == [32, 64, 128, 32, 64, 128]
    assert [host.surface_index(s) for s in host.slot_ids] == [1, 2, 3, 4, 5, 6]
    assert host.n_surfaces == 6 and host.output_surface == 7
    kinds = {p.slot_id: p.kind for p in host.injection_points}
    assert kinds == {
        "r0c0": PRE_POOL, "r0c1": PRE_POOL, "r0c2": PRE_POOL,
        "r1c0": POST_POOL, "r1c1": POST_POOL, "r1c2": POST_POOL,
    }
    orders = {p.slot_id: p.order for p in host.injection_points}
    assert orders == {"r0c0": 0, "r0c1": 1, "r0c2": 2, "r1c0": 3, "r1c1": 4, "r1c2": 5}
    ranges = {p.slot_id: p.layer_range for p in host.injection_points}
    assert ranges == {
        "r0c0": (0, 1), "r1c0": (0, 1), "r0c1": (1, 2),
        "r1c1": (1, 2), "r0c2": (2, 3), "r1c2": (2, 3),
    }
    assert all(0 < p.position <= 1 for p in host.injection_points)


def test_cnn_defaults_are_esper_lite_defaults():
    host = CNNHost()
    assert (host.num_classes, host.n_blocks, host.base_channels, host.pool_layers) == (10, 3, 32, None)
    assert (host.memory_format, host.kernel_size, host.in_channels) == ("channels_last", 3, 3)
    assert host.effective_pool_layers == 3


def test_cnn_pool_layers_controls_post_pool_points():
    host = CNNHost(n_blocks=3, pool_layers=2)
    assert host.slot_ids == ("r0c0", "r1c0", "r0c1", "r1c1", "r0c2")
    assert host.spec_order == ("r0c0", "r0c1", "r0c2", "r1c0", "r1c1")
    assert CNNHost(n_blocks=3, pool_layers=0).slot_ids == ("r0c0", "r0c1", "r0c2")
    # more pool layers than blocks: capped, as in esper-lite
    assert CNNHost(n_blocks=2, pool_layers=9).slot_ids == ("r0c0", "r1c0", "r0c1", "r1c1")


def test_cnn_five_blocks():
    host = CNNHost(n_blocks=5, base_channels=16)
    assert host.spec_order == (
        "r0c0", "r0c1", "r0c2", "r0c3", "r0c4", "r1c0", "r1c1", "r1c2", "r1c3", "r1c4",
    )
    assert host.slot_channels("r1c4") == 256


def test_cnn_surface_shapes_default_cifar():
    host = CNNHost()
    module = host.build_module(seed=0).eval()
    x = host.example_input(2)
    expected = {
        "r0c0": (2, 32, 32, 32), "r1c0": (2, 32, 16, 16),
        "r0c1": (2, 64, 16, 16), "r1c1": (2, 64, 8, 8),
        "r0c2": (2, 128, 8, 8), "r1c2": (2, 128, 4, 4),
    }
    with torch.no_grad():
        for slot_id, shape in expected.items():
            i = host.surface_index(slot_id)
            assert tuple(module(x, 0, i).shape) == shape
            assert host.surface_shape(i, 2, 32) == shape
        assert tuple(module(x).shape) == (2, 10) == host.surface_shape(7, 2)


def test_transformer_slots_match_esper_lite():
    host = TransformerHost()
    assert host.topology == "transformer"
    assert (host.vocab_size, host.n_embd, host.n_head, host.n_layer) == (50257, 384, 6, 6)
    assert (host.block_size, host.dropout, host.num_segments) == (256, 0.1, 3)
    assert host.slot_ids == host.spec_order == ("r0c0", "r0c1", "r0c2")
    assert host.segment_channels == {"r0c0": 384, "r0c1": 384, "r0c2": 384}
    assert [p.layer_range for p in host.injection_points] == [(0, 2), (2, 4), (4, 6)]
    assert [p.kind for p in host.injection_points] == [BLOCK_END] * 3
    assert [p.position for p in host.injection_points] == [1 / 3, 2 / 3, 1.0]
    nine = TransformerHost(vocab_size=100, n_embd=64, n_head=2, n_layer=9, block_size=32)
    assert [p.layer_range for p in nine.injection_points] == [(0, 3), (3, 6), (6, 9)]
    assert TransformerHost(n_layer=4, num_segments=4).slot_ids == ("r0c0", "r0c1", "r0c2", "r0c3")


def test_unknown_slot_lists_available():
    with pytest.raises(UnknownSlotError, match=r"available .*r0c0.*r1c0") as info:
        CNNHost().slot_channels("r2c0")
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)
    with pytest.raises(UnknownSlotError, match="early"):
        TransformerHost().surface_index("early")


# ---------------------------------------------------------------------------
# state_dict keys and shapes (esper-lite tables)
# ---------------------------------------------------------------------------


def test_cnn_state_dict_table():
    host = CNNHost(n_blocks=2, base_channels=4, num_classes=5)
    expected = {
        "blocks.0.conv.weight": (4, 3, 3, 3),
        "blocks.0.bn.weight": (4,),
        "blocks.0.bn.bias": (4,),
        "blocks.0.bn.running_mean": (4,),
        "blocks.0.bn.running_var": (4,),
        "blocks.0.bn.num_batches_tracked": (),
        "blocks.1.conv.weight": (8, 4, 3, 3),
        "blocks.1.bn.weight": (8,),
        "blocks.1.bn.bias": (8,),
        "blocks.1.bn.running_mean": (8,),
        "blocks.1.bn.running_var": (8,),
        "blocks.1.bn.num_batches_tracked": (),
        "classifier.weight": (5, 8),
        "classifier.bias": (5,),
    }
    sd = host.build_module(seed=0).state_dict()
    assert list(sd) == list(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    assert host.state_dict_shapes() == expected
    assert host.tied_keys == {}
    default = CNNHost().state_dict_shapes()
    assert default["blocks.2.conv.weight"] == (128, 64, 3, 3)
    assert default["classifier.weight"] == (10, 128)
    assert CNNHost(kernel_size=5).state_dict_shapes()["blocks.0.conv.weight"] == (32, 3, 5, 5)


def test_transformer_state_dict_table():
    host = TransformerHost(vocab_size=11, n_embd=8, n_head=2, n_layer=2, block_size=7, num_segments=2)
    layer = {
        "ln1.weight": (8,), "ln1.bias": (8,),
        "attn.c_attn.weight": (24, 8), "attn.c_attn.bias": (24,),
        "attn.c_proj.weight": (8, 8), "attn.c_proj.bias": (8,),
        "ln2.weight": (8,), "ln2.bias": (8,),
        "mlp.c_fc.weight": (32, 8), "mlp.c_fc.bias": (32,),
        "mlp.c_proj.weight": (8, 32), "mlp.c_proj.bias": (8,),
    }
    expected = {"tok_emb.weight": (11, 8), "pos_emb.weight": (7, 8)}
    for i in range(2):
        expected.update({f"layers.{i}.{k}": v for k, v in layer.items()})
    expected.update({"ln_f.weight": (8,), "ln_f.bias": (8,), "head.weight": (11, 8)})
    module = host.build_module(seed=0)
    sd = module.state_dict()
    assert list(sd) == list(expected)
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    # weight tying: head.weight is tok_emb.weight; no non-persistent buffers
    assert module.head.weight is module.tok_emb.weight
    assert host.tied_keys == {"head.weight": "tok_emb.weight"}
    assert list(module.named_buffers()) == []
    assert "head.weight" not in dict(module.named_parameters())
    assert host.num_parameters() == sum(p.numel() for p in module.parameters())


def test_tied_aliases():
    module = _module(TFM)
    sd = module.state_dict()
    # state_dict detaches: two tensor objects for one tied weight, which functional_call refuses
    with pytest.raises(ValueError, match="tied"):
        functional_call(TFM.build_skeleton(), sd, (_input(TFM),), strict=True)
    clean = TFM.without_tied_aliases(sd)
    assert "head.weight" not in clean and clean["tok_emb.weight"] is sd["tok_emb.weight"]
    only_alias = {k: v for k, v in sd.items() if k != "tok_emb.weight"}
    assert TFM.without_tied_aliases(only_alias)["tok_emb.weight"] is sd["head.weight"]
    bad = dict(sd, **{"head.weight": sd["head.weight"] + 1})
    with pytest.raises(ParamsMismatchError, match=r"tied to 'tok_emb\.weight'"):
        TFM.without_tied_aliases(bad)
    assert CNN.without_tied_aliases(_module(CNN).state_dict()).keys() == _module(CNN).state_dict().keys()


def test_transformer_dropout_default_and_structure():
    module = TransformerHost(vocab_size=11, n_embd=8, n_head=2, n_layer=3, num_segments=3).build_skeleton()
    drops = [m.p for m in module.modules() if isinstance(m, nn.Dropout)]
    assert drops == [0.1] * (1 + 2 * 3)  # embedding dropout + resid/mlp dropout per layer
    assert all(m.attn.dropout_p == 0.1 for m in module.layers)


def test_model_key_layout():
    assert HOST_PREFIX == "host." and SLOTS_PREFIX == "seed_slots."
    assert SEED_PREFIX == "seed." and GATE_PREFIX == "alpha_schedule." and EXTRA_STATE_KEY == "_extra_state"
    assert host_key("blocks.0.conv.weight") == "host.blocks.0.conv.weight"
    assert slot_prefix("r1c0") == "seed_slots.r1c0."
    assert seed_key("r0c1", "enhance.conv.weight") == "seed_slots.r0c1.seed.enhance.conv.weight"
    assert gate_key("r1c0", "gate.0.weight") == "seed_slots.r1c0.alpha_schedule.gate.0.weight"
    assert extra_state_key("r0c2") == "seed_slots.r0c2._extra_state"
    for key, parsed in [
        ("host.head.weight", ("host", None, "head.weight")),
        ("seed_slots.r0c1.seed.enhance.conv.weight", ("seed", "r0c1", "enhance.conv.weight")),
        ("seed_slots.r1c0.alpha_schedule.gate.2.bias", ("gate", "r1c0", "gate.2.bias")),
        ("seed_slots.r0c2._extra_state", ("extra_state", "r0c2", "")),
    ]:
        assert parse_model_key(key) == parsed
    for bad in ["blocks.0.conv.weight", "seed_slots.r0c0", "seed_slots.r0c0.other.x"]:
        with pytest.raises(ValueError, match="unrecognised"):
            parse_model_key(bad)


# ---------------------------------------------------------------------------
# Initialisation (esper-lite order, explicit generators)
# ---------------------------------------------------------------------------


def _same_values(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


def _draws_after(build, seed: int) -> torch.Tensor:
    """The next three numbers of a generator seeded with ``seed`` after ``build`` drew from it."""
    generator = torch.Generator().manual_seed(seed)
    with drawing_from(generator):
        build()
    return torch.rand(3, generator=generator)


def test_cnn_init_follows_esper_lite_construction_order():
    # The host built with seed k has esper-lite's weights under torch.manual_seed(k),
    # drawn from an explicit generator: the global RNG is neither read nor written.
    host = CNNHost(n_blocks=3, base_channels=4, num_classes=5)
    state = torch.get_rng_state()
    module = host.build_module(seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        ref: dict[str, torch.Tensor] = {}
        in_c = 3
        for i in range(3):
            conv = nn.Conv2d(in_c, 4 * 2**i, 3, padding=1, bias=False)
            bn = nn.BatchNorm2d(4 * 2**i)
            ref[f"blocks.{i}.conv.weight"] = conv.weight
            ref.update({f"blocks.{i}.bn.{k}": v for k, v in bn.state_dict().items()})
            in_c = 4 * 2**i
        fc = nn.Linear(in_c, 5)
        ref.update({"classifier.weight": fc.weight, "classifier.bias": fc.bias})
        after = torch.rand(3)
    assert _same_values(module.state_dict(), ref)
    assert torch.equal(_draws_after(lambda: CNNHostModule(host), 3), after)  # same number of draws


def test_transformer_init_follows_esper_lite_construction_order():
    host = TransformerHost(vocab_size=11, n_embd=8, n_head=2, n_layer=2, block_size=7, num_segments=1)
    state = torch.get_rng_state()
    module = host.build_module(seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        tok, pos = nn.Embedding(11, 8), nn.Embedding(7, 8)
        layers = [
            [nn.LayerNorm(8), nn.Linear(8, 24), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 32), nn.Linear(32, 8)]
            for _ in range(2)
        ]
        ln_f = nn.LayerNorm(8)
        nn.Linear(8, 11, bias=False)  # the head draws a weight, then esper-lite ties it
        after = torch.rand(3)
    assert torch.equal(_draws_after(lambda: TransformerHostModule(host), 5), after)
    sd = module.state_dict()
    assert torch.equal(sd["tok_emb.weight"], tok.weight) and torch.equal(sd["head.weight"], tok.weight)
    assert torch.equal(sd["pos_emb.weight"], pos.weight)
    assert torch.equal(sd["layers.1.attn.c_attn.weight"], layers[1][1].weight)
    assert torch.equal(sd["layers.1.mlp.c_proj.bias"], layers[1][5].bias)
    assert torch.equal(sd["ln_f.weight"], ln_f.weight)


def test_build_module_seed_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = CNN.build_module(seed=11).state_dict()
    b = CNN.build_module(seed=11).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert _same_values(a, b)
    c = CNN.build_module(seed=12).state_dict()
    assert not torch.equal(a["blocks.0.conv.weight"], c["blocks.0.conv.weight"])
    skeleton = TFM.build_skeleton()
    assert all(t.device.type == "meta" for t in skeleton.state_dict().values())


# ---------------------------------------------------------------------------
# Segment composition
# ---------------------------------------------------------------------------

_HOSTS = [CNN, CNN_PARTIAL_POOL, TFM]


@pytest.mark.parametrize("host", _HOSTS, ids=["cnn", "cnn_partial_pool", "transformer"])
def test_every_single_split_is_bitwise_exact(host):
    module = _module(host)
    x = _input(host)
    with torch.no_grad():
        full = module(x)
        assert torch.equal(module(x, 0, None), full)
        assert torch.equal(module(x, 0, host.output_surface), full)
        for i in range(1, host.output_surface):
            h = module(x, 0, i)
            assert tuple(h.shape) == host.surface_shape(i, 2, 16 if host.topology == "cnn" else 10)
            assert torch.equal(module(h, i), full)


@given(
    host=st.sampled_from(_HOSTS),
    cuts=st.lists(st.integers(min_value=1, max_value=9), max_size=6, unique=True),
)
def test_chained_splits_are_bitwise_exact(host, cuts):
    module = _module(host)
    x = _input(host)
    points = [0, *sorted(c for c in cuts if c <= host.n_surfaces), host.output_surface]
    with torch.no_grad():
        h = x
        for a, b in itertools.pairwise(points):
            h = module(h, a, b)
        assert torch.equal(h, module(x))


@pytest.mark.parametrize("host", _HOSTS, ids=["cnn", "cnn_partial_pool", "transformer"])
def test_functional_call_on_meta_skeleton_strict(host):
    module = _module(host)
    skeleton = host.build_skeleton().eval()
    params = dict(module.named_parameters())
    buffers = {k: v.clone() for k, v in module.named_buffers()}
    x = _input(host)
    x_before = x.clone()
    with torch.no_grad():
        full = module(x)
        for i in range(1, host.output_surface):
            h = functional_call(skeleton, (params, buffers), (x,), {"start": 0, "stop": i}, strict=True)
            out = functional_call(skeleton, (params, buffers), (h,), {"start": i, "stop": None}, strict=True)
            assert torch.equal(out, full)
    assert torch.equal(x, x_before)
    # a full state_dict works once tied aliases are dropped
    sd = host.without_tied_aliases(module.state_dict())
    assert set(sd) == set(module.state_dict()) - set(host.tied_keys)
    with torch.no_grad():
        assert torch.equal(functional_call(skeleton, sd, (x,), strict=True), full)
    # a missing key fails loudly under strict=True
    partial = dict(params)
    partial.pop(next(iter(partial)))
    with pytest.raises(RuntimeError):
        functional_call(skeleton, (partial, buffers), (x,), strict=True)


def test_train_mode_batchnorm_updates_only_the_passed_buffers():
    module = CNN.build_module(seed=0)
    skeleton = CNN.build_skeleton()  # train mode
    params = dict(module.named_parameters())
    buffers = {k: v.clone() for k, v in module.named_buffers()}
    originals = {k: v.clone() for k, v in module.named_buffers()}
    functional_call(skeleton, (params, buffers), (_input(CNN, 4),), strict=True)
    assert buffers["blocks.0.bn.num_batches_tracked"].item() == 1
    assert not torch.equal(buffers["blocks.0.bn.running_mean"], originals["blocks.0.bn.running_mean"])
    assert _same_values(dict(module.named_buffers()), originals)


def test_vmap_eval_over_inputs_and_params_cnn():
    module = _module(CNN)
    skeleton = CNN.build_skeleton().eval()
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    x = _input(CNN)
    xs = torch.stack([x, 2 * x, -x])

    def run(inp):
        return functional_call(skeleton, (params, buffers), (inp,), {"start": 0, "stop": 3}, strict=True)

    with torch.no_grad():
        batched = vmap(run)(xs)
        for k in range(3):
            torch.testing.assert_close(batched[k], module(xs[k], 0, 3), rtol=0, atol=1e-6)
        stacked = {k: torch.stack([v, 0.5 * v]) for k, v in params.items()}
        out = vmap(lambda p: functional_call(skeleton, (p, buffers), (x,), strict=True))(stacked)
        assert out.shape == (2, 2, 5)
        torch.testing.assert_close(out[0], module(x), rtol=0, atol=1e-6)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_vmap_eval_over_inputs_transformer():
    module = _module(TFM)
    skeleton = TFM.build_skeleton().eval()
    params = dict(module.named_parameters())
    x = _input(TFM)
    xs = torch.stack([x, (x + 1) % TFM.vocab_size])
    with torch.no_grad():
        out = vmap(lambda inp: functional_call(skeleton, params, (inp,), strict=True))(xs)
        torch.testing.assert_close(out[1], module(xs[1]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("host", [CNN, TFM], ids=["cnn", "transformer"])
def test_compiles_fullgraph(host):
    module = _module(host)
    skeleton = host.build_skeleton().eval()
    params = dict(module.named_parameters())
    buffers = dict(module.named_buffers())
    mid = 2

    def segment(p, b, h):
        return functional_call(skeleton, (p, b), (h,), {"start": mid, "stop": None}, strict=True)

    compiled = torch.compile(segment, fullgraph=True, backend="eager")
    x = _input(host)
    with torch.no_grad():
        h = module(x, 0, mid)
        assert torch.equal(compiled(params, buffers, h), module(x))


def test_channels_last_gives_the_same_result():
    fast = CNNHost(n_blocks=3, base_channels=4, num_classes=5, memory_format="channels_last")
    plain = dataclasses.replace(fast, memory_format="contiguous_format")
    a, b = fast.build_module(seed=2).eval(), plain.build_module(seed=2).eval()
    assert _same_values(a.state_dict(), b.state_dict())
    x = _input(fast)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=1e-6)
        for i in range(1, fast.output_surface):
            ha, hb = a(x, 0, i), b(x, 0, i)
            assert ha.is_contiguous(memory_format=torch.channels_last)
            assert hb.is_contiguous()
            torch.testing.assert_close(ha, hb, rtol=0, atol=1e-6)
    # a torch.memory_format is accepted and stored by name
    assert CNNHost(memory_format=torch.contiguous_format).memory_format == "contiguous_format"
    assert CNNHost(memory_format=torch.channels_last) == CNNHost()


# ---------------------------------------------------------------------------
# Static-structure properties
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("host", [CNNHost(), CNN_PARTIAL_POOL, TransformerHost(), TFM])
def test_hosts_are_hashable_equal_by_value_and_pickle(host):
    twin = type(host)(**{f.name: getattr(host, f.name) for f in dataclasses.fields(host)})
    assert twin == host and hash(twin) == hash(host) and twin is not host
    assert pickle.loads(pickle.dumps(host)) == host
    assert copy.deepcopy(host) == host
    assert {host: 1}[twin] == 1
    assert pickle.loads(pickle.dumps(host.injection_points)) == host.injection_points
    with pytest.raises(dataclasses.FrozenInstanceError):
        host.topology_name = "x"  # type: ignore[attr-defined]
    first = dataclasses.fields(host)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(host, first, 1)


def test_different_hosts_differ():
    assert CNNHost() != CNNHost(n_blocks=4)
    assert CNNHost() != CNNHost(memory_format="contiguous_format")
    assert TransformerHost() != TransformerHost(dropout=0.0)
    assert CNNHost() != TransformerHost()


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (CNNHost, {"n_blocks": 1}, "n_blocks must be >= 2"),
        (CNNHost, {"n_blocks": 2.0}, "n_blocks must be an int"),
        (CNNHost, {"base_channels": 0}, "base_channels must be >= 1"),
        (CNNHost, {"num_classes": True}, "num_classes must be an int"),
        (CNNHost, {"pool_layers": -1}, "pool_layers must be >= 0"),
        (CNNHost, {"kernel_size": 0}, "kernel_size must be >= 1"),
        (CNNHost, {"memory_format": "nhwc"}, "memory_format must be one of"),
        (CNNHost, {"memory_format": torch.preserve_format}, "memory_format must be one of"),
        (TransformerHost, {"n_layer": 5}, r"n_layer \(5\) must be divisible by num_segments \(3\)"),
        (TransformerHost, {"n_embd": 10, "n_head": 3}, r"n_embd \(10\) must be divisible by n_head \(3\)"),
        (TransformerHost, {"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        (TransformerHost, {"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        (TransformerHost, {"dropout": "0.1"}, "dropout must be a float"),
        (TransformerHost, {"vocab_size": 0}, "vocab_size must be >= 1"),
        (TransformerHost, {"num_segments": 0}, "num_segments must be >= 1"),
    ],
)
def test_bad_constructor_arguments(cls, kwargs, match):
    with pytest.raises(HostConfigError, match=match) as info:
        cls(**kwargs)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("host", [CNN, TFM], ids=["cnn", "transformer"])
def test_bad_start_stop(host):
    module = _module(host)
    x = _input(host)
    n = host.n_surfaces
    for start, stop in [(1, 1), (2, 1), (0, n + 2), (-1, 2), (n + 1, None)]:
        with pytest.raises(SegmentRangeError, match=r"need 0 <= start < stop"):
            module(x, start, stop)
    with pytest.raises(TypeError, match="Python int"):
        module(x, True)
    with pytest.raises(TypeError, match="Python int"):
        module(x, 0, torch.tensor(2))


def test_bad_inputs_cnn():
    module = _module(CNN)
    with pytest.raises(ShapeError, match="4-D"):
        module(torch.zeros(3, 16, 16))
    with pytest.raises(ShapeError, match="3 channels"):
        module(torch.zeros(2, 4, 16, 16))
    with pytest.raises(ShapeError, match=r"surface 2 \(r1c0\) expects 4 channels"):
        module(torch.zeros(2, 8, 8, 8), 2)
    with pytest.raises(ShapeError, match="too small"):
        module(torch.zeros(2, 3, 4, 4))
    with pytest.raises(DTypeError, match="floating-point"):
        module(torch.zeros(2, 3, 16, 16, dtype=torch.long))


def test_bad_inputs_transformer():
    module = _module(TFM)
    with pytest.raises(ShapeError, match=r"token ids \[B, T\]"):
        module(torch.zeros(2, 3, 4, dtype=torch.long))
    with pytest.raises(DTypeError, match="integer token ids"):
        module(torch.zeros(2, 4))
    with pytest.raises(ShapeError, match="exceeds block_size 12"):
        module(torch.zeros(2, 13, dtype=torch.long))
    with pytest.raises(ShapeError, match=r"\[B, T, 16\]"):
        module(torch.zeros(2, 4, 8), 1)


def test_example_inputs():
    g = torch.Generator().manual_seed(0)
    img = CNNHost(in_channels=1).example_input(4, g, image_size=28)
    assert img.shape == (4, 1, 28, 28) and img.dtype == torch.float32
    tok = TFM.example_input(3, g)
    assert tok.shape == (3, 12) and tok.dtype == torch.long
    assert int(tok.min()) >= 0 and int(tok.max()) < TFM.vocab_size
