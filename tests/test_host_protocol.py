"""The host protocol: a host of your own (and its topology) works everywhere a built-in host does.

The third host here implements :class:`esper_func.hosts.Host` directly (no
``HostBase``), on a topology whose features are ``[B, C, L]`` (channels
first, one pooled dimension), with an optional dropout drawn from the
``rng`` the forward is given. The example of ``docs/hosts.md`` (an MLP on a
tabular data set) runs at the end.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import itertools
import pickle
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import esper_func as ef
from esper_func.errors import (
    HostProtocolError,
    ImmutableError,
    InvalidArgumentError,
    InvalidTypeError,
    UnknownHostError,
    UnknownTopologyError,
)
from esper_func.hosts import (
    BUILTIN_HOSTS,
    BUILTIN_TOPOLOGIES,
    CNN_TOPOLOGY,
    TRANSFORMER_TOPOLOGY,
    build_seeded,
    check_host,
    check_span,
    resolve_topology,
)
from esper_func.lifecycle import state_from_dict, state_to_dict
from esper_func.model import model_from_dict, model_to_dict
from esper_func.slot import GateNetwork, is_isolated
from esper_func.train import init_train_state, train_step

ROOT = Path(__file__).resolve().parent.parent
S = ef.SeedStage
A = ef.AlphaAlgorithm

# --------------------------------------------------------------------------- a third host, protocol only

SIGNAL = ef.Topology("signal", layout="BCL", isolate_blending=False, probe_batch=2, probe_size=6)


class SignalModule(nn.Module):
    """Conv1d stages over ``[B, C, L]`` signals; surface i is stage i's output, the last one logits."""

    def __init__(self, spec: SignalHost) -> None:
        super().__init__()
        self.slot_ids = spec.slot_ids
        self.in_channels = spec.in_channels
        self.p = spec.dropout
        widths = [spec.in_channels] + [spec.channels] * spec.stages
        self.stages = nn.ModuleList(nn.Conv1d(a, b, 3, padding=1) for a, b in itertools.pairwise(widths))
        self.head = nn.Linear(spec.channels, spec.num_classes)

    def forward(self, x: Tensor, start: int = 0, stop: int | None = None, rng: torch.Generator | None = None) -> Tensor:
        n = len(self.stages)
        start, stop = check_span(start, stop, n, self.slot_ids)
        if start == 0 and (x.ndim != 3 or x.shape[1] != self.in_channels):
            raise ef.ShapeError(f"SignalHost takes [B, {self.in_channels}, L]; got {tuple(x.shape)}")
        for stage in self.stages[start : min(stop, n)]:
            x = F.gelu(stage(x))
            if self.training and self.p > 0 and rng is not None:
                keep = torch.rand(x.shape, generator=rng, device=x.device) >= self.p
                x = x * keep.to(x.dtype) / (1 - self.p)
        return self.head(x.mean(dim=2)) if stop == n + 1 else x


@dataclasses.dataclass(frozen=True)
class SignalHost:
    """Implements every member of the host protocol itself."""

    in_channels: int = 2
    channels: int = 6
    stages: int = 3
    num_classes: int = 3
    dropout: float = 0.0

    topology: ClassVar[ef.Topology] = SIGNAL

    @property
    def slot_ids(self) -> tuple[str, ...]:
        return tuple(f"s{i}" for i in range(self.stages))

    def slot_channels(self, slot_id: str) -> int:
        self.surface_index(slot_id)
        return self.channels

    def surface_index(self, slot_id: str) -> int:
        if slot_id not in self.slot_ids:
            raise ef.UnknownSlotError(f"no slot {slot_id!r}; slots: {list(self.slot_ids)}")
        return self.slot_ids.index(slot_id) + 1

    @property
    def tied_keys(self) -> Mapping[str, str]:
        return {}

    @property
    def draws_randomness(self) -> bool:
        return self.dropout > 0

    def build_module(self, *, seed: int | None = None, device: torch.device | str | None = None) -> nn.Module:
        return build_seeded(lambda: SignalModule(self), seed=seed, device=device)

    def example_input(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        fork = torch.Generator().manual_seed(0)
        if generator is not None:
            fork.set_state(generator.get_state())
        return torch.randn(batch, self.in_channels, 10, generator=fork)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignalHost:
        return cls(**data)


class SmoothSeed(nn.Module):
    """A residual depthwise smoothing of ``[B, C, L]`` features (no buffers)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, padding=1, groups=dim)
        self.mix = nn.Conv1d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.mix(F.gelu(self.conv(x)))


def build_smooth(dim: int) -> nn.Module:
    return SmoothSeed(dim)


def build_noop(dim: int) -> nn.Module:
    return nn.Identity()


REGISTRY = ef.Registry.of(
    ef.Blueprint("smooth", SIGNAL, build_smooth, 50, "residual depthwise conv"),
    ef.Blueprint("noop", SIGNAL, build_noop, 0, "identity"),
    hosts=(SignalHost,),
)
HOST = SignalHost()


def seeded_model(host: SignalHost = HOST, stage: ef.SeedStage = S.BLENDING, algorithm: ef.AlphaAlgorithm = A.ADD):
    model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(0))
    for i, sid in enumerate(host.slot_ids[:2]):
        model, params = ef.add_seed(
            model, params, sid, REGISTRY, "smooth", algorithm=algorithm, stage=stage,
            generator=torch.Generator().manual_seed(10 + i),
        )
    return model, params, buffers


def x_batch(batch: int = 4) -> Tensor:
    return HOST.example_input(batch, torch.Generator().manual_seed(3))


# --------------------------------------------------------------------------- the third host works


def test_the_third_host_passes_the_protocol_check_and_is_a_host() -> None:
    check_host(HOST)
    assert isinstance(HOST, ef.Host) and isinstance(ef.CNNHost(), ef.Host)
    assert HOST.topology == "signal" and REGISTRY.topology("signal") is SIGNAL
    assert REGISTRY.names(SIGNAL) == ("noop", "smooth") and REGISTRY.names("signal") == ("noop", "smooth")


@pytest.mark.parametrize("algorithm", [A.ADD, A.MULTIPLY, A.GATE])
def test_build_model_predict_and_apply(algorithm: ef.AlphaAlgorithm) -> None:
    model, params, buffers = seeded_model(algorithm=algorithm)
    x = x_batch()
    zero = torch.zeros(model.n_slots)
    out = ef.predict(model, params, buffers, zero, x)
    assert out.shape == (4, HOST.num_classes)
    bare = HOST.build_module().eval()
    bare.load_state_dict(params["host"])
    assert torch.allclose(out, bare(x), atol=1e-6)  # alphas 0: exactly the host
    alphas = torch.tensor([0.7, 0.3, 0.0])
    blended = ef.predict(model, params, buffers, alphas, x)
    if algorithm != A.MULTIPLY:  # a MULTIPLY seed starts as the identity (its last layer is zero)
        assert not torch.allclose(blended, out)
    per_sample = alphas.expand(4, -1)
    assert torch.allclose(ef.predict(model, params, buffers, per_sample, x), blended, atol=1e-6)
    out_train, new_buffers = ef.apply(model, params, buffers, alphas, x, train=True)
    assert out_train.shape == blended.shape and new_buffers == {"host": {}}


def test_gate_network_pools_the_topologys_free_dimensions() -> None:
    gate = GateNetwork(6, SIGNAL)
    assert gate._pool_dims == (2,)
    assert gate(torch.randn(5, 6, 7)).shape == (5,)
    mlp = ef.Topology("vector", layout="BC", isolate_blending=True)
    flat = GateNetwork(6, mlp)
    assert flat._pool_dims == () and flat(torch.randn(5, 6)).shape == (5,)


def test_isolation_follows_the_topology() -> None:
    assert not is_isolated(SIGNAL, S.BLENDING) and is_isolated(SIGNAL, S.TRAINING)
    state = ef.germinate("s0", "smooth", topology=SIGNAL)
    state, _, _ = ef.advance(state, ef.Gates(permissive=True), S.TRAINING)
    assert state.isolate_gradients and state.topology is SIGNAL
    # In BLENDING the seed reads the live host features: the host gets a gradient through the seed.
    model, params, buffers = seeded_model(stage=S.BLENDING)
    host_leaf = params["host"]["stages.0.weight"].detach().requires_grad_()
    params = {**params, "host": {**params["host"], "stages.0.weight": host_leaf}}
    seed_out = ef.predict(model, params, buffers, torch.tensor([1.0, 0.0, 0.0]), x_batch()).sum()
    (grad,) = torch.autograd.grad(seed_out, host_leaf)
    assert grad.abs().sum() > 0


def test_train_step_updates_the_seeds_and_the_host() -> None:
    model, params, buffers = seeded_model(stage=S.TRAINING)
    optimizer = ef.optim.sgd(0.1)
    seeds = {}
    for sid in model.seeded:
        state = ef.germinate(sid, "smooth", topology=model.host.topology)
        seeds[sid], _, _ = ef.advance(state, ef.Gates(permissive=True), S.TRAINING)
    state = init_train_state(model, params, buffers, optimizer=optimizer, seeds=seeds)
    y = torch.tensor([0, 1, 2, 0])
    new, metrics = train_step(model, state, (x_batch(), y), optimizer=optimizer, loss_fn=F.cross_entropy)
    assert torch.isfinite(metrics.loss)
    assert not torch.equal(new.params["host"]["head.weight"], params["host"]["head.weight"])
    assert not torch.equal(new.params["slots"]["s0"]["seed"]["mix.weight"], params["slots"]["s0"]["seed"]["mix.weight"])
    assert torch.equal(state.params["host"]["head.weight"], params["host"]["head.weight"])  # pure


def test_a_host_that_draws_randomness_gets_a_generator() -> None:
    host = SignalHost(dropout=0.5)
    model, params, buffers = ef.build_model(host, host.slot_ids, generator=torch.Generator().manual_seed(0))
    x, alphas = x_batch(), torch.zeros(model.n_slots)
    a, _ = ef.apply(model, params, buffers, alphas, x, train=True, rng=torch.Generator().manual_seed(1))
    b, _ = ef.apply(model, params, buffers, alphas, x, train=True, rng=torch.Generator().manual_seed(1))
    c, _ = ef.apply(model, params, buffers, alphas, x, train=True, rng=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    quiet = ef.build_model(HOST, HOST.slot_ids, generator=torch.Generator().manual_seed(0))
    d, _ = ef.apply(*quiet, alphas, x, train=True, rng=torch.Generator().manual_seed(2))
    assert torch.equal(d, ef.predict(*quiet, alphas, x))  # no dropout, no generator needed


def test_sweep_equals_stacked_predictions() -> None:
    model, params, buffers = seeded_model(algorithm=A.GATE)
    grid = ef.alpha_grid("full_factorial", model.n_slots) * torch.tensor([0.8, 0.4, 1.0])
    x = x_batch(3)
    swept = ef.sweep(model, params, buffers, x, grid)
    stacked = torch.stack([ef.predict(model, params, buffers, row, x) for row in grid])
    assert torch.allclose(swept, stacked, atol=1e-5)
    values = (swept.argmax(-1) == 0).double().mean(-1)
    assert ef.shapley(ef.alpha_grid("full_factorial", model.n_slots), values).mean.shape == (3,)


def test_structure_and_states_round_trip_through_checkpoints() -> None:
    model, _, _ = seeded_model()
    data = model_to_dict(model)
    assert data["host"] == {"type": "SignalHost", **HOST.to_dict()}
    assert model_from_dict(data, REGISTRY) == model
    with pytest.raises(UnknownHostError, match=r"'SignalHost'.*with_host"):
        model_from_dict(data, ef.Registry.of(*REGISTRY.values()))
    state = ef.germinate("s0", "smooth", topology=SIGNAL)
    encoded = state_to_dict(state)
    assert encoded["topology"] == SIGNAL.to_dict()  # a topology of your own is stored with its rules
    back = state_from_dict(encoded)
    assert back == state and back.topology.rules() == SIGNAL.rules()
    assert state_to_dict(ef.germinate("r0c0", "norm"))["topology"] == "cnn"  # built-in: the name, as before


# model_to_dict() of a CNN model as esper_func wrote it before hosts became a protocol.
OLD_STRUCTURE = {
    "host": {"type": "CNNHost", "num_classes": 4, "n_blocks": 2, "base_channels": 4, "pool_layers": None,
             "memory_format": "contiguous_format", "kernel_size": 3, "in_channels": 1},
    "slot_order": ["r0c0", "r1c0"],
    "slots": [{"topology": "cnn", "blueprint": "norm", "channels": 4, "algorithm": 1, "gated": False,
               "blueprint_kwargs": []}, None],
    "stages": [4, 1],
}  # fmt: skip


def test_structures_written_before_the_protocol_load_and_are_written_the_same() -> None:
    model = model_from_dict(OLD_STRUCTURE, ef.default_registry())
    assert model.host == ef.CNNHost(in_channels=1, num_classes=4, n_blocks=2, base_channels=4, memory_format="contiguous_format")
    assert model.slot("r0c0").topology is CNN_TOPOLOGY and model.stage("r0c0") == S.BLENDING
    assert model_to_dict(model) == OLD_STRUCTURE


def test_esper_lite_layout_state_dicts_work_for_the_third_host() -> None:
    model, params, buffers = seeded_model()
    sd = ef.to_state_dict(model, params, buffers)
    assert "host.stages.0.weight" in sd and "seed_slots.s0.seed.conv.weight" in sd
    params2, buffers2 = ef.from_state_dict(model, sd)
    x, alphas = x_batch(), torch.tensor([0.5, 0.5, 0.0])
    assert torch.equal(ef.predict(model, params, buffers, alphas, x), ef.predict(model, params2, buffers2, alphas, x))


def test_a_host_spec_and_its_model_pickle_and_deepcopy() -> None:
    model, _, _ = seeded_model()
    assert pickle.loads(pickle.dumps(model)) == model and copy.deepcopy(model) == model
    assert pickle.loads(pickle.dumps(REGISTRY)) == REGISTRY


@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_esper_func_testing_draws_models_and_inputs_for_the_third_host(data: st.DataObject) -> None:
    import esper_func.testing as eft

    drawn = data.draw(eft.models(host=HOST, registry=REGISTRY, max_seeds=2))
    x = data.draw(eft.inputs(drawn.model))
    alphas = torch.full((drawn.model.n_slots,), 0.5)
    out = ef.predict(drawn.model, drawn.params, drawn.buffers, alphas, x)
    assert out.shape == (x.shape[0], HOST.num_classes) and torch.isfinite(out).all()
    eft.assert_pure(ef.predict, drawn.model, drawn.params, drawn.buffers, alphas, x)


def test_the_key_layout_moved_to_interop_and_is_still_importable_from_hosts() -> None:
    from esper_func import hosts, interop
    from esper_func.hosts import HOST_PREFIX, seed_key  # the old import path

    assert HOST_PREFIX is interop.HOST_PREFIX and seed_key is interop.seed_key
    assert interop.seed_key("r0c0", "w") == "seed_slots.r0c0.seed.w"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        hosts.nothing  # noqa: B018


# --------------------------------------------------------------------------- protocol errors


class NotAHost:
    topology = SIGNAL


@dataclasses.dataclass(frozen=True)
class StrTopologyHost(SignalHost):
    topology: ClassVar[Any] = "signal"


@dataclasses.dataclass(frozen=True)
class UnhashableHost(SignalHost):
    __hash__ = None  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True)
class MisnumberedHost(SignalHost):
    def surface_index(self, slot_id: str) -> int:
        return 1


@dataclasses.dataclass(frozen=True)
class ZeroWidthHost(SignalHost):
    def slot_channels(self, slot_id: str) -> int:
        return 0


class NoSpanModule(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x


@dataclasses.dataclass(frozen=True)
class NoSpanHost(SignalHost):
    def build_module(self, *, seed: int | None = None, device: torch.device | str | None = None) -> nn.Module:
        return build_seeded(NoSpanModule, seed=seed, device=device)


@pytest.mark.parametrize(
    ("host", "pattern"),
    [
        (NotAHost(), r"NotAHost is not an esper_func host: it has no 'slot_ids'"),
        (object(), r"object is not an esper_func host: it has no 'topology'"),
        (StrTopologyHost(), r"topology must be an esper_func Topology .*got str 'signal'"),
        (UnhashableHost(), r"not hashable.*frozen dataclass"),
        (MisnumberedHost(), r"surface_index\('s1'\) is 1, but slot_ids\[1\] must be surface 2"),
        (ZeroWidthHost(), r"slot_channels\('s0'\) must be an int >= 1; got 0"),
        (NoSpanHost(), r"forward\(x\).*no parameter\(s\) \['start', 'stop', 'rng'\]"),
    ],
)
def test_a_host_that_breaks_the_protocol_is_refused_clearly(host: Any, pattern: str) -> None:
    with pytest.raises(HostProtocolError, match=pattern) as info:
        ef.build_model(host, ())
    assert isinstance(info.value, ef.EsperFuncError) and isinstance(info.value, TypeError)
    assert ef.HostProtocolError is HostProtocolError
    assert "esper_func.HostBase" in str(info.value)  # the message says how to fix it


@dataclasses.dataclass(frozen=True)
class TypedHost(SignalHost):
    type: str = "x"


def test_a_host_whose_spec_uses_the_type_key_cannot_be_checkpointed() -> None:
    model, _, _ = ef.build_model(TypedHost(), ())
    with pytest.raises(HostProtocolError, match="'type' entry"):
        model_to_dict(model)


def test_interop_refuses_a_non_host() -> None:
    with pytest.raises(HostProtocolError):
        ef.from_esper_lite({}, NotAHost())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"name": "", "layout": "BC"}, InvalidArgumentError, "non-empty"),
        ({"name": "a:b", "layout": "BC"}, InvalidArgumentError, "without ':'"),
        ({"name": 3, "layout": "BC"}, InvalidTypeError, "must be a str"),
        ({"name": "t", "layout": "CB"}, InvalidArgumentError, "batch first"),
        ({"name": "t", "layout": "BHW"}, InvalidArgumentError, "exactly one channel"),
        ({"name": "t", "layout": "BCC"}, InvalidArgumentError, "once"),
        ({"name": "t", "layout": "bc"}, InvalidArgumentError, "upper-case"),
        ({"name": "t", "layout": "BC", "probe_size": 0}, InvalidArgumentError, "probe_size must be an int >= 1"),
        ({"name": "t", "layout": "BC", "isolate_blending": 1}, InvalidTypeError, "isolate_blending must be a bool"),
    ],
)
def test_a_malformed_topology_is_refused(kwargs: dict[str, Any], error: type[Exception], pattern: str) -> None:
    kwargs = {"isolate_blending": True, **kwargs}
    name = kwargs.pop("name")
    with pytest.raises(error, match=pattern):
        ef.Topology(name, **kwargs)


def test_topologies_of_one_name_must_agree() -> None:
    with pytest.raises(UnknownTopologyError, match="reuses the name of the built-in"):
        resolve_topology(ef.Topology("cnn", layout="BCHW", isolate_blending=False))
    other = ef.Topology("signal", layout="BCL", isolate_blending=True)
    with pytest.raises(InvalidArgumentError, match="a topology name stands for one set of rules"):
        REGISTRY.with_blueprint(ef.Blueprint("other", other, build_smooth, 1))
    with pytest.raises(UnknownTopologyError, match="is not the registry's topology 'signal'"):
        REGISTRY.names(other)
    with pytest.raises(UnknownTopologyError, match=r"unknown topology 'signal'.*Topology"):
        ef.Blueprint("smooth", "signal", build_smooth, 1)  # a new topology is given as a Topology, not a name
    with pytest.raises(UnknownTopologyError, match=r"unknown topology 'signal'.*Topology"):
        ef.germinate("s0", "smooth", topology="signal")
    assert ef.germinate("s0", "smooth", topology=SIGNAL).topology is SIGNAL


def test_registry_host_entries_are_checked() -> None:
    with pytest.raises(HostProtocolError, match="topology class attribute"):
        REGISTRY.with_host(dict)  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        REGISTRY.with_host(HOST)  # type: ignore[arg-type]
    impostor = type("CNNHost", (SignalHost,), {})
    with pytest.raises(InvalidArgumentError, match="name of the built-in CNNHost"):
        ef.default_registry().with_host(impostor)
    assert REGISTRY.with_host(SignalHost) is REGISTRY and ef.default_registry().with_host(ef.CNNHost) == ef.default_registry()
    assert REGISTRY.host_type("SignalHost") is SignalHost and REGISTRY.host_type("CNNHost") is ef.CNNHost
    assert "hosts=(SignalHost)" in repr(REGISTRY) and "signal=(noop, smooth)" in repr(REGISTRY)
    assert REGISTRY != ef.Registry.of(*REGISTRY.values())  # the hosts are part of the value


# --------------------------------------------------------------------------- topologies


def test_the_built_in_topologies_keep_esper_lites_rules() -> None:
    assert dict(BUILTIN_TOPOLOGIES) == {"cnn": CNN_TOPOLOGY, "transformer": TRANSFORMER_TOPOLOGY}
    assert set(BUILTIN_HOSTS) == {"CNNHost", "TransformerHost"}
    assert CNN_TOPOLOGY.pool_dims == (2, 3) and TRANSFORMER_TOPOLOGY.pool_dims == (1,)
    assert CNN_TOPOLOGY.probe_shape(16) == (1, 16, 32, 32) and TRANSFORMER_TOPOLOGY.probe_shape(16) == (2, 8, 16)
    assert CNN_TOPOLOGY.isolate_blending and not TRANSFORMER_TOPOLOGY.isolate_blending
    assert ef.CNNHost().topology is CNN_TOPOLOGY and ef.TransformerHost().topology is TRANSFORMER_TOPOLOGY
    assert ef.default_registry().get("cnn", "norm").topology is CNN_TOPOLOGY
    assert ef.germinate("r0c0", "norm", topology="transformer").topology is TRANSFORMER_TOPOLOGY


_LETTERS = "ADEFGHIJKLMNOPQRSTUVWXYZ"


@st.composite
def topologies(draw: st.DrawFn) -> ef.Topology:
    others = draw(st.lists(st.sampled_from(_LETTERS), unique=True, max_size=3))
    position = draw(st.integers(0, len(others)))
    layout = "B" + "".join([*others[:position], "C", *others[position:]])
    return ef.Topology(
        draw(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)),
        layout=layout,
        isolate_blending=draw(st.booleans()),
        probe_batch=draw(st.integers(1, 3)),
        probe_size=draw(st.integers(1, 5)),
    )


@settings(max_examples=40, deadline=None)
@given(topology=topologies(), channels=st.integers(1, 9))
def test_a_topology_is_its_name_and_describes_its_features(topology: ef.Topology, channels: int) -> None:
    name = topology.name
    assert topology == name and hash(topology) == hash(name) and type(name) is str
    assert {name: 1}[topology] == 1 and f"{topology}:x" == f"{name}:x" and repr(topology) == repr(name)
    assert pickle.loads(pickle.dumps(topology)).rules() == topology.rules()
    assert copy.deepcopy(topology) is topology
    assert ef.Topology.from_dict(topology.to_dict()).rules() == topology.rules()
    shape = topology.probe_shape(channels)
    assert len(shape) == topology.rank == len(topology.layout) and shape[topology.channel_dim] == channels
    assert shape[0] == topology.probe_batch
    assert set(topology.pool_dims) | {0, topology.channel_dim} == set(range(topology.rank))
    features = torch.zeros(shape)
    topology.check_features(features, channels)
    pooled = features.mean(dim=topology.pool_dims) if topology.pool_dims else features
    assert pooled.shape == (shape[0], channels)
    with pytest.raises(ef.ShapeError, match=re.escape(topology.feature_shape(channels + 1))):
        topology.check_features(features, channels + 1)
    with pytest.raises(ImmutableError):
        topology.layout = "BC"  # type: ignore[misc]


# --------------------------------------------------------------------------- the example of docs/hosts.md

EXAMPLE = ROOT / "docs" / "examples" / "tabular_mlp.py"
DOC = ROOT / "docs" / "hosts.md"


def _without_blank_lines(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def test_the_hosts_page_quotes_the_example_whole_and_in_order() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)
    source = EXAMPLE.read_text(encoding="utf-8")
    body = source[source.index('"""', 3) + 3 :]  # without the module docstring
    assert _without_blank_lines("\n".join(blocks)) == _without_blank_lines(body)


@pytest.fixture(scope="module")
def example() -> Any:
    spec = importlib.util.spec_from_file_location("esper_func_example_tabular_mlp", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look classes up by module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_the_example_grows_seeds_into_an_mlp_on_tabular_data(example: Any, tmp_path: Path) -> None:
    results = example.main(epochs=8, resume_at=6, directory=str(tmp_path / "run"))
    # The host learns: well above the majority class (about 0.63 on the held-out fifth).
    assert results["accuracy_after"] > results["majority_class"] + 0.2
    assert results["germinated"] >= 1 and "BLENDING" in results["stages_reached"]
    sweep = results["sweep_at_resume"]
    assert sweep["sweep_matches_predict"]
    assert any(alpha > 0 for alpha in sweep["alphas"].values())  # a seed was blended in when the sweep ran
    assert set(sweep["shapley"]) == {"r0c0", "r0c1", "r0c2"}
    assert results["resumed_equals_uninterrupted"]
