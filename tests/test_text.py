"""The standard-library text corpus: selection, split, identity, vocabulary, purity, and the n-gram baseline."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import esper_func as ef
from esper_func import text

# The corpus of each CPython release that was measured: a changed selection, split or normalisation shows here.
KNOWN_SHA256 = {
    "CPython 3.11.7": "e970ff7c91972c85fe52cb83dc254de6b66c899beccd0da68d062a108618351b",
}


@pytest.fixture(scope="module")
def corpus() -> ef.data.TextCorpus:
    return ef.data.load_stdlib_text()


def test_identity_record(corpus: ef.data.TextCorpus) -> None:
    info = corpus.info.to_dict()
    assert json.loads(json.dumps(info)) == info  # JSON-ready
    python = f"{platform.python_implementation()} {platform.python_version()}"
    assert info["name"] == corpus.name == "python-stdlib"
    assert info["python"] == python and info["vocab_size"] == corpus.vocab_size == 256 and info["tokens"] == "bytes"
    assert info["selection"] == text.SELECTION and info["missing_files"] == 0 and corpus.missing == ()
    assert info["bytes"] == corpus.train.numel() + corpus.val.numel() >= text.MIN_BYTES
    assert info["splits"] == {"train": corpus.train.numel(), "val": corpus.val.numel()}
    n_val = sum(f.split == "val" for f in corpus.files)
    assert info["files"] == {"train": len(corpus.files) - n_val, "val": n_val} and len(corpus.files) == len(text.STDLIB_FILES)
    exact = bytes(corpus.train.tolist()) + bytes(corpus.val.tolist())
    assert info["sha256"] == hashlib.sha256(exact).hexdigest()
    if python in KNOWN_SHA256:
        assert info["sha256"] == KNOWN_SHA256[python]
    assert 0.05 < corpus.val.numel() / info["bytes"] < 0.2  # the held-out share of this selection


def test_selection_and_split_are_by_file(corpus: ef.data.TextCorpus) -> None:
    assert list(text.STDLIB_FILES) == sorted(set(text.STDLIB_FILES))
    assert all("/" not in f and f.endswith(".py") for f in text.STDLIB_FILES)
    root = Path(sysconfig.get_paths()["stdlib"])
    for split, tokens in (("train", corpus.train), ("val", corpus.val)):
        members = [f for f in corpus.files if f.split == split]
        assert [f.path for f in members] == sorted(f.path for f in members)
        offset = 0
        for f in members:
            assert f.offset == offset and text.is_validation_file(f.path, 0.1) == (split == "val")
            raw = (root / f.path).read_bytes().replace(b"\r\n", b"\n")
            assert bytes(tokens[f.offset : f.offset + f.bytes].tolist()) == raw
            offset += f.bytes
        assert offset == tokens.numel()
    # a file's split depends on its path alone
    assert text.is_validation_file("argparse.py", 0.1) == text.is_validation_file("argparse.py", 0.1)
    assert not text.is_validation_file("argparse.py", 0.0) and text.is_validation_file("argparse.py", 1.0)


def test_loading_is_fast_pure_and_repeatable(corpus: ef.data.TextCorpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rng = torch.get_rng_state()
    start = time.perf_counter()
    again = ef.data.load_stdlib_text()
    assert time.perf_counter() - start < 1.0
    assert torch.equal(torch.get_rng_state(), rng)
    assert list(tmp_path.iterdir()) == []
    assert torch.equal(again.train, corpus.train) and torch.equal(again.val, corpus.val)
    assert again.info == corpus.info and again.files == corpus.files
    assert corpus.train.dtype == torch.uint8 and corpus.train.ndim == 1
    # another split is another corpus
    other = ef.data.load_stdlib_text(val_fraction=0.3)
    assert other.val.numel() > corpus.val.numel() and other.info.sha256 != corpus.info.sha256


def test_the_same_corpus_and_batches_in_another_process(corpus: ef.data.TextCorpus) -> None:
    script = (
        "import hashlib, esper_func as ef\n"
        "c = ef.data.load_stdlib_text()\n"
        "h = hashlib.sha256()\n"
        "for x, y in c.train_batches(4, 32, seed=7, epoch=2, steps=3): h.update(x.numpy().tobytes() + y.numpy().tobytes())\n"
        "print(c.info.sha256, h.hexdigest())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    h = hashlib.sha256()
    for x, y in corpus.train_batches(4, 32, seed=7, epoch=2, steps=3):
        h.update(x.numpy().tobytes() + y.numpy().tobytes())
    assert done.stdout.split() == [corpus.info.sha256, h.hexdigest()]


def test_missing_sources_are_refused_with_what_was_looked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "argparse.pyc").write_bytes(b"\0" * 100)  # a stripped install: bytecode only
    (tmp_path / "typing.py").write_text("x = 1\n")
    with pytest.raises(ef.MissingDependencyError, match=r"looked for \d+ files .* found 1 \(6 bytes") as info:
        ef.data.load_stdlib_text(tmp_path)
    assert isinstance(info.value, ef.EsperFuncError) and isinstance(info.value, ImportError)
    assert str(tmp_path) in str(info.value) and "root=" in str(info.value)
    monkeypatch.setattr(sysconfig, "get_paths", lambda: {"stdlib": str(tmp_path)})
    with pytest.raises(ef.MissingDependencyError, match=r"sysconfig.get_paths\(\)\['stdlib'\].*\.py sources"):
        ef.data.load_stdlib_text()


def test_another_root_listed_files_and_line_endings(tmp_path: Path) -> None:
    names = [f"m{i}.py" for i in range(30)]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes((f"# module {i}\r\n" + "x = 1\r\n" * 8000).encode())
    source = text.read_stdlib(tmp_path, files=[*names, "absent.py"])
    assert source.python is None and source.missing == ("absent.py",)
    assert b"\r" not in source.train + source.val
    assert len(source.train) + len(source.val) == sum(len((tmp_path / n).read_bytes().replace(b"\r\n", b"\n")) for n in names)
    assert {f.path for f in source.files if f.split == "val"} == {n for n in names if text.is_validation_file(n, 0.1)}
    with pytest.raises(ef.MissingDependencyError):  # the default list: none of these files
        ef.data.load_stdlib_text(tmp_path)
    with pytest.raises(ef.MissingDependencyError, match="no val files"):
        text.read_stdlib(tmp_path, files=[n for n in names if not text.is_validation_file(n, 0.1)])


@given(st.text())
def test_vocabulary_is_bytes_and_round_trips(s: str) -> None:
    tokens = ef.data.encode(s)
    assert tokens.dtype == torch.uint8 and tokens.tolist() == list(s.encode("utf-8"))
    assert ef.data.decode(tokens) == s
    assert ef.data.VOCAB_SIZE == 256


def test_vocabulary_refuses_what_is_not_a_byte() -> None:
    with pytest.raises(ef.InvalidArgumentError, match=r"\[0, 256\)"):
        ef.data.decode([65, 256])
    with pytest.raises(ef.InvalidTypeError, match="str or bytes"):
        ef.data.encode(42)  # type: ignore[arg-type]
    assert ef.data.decode(torch.tensor([0xFF, 65])) == "\ufffdA"


def test_ngram_baseline() -> None:
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (50_000,), generator=g, dtype=torch.uint8)
    assert ef.data.ngram_bits_per_byte(noise, noise[:5000], order=1) == pytest.approx(8.0, abs=0.05)
    abab = ef.data.encode("ab" * 2000)
    assert ef.data.ngram_bits_per_byte(abab, abab[:101], order=1) == pytest.approx(1.0, abs=0.01)
    assert ef.data.ngram_bits_per_byte(abab, abab[:101], order=2, alpha=1e-4) < 0.01
    with pytest.raises(ef.InvalidArgumentError, match="alpha must be > 0"):
        ef.data.ngram_bits_per_byte(abab, abab, alpha=0.0)
    with pytest.raises(ef.InvalidArgumentError, match="order must be <= 4"):
        ef.data.ngram_bits_per_byte(abab, abab, order=5)
    with pytest.raises(ef.ShapeError, match="at least order=3"):
        ef.data.ngram_bits_per_byte(abab, abab[:2], order=3)
    with pytest.raises(ef.InvalidArgumentError, match=r"\[0, 256\)"):
        ef.data.ngram_bits_per_byte(torch.tensor([1, 300]), abab)


def test_ngram_figures_on_the_corpus(corpus: ef.data.TextCorpus) -> None:
    val = corpus.val[:50_000]
    unigram = ef.data.ngram_bits_per_byte(corpus.train, val, order=1)
    bigram = ef.data.ngram_bits_per_byte(corpus.train, val, order=2)
    assert 3.5 < unigram < 5.0 and 2.8 < bigram < unigram


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: ef.data.load_stdlib_text(val_fraction=0.0), ef.InvalidArgumentError, r"val_fraction must be in \(0, 1\)"),
        (lambda: ef.data.load_stdlib_text(val_fraction=1.5), ef.InvalidArgumentError, "val_fraction must be <= 1.0"),
        (lambda: ef.data.load_stdlib_text(val_fraction="0.1"), ef.InvalidTypeError, "val_fraction must be a real number"),
        (lambda: ef.data.load_stdlib_text(3), ef.InvalidTypeError, "root must be a path"),
        (lambda: text.read_stdlib(files="argparse.py"), ef.InvalidTypeError, "files must be a sequence"),
        (lambda: text.read_stdlib(files=["../etc/passwd"]), ef.InvalidArgumentError, "relative paths inside"),
        (lambda: text.is_validation_file(3, 0.1), ef.InvalidTypeError, "path must be a str"),
    ],
)
def test_bad_arguments(call: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()  # type: ignore[operator]
