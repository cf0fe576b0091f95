"""Checkpoints: tensors in safetensors, structure and lifecycle in JSON, written atomically.

Layout of a checkpoint directory (one writer per directory)::

    DIR/
      LATEST                      # one line: the name of the current checkpoint
      ckpt-000006/                # older checkpoints (the last ``keep`` are kept)
      ckpt-000007/
        tensors.safetensors       # every tensor, under flat escaped keys
        meta.json                 # format, schema_version, hashes, tree structure, user meta

Atomicity and durability. :func:`save_checkpoint` writes the new checkpoint
into a hidden temporary directory ``DIR/.tmp-ckpt-000008-XXXX/``: each file
is written under its final name *inside that directory* and fsynced, then the
directory itself is fsynced. Only then is it renamed to ``ckpt-000008`` (a
fresh name, so the rename replaces nothing) and ``DIR`` fsynced: from that
moment the checkpoint is complete and durable. ``LATEST`` is then rewritten
through a fsynced temporary file, ``os.replace`` and another fsync of
``DIR``. A process killed (or a machine losing power) at any point
therefore leaves every earlier checkpoint intact, and the one being written
either complete or absent from the ``ckpt-*`` names; a save that fails with
an exception before ``LATEST`` names it removes what it wrote.
Pruning runs only after the switch, moves a directory out of the way with
a rename before deleting it, never touches the one just written, and
also removes leftovers (``.tmp-*``, ``.trash-*``) of earlier crashed saves.

Finding a checkpoint. ``LATEST`` is a convenience pointer, never the only
way to find a checkpoint. By default :func:`load_checkpoint` loads the one it
names and raises if that one is damaged; with ``recover=True`` (what
``esper-func resume`` uses) it loads the newest checkpoint that is
*complete* -- its ``meta.json`` parses and carries a matching content hash,
and the tensors file has the recorded size and SHA-256 -- passing over newer
damaged ones and a missing, garbled or stale ``LATEST``
(:func:`open_checkpoint` reports what was passed over).

Integrity. ``meta.json`` records the SHA-256 and size of
``tensors.safetensors`` and a SHA-256 of its own content (canonical JSON),
so a flipped byte or a truncation in either file is detected before any
tensor is used. Tensors are read with ``safetensors.torch.load`` from the
verified bytes; nothing is ever unpickled. File formats are recognised by
parsing, never guessed from a few leading bytes: a file is called a pickle
(a ``torch.save`` file, refused with an explicit message) only when it is
not the expected format *and* it parses as a pickle stream or a zip archive.

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
import dataclasses
import hashlib
import io
import json
import math
import os
import pickletools
import re
import secrets
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import torch
from torch import Tensor

from esper_func.errors import CheckpointError, DTypeError, InvalidArgumentError, MissingDependencyError

__all__ = [
    "FORMAT",
    "LATEST_FILE",
    "META_FILE",
    "SCHEMA_VERSION",
    "TENSORS_FILE",
    "LoadedCheckpoint",
    "flatten_keys",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "open_checkpoint",
    "save_checkpoint",
    "unflatten_keys",
    "verify_checkpoint",
]

FORMAT: Final[str] = "esper_func.checkpoint"
SCHEMA_VERSION: Final[int] = 1
TENSORS_FILE: Final[str] = "tensors.safetensors"
META_FILE: Final[str] = "meta.json"
LATEST_FILE: Final[str] = "LATEST"

_NAME = re.compile(r"^ckpt-(\d{6,})$")
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"

TensorTree = dict[str, Any]  # nested dict[str, TensorTree | Tensor]


def _safetensors() -> Any:
    try:
        import safetensors.torch as st
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            "esper_func checkpoints need the 'safetensors' package, which is not installed: pip install 'esper-func[demo]'"
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
    """Make the entries of directory ``path`` (creations, renames, removals) durable."""
    if os.name != "posix":  # pragma: no cover - directories cannot be fsynced elsewhere
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    """Create ``path`` (never overwrites an existing file), write all of ``data`` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(path: Path) -> None:
    """``mkdir -p`` that fsyncs each parent it adds an entry to, so the new directories survive a crash.

    Raises:
        OSError: a component exists and is not a directory, or cannot be created.
    """
    missing: list[Path] = []
    node = path
    while not os.path.lexists(node):
        missing.append(node)
        if node.parent == node:  # pragma: no cover - the root always exists
            break
        node = node.parent
    for new in reversed(missing):
        with contextlib.suppress(FileExistsError):
            new.mkdir()
        _fsync_dir(new.parent)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")


def _write_atomic(path: Path, data: bytes, *, tmp_prefix: str = ".tmp-") -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    The bytes go to a fresh temporary file beside ``path`` (named
    ``tmp_prefix`` + the name + a random token), which is fsynced, renamed over
    ``path`` with ``os.replace`` and followed by an fsync of the directory.
    A crash leaves either the old content or the new one, never a mix; on an
    exception the temporary file is removed.
    """
    tmp = path.with_name(f"{tmp_prefix}{path.name}-{secrets.token_hex(4)}")
    try:
        _write_file(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _index(name: str) -> int | None:
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """The checkpoint subdirectories of ``directory``, oldest first (``[]`` if there are none).

    Lists every ``ckpt-NNNNNN`` directory, complete or not (see
    :func:`verify_checkpoint`); temporary directories of unfinished saves are
    never listed.
    """
    root = Path(directory)
    if not root.is_dir():
        return []
    found = [(i, p) for p in root.iterdir() if p.is_dir() and (i := _index(p.name)) is not None]
    return [p for _, p in sorted(found)]


def _pointer_target(root: Path) -> Path | None:
    """The checkpoint ``LATEST`` names (``None``: no ``LATEST``); raises on a garbled pointer."""
    pointer = root / LATEST_FILE
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{pointer} is unreadable or garbled: {exc}") from None
    if _index(name) is None:
        raise CheckpointError(f"{pointer} must name a checkpoint like 'ckpt-000007'; it holds {name[:80]!r}")
    target = root / name
    if not target.is_dir():
        raise CheckpointError(f"{pointer} names {name!r}, which does not exist in {root}")
    return target


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The checkpoint ``LATEST`` names in ``directory``, or ``None`` when there is no ``LATEST``.

    This reads the pointer only; it does not check that the checkpoint is
    complete (:func:`verify_checkpoint` does).

    Raises:
        CheckpointError: ``LATEST`` exists but is malformed or names a missing checkpoint.
    """
    return _pointer_target(Path(directory))


# --------------------------------------------------------------------------- save


def save_checkpoint(
    directory: str | os.PathLike[str],
    *,
    tensors: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
    keep: int | None = 3,
) -> Path:
    """Write a new checkpoint into ``directory`` atomically and durably; return its path (``DIR/ckpt-NNNNNN``).

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
    checkpoints stay loadable whatever happens during the save, a kill or a
    power loss included (see the module docstring); on an exception the
    exception propagates and what this save wrote is removed -- unless
    ``LATEST`` had already been switched, when only the final fsync of the
    directory failed: then the new checkpoint (complete) stays. When this
    function returns, the new checkpoint is on stable storage.

    Raises:
        CheckpointError / DTypeError: a tree or meta that cannot be stored (nothing is written).
        InvalidArgumentError: ``keep`` is not a positive int or ``None`` (nothing is written).
        OSError: the directory cannot be created or written (earlier checkpoints are untouched).
    """
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise InvalidArgumentError(f"keep must be a positive int or None; got {keep!r}")
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
    if os.path.lexists(root) and not root.is_dir():
        raise CheckpointError(f"{root} is not a directory; a checkpoint directory is needed (missing or a directory)")
    _make_dirs(root)
    existing = [i for p in list_checkpoints(root) if (i := _index(p.name)) is not None]
    name = f"ckpt-{(max(existing) + 1) if existing else 0:06d}"
    token = secrets.token_hex(4)
    tmp = root / f"{_TMP_PREFIX}{name}-{token}"
    final = root / name
    pointer_tmp = root / f"{_TMP_PREFIX}{LATEST_FILE}-{token}"
    renamed = committed = False
    try:
        os.mkdir(tmp)
        _write_file(tmp / TENSORS_FILE, data)
        _write_file(tmp / META_FILE, meta_bytes)
        _fsync_dir(tmp)
        os.rename(tmp, final)  # fresh name: nothing is replaced
        renamed = True
        _fsync_dir(root)  # from here the checkpoint is complete and durable
        _write_file(pointer_tmp, f"{name}\n".encode("ascii"))
        os.replace(pointer_tmp, root / LATEST_FILE)
        committed = True
        _fsync_dir(root)
    except BaseException:
        if not committed:  # LATEST still names the previous checkpoint: drop every trace of this one
            with contextlib.suppress(OSError):
                shutil.rmtree(final if renamed else tmp)
            with contextlib.suppress(OSError):
                os.unlink(pointer_tmp)
        raise
    if keep is not None:
        _prune(root, keep, current=final)
    return final


def _prune(root: Path, keep: int, *, current: Path) -> None:
    # One writer per directory: leftovers of an earlier crashed save or prune are stale.
    for stale in root.iterdir():
        if stale.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
            with contextlib.suppress(OSError):
                shutil.rmtree(stale) if stale.is_dir() else os.unlink(stale)
    trashed = []
    for old in list_checkpoints(root)[:-keep]:
        if old == current:
            continue
        trash = root / f"{_TRASH_PREFIX}{old.name}-{secrets.token_hex(4)}"
        with contextlib.suppress(OSError):
            os.rename(old, trash)
            trashed.append(trash)
    if trashed:
        # Durable before anything is deleted: a power cut can never bring back a half-deleted ckpt-NNNNNN.
        with contextlib.suppress(OSError):
            _fsync_dir(root)
        for trash in trashed:
            shutil.rmtree(trash, ignore_errors=True)


# --------------------------------------------------------------------------- recognising formats

#: How much of a file is parsed to tell what it is when it is not what was expected.
_SNIFF_BYTES = 1 << 20


def _parses_as_safetensors(data: bytes) -> bool:
    """Whether ``data`` is a whole safetensors file: a header length, a JSON header, consistent offsets."""
    if len(data) < 8:
        return False
    n = int.from_bytes(data[:8], "little")
    if n < 2 or 8 + n > len(data):
        return False
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    if not isinstance(header, dict):
        return False
    body = len(data) - 8 - n
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("dtype"), str)
            and isinstance(entry.get("shape"), list)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= body
        ):
            return False
    return True


def _parses_as_pickle(data: bytes, *, complete: bool) -> bool:
    """Whether ``data`` parses as a pickle stream (opcodes only: nothing is executed or imported).

    A whole file must parse up to a ``STOP`` opcode. A prefix of a larger
    file (``complete=False``) may instead run out of bytes, if it starts with
    a ``PROTO`` opcode and every opcode up to the cut is valid.
    """
    first = None
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if first is None:
                first = (opcode.name, arg)
            if opcode.name == "STOP":
                return True
    except ValueError as exc:
        ran_out = "not enough data" in str(exc) or "exhausted" in str(exc)
        return (not complete) and ran_out and first is not None and first[0] == "PROTO" and first[1] in (2, 3, 4, 5)
    return False


def _pickle_kind(path: Path | None, data: bytes, *, complete: bool) -> str | None:
    """``"a zip archive ..."`` / ``"a Python pickle"`` when ``data`` parses as one, else ``None``.

    Only called on a file that has already failed to be what was expected
    (a verified safetensors file, JSON): a file that parses as safetensors is
    never called a pickle, whatever its first bytes.
    """
    if complete and _parses_as_safetensors(data):
        return None
    # A zip archive keeps its directory at the end: read the file itself when only a prefix is at hand.
    source: Any = path if path is not None and not complete else io.BytesIO(data)
    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                pickled = any(n.endswith(".pkl") for n in archive.namelist())
            return "a zip archive in the torch.save format, which holds pickles" if pickled else "a zip archive"
    except (OSError, zipfile.BadZipFile, ValueError):
        pass
    if _parses_as_pickle(data, complete=complete):
        return "a Python pickle"
    return None


def _refuse_pickle(path: Path, what: str) -> CheckpointError:
    if not what.endswith("pickle") and "pickles" not in what:
        return CheckpointError(f"{path} is {what}, not an esper_func checkpoint (a directory with {META_FILE} and {TENSORS_FILE})")
    return CheckpointError(
        f"{path} is {what}; esper_func never loads pickles (unpickling can run arbitrary code). "
        f"Convert it with a trusted tool, or use ef.from_esper_lite for esper-lite state dicts."
    )


def _read_prefix(path: Path, n: int = _SNIFF_BYTES) -> tuple[bytes, bool]:
    """Up to ``n`` bytes of ``path`` and whether that is the whole file."""
    try:
        with open(path, "rb") as f:
            data = f.read(n + 1)
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    return data[:n], len(data) <= n


def _file_kind(path: Path) -> str | None:
    data, complete = _read_prefix(path)
    return _pickle_kind(path, data, complete=complete)


# --------------------------------------------------------------------------- load


def _resolve(directory: Path) -> Path:
    """The checkpoint directory (holding ``meta.json``) that ``directory`` refers to, by ``LATEST``."""
    if not os.path.lexists(directory):
        raise CheckpointError(f"no checkpoint at {directory}: the path does not exist")
    if not directory.is_dir():
        if directory.name in (META_FILE, TENSORS_FILE):
            return directory.parent
        what = _file_kind(directory) if directory.is_file() else None
        if what is not None:
            raise _refuse_pickle(directory, what)
        raise CheckpointError(
            f"{directory} is not an esper_func checkpoint; pass the checkpoint directory (with {LATEST_FILE} or {META_FILE})"
        )
    if (directory / META_FILE).is_file():
        return directory
    latest = _pointer_target(directory)
    if latest is not None:
        return latest
    _refuse_pickled_children(directory)
    if list_checkpoints(directory):
        raise CheckpointError(
            f"{directory} has checkpoint directories but no {LATEST_FILE} pointer; load one of them directly, "
            f"or pass recover=True to load the newest complete one"
        )
    raise CheckpointError(f"no checkpoint in {directory}: neither {LATEST_FILE} nor {META_FILE} is there")


def _refuse_pickled_children(directory: Path) -> None:
    try:
        children = sorted(directory.iterdir())
    except OSError as exc:
        raise CheckpointError(f"cannot list {directory}: {exc}") from None
    for child in children:
        if child.is_file() and (what := _file_kind(child)) is not None:
            raise _refuse_pickle(child, what)


def _read_meta(ckpt: Path) -> dict[str, Any]:
    path = ckpt / META_FILE
    if not path.is_file():
        raise CheckpointError(f"{ckpt} is not a complete checkpoint: {META_FILE} is missing")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None
    try:
        doc = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        what = _pickle_kind(path, raw, complete=True)
        if what is not None:
            raise _refuse_pickle(path, what) from None
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
    if not isinstance(doc["meta"], dict):
        raise CheckpointError(f"{path}: the user meta must be a JSON object; got {type(doc['meta']).__name__}")
    return doc


def _read_verified_tensors(ckpt: Path, doc: Mapping[str, Any]) -> bytes:
    tensor_path = ckpt / TENSORS_FILE
    if not tensor_path.is_file():
        raise CheckpointError(f"{ckpt} is not a complete checkpoint: {TENSORS_FILE} is missing")
    try:
        data = tensor_path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {tensor_path}: {exc}") from None
    if len(data) == doc["tensors_bytes"] and _sha256(data) == doc["tensors_sha256"]:
        return data
    what = _pickle_kind(tensor_path, data, complete=True)
    if what is not None:
        raise _refuse_pickle(tensor_path, what)
    if len(data) != doc["tensors_bytes"]:
        raise CheckpointError(
            f"{tensor_path} is truncated or damaged: {len(data)} bytes, {doc['tensors_bytes']} expected"
        )
    raise CheckpointError(f"{tensor_path} is corrupt: its SHA-256 does not match the one in {META_FILE}")


def verify_checkpoint(path: str | os.PathLike[str]) -> None:
    """Check that the checkpoint directory ``path`` (one ``ckpt-NNNNNN``) is complete.

    Complete means: ``meta.json`` is an esper_func checkpoint of a supported
    version whose content hash matches, and the tensors file has exactly the
    size and SHA-256 that ``meta.json`` records. Nothing is unpickled.

    Raises:
        CheckpointError: the checkpoint is incomplete or damaged (the message says how).
    """
    ckpt = Path(path)
    _read_verified_tensors(ckpt, _read_meta(ckpt))


def _load_one(ckpt: Path) -> tuple[TensorTree, dict[str, Any]]:
    doc = _read_meta(ckpt)
    data = _read_verified_tensors(ckpt, doc)
    st = _safetensors()
    from safetensors import SafetensorError

    try:
        flat = st.load(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{ckpt / TENSORS_FILE} could not be parsed as safetensors: {exc}") from None
    tree = unflatten_keys(flat, doc["tree"])
    used = set(_leaf_keys(doc["tree"]))
    if set(flat) != used:
        raise CheckpointError(
            f"{ckpt / TENSORS_FILE} holds tensors the structure does not name: {sorted(set(flat) - used)[:10]}"
        )
    return tree, doc["meta"]


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint as :func:`open_checkpoint` found it.

    Attributes:
        path: the ``ckpt-NNNNNN`` directory that was loaded.
        tensors: the tensor tree (on CPU).
        meta: the caller's meta dict.
        skipped: ``(name, reason)`` for everything passed over to get here
            with ``recover=True``: newer checkpoints that are incomplete or
            damaged, and a ``LATEST`` that is missing, garbled or names
            another checkpoint. Empty when the newest checkpoint was loaded
            as ``LATEST`` names it.
    """

    path: Path
    tensors: TensorTree
    meta: dict[str, Any]
    skipped: tuple[tuple[str, str], ...] = ()


def open_checkpoint(
    directory: str | os.PathLike[str],
    *,
    expected: Mapping[str, Any] | None = None,
    recover: bool = False,
) -> LoadedCheckpoint:
    """Load a checkpoint and say which one it was (see :func:`load_checkpoint` for the arguments).

    With ``recover=True`` and a checkpoint *root* (not one ``ckpt-NNNNNN``),
    the checkpoints are tried newest first, and the first complete one is
    loaded whatever ``LATEST`` says; what was passed over is in ``skipped``.

    Raises:
        CheckpointError: as :func:`load_checkpoint`; with ``recover=True``
            only when no checkpoint in the directory is complete (the message
            lists each one with its defect).
    """
    if not isinstance(recover, bool):
        raise InvalidArgumentError(f"recover must be True or False; got {recover!r}")
    root = Path(directory)
    if recover and root.is_dir() and not (root / META_FILE).is_file():
        return _open_newest_complete(root, expected)
    ckpt = _resolve(root)
    tree, meta = _load_one(ckpt)
    if expected is not None:
        _check_expected(tree, expected, ())
    return LoadedCheckpoint(ckpt, tree, meta)


def _open_newest_complete(root: Path, expected: Mapping[str, Any] | None) -> LoadedCheckpoint:
    skipped: list[tuple[str, str]] = []
    try:
        pointed = _pointer_target(root)
        if pointed is None and list_checkpoints(root):
            skipped.append((LATEST_FILE, "missing (a save was interrupted before writing it)"))
    except CheckpointError as exc:
        pointed = None
        skipped.append((LATEST_FILE, str(exc)))
    candidates = list(reversed(list_checkpoints(root)))
    for ckpt in candidates:
        try:
            tree, meta = _load_one(ckpt)
        except CheckpointError as exc:
            skipped.append((ckpt.name, str(exc)))
            continue
        if pointed is not None and pointed != ckpt:
            skipped.append((LATEST_FILE, f"names {pointed.name}, but {ckpt.name} is the newest complete checkpoint"))
        if expected is not None:
            _check_expected(tree, expected, ())
        return LoadedCheckpoint(ckpt, tree, meta, tuple(skipped))
    if not candidates:
        _refuse_pickled_children(root)
        raise CheckpointError(f"no checkpoint in {root}: it holds no {META_FILE} and no ckpt-NNNNNN directory")
    reasons = "; ".join(f"{name}: {reason}" for name, reason in skipped)
    raise CheckpointError(f"no complete checkpoint in {root} ({reasons})")


def load_checkpoint(
    directory: str | os.PathLike[str],
    *,
    expected: Mapping[str, Any] | None = None,
    recover: bool = False,
) -> tuple[TensorTree, dict[str, Any]]:
    """Load ``(tensors, meta)`` as written by :func:`save_checkpoint` (tensors on CPU).

    Args:
        directory: a checkpoint directory root (the checkpoint ``LATEST``
            names is loaded), one ``ckpt-NNNNNN`` directory, or its ``meta.json``.
        expected: optional tree to check the loaded tensors against. Each
            dict node must have exactly the keys of the loaded node (missing
            and unexpected keys are errors), except that a value ``...``
            (Ellipsis) accepts any subtree unchecked. A leaf is a tensor
            (shape and dtype checked), a ``(shape, dtype)`` pair (``dtype``
            may be ``None``), or a shape (``torch.Size`` / tuple of ints).
        recover: for a root, load the newest *complete* checkpoint instead of
            trusting ``LATEST``: newer incomplete or damaged checkpoints and a
            missing or garbled ``LATEST`` are passed over
            (:func:`open_checkpoint` says which).

    Raises:
        CheckpointError: a pickle (refused, never unpickled); not our
            format; an unknown ``schema_version``; a missing, truncated or
            modified file (size or SHA-256 mismatch); a tensor that does not
            match ``expected`` (the message names the key and both shapes).
    """
    loaded = open_checkpoint(directory, expected=expected, recover=recover)
    return loaded.tensors, loaded.meta


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
    raise DTypeError(
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
