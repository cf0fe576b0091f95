"""Read the esper-lite 2016337e reference data in ``tests/data/esper-lite-2016337e/`` as plain Python data.

The data was recorded by ``tools/record_esper_lite.py`` running esper-lite itself; its format is
documented in the README.md next to it. Reading it needs neither esper-lite nor esper_func: every
record comes back as dicts, lists, strings, numbers, booleans and ``None``, with the non-finite floats
(stored as ``{"$float": "nan" | "inf" | "-inf"}``) turned back into ``float``\\ s.

    >>> from _esper_lite_data import iter_traces, load_meta  # tests/ is on sys.path under pytest
    >>> load_meta()["esper_lite_commit"]
    '2016337e'
    >>> trace = next(iter_traces("lifecycle"))
"""

from __future__ import annotations

import json
import lzma
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

COMMIT = "2016337e"
DATA_DIR = Path(__file__).resolve().parent / "data" / f"esper-lite-{COMMIT}"
Kind = Literal["lifecycle", "controller", "governor"]
KINDS: tuple[Kind, ...] = ("lifecycle", "controller", "governor")

_FLOATS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def _decode(obj: dict[str, Any]) -> Any:
    """``json`` object hook: a ``{"$float": ...}`` object is a non-finite float."""
    if len(obj) == 1 and "$float" in obj:
        return _FLOATS[obj["$float"]]
    return obj


def loads(line: str) -> Any:
    """Parse one line of recorded JSON (strict JSON; tagged non-finite floats decoded)."""
    return json.loads(line, object_hook=_decode)


def path_of(kind: Kind) -> Path:
    return DATA_DIR / f"{kind}.jsonl.xz"


def load_meta() -> dict[str, Any]:
    """``meta.json``: commit, source fingerprints, torch version, recorder settings, enums, coverage."""
    result: dict[str, Any] = json.loads((DATA_DIR / "meta.json").read_text(), object_hook=_decode)
    return result


def load_header(kind: Kind) -> dict[str, Any]:
    """The first line of a data file: ``format``, ``kind``, ``commit`` (and the governor's constructor errors)."""
    with lzma.open(path_of(kind), "rt", encoding="utf-8") as f:
        header: dict[str, Any] = loads(f.readline())
    return header


def iter_traces(kind: Kind) -> Iterator[dict[str, Any]]:
    """Yield the traces of one kind, one at a time (each line after the header is one trace)."""
    with lzma.open(path_of(kind), "rt", encoding="utf-8") as f:
        header = loads(f.readline())
        if header.get("kind") != kind or header.get("commit") != COMMIT:
            raise ValueError(f"{path_of(kind)}: header {header!r} is not {kind} data of esper-lite {COMMIT}")
        for line in f:
            if line.strip():
                yield loads(line)


def load_traces(kind: Kind) -> list[dict[str, Any]]:
    """All traces of one kind as a list."""
    return list(iter_traces(kind))


__all__ = ["COMMIT", "DATA_DIR", "KINDS", "iter_traces", "load_header", "load_meta", "load_traces", "loads", "path_of"]
