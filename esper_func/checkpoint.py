"""Checkpoints: tensors in safetensors, structure and lifecycle in JSON, written atomically.

Layout of a checkpoint directory (one writer per directory)::

    DIR/
      LATEST                      # one line: the name of the current checkpoint
      ckpt-000006/                # older checkpoints (the last ``keep`` are kept)
      ckpt-000007/
        tensors.safetensors       # every tensor, under flat escaped keys
        meta.json                 # format, schema_version, hashes, tree structure, user meta

Atomicity. :func:`save_checkpoint` writes the new checkpoint into a hidden
temporary directory ``DIR/.tmp-ckpt-000008-XXXX/``, fsyncs both files and the
directory, renames it to ``ckpt-000008`` (a fresh name, so the rename
replaces nothing), then writes ``LATEST`` through a temporary file and
``os.replace``, and fsyncs ``DIR``. Until that single ``os.replace``,
``LATEST`` names the previous, complete checkpoint; after it, the new one,
also complete. A crash or an exception at any point therefore leaves a
loadable checkpoint, and a save that fails before the switch removes what
it wrote.
Pruning runs only after the switch, moves a directory out of the way with
a rename before deleting it, never touches the one ``LATEST`` names, and
also removes leftovers (``.tmp-*``, ``.trash-*``) of earlier crashed saves.

Integrity. ``meta.json`` records the SHA-256 and size of
``tensors.safetensors`` and a SHA-256 of its own content (canonical JSON),
so a flipped byte or a truncation in either file is detected before any
tensor is used. Tensors are read with ``safetensors.torch.load`` from the
verified bytes; nothing is ever unpickled, and a pickle (``torch.save``
file) given as a checkpoint is refused with an explicit message.

Tensor trees are nested ``dict``s with ``str`` keys and tensor leaves
(empty dicts allowed). Flat keys join the path with ``"."``, each component
percent-escaped (``%`` -> ``%25``, ``.`` -> ``%2E``, a leading ``_`` ->
``%5F``), so keys that themselves contain dots (``"blocks.0.conv.weight"``)
round-trip and no key collides with safetensors' reserved
``__metadata__``; :func:`flatten_keys` / :func:`unflatten_keys` expose the
scheme. The JSON stores the tree itself, so loading rebuilds the same
nested dicts in the same key order.

Requires the ``safetensors`` package (``pip install 'esper-func[demo]'``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import torch
from torch import Tensor

from esper_func.errors import CheckpointError, DTypeError

__all__ = [
    "FORMAT",
    "LATEST_FILE",
    "META_FILE",
    "SCHEMA_VERSION",
    "TENSORS_FILE",
    "flatten_keys",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "unflatten_keys",
]

FORMAT: Final[str] = "esper_func.checkpoint"
SCHEMA_VERSION: Final[int] = 1
TENSORS_FILE: Final[str] = "tensors.safetensors"
META_FILE: Final[str] = "meta.json"
LATEST_FILE: Final[str] = "LATEST"

_NAME = re.compile(r"^ckpt-(\d{6,})$")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt")

TensorTree = dict[str, Any]  # nested dict[str, TensorTree | Tensor]


def _safetensors() -> Any:
    try:
        import safetensors.torch as st
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "esper_func checkpoints need the 'safetensors' package: pip install 'esper-func[demo]'"
        ) from exc
    return st


# --------------------------------------------------------------------------- key escaping


def _escape(component: str) -> str:
    out = component.replace("%", "%25").replace(".", "%2E")
    if out.startswith("_"):
        out = "%5F" + out[1:]
    return out


_UNESCAPE = re.compile(r"%([0-9A-F]{2})")


def _unescape(component: str) -> str:
    return _UNESCAPE.sub(lambda m: chr(int(m.group(1), 16)), component)


def _path_str(path: tuple[str, ...]) -> str:
    return "".join(f"[{k!r}]" for k in path) or "<root>"


def flatten_keys(tree: Mapping[str, Any]) -> tuple[dict[str, Tensor], Any]:
    """``(flat, structure)``: tensors under escaped dotted keys, and the JSON structure.

    ``structure`` mirrors ``tree`` with each tensor replaced by its flat key
    (a string) and each dict kept as a JSON object (empty ones included).

    Raises:
        CheckpointError: a non-``str`` key or a non-dict, non-tensor node.
        DTypeError: a leaf that is not a tensor (a Python number, an array).
    """
    flat: dict[str, Tensor] = {}

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, Tensor):
            if not path:
                raise CheckpointError("the tensor tree must be a dict, not a single tensor")
            key = ".".join(_escape(k) for k in path)
            flat[key] = node
            return key
        if isinstance(node, Mapping):
            out = {}
            for k, v in node.items():
                if not isinstance(k, str):
                    raise CheckpointError(f"tensor tree key {k!r} at {_path_str(path)} must be a str; got {type(k).__name__}")
                out[k] = walk(v, (*path, k))
            return out
        if isinstance(node, (list, tuple)):
            raise CheckpointError(
                f"tensor tree node {_path_str(path)} is a {type(node).__name__}; only dicts are stored "
                f"(use a dict with str keys, e.g. {{'0': ..., '1': ...}})"
            )
        if node is None or isinstance(node, (bool, int, float, str)):
            raise DTypeError(
                f"tensor tree leaf {_path_str(path)} must be a tensor; got {type(node).__name__} "
                f"(put Python values in meta instead)"
            )
        raise CheckpointError(f"tensor tree node {_path_str(path)} must be a dict or a tensor; got {type(node).__name__}")

    if not isinstance(tree, Mapping):
        raise CheckpointError(f"the tensor tree must be a dict; got {type(tree).__name__}")
    structure = walk(tree, ())
    return flat, structure


def unflatten_keys(flat: Mapping[str, Tensor], structure: Any) -> TensorTree:
    """Inverse of :func:`flatten_keys`.

    Raises:
        CheckpointError: the structure is malformed or names a key that ``flat`` lacks.
    """

    def walk(node: Any, path: tuple[str, ...]) -> Any:
        if isinstance(node, str):
            if node not in flat:
                raise CheckpointError(f"checkpoint tensor {_path_str(path)} (key {node!r}) is missing from the tensors file")
            return flat[node]
        if isinstance(node, dict):
            return {k: walk(v, (*path, k)) for k, v in node.items()}
        raise CheckpointError(f"checkpoint structure at {_path_str(path)} is malformed: {type(node).__name__}")

    if not isinstance(structure, dict):
        raise CheckpointError(f"checkpoint structure must be a JSON object; got {type(structure).__name__}")
    return walk(structure, ())


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(_unescape(c) for c in key.split("."))


# --------------------------------------------------------------------------- JSON helpers


def _check_json(value: Any, path: str) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise CheckpointError(f"meta{path} has key {k!r} of type {type(k).__name__}; JSON keys must be str")
            _check_json(v, f"{path}[{k!r}]")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json(v, f"{path}[{i}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise CheckpointError(f"meta{path} is {value!r}; JSON has no NaN or infinity (store None or a string)")
    elif value is not None and not isinstance(value, (str, int, bool)):
        raise CheckpointError(
            f"meta{path} is a {type(value).__name__}, which is not JSON; meta holds only dict/list/str/int/float/bool/None"
            + (" (tensors go in `tensors`)" if isinstance(value, Tensor) else "")
        )


def _canonical(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode("ascii")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- filesystem helpers


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be fsynced elsewhere
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Write a new file and fsync it (``x`` mode: never overwrites)."""
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _index(name: str) -> int | None:
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """The checkpoint subdirectories of ``directory``, oldest first (``[]`` if there are none)."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = [(i, p) for p in root.iterdir() if p.is_dir() and (i := _index(p.name)) is not None]
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint ``LATEST`` names in ``directory``, or ``None`` when there is none yet.

    Raises:
        CheckpointError: ``LATEST`` exists but is malformed or names a missing checkpoint.
    """
    root = Path(directory)
    pointer = root / LATEST_FILE
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{pointer} is unreadable: {exc}") from None
    if _index(name) is None:
        raise CheckpointError(f"{pointer} must name a checkpoint like 'ckpt-000007'; it holds {name[:80]!r}")
    target = root / name
    if not target.is_dir():
        raise CheckpointError(f"{pointer} names {name!r}, which does not exist in {root}")
    return target


# --------------------------------------------------------------------------- save


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    tensors: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
    keep: int | None = 3,
) -> Path:
    """Write a new checkpoint into ``directory`` atomically; return its path (``DIR/ckpt-NNNNNN``).

    Args:
        directory: the checkpoint directory (created if missing).
        tensors: nested dicts (``str`` keys) of tensors: params, buffers,
            optimizer state, RNG states as ``uint8`` tensors, ...; empty
            dicts are kept. Tensors are copied to CPU; the caller's are not touched.
        meta: JSON-serialisable dict (structure, lifecycle states via
            ``state_to_dict``, epoch, config, ...). Only ``dict``/``list``/
            ``str``/``int``/finite ``float``/``bool``/``None``; tuples come back as lists.
        keep: how many checkpoints to keep (the newest, including this one);
            ``None`` keeps all.

    The checkpoint is numbered one past the highest existing one. Previous
    checkpoints stay loadable whatever happens during the save (see the
    module docstring); on failure the exception propagates and the partial
    temporary directory is removed.

    Raises:
        CheckpointError / DTypeError: a tree or meta that cannot be stored (nothing is written).
    """
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be a positive int or None; got {keep!r}")
    meta = {} if meta is None else meta
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"meta must be a dict; got {type(meta).__name__}")
    _check_json(meta, "")
    flat, structure = flatten_keys(tensors)
    cpu: dict[str, Tensor] = {}
    for key, t in flat.items():
        if t.layout != torch.strided:
            raise CheckpointError(f"tensor {_path_str(_split_key(key))} has layout {t.layout}; only dense tensors are stored")
        cpu[key] = t.detach().to("cpu", copy=True).contiguous()  # own storage: no sharing, no aliasing
    data = _safetensors().save(cpu)

    body = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "tensors_file": TENSORS_FILE,
        "tensors_sha256": _sha256(data),
        "tensors_bytes": len(data),
        "tree": structure,
        "meta": dict(meta),
    }
    meta_bytes = json.dumps(
        {**body, "content_sha256": _sha256(_canonical(body))}, ensure_ascii=True, indent=1, allow_nan=False
    ).encode("ascii")

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    existing = [i for p in list_checkpoints(root) if (i := _index(p.name)) is not None]
    name = f"ckpt-{(max(existing) + 1) if existing else 0:06d}"
    token = secrets.token_hex(4)
    tmp = root / f"{_TMP_PREFIX}{name}-{token}"
    final = root / name
    pointer_tmp = root / f"{_TMP_PREFIX}{LATEST_FILE}-{token}"
    renamed = committed = False
    try:
        tmp.mkdir()
        _write_file(tmp / TENSORS_FILE, data)
        _write_file(tmp / META_FILE, meta_bytes)
        _fsync_dir(tmp)
        os.rename(tmp, final)  # fresh name: nothing is replaced
        renamed = True
        _fsync_dir(root)
        _write_file(pointer_tmp, f"{name}\n".encode("ascii"))
        os.replace(pointer_tmp, root / LATEST_FILE)  # the commit point
        committed = True
        _fsync_dir(root)
    except BaseException:
        if not committed:  # LATEST still names the previous checkpoint: drop every trace of this one
            with contextlib.suppress(OSError):
                shutil.rmtree(final if renamed else tmp)
            with contextlib.suppress(OSError):
                pointer_tmp.unlink()
        raise
    if keep is not None:
        _prune(root, keep, current=final)
    return final


def _prune(root: Path, keep: int, *, current: Path) -> None:
    # One writer per directory: leftovers of an earlier crashed save or prune are stale.
    for stale in root.iterdir():
        if stale.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
            with contextlib.suppress(OSError):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    for old in list_checkpoints(root)[:-keep]:
        if old == current:
            continue
        trash = root / f"{_TRASH_PREFIX}{old.name}-{secrets.token_hex(4)}"
        with contextlib.suppress(OSError):
            os.rename(old, trash)
            shutil.rmtree(trash)


# --------------------------------------------------------------------------- load


def _looks_pickled(head: bytes) -> str | None:
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (the torch.save format, which holds pickles)"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return "a Python pickle"
    return None


def _refuse_pickle(path: Path, what: str) -> CheckpointError:
    return CheckpointError(
        f"{path} is {what}; esper_func never loads pickles (unpickling can run arbitrary code). "
        f"Convert it with a trusted tool, or use ef.from_esper_lite for esper-lite state dicts."
    )


def _read_head(path: Path, n: int = 8) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


def _resolve(directory: Path) -> Path:
    """The checkpoint directory (holding ``meta.json``) that ``directory`` refers to."""
    if not directory.exists():
        raise CheckpointError(f"no checkpoint at {directory}: the path does not exist")
    if directory.is_file():
        what = _looks_pickled(_read_head(directory))
        if what is not None:
            raise _refuse_pickle(directory, what)
        if directory.name in (META_FILE, TENSORS_FILE):
            return directory.parent
        raise CheckpointError(
            f"{directory} is not an esper_func checkpoint; pass the checkpoint directory (with {LATEST_FILE} or {META_FILE})"
        )
    if (directory / META_FILE).is_file():
        return directory
    latest = latest_checkpoint(directory)
    if latest is not None:
        return latest
    for child in sorted(directory.iterdir()):
        if child.is_file() and (child.suffix in _PICKLE_SUFFIXES or _looks_pickled(_read_head(child))):
            what = _looks_pickled(_read_head(child)) or "a pickle-format checkpoint file"
            raise _refuse_pickle(child, what)
    if list_checkpoints(directory):
        raise CheckpointError(f"{directory} has checkpoint directories but no {LATEST_FILE} pointer; load one of them directly")
    raise CheckpointError(f"no checkpoint in {directory}: neither {LATEST_FILE} nor {META_FILE} is there")


def _read_meta(ckpt: Path) -> dict[str, Any]:
    path = ckpt / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{ckpt} is not a complete checkpoint: {META_FILE} is missing")
    raw = path.read_bytes()
    if _looks_pickled(raw[:8]):
        raise _refuse_pickle(path, _looks_pickled(raw[:8]) or "a pickle")
    try:
        doc = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated (not valid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CheckpointError(f"{path} is not an esper_func checkpoint: format is {found!r}, expected {FORMAT!r}")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION or isinstance(version, bool):
        raise CheckpointError(
            f"{path}: checkpoint schema_version {version!r} is not supported; this esper_func reads version {SCHEMA_VERSION}"
        )
    required = ("tensors_file", "tensors_sha256", "tensors_bytes", "tree", "meta", "content_sha256")
    missing = [k for k in required if k not in doc]
    if missing:
        raise CheckpointError(f"{path} lacks field(s) {missing}; the checkpoint is corrupt")
    claimed = doc.pop("content_sha256")
    try:
        actual = _sha256(_canonical(doc))
    except ValueError:  # NaN/Infinity smuggled in by corruption
        actual = None
    if claimed != actual:
        raise CheckpointError(f"{path} is corrupt: its content hash does not match (the file was modified or damaged)")
    if doc["tensors_file"] != TENSORS_FILE:
        raise CheckpointError(f"{path} names tensors file {doc['tensors_file']!r}; expected {TENSORS_FILE!r}")
    return doc


def load_checkpoint(
    directory: str | os.PathLike[str],
    *,
    expected: Mapping[str, Any] | None = None,
) -> tuple[TensorTree, dict[str, Any]]:
    """Load ``(tensors, meta)`` as written by :func:`save_checkpoint` (tensors on CPU).

    Args:
        directory: a checkpoint directory root (the checkpoint ``LATEST``
            names is loaded) or one ``ckpt-NNNNNN`` directory.
        expected: optional tree to check the loaded tensors against. Each
            dict node must have exactly the keys of the loaded node (missing
            and unexpected keys are errors), except that a value ``...``
            (Ellipsis) accepts any subtree unchecked. A leaf is a tensor
            (shape and dtype checked), a ``(shape, dtype)`` pair (``dtype``
            may be ``None``), or a shape (``torch.Size`` / tuple of ints).

    Raises:
        CheckpointError: a pickle (refused, never unpickled); not our
            format; an unknown ``schema_version``; a missing, truncated or
            modified file (size or SHA-256 mismatch); a tensor that does not
            match ``expected`` (the message names the key and both shapes).
    """
    ckpt = _resolve(Path(directory))
    doc = _read_meta(ckpt)
    tensor_path = ckpt / TENSORS_FILE
    if not tensor_path.is_file():
        raise CheckpointError(f"{ckpt} is not a complete checkpoint: {TENSORS_FILE} is missing")
    data = tensor_path.read_bytes()
    what = _looks_pickled(data[:8])
    if what is not None:
        raise _refuse_pickle(tensor_path, what)
    if len(data) != doc["tensors_bytes"]:
        raise CheckpointError(
            f"{tensor_path} is truncated or damaged: {len(data)} bytes, {doc['tensors_bytes']} expected"
        )
    if _sha256(data) != doc["tensors_sha256"]:
        raise CheckpointError(f"{tensor_path} is corrupt: its SHA-256 does not match the one in {META_FILE}")
    st = _safetensors()
    from safetensors import SafetensorError

    try:
        flat = st.load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{tensor_path} could not be parsed as safetensors: {exc}") from None
    tree = unflatten_keys(flat, doc["tree"])
    used = set(_leaf_keys(doc["tree"]))
    if set(flat) != used:
        raise CheckpointError(f"{tensor_path} holds tensors the structure does not name: {sorted(set(flat) - used)[:10]}")
    if expected is not None:
        _check_expected(tree, expected, ())
    return tree, doc["meta"]


def _leaf_keys(structure: Any) -> Iterator[str]:
    if isinstance(structure, str):
        yield structure
    elif isinstance(structure, dict):
        for v in structure.values():
            yield from _leaf_keys(v)


def _expected_leaf(spec: Any, path: tuple[str, ...]) -> tuple[tuple[int, ...], torch.dtype | None]:
    if isinstance(spec, Tensor):
        return tuple(spec.shape), spec.dtype
    if (
        isinstance(spec, tuple)
        and len(spec) == 2
        and isinstance(spec[0], (tuple, list, torch.Size))
        and (spec[1] is None or isinstance(spec[1], torch.dtype))
    ):
        return tuple(spec[0]), spec[1]
    if isinstance(spec, (tuple, list, torch.Size)) and all(isinstance(d, int) and not isinstance(d, bool) for d in spec):
        return tuple(spec), None
    raise TypeError(
        f"expected{_path_str(path)} must be a tensor, a (shape, dtype) pair, a shape, a dict or ...; got {spec!r}"
    )


def _check_expected(node: Any, spec: Any, path: tuple[str, ...]) -> None:
    if spec is Ellipsis:
        return
    if isinstance(spec, Mapping):
        if not isinstance(node, dict):
            raise CheckpointError(f"checkpoint entry {_path_str(path)} is a tensor, expected a dict with keys {sorted(spec)}")
        missing = sorted(set(spec) - set(node))
        extra = sorted(set(node) - set(spec))
        if missing or extra:
            raise CheckpointError(
                f"checkpoint dict {_path_str(path)} does not match: missing keys {missing}, unexpected keys {extra}"
            )
        for k, v in spec.items():
            _check_expected(node[k], v, (*path, k))
        return
    shape, dtype = _expected_leaf(spec, path)
    if not isinstance(node, Tensor):
        raise CheckpointError(f"checkpoint entry {_path_str(path)} is a dict, expected a tensor of shape {shape}")
    if tuple(node.shape) != shape:
        raise CheckpointError(
            f"checkpoint tensor {_path_str(path)} has shape {tuple(node.shape)} but {shape} was expected"
        )
    if dtype is not None and node.dtype != dtype:
        raise CheckpointError(f"checkpoint tensor {_path_str(path)} has dtype {node.dtype} but {dtype} was expected")
