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


# --------------------------------------------------------------------------- recognising formats by parsing


@pytest.mark.parametrize("key_length", [580, 584, 700, 837, 1092, 1348])
def test_a_safetensors_header_whose_length_looks_like_a_pickle_opcode_loads(tmp_path: Path, key_length: int) -> None:
    """Header lengths 640, 896, 1152, 1408 start with 0x80 0x02..0x05, the bytes a pickle starts with."""
    ckpt.save_checkpoint(tmp_path, tensors={"w" * key_length: torch.zeros(1)})
    data = (ckpt.latest_checkpoint(tmp_path) / "tensors.safetensors").read_bytes()  # type: ignore[operator]
    tensors, _ = ckpt.load_checkpoint(tmp_path)
    assert torch.equal(tensors["w" * key_length], torch.zeros(1))
    assert ckpt._parses_as_safetensors(data) and not ckpt._parses_as_pickle(data, complete=True)


def test_every_header_length_up_to_1500_bytes_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durability is not what this test is about
    lengths = set()
    for n in range(1, 1500, 7):
        root = tmp_path / str(n)
        path = ckpt.save_checkpoint(root, tensors={"k" * n: torch.ones(2)})
        lengths.add(int.from_bytes((path / "tensors.safetensors").read_bytes()[:8], "little"))
        assert torch.equal(ckpt.load_checkpoint(root)[0]["k" * n], torch.ones(2))
    assert any(b"\x80" == (n).to_bytes(8, "little")[:1] for n in lengths)  # the ambiguous first byte was covered


def test_pickles_and_zips_are_still_recognised_by_parsing(tmp_path: Path) -> None:
    raw = pickle.dumps({"a": [1, 2, 3]}, protocol=4)
    assert ckpt._pickle_kind(None, raw, complete=True) == "a Python pickle"
    assert ckpt._pickle_kind(None, pickle.dumps(7, protocol=0), complete=True) == "a Python pickle"
    assert ckpt._pickle_kind(None, raw[:10], complete=False) == "a Python pickle"  # a prefix of a big file
    assert ckpt._pickle_kind(None, raw[:10], complete=True) is None  # a whole file must reach STOP
    pt = tmp_path / "m.pt"
    torch.save({"w": torch.ones(2)}, pt)
    assert "torch.save" in (ckpt._file_kind(pt) or "")
    for not_a_pickle in (b"", b"\x80", b"\x80\x02", b"\x80\x02\x00\x00", b'{"format": 1}', b"hello world\n", b"PK\x03\x04junk"):
        assert ckpt._pickle_kind(None, not_a_pickle, complete=True) is None, not_a_pickle


def test_a_zip_that_holds_no_pickle_is_named_as_such(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "notes.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.txt", "hello")
    with pytest.raises(CheckpointError, match="a zip archive, not an esper_func checkpoint"):
        ckpt.load_checkpoint(path)


def test_garbage_in_place_of_the_files_is_corruption_not_a_pickle(tmp_path: Path) -> None:
    path = saved(tmp_path)
    (path / "tensors.safetensors").write_bytes(b"\x80\x02" + b"\x00" * 64)  # pickle-like first bytes, not a pickle
    with pytest.raises(CheckpointError, match="truncated or damaged") as info:
        ckpt.load_checkpoint(tmp_path)
    assert "pickle" not in str(info.value)
    (path / "meta.json").write_bytes(b"\x80\x03garbage")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ckpt.load_checkpoint(tmp_path)


# --------------------------------------------------------------------------- the newest complete checkpoint


def three(tmp_path: Path) -> list[Path]:
    return [ckpt.save_checkpoint(tmp_path, tensors={"w": torch.full((2,), float(i))}, meta={"epoch": i}, keep=None) for i in range(3)]


def damage(path: Path, how: str) -> None:
    if how == "flip":
        data = bytearray((path / "tensors.safetensors").read_bytes())
        data[len(data) // 2] ^= 0x10
        (path / "tensors.safetensors").write_bytes(bytes(data))
    elif how == "truncate-tensors":
        (path / "tensors.safetensors").write_bytes((path / "tensors.safetensors").read_bytes()[:20])
    elif how == "truncate-meta":
        (path / "meta.json").write_bytes((path / "meta.json").read_bytes()[:30])
    elif how == "empty-meta":
        (path / "meta.json").write_bytes(b"")
    elif how == "no-tensors":
        (path / "tensors.safetensors").unlink()
    elif how == "no-meta":
        (path / "meta.json").unlink()
    elif how == "edited-meta":
        (path / "meta.json").write_text((path / "meta.json").read_text().replace('"epoch": 2', '"epoch": 9'))
    elif how == "pickle":
        (path / "tensors.safetensors").write_bytes(pickle.dumps({"w": 1}))
    else:
        raise AssertionError(how)


DAMAGES = ["flip", "truncate-tensors", "truncate-meta", "empty-meta", "no-tensors", "no-meta", "edited-meta", "pickle"]


@pytest.mark.parametrize("how", DAMAGES)
def test_recover_passes_over_a_damaged_newest_checkpoint(tmp_path: Path, how: str) -> None:
    paths = three(tmp_path)
    damage(paths[2], how)
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(tmp_path)  # LATEST names the damaged one: the strict load says so
    with pytest.raises(CheckpointError):
        ckpt.verify_checkpoint(paths[2])
    loaded = ckpt.open_checkpoint(tmp_path, recover=True)
    assert loaded.path == paths[1] and loaded.meta == {"epoch": 1}
    assert [name for name, _ in loaded.skipped] == ["ckpt-000002", "LATEST"]


@pytest.mark.parametrize("latest", ["", "garbage\n", "ckpt-000099\n", "../x\n", "\xff\xfe", None])
def test_recover_falls_back_past_a_bad_latest(tmp_path: Path, latest: str | None) -> None:
    paths = three(tmp_path)
    pointer = tmp_path / "LATEST"
    if latest is None:
        pointer.unlink()
    else:
        pointer.write_bytes(latest.encode("latin-1"))
    with pytest.raises(CheckpointError):
        ckpt.load_checkpoint(tmp_path)
    loaded = ckpt.open_checkpoint(tmp_path, recover=True)
    assert loaded.path == paths[2] and [n for n, _ in loaded.skipped] == ["LATEST"]


def test_recover_prefers_a_newer_complete_checkpoint_to_a_stale_latest(tmp_path: Path) -> None:
    paths = three(tmp_path)
    (tmp_path / "LATEST").write_text("ckpt-000001\n")  # a save stopped between its rename and the switch
    assert ckpt.load_checkpoint(tmp_path)[1] == {"epoch": 1}
    loaded = ckpt.open_checkpoint(tmp_path, recover=True)
    assert loaded.path == paths[2] and "newest complete" in dict(loaded.skipped)["LATEST"]


def test_recover_with_nothing_complete_lists_every_defect(tmp_path: Path) -> None:
    paths = three(tmp_path)
    for path, how in zip(paths, ["flip", "no-meta", "truncate-meta"], strict=True):
        damage(path, how)
    with pytest.raises(CheckpointError, match=r"no complete checkpoint .*ckpt-000002.*not valid JSON.*ckpt-000001.*missing.*ckpt-000000.*SHA-256"):
        ckpt.load_checkpoint(tmp_path, recover=True)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        ckpt.load_checkpoint(tmp_path / "nothing", recover=True)


def test_recover_on_one_checkpoint_loads_exactly_that_one(tmp_path: Path) -> None:
    paths = three(tmp_path)
    assert ckpt.load_checkpoint(paths[0], recover=True)[1] == {"epoch": 0}
    damage(paths[0], "flip")
    with pytest.raises(CheckpointError, match="SHA-256"):
        ckpt.load_checkpoint(paths[0], recover=True)
    with pytest.raises(ef.EsperFuncError, match="recover must be True or False"):
        ckpt.load_checkpoint(tmp_path, recover="yes")  # type: ignore[arg-type]


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(CheckpointError, match="is not a directory"):
        ckpt.save_checkpoint(tmp_path / "f", tensors={"w": torch.ones(1)})
    assert (tmp_path / "f").read_text() == "x"


@given(
    which=st.sampled_from(["tensors.safetensors", "meta.json", "LATEST"]),
    action=st.sampled_from(["flip", "truncate", "append", "replace"]),
    where=st.floats(0, 1),
    value=st.integers(1, 255),
)
def test_any_damage_is_detected_or_harmless(tmp_path_factory: pytest.TempPathFactory, which: str, action: str, where: float, value: int) -> None:
    """A byte flipped, a file cut short, bytes appended or a file replaced: never wrong data, never a foreign exception."""
    root = tmp_path_factory.mktemp("damage")
    tree = {"a": torch.arange(6, dtype=torch.float32), "b": {"c": torch.ones(2, 2, dtype=torch.int64)}}
    first = ckpt.save_checkpoint(root, tensors={"a": torch.zeros(1), "b": {}}, meta={"epoch": 0}, keep=None)
    path = ckpt.save_checkpoint(root, tensors=tree, meta={"epoch": 1}, keep=None)
    target = root / which if which == "LATEST" else path / which
    data = bytearray(target.read_bytes())
    i = min(int(where * len(data)), len(data) - 1)
    if action == "flip":
        data[i] ^= value
    elif action == "truncate":
        del data[i:]
    elif action == "append":
        data += bytes([value]) * (1 + i % 7)
    else:
        data = bytearray(bytes([value]) * len(data))
    target.write_bytes(bytes(data))
    for recover in (False, True):
        try:
            tensors, meta = ckpt.load_checkpoint(root, recover=recover)
        except CheckpointError:
            assert not recover or which != "LATEST"  # recovery needs no pointer
            continue
        if meta == {"epoch": 1}:
            assert_same_tree(tensors, tree)
        else:
            # the older checkpoint, complete: recovery passed over the damage, or LATEST now names it
            assert (recover or which == "LATEST") and meta == {"epoch": 0} and first.exists()
