"""Tests for Blueprint and the immutable Registry (esper_func.blueprints.registry)."""

from __future__ import annotations

import copy
import io
import multiprocessing
import pickle
from collections.abc import Mapping

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from esper_func.blueprints import Blueprint, Registry, default_registry
from esper_func.errors import BlueprintExistsError, UnknownBlueprintError, UnknownTopologyError

CNN_NAMES = (
    "noop", "norm", "attention", "depthwise",
    "bottleneck", "conv_small", "conv_light", "conv_heavy",
)  # fmt: skip
TF_NAMES = ("noop", "norm", "lora", "lora_large", "attention", "flex_attention", "mlp_small", "mlp")


def build_tiny(dim: int) -> nn.Module:
    """A module-level build function, as Blueprint requires."""
    return nn.Linear(dim, dim)


def bp(name: str, topology: str = "cnn", estimate: int = 10) -> Blueprint:
    return Blueprint(name, topology, build_tiny, estimate, f"test blueprint {name}")


# --- Blueprint ----------------------------------------------------------------


def test_blueprint_key_frozen_hashable_picklable() -> None:
    b = bp("tiny")
    assert b.key == "cnn:tiny"
    with pytest.raises(AttributeError):
        b.name = "other"  # type: ignore[misc]
    assert hash(b) == hash(bp("tiny")) and b == bp("tiny")
    assert b != bp("tiny", estimate=11)
    assert pickle.loads(pickle.dumps(b)) == b


def test_blueprint_unknown_topology_lists_allowed() -> None:
    with pytest.raises(UnknownTopologyError, match=r"'rnn'.*cnn.*transformer"):
        bp("tiny", topology="rnn")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, ValueError),
        ({"name": "a:b"}, ValueError),
        ({"param_estimate": -1}, ValueError),
        ({"param_estimate": 1.5}, ValueError),
        ({"build": "not callable"}, TypeError),
    ],
)
def test_blueprint_validates_fields(kwargs: dict[str, object], error: type[Exception]) -> None:
    fields: dict[str, object] = {
        "name": "tiny",
        "topology": "cnn",
        "build": build_tiny,
        "param_estimate": 1,
    }
    fields.update(kwargs)
    with pytest.raises(error):
        Blueprint(**fields)  # type: ignore[arg-type]


# --- immutability ----------------------------------------------------------------


def test_registry_is_a_mapping_without_mutating_methods() -> None:
    reg = default_registry()
    assert isinstance(reg, Mapping)
    mutators = {
        "__setitem__", "__delitem__", "register", "unregister", "add", "update", "pop",
        "popitem", "clear", "setdefault", "reset", "remove", "discard",
    }  # fmt: skip
    assert not mutators & set(dir(reg))


def test_item_assignment_and_deletion_raise_type_error() -> None:
    reg = default_registry()
    with pytest.raises(TypeError):
        reg["cnn:tiny"] = bp("tiny")  # type: ignore[index]
    with pytest.raises(TypeError):
        del reg["cnn:noop"]  # type: ignore[attr-defined]
    assert len(reg) == 16


def test_attributes_cannot_be_set_or_deleted() -> None:
    reg = Registry.of(bp("tiny"))
    with pytest.raises(AttributeError, match="immutable"):
        reg._entries = {}  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        reg.anything = 1  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="immutable"):
        del reg._entries
    with pytest.raises(TypeError):
        reg._entries["cnn:other"] = bp("other")  # type: ignore[index]
    assert list(reg) == ["cnn:tiny"]


def test_of_rejects_duplicates_and_non_blueprints() -> None:
    with pytest.raises(BlueprintExistsError, match="cnn:tiny"):
        Registry.of(bp("tiny"), bp("tiny", estimate=3))
    with pytest.raises(TypeError):
        Registry.of("cnn:tiny")  # type: ignore[arg-type]


# --- lookup -------------------------------------------------------------------------


def test_get_and_getitem() -> None:
    reg = default_registry()
    assert reg.get("cnn", "conv_light") is reg["cnn:conv_light"]
    assert reg.get("transformer", "lora").name == "lora"
    assert "cnn:noop" in reg and "cnn:lora" not in reg and 3 not in reg


def test_unknown_name_lists_available_names_for_that_topology() -> None:
    reg = default_registry()
    with pytest.raises(UnknownBlueprintError) as info:
        reg.get("cnn", "lora")
    message = str(info.value)
    assert "'lora'" in message
    for name in CNN_NAMES:
        assert repr(name) in message
    assert "mlp_small" not in message  # transformer names are not offered for cnn
    with pytest.raises(KeyError):  # UnknownBlueprintError is a KeyError too
        reg["transformer:conv_light"]
    with pytest.raises(UnknownBlueprintError, match="flex_attention"):
        reg["transformer:conv_light"]
    with pytest.raises(UnknownBlueprintError, match="topology:name"):
        reg["conv_light"]


def test_unknown_topology_raises() -> None:
    reg = default_registry()
    with pytest.raises(UnknownTopologyError, match="cnn"):
        reg.get("rnn", "noop")
    with pytest.raises(UnknownTopologyError, match="cnn"):
        reg.names("rnn")
    with pytest.raises(UnknownTopologyError, match="cnn"):
        reg.without("rnn", "noop")


def test_names_sorted_by_estimate_then_name() -> None:
    reg = Registry.of(
        bp("b", estimate=5), bp("a", estimate=5), bp("z", estimate=1), bp("m", estimate=9)
    )
    assert reg.names("cnn") == ("z", "a", "b", "m")
    assert reg.names("transformer") == ()
    with pytest.raises(UnknownBlueprintError, match=r"\(none\)"):
        reg.get("transformer", "x")


def test_default_registry_names_order() -> None:
    reg = default_registry()
    assert reg.names("cnn") == (
        "noop", "norm", "attention", "conv_small",
        "bottleneck", "depthwise", "conv_light", "conv_heavy",
    )  # fmt: skip
    assert reg.names("transformer") == (
        "noop", "norm", "lora", "lora_large", "attention", "flex_attention", "mlp_small", "mlp",
    )  # fmt: skip
    assert default_registry() is reg  # cached; safe because immutable


def test_iteration_is_sorted_by_key() -> None:
    reg = default_registry()
    assert list(reg) == sorted(reg)
    assert dict(reg) == {k: reg[k] for k in reg}


# --- derivation ---------------------------------------------------------------------


def test_with_blueprint_returns_new_registry_and_leaves_original() -> None:
    reg = default_registry()
    before = dict(reg)
    bigger = reg.with_blueprint(bp("tiny"))
    assert bigger is not reg and len(bigger) == 17 and bigger.get("cnn", "tiny") == bp("tiny")
    assert dict(reg) == before and "cnn:tiny" not in reg
    assert bigger.names("cnn")[0] == "noop" and "tiny" in bigger.names("cnn")


def test_with_blueprint_on_taken_name_raises() -> None:
    reg = default_registry()
    taken = Blueprint("conv_light", "cnn", build_tiny, 1)
    with pytest.raises(BlueprintExistsError, match="cnn:conv_light"):
        reg.with_blueprint(taken)
    # The documented way to replace one:
    replaced = reg.without("cnn", "conv_light").with_blueprint(taken)
    assert replaced["cnn:conv_light"] is taken and reg["cnn:conv_light"] is not taken


def test_without_returns_new_registry_and_leaves_original() -> None:
    reg = default_registry()
    smaller = reg.without("transformer", "mlp")
    assert "transformer:mlp" not in smaller and "transformer:mlp" in reg
    assert len(smaller) == 15 and len(reg) == 16
    with pytest.raises(UnknownBlueprintError, match="mlp_small"):
        smaller.without("transformer", "mlp")


# --- value semantics ----------------------------------------------------------------


def test_equality_and_hash_by_content() -> None:
    a = Registry.of(bp("x"), bp("y", "transformer"))
    b = Registry.of(bp("y", "transformer"), bp("x"))
    assert a == b and hash(a) == hash(b)
    assert a != Registry.of(bp("x"))
    assert a != dict(a)  # a Registry is only equal to a Registry
    assert len({a, b, Registry.of()}) == 2
    full = default_registry()
    assert full.without("cnn", "noop").with_blueprint(full["cnn:noop"]) == full


def test_pickle_and_copy_round_trip() -> None:
    reg = default_registry()
    for clone in (pickle.loads(pickle.dumps(reg)), copy.copy(reg), copy.deepcopy(reg)):
        assert clone == reg and hash(clone) == hash(reg)
        assert isinstance(clone, Registry)


def test_repr_is_readable() -> None:
    text = repr(Registry.of(bp("b", estimate=2), bp("a", estimate=1)))
    assert text == "Registry(cnn=(a, b))"
    assert "transformer=(noop, norm, lora" in repr(default_registry())


blueprints_strategy = st.lists(
    st.builds(
        bp,
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.sampled_from(["cnn", "transformer"]),
        st.integers(0, 3),
    ),
    unique_by=lambda b: b.key,
    max_size=8,
)


@given(blueprints=blueprints_strategy, data=st.data())
def test_order_independence_and_round_trips(
    blueprints: list[Blueprint], data: st.DataObject
) -> None:
    reg = Registry.of(*blueprints)
    shuffled = data.draw(st.permutations(blueprints))
    assert Registry.of(*shuffled) == reg
    assert pickle.loads(pickle.dumps(reg)) == reg
    for b in blueprints:
        assert reg.without(b.topology, b.name).with_blueprint(b) == reg
    for topology in ("cnn", "transformer"):
        names = reg.names(topology)
        keys = [(reg.get(topology, n).param_estimate, n) for n in names]
        assert keys == sorted(keys)


# --- crossing a process boundary ------------------------------------------------------


def _build_in_worker(registry: Registry, topology: str, name: str, dim: int, seed: int) -> bytes:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        module = registry.get(topology, name).build(dim)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getvalue()


def test_spawned_worker_builds_the_same_seed() -> None:
    registry = default_registry()
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        payload = pool.apply_async(
            _build_in_worker, (registry, "cnn", "bottleneck", 24, 1234)
        ).get(timeout=120)
    local_payload = _build_in_worker(registry, "cnn", "bottleneck", 24, 1234)
    remote = torch.load(io.BytesIO(payload), weights_only=True)
    local = torch.load(io.BytesIO(local_payload), weights_only=True)
    assert list(remote) == list(local)
    for key in local:
        assert torch.equal(remote[key], local[key]), key
