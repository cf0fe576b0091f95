"""Checkpoints: round trips, integrity checks, pickle refusal, atomic replacement."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import esper_func as ef
import esper_func.checkpoint as ckpt
from esper_func import optim
from esper_func.errors import CheckpointError, DTypeError

pytest.importorskip("safetensors", reason="checkpoints need safetensors (the 'demo' extra)")


def sample_tree() -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    return {
        "params": {
            "host": {
                "blocks.0.conv.weight": torch.randn(4, 3, 3, 3, generator=g),
                "blocks.0.bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
                "head.bias": torch.randn(10, generator=g, dtype=torch.float64),
            },
            "slots": {"r0c0": {"seed": {"proj.weight": torch.randn(2, 2, generator=g).to(torch.bfloat16)}}, "r1c0": {}},
        },
        "buffers": {"host": {}},
        "rng": torch.get_rng_state(),
        "flags": {"mask": torch.tensor([True, False, True]), "scalar": torch.tensor(3.5)},
        "bytes": torch.arange(5, dtype=torch.uint8),
        "empty": torch.zeros(0, 3),
        "weird%.keys": {"": torch.ones(1), "__metadata__": torch.ones(2), "a..b": torch.ones(3), "%2E": torch.ones(4)},
    }


def assert_same_tree(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
        return
    assert isinstance(a, dict) and isinstance(b, dict)
    assert list(a) == list(b)  # same keys, same order
    for k in a:
        assert_same_tree(a[k], b[k])


META = {"epoch": 3, "config": {"lr": 0.01, "slots": ["r0c0", "r1c0"]}, "note": None, "ok": True}


def test_round_trip(tmp_path: Path) -> None:
    tree = sample_tree()
    path = ckpt.save_checkpoint(tmp_path, tensors=tree, meta=META)
    assert path.parent == tmp_path and path.name == "ckpt-000000"
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "tensors.safetensors"]
    doc = json.loads((path / "meta.json").read_text())
    assert doc["format"] == "esper_func.checkpoint" and doc["schema_version"] == 1
    assert doc["tensors_sha256"] == hashlib.sha256((path / "tensors.safetensors").read_bytes()).hexdigest()
    tensors, meta = ckpt.load_checkpoint(tmp_path)
    assert_same_tree(tensors, tree)
    assert meta == META
    # loading a specific checkpoint directory, or its meta.json, works too
    assert_same_tree(ckpt.load_checkpoint(path)[0], tree)
    assert_same_tree(ckpt.load_checkpoint(path / "meta.json")[0], tree)


def test_save_does_not_touch_inputs(tmp_path: Path) -> None:
    tree = sample_tree()
    param = torch.ones(3, requires_grad=True)
    tree["params"]["host"]["p"] = param
    before = {k: v for k, v in tree.items()}
    ckpt.save_checkpoint(tmp_path, tensors=tree, meta=META)
    assert tree == before and tree["params"]["host"]["p"] is param and param.requires_grad
    loaded, _ = ckpt.load_checkpoint(tmp_path)
    assert not loaded["params"]["host"]["p"].requires_grad


key_text = st.text(alphabet=st.sampled_from(list("ab._%Xé2E")), max_size=5)
tree_strategy = st.recursive(
    st.integers(0, 3).map(lambda n: torch.arange(n, dtype=torch.float32)),
    lambda children: st.dictionaries(key_text, children, max_size=3),
    max_leaves=6,
).filter(lambda t: isinstance(t, dict))


@given(tree=tree_strategy)
def test_key_escaping_round_trips(tree: dict[str, Any]) -> None:
    flat, structure = ckpt.flatten_keys(tree)
    assert len(flat) == len(set(flat))
    assert "__metadata__" not in flat
    assert_same_tree(ckpt.unflatten_keys(flat, json.loads(json.dumps(structure))), tree)
    for key in flat:  # the flat key alone determines the path
        parts = [ckpt._unescape(c) for c in key.split(".")]
        node: Any = tree
        for part in parts:
            node = node[part]
        assert node is flat[key]


def test_second_save_replaces_first_and_prunes(tmp_path: Path) -> None:
    first = ckpt.save_checkpoint(tmp_path, tensors={"w": torch.zeros(2)}, meta={"epoch": 1}, keep=2)
    second = ckpt.save_checkpoint(tmp_path, tensors={"w": torch.ones(2)}, meta={"epoch": 2}, keep=2)
    assert (tmp_path / "LATEST").read_text().strip() == second.name == "ckpt-000001"
    assert ckpt.latest_checkpoint(tmp_path) == second
    tensors, meta = ckpt.load_checkpoint(tmp_path)
    assert torch.equal(tensors["w"], torch.ones(2)) and meta == {"epoch": 2}
    assert ckpt.load_checkpoint(first)[1] == {"epoch": 1}  # still there (keep=2)
    third = ckpt.save_checkpoint(tmp_path, tensors={"w": torch.full((2,), 2.0)}, meta={"epoch": 3}, keep=2)
    assert ckpt.list_checkpoints(tmp_path) == [second, third]
    assert not first.exists()
    ckpt.save_checkpoint(tmp_path, tensors={"w": torch.zeros(2)}, keep=1)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt-000003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "ckpt-000003"]
    assert ckpt.latest_checkpoint(tmp_path / "nothing-here") is None


@pytest.mark.parametrize("where", ["safetensors", "write_meta", "rename", "replace"])
def test_crash_mid_write_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    ckpt.save_checkpoint(tmp_path, tensors={"w": torch.zeros(3)}, meta={"epoch": 1})

    class Boom(RuntimeError):
        pass

    def boom(*args: Any, **kwargs: Any) -> None:
        raise Boom("injected failure")

    if where == "safetensors":
        import safetensors.torch

        monkeypatch.setattr(safetensors.torch, "save", boom)
    elif where == "write_meta":
        real_write = ckpt._write_file

        def write(path: Path, data: bytes) -> None:
            if path.name == "meta.json":
                (path.parent / "meta.json").write_bytes(data[: len(data) // 2])  # half-written
                raise Boom("disk full")
            real_write(path, data)

        monkeypatch.setattr(ckpt, "_write_file", write)
    elif where == "rename":
        monkeypatch.setattr(os, "rename", boom)
    else:
        monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(Boom):
        ckpt.save_checkpoint(tmp_path, tensors={"w": torch.ones(3)}, meta={"epoch": 2})
    monkeypatch.undo()
    tensors, meta = ckpt.load_checkpoint(tmp_path)
    assert torch.equal(tensors["w"], torch.zeros(3)) and meta == {"epoch": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LATEST", "ckpt-000000"]  # partial output removed
    # and the next save works
    ckpt.save_checkpoint(tmp_path, tensors={"w": torch.ones(3)}, meta={"epoch": 2})
    assert ckpt.load_checkpoint(tmp_path)[1] == {"epoch": 2}


def test_leftovers_of_a_hard_crash_are_ignored_then_cleaned(tmp_path: Path) -> None:
    ckpt.save_checkpoint(tmp_path, tensors={"w": torch.zeros(3)}, meta={"epoch": 1})
    junk = tmp_path / ".tmp-ckpt-000001-dead"
    junk.mkdir()
    (junk / "tensors.safetensors").write_bytes(b"\x00" * 10)
    assert ckpt.load_checkpoint(tmp_path)[1] == {"epoch": 1}
    ckpt.save_checkpoint(tmp_path, tensors={"w": torch.ones(3)}, meta={"epoch": 2})
    assert not junk.exists()


# --------------------------------------------------------------------------- refusals


def saved(tmp_path: Path) -> Path:
    return ckpt.save_checkpoint(tmp_path, tensors=sample_tree(), meta=META)


def test_truncated_tensors_file(tmp_path: Path) -> None:
    path = saved(tmp_path) / "tensors.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 17])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.load_checkpoint(tmp_path)


def test_truncated_meta_file(tmp_path: Path) -> None:
    path = saved(tmp_path) / "meta.json"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.load_checkpoint(tmp_path)


@pytest.mark.parametrize("offset", [3, 100, -5])
def test_flipped_byte_in_tensors(tmp_path: Path, offset: int) -> None:
    path = saved(tmp_path) / "tensors.safetensors"
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        ckpt.load_checkpoint(tmp_path)


def test_modified_meta_is_detected(tmp_path: Path) -> None:
    path = saved(tmp_path) / "meta.json"
    path.write_text(path.read_text().replace('"epoch": 3', '"epoch": 4'))
    with pytest.raises(CheckpointError, match="content hash"):
        ckpt.load_checkpoint(tmp_path)


def rewrite_meta(path: Path, **changes: Any) -> None:
    """Rewrite meta.json with ``changes`` and a *valid* content hash (so only the change is wrong)."""
    doc = json.loads(path.read_text())
    doc.pop("content_sha256")
    doc.update(changes)
    doc["content_sha256"] = hashlib.sha256(ckpt._canonical(doc)).hexdigest()
    path.write_text(json.dumps(doc))


def test_unknown_schema_version(tmp_path: Path) -> None:
    rewrite_meta(saved(tmp_path) / "meta.json", schema_version=2)
    with pytest.raises(CheckpointError, match=r"schema_version 2 is not supported.*version 1"):
        ckpt.load_checkpoint(tmp_path)


def test_wrong_format(tmp_path: Path) -> None:
    rewrite_meta(saved(tmp_path) / "meta.json", format="something.else")
    with pytest.raises(CheckpointError, match="not an esper_func checkpoint"):
        ckpt.load_checkpoint(tmp_path)


class _Payload:
    """Unpickling this creates a marker directory: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (str(self.marker),))


def test_pickles_are_refused_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    # a torch.save file passed directly
    pt = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2), "payload": _Payload(marker)}, pt)
    with pytest.raises(CheckpointError, match="never loads pickles"):
        ckpt.load_checkpoint(pt)
    # a raw pickle passed directly
    raw = tmp_path / "state.bin"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="pickle"):
        ckpt.load_checkpoint(raw)
    # a directory holding only a pickle
    with pytest.raises(CheckpointError, match="never loads pickles"):
        ckpt.load_checkpoint(tmp_path)
    # a pickle in place of the tensors file
    good = saved(tmp_path / "ck")
    (good / "tensors.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match="pickle"):
        ckpt.load_checkpoint(good)
    assert not marker.exists()


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path)
    path = saved(tmp_path / "a")
    (path / "tensors.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"tensors\.safetensors is missing"):
        ckpt.load_checkpoint(tmp_path / "a")
    path = saved(tmp_path / "b")
    (path / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=r"meta\.json is missing"):
        ckpt.load_checkpoint(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "LATEST").write_text("../b\n")
    with pytest.raises(CheckpointError, match="must name a checkpoint"):
        ckpt.load_checkpoint(tmp_path / "c")
    (tmp_path / "c" / "LATEST").write_text("ckpt-000042\n")
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "c")


def test_expected_shapes(tmp_path: Path) -> None:
    tree = sample_tree()
    saved(tmp_path)
    rest = {k: ... for k in tree if k != "params"}
    # matching: tensors, (shape, dtype) pairs, shapes, Ellipsis
    expected = {"params": tree["params"], **rest}
    expected["params"] = {
        "host": {
            "blocks.0.conv.weight": torch.empty(4, 3, 3, 3),
            "blocks.0.bn.num_batches_tracked": ((), torch.int64),
            "head.bias": (10,),
        },
        "slots": ...,
    }
    ckpt.load_checkpoint(tmp_path, expected=expected)

    wrong = {**expected, "params": {**expected["params"], "host": {**expected["params"]["host"], "head.bias": (12,)}}}
    with pytest.raises(CheckpointError, match=r"\['params'\]\['host'\]\['head.bias'\] has shape \(10,\) but \(12,\)"):
        ckpt.load_checkpoint(tmp_path, expected=wrong)
    wrong_dtype = {**expected, "params": {**expected["params"], "host": {**expected["params"]["host"], "head.bias": ((10,), torch.float32)}}}
    with pytest.raises(CheckpointError, match=r"dtype torch\.float64"):
        ckpt.load_checkpoint(tmp_path, expected=wrong_dtype)
    with pytest.raises(CheckpointError, match=r"missing keys \[\]\, unexpected keys \['bytes'"):
        ckpt.load_checkpoint(tmp_path, expected={"params": ..., "rng": ..., "flags": ..., "buffers": ...})
    missing_slot = {**expected, "params": {**expected["params"], "slots": {"r0c0": ..., "r1c0": ..., "r2c0": ...}}}
    with pytest.raises(CheckpointError, match=r"missing keys \['r2c0'\]"):
        ckpt.load_checkpoint(tmp_path, expected=missing_slot)


def test_bad_inputs_write_nothing(tmp_path: Path) -> None:
    bad_meta: list[Any] = [{"x": float("nan")}, {"t": torch.ones(1)}, {1: "int key"}, {"s": {1, 2}}]
    for meta in bad_meta:
        with pytest.raises(CheckpointError):
            ckpt.save_checkpoint(tmp_path, tensors={"w": torch.ones(1)}, meta=meta)
    with pytest.raises(DTypeError, match=r"\['w'\]"):
        ckpt.save_checkpoint(tmp_path, tensors={"w": 1.0})
    with pytest.raises(CheckpointError, match="must be a str"):
        ckpt.save_checkpoint(tmp_path, tensors={3: torch.ones(1)})  # type: ignore[dict-item]
    with pytest.raises(CheckpointError):
        ckpt.save_checkpoint(tmp_path, tensors={"l": [torch.ones(1)]})
    with pytest.raises(ValueError):
        ckpt.save_checkpoint(tmp_path, tensors={"w": torch.ones(1)}, keep=0)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- a training state


def test_resume_training_state_exactly(tmp_path: Path) -> None:
    """Params + optimizer state + seed lifecycle + RNG saved, loaded, and training continues identically."""
    opt = optim.adamw(0.01, amsgrad=True)
    g = torch.Generator().manual_seed(0)
    params = {"host": {"w": torch.randn(3, 3, generator=g)}, "slots": {"r0c0": {"seed": {"w.0": torch.randn(3, generator=g)}}}}
    state = opt.init(params)
    grads = [{"host": {"w": torch.randn(3, 3, generator=g)}, "slots": {"r0c0": {"seed": {"w.0": torch.randn(3, generator=g)}}}} for _ in range(6)]
    for gr in grads[:3]:
        params, state = opt.update(gr, state, params, mask={"slots": False})
    seed_state = ef.germinate("r0c0", "norm")
    ckpt.save_checkpoint(
        tmp_path,
        tensors={"params": params, "opt": optim.state_to_tree(state), "rng": g.get_state()},
        meta={"epoch": 3, "seeds": {"r0c0": ef.state_to_dict(seed_state)}},
    )
    loaded, meta = ckpt.load_checkpoint(tmp_path, expected={"params": params, "opt": ..., "rng": ...})
    r_params = loaded["params"]
    r_state = optim.state_from_tree(opt, loaded["opt"], r_params)
    assert ef.state_from_dict(meta["seeds"]["r0c0"]) == seed_state
    r_gen = torch.Generator()
    r_gen.set_state(loaded["rng"])
    assert torch.equal(torch.randn(4, generator=r_gen), torch.randn(4, generator=g))
    for gr in grads[3:]:
        params, state = opt.update(gr, state, params)
        r_params, r_state = opt.update(gr, r_state, r_params)
    assert torch.equal(params["host"]["w"], r_params["host"]["w"])
    assert torch.equal(params["slots"]["r0c0"]["seed"]["w.0"], r_params["slots"]["r0c0"]["seed"]["w.0"])
