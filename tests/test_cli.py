"""The command line: end to end in subprocesses, every user error as one line with exit 2, recovery after crashes.

Most cases call :func:`esper_func.cli.main` in-process (fast); the
subprocess tests check what only a real process shows (exit status, no
traceback, a real ``SIGKILL``) and count towards coverage through
coverage's ``patch = ["subprocess"]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from _fsjournal import FsJournal, SimulatedCrash

import esper_func as ef
from esper_func import cli
from esper_func.runs import LOCK_FILE, MANIFEST_FILE, lock_run_directory

pytest.importorskip("safetensors", reason="the command line writes checkpoints with safetensors")
pytest.importorskip("matplotlib", reason="the command line writes a PNG report")

SYNTH = ["--dataset", "synthetic"]


def run(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "esper_func", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root`` with a digest of its bytes; the lock file is left out."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    if root.is_file():
        return {"": hashlib.sha256(root.read_bytes()).hexdigest()}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            out[os.path.relpath(os.path.join(dirpath, name), root)] = "<dir>"
        for name in files:
            if name != LOCK_FILE:
                path = os.path.join(dirpath, name)
                out[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return out


def call(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``esper_func.cli.main`` in-process: ``(exit status, stdout, stderr)``."""
    capsys.readouterr()
    try:
        rc = cli.main(list(args))
    except SystemExit as exc:  # argparse's own exits (--help, --version, its one-line errors)
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, command: str) -> None:
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"esper-func {command}: " if command else "esper-func: "), err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- a reference run


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FsJournal]:
    """``demo --epochs 2`` on synthetic data, uninterrupted, with the journal of its disk writes."""
    out = tmp_path_factory.mktemp("reference") / "run"
    journal = FsJournal()
    with pytest.MonkeyPatch.context() as m, journal.installed(m):
        assert cli.main(["demo", "--epochs", "2", *SYNTH, "--out", str(out)]) == 0
    return out, journal


@pytest.fixture(scope="module")
def reference(recorded: tuple[Path, FsJournal]) -> Path:
    """The uninterrupted run's directory (do not modify; copy it)."""
    return recorded[0]


def newest_params(out: Path) -> Any:
    saved = ef.checkpoint.load_checkpoint(out / "checkpoints", recover=True)
    return saved[0]["current"]["params"]


def same_tree(a: Any, b: Any) -> bool:
    la, lb = torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)
    return len(la) == len(lb) and all(torch.equal(x, y) for x, y in zip(la, lb, strict=True))


def without_seconds(records: list[dict]) -> list[dict]:
    """The records less their wall-clock time (the one field that differs between runs)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_same_run(out: Path, reference: Path) -> None:
    assert without_seconds(read_metrics(out / "metrics.jsonl")) == without_seconds(read_metrics(reference / "metrics.jsonl"))
    assert same_tree(newest_params(out), newest_params(reference))
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- end to end, in subprocesses


def test_demo_resume_and_sweep(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run("demo", "--epochs", "2", *SYNTH, "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "epoch   2" in done.stdout and "final validation accuracy" in done.stdout
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]) >= {"epoch", "train_loss", "val_loss", "val_accuracy", "slots", "contributions", "events"}
    # Each line is a typed record's JSON plus the demo's keys (the baselines' metrics).
    library = [{k: v for k, v in r.items() if k not in ("baseline", "val_bpc")} for r in records]
    assert all(ef.EpochRecord.from_dict(r).to_dict() == r for r in library)
    assert all(set(r["baseline"]) == {"no_seeds", "widened"} for r in records)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "checkpoints" / "LATEST").exists() and (out / MANIFEST_FILE).exists()

    again = run("demo", "--epochs", "2", *SYNTH, "--out", str(out), cwd=tmp_path)
    assert again.returncode == 2 and "resume" in again.stderr and len(again.stderr.splitlines()) == 1

    resumed = run("resume", str(out), "--epochs", "3", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]

    swept = run("sweep", str(out), cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr


def esper_lite_file(tmp_path: Path) -> Path:
    host = ef.CNNHost(in_channels=1, num_classes=4, n_blocks=2, base_channels=4, memory_format="contiguous_format")
    model, params, buffers = ef.build_model(host, ["r0c0", "r0c1"])
    model, params = ef.add_seed(model, params, "r0c0", ef.default_registry(), "norm")
    state = ef.germinate("r0c0", "norm")
    state, _, _ = ef.advance(state, ef.Gates())
    model, params = ef.set_stages(model, params, {"r0c0": state})
    path = tmp_path / "esper_lite.pt"
    torch.save(ef.to_state_dict(model, params, buffers, states={"r0c0": state}), path)
    return path


HOST_ARGS = ["--host-arg", "in_channels=1", "--host-arg", "num_classes=4", "--host-arg", "n_blocks=2",
             "--host-arg", "base_channels=4", "--host-arg", "memory_format=contiguous_format"]


def test_import_esper_lite_then_sweep(tmp_path: Path) -> None:
    out = tmp_path / "imported"
    done = run("import-esper-lite", str(esper_lite_file(tmp_path)), str(out), *HOST_ARGS, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "r0c0" in done.stdout and "TRAINING" in done.stdout
    swept = run("sweep", str(out), "--data", "synthetic", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    refused = run("resume", str(out), cwd=tmp_path)
    assert refused.returncode == 2 and "not resumed" in refused.stderr


def test_errors_are_one_line_with_exit_2_in_a_real_process(tmp_path: Path) -> None:
    user = tmp_path / "d"
    user.mkdir()
    (user / "thesis.txt").write_text("x")
    (user / "src").mkdir()
    before = snapshot(user)
    cases = [
        (("resume", str(tmp_path / "nowhere")), "resume", "nowhere"),
        (("demo", "--epochs", "1", "--out", str(user), "--overwrite"), "demo", "thesis.txt"),
        (("demo", "--epochs", "-1"), "demo", "--epochs"),
    ]
    for args, command, needle in cases:
        done = run(*args, cwd=tmp_path)
        assert_one_line_error(done.returncode, done.stderr, command)
        assert needle in done.stderr
    assert snapshot(user) == before  # the reproduction: thesis.txt and src/ survive --overwrite
    version = run("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"esper-func {ef.__version__}"


def test_a_real_kill_mid_run_then_resume_ends_bitwise_like_an_uninterrupted_run(tmp_path: Path, reference: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "esper_func", "demo", "--epochs", "2", *SYNTH, "--out", str(out)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        while not (out / "checkpoints" / "ckpt-000000").exists() and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = run("resume", str(out), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, reference)


# --------------------------------------------------------------------------- every user error: one line, exit 2


@pytest.fixture
def places(tmp_path: Path, reference: Path) -> dict[str, Path]:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "empty").mkdir()
    user = tmp_path / "user"
    (user / "src").mkdir(parents=True)
    (user / "thesis.txt").write_text("years of work")
    shutil.copytree(reference, tmp_path / "run")
    (tmp_path / "junk.pt").write_bytes(b"\x80\x04garbage")
    torch.save({"x": _Payload(tmp_path / "PWNED")}, tmp_path / "unsafe.pt")  # weights_only refuses it
    esper_lite_file(tmp_path)
    return {
        "file": tmp_path / "afile", "empty": tmp_path / "empty", "user": user, "run": tmp_path / "run",
        "missing": tmp_path / "missing", "junk": tmp_path / "junk.pt", "unsafe": tmp_path / "unsafe.pt",
        "lite": tmp_path / "esper_lite.pt", "root": tmp_path,
    }


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (str(self.marker),))


BAD: list[tuple[str, Callable[[dict[str, Path]], list[str]], str]] = [
    ("", lambda p: [], "required"),
    ("", lambda p: ["frobnicate"], "invalid choice"),
    ("", lambda p: ["--epochs", "3"], "invalid choice"),
    ("demo", lambda p: ["demo", "--epochs", "-1"], "whole number from 1"),
    ("demo", lambda p: ["demo", "--epochs", "0"], "whole number from 1"),
    ("demo", lambda p: ["demo", "--epochs", "x"], "got 'x'"),
    ("demo", lambda p: ["demo", "--epochs", "1.5"], "whole number"),
    ("demo", lambda p: ["demo", "--epochs", str(10**12)], "to 1000000"),
    ("demo", lambda p: ["demo", "--seed", "-1"], "--seed"),
    ("demo", lambda p: ["demo", "--seed", str(2**70)], "9223372036854775807"),
    ("demo", lambda p: ["demo", "--dataset", "mnist"], "invalid choice"),
    ("demo", lambda p: ["demo", "--out", ""], "directory path"),
    ("demo", lambda p: ["demo", "--out", "a\0b"], "NUL"),
    ("demo", lambda p: ["demo", "--frob"], "unrecognized"),
    ("demo", lambda p: ["demo", *SYNTH, "--out", str(p["file"])], "not a directory"),
    ("demo", lambda p: ["demo", *SYNTH, "--out", str(p["file"] / "sub")], "cannot create"),
    ("demo", lambda p: ["demo", *SYNTH, "--out", str(p["user"])], "src, thesis.txt"),
    ("demo", lambda p: ["demo", *SYNTH, "--out", str(p["user"]), "--overwrite"], "only ever replaces a run's own"),
    ("demo", lambda p: ["demo", *SYNTH, "--out", str(p["run"])], "already holds an esper-func run"),
    ("resume", lambda p: ["resume"], "required"),
    ("resume", lambda p: ["resume", str(p["missing"])], "does not exist"),
    ("resume", lambda p: ["resume", str(p["file"])], "not a directory"),
    ("resume", lambda p: ["resume", str(p["empty"])], "holds no esper-func run"),
    ("resume", lambda p: ["resume", str(p["user"])], "holds no esper-func run"),
    ("resume", lambda p: ["resume", str(p["run"]), "--epochs", "1"], "already has 2 epochs"),
    ("resume", lambda p: ["resume", str(p["run"]), "--epochs", "2"], "must be greater than 2"),
    ("resume", lambda p: ["resume", str(p["run"]), "--epochs", "-3"], "whole number"),
    ("sweep", lambda p: ["sweep", str(p["missing"])], "does not exist"),
    ("sweep", lambda p: ["sweep", str(p["empty"])], "holds no esper-func run"),
    ("sweep", lambda p: ["sweep", str(p["run"]), "--data", "digits"], "does not fit the run's model"),
    ("sweep", lambda p: ["sweep", str(p["run"]), "--data", "imagenet"], "invalid choice"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["missing"]), str(p["root"] / "x")], "does not exist"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["empty"]), str(p["root"] / "x")], "is not a file"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["junk"]), str(p["root"] / "x")], "weights-only"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["unsafe"]), str(p["root"] / "x")], "weights-only"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["lite"]), str(p["run"])], "already holds an esper-func run"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["lite"]), str(p["user"])], "not empty"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["lite"]), str(p["root"] / "x"), "--host-arg", "n_blocks"], "KEY=VALUE"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["lite"]), str(p["root"] / "x"), "--host-arg", "bogus=1"], "not a CNNHost argument"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["lite"]), str(p["root"] / "x"), "--host-arg", "n_blocks=-4"], "bad --host-arg"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["lite"]), str(p["root"] / "x")], "cannot import"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["lite"]), str(p["root"] / "x"), "--host", "transformer"], "import"),
    ("import-esper-lite", lambda p: ["import-esper-lite", str(p["lite"]), str(p["file"]), *HOST_ARGS], "not a directory"),
]


@pytest.mark.parametrize("command,argv,needle", BAD, ids=[f"{i}-{c or 'top'}" for i, (c, _, _) in enumerate(BAD)])
def test_every_bad_invocation_is_one_line_with_exit_2_and_changes_nothing(
    places: dict[str, Path], capsys: pytest.CaptureFixture[str], command: str, argv: Callable[[dict[str, Path]], list[str]], needle: str
) -> None:
    before = snapshot(places["root"])
    rc, _, err = call(*argv(places), capsys=capsys)
    assert_one_line_error(rc, err, command)
    assert needle in err, err
    assert snapshot(places["root"]) == before
    assert not (places["root"] / "PWNED").exists()


def edit_checkpoint(out: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Change the newest checkpoint's run metadata and re-seal it (a valid content hash), as a user editing it would."""
    newest = ef.checkpoint.open_checkpoint(out / "checkpoints", recover=True).path
    doc = json.loads((newest / "meta.json").read_text())
    doc.pop("content_sha256")
    edit(doc["meta"])
    doc["content_sha256"] = hashlib.sha256(ef.checkpoint._canonical(doc)).hexdigest()
    (newest / "meta.json").write_text(json.dumps(doc))


EDITS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "epochs-string": (lambda m: m["extra"]["run_config"].__setitem__("epochs", "many"), "epochs must be a whole number"),
    "unknown-field": (lambda m: m["extra"]["run_config"].__setitem__("colour", "red"), "unknown field"),
    "dataset": (lambda m: m["extra"]["run_config"].__setitem__("dataset", "mnist"), "dataset must be one of"),
    "lr": (lambda m: m["extra"]["run_config"].__setitem__("lr", -1), "lr must be"),
    "config-list": (lambda m: m["extra"].__setitem__("run_config", [1, 2]), "must be a JSON object"),
    "loop-epoch": (lambda m: m["loop"].__setitem__("epoch", "two"), "loop.epoch"),
    "loop-missing": (lambda m: m["loop"].pop("governor"), "loop.governor is missing"),
    "step": (lambda m: m["current"].__setitem__("step", -5), "current.step"),
    "key": (lambda m: m["current"].__setitem__("key", 1.5), "current.key"),
    "seeds": (lambda m: m["current"].__setitem__("seeds", []), "current.seeds"),
    "model": (lambda m: m["current"]["model"].__setitem__("stages", [99, 1, 1, 1]), "current.model"),
    "records": (lambda m: m["loop"].__setitem__("records", {"a": 1}), "loop.records"),
    "governor-losses": (lambda m: m["loop"]["governor"].__setitem__("losses", ["x"]), "loop.governor"),
}


@pytest.mark.parametrize("case", sorted(EDITS))
def test_edited_run_metadata_is_one_clear_error(
    tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    edit, needle = EDITS[case]
    edit_checkpoint(out, edit)
    before = snapshot(out)
    for command in ("resume", "sweep"):
        rc, _, err = call(command, str(out), *(["--epochs", "3"] if command == "resume" else []), capsys=capsys)
        if command == "sweep" and case in ("loop-epoch", "loop-missing", "records", "governor-losses"):
            continue  # sweep reads the model and its state only
        assert_one_line_error(rc, err, command)
        assert needle in err, err
    assert snapshot(out) == before


def test_a_garbled_manifest_is_one_clear_error(tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / MANIFEST_FILE).write_text("{not json")
    for argv in (["resume", str(out), "--epochs", "3"], ["demo", *SYNTH, "--out", str(out), "--overwrite"]):
        rc, _, err = call(*argv, capsys=capsys)
        assert_one_line_error(rc, err, argv[0])
        assert "esper-func-run.json is malformed" in err


@pytest.mark.parametrize(
    "module,argv,needle",
    [
        ("safetensors", ["demo", *SYNTH], "'safetensors' package"),
        ("matplotlib", ["demo", *SYNTH], "'matplotlib' package"),
        ("sklearn", ["demo"], "'scikit-learn' package"),
        ("safetensors", ["resume", "RUN"], "'safetensors' package"),
        ("matplotlib", ["resume", "RUN", "--epochs", "3"], "'matplotlib' package"),
        ("sklearn", ["sweep", "RUN", "--data", "digits"], "'scikit-learn' package"),
        ("safetensors", ["import-esper-lite", "LITE", "NEW"], "'safetensors' package"),
    ],
)
def test_missing_optional_packages_are_reported_before_any_work(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    module: str, argv: list[str], needle: str,
) -> None:
    shutil.copytree(reference, tmp_path / "run")
    lite = esper_lite_file(tmp_path)
    paths = {"RUN": str(tmp_path / "run"), "LITE": str(lite), "NEW": str(tmp_path / "new")}
    argv = [paths.get(a, a) for a in argv]
    if argv[0] == "demo":
        argv += ["--out", str(tmp_path / "new")]
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)  # "import module" now raises ImportError
    before = snapshot(tmp_path)
    rc, out, err = call(*argv, capsys=capsys)
    assert_one_line_error(rc, err, argv[0])
    assert needle in err and "pip install" in err
    assert "epoch" not in out  # refused before training
    assert snapshot(tmp_path) == before


def test_a_second_writer_is_locked_out(tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = snapshot(out)
    with lock_run_directory(out):  # another esper-func process is writing
        for argv in (["resume", str(out), "--epochs", "3"], ["demo", *SYNTH, "--out", str(out), "--overwrite"]):
            rc, _, err = call(*argv, capsys=capsys)
            assert_one_line_error(rc, err, argv[0])
            assert "in use by another esper-func process" in err
    assert snapshot(out) == before


# --------------------------------------------------------------------------- resume semantics


def test_resume_when_done_says_so_and_repairs_outputs(tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "metrics.jsonl").write_text(reference.joinpath("metrics.jsonl").read_text().splitlines()[0] + "\n")
    (out / "report.png").unlink()
    rc, stdout, err = call("resume", str(out), capsys=capsys)
    assert rc == 0 and "nothing to do" in stdout and "already has 2 of 2 epochs" in stdout, err
    assert_same_run(out, reference)


def test_sweep_refuses_a_dataset_that_does_not_fit_and_names_the_one_that_does(
    tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = call("sweep", str(reference), "--data", "digits", capsys=capsys)
    assert_one_line_error(rc, err, "sweep")
    assert "10 classes" in err and "num_classes=4" in err and "use --data synthetic" in err
    assert cli.DATASET_SHAPES == {
        name: (int(d.x_val.shape[1]), int(d.num_classes))
        for name, d in {"synthetic": cli._load_data("synthetic", 0), "digits": cli._load_data("digits", 0)}.items()
    }


def test_overwrite_replaces_only_the_run_and_puts_it_back_if_the_new_run_fails(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    before = snapshot(out)

    for failure, status in ((OSError(28, "No space left on device"), 2), (KeyboardInterrupt(), 130)):

        def failing_save(*args: Any, failure: BaseException = failure, **kwargs: Any) -> None:
            raise failure

        monkeypatch.setattr("esper_func.runs.save_run", failing_save)
        rc, _, err = call("demo", "--epochs", "1", *SYNTH, "--out", str(out), "--overwrite", capsys=capsys)
        assert rc == status and len(err.splitlines()) == 1 and err.startswith("esper-func demo: "), err
        assert "has been put back" in err
        assert snapshot(out) == before  # the old run is back, byte for byte
    monkeypatch.undo()
    rc, _, err = call("demo", "--epochs", "1", *SYNTH, "--out", str(out), "--overwrite", capsys=capsys)
    assert rc == 0, err
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [1]
    assert not [p for p in out.iterdir() if p.name.startswith(".esper-func-replaced-")]


def test_rank_logs_hold_each_epoch_once_after_a_crash_between_log_and_checkpoint(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under torchrun every rank appends its log line before rank 0 checkpoints; a crash in between
    must not leave the epoch twice once the run is resumed (RANK alone enables the rank log)."""
    from esper_func import distributed

    monkeypatch.setenv("RANK", "0")
    out = tmp_path / "run"
    import esper_func.runs as runs

    real_save = runs.save_run

    def crash_on_second(directory: Any, model: Any, state: Any, loop: Any, **kwargs: Any) -> Any:
        if loop.epoch == 2:
            raise SimulatedCrash("killed between the rank log and the checkpoint")
        return real_save(directory, model, state, loop, **kwargs)

    monkeypatch.setattr(runs, "save_run", crash_on_second)
    with pytest.raises(SimulatedCrash):
        cli.main(["demo", "--epochs", "2", *SYNTH, "--out", str(out)])
    first = (out / "rank0.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in first] == [1, 2]
    monkeypatch.setattr(runs, "save_run", real_save)
    assert call("resume", str(out), capsys=capsys)[0] == 0
    lines = [json.loads(x) for x in (out / "rank0.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [1, 2]  # epoch 2 once: the line of the lost epoch was dropped
    assert (out / "rank0.jsonl").read_text().splitlines()[0] == first[0]
    assert lines[1]["params_digest"] == distributed.params_digest(newest_params(out))
    assert [x["events"] for x in lines] == [r["events"] for r in read_metrics(reference / "metrics.jsonl")]
    assert_same_run(out, reference)
    assert "rank0.jsonl" in json.loads((out / MANIFEST_FILE).read_text())["owns"]


def test_trimming_rank_logs(tmp_path: Path) -> None:
    path = tmp_path / "rank0.jsonl"
    lines = [json.dumps({"epoch": e, "n": i}) + "\n" for i, e in enumerate([1, 2, 3, 2, 3, 4])]
    path.write_text("".join(lines) + '{"epoch": 5, "torn')
    cli._trim_rank_log(path, 3)
    assert path.read_text() == lines[0] + lines[3] + lines[4]  # 1, then the rewritten 2 and 3
    cli._trim_rank_log(path, 0)
    assert path.read_text() == ""
    cli._trim_rank_log(tmp_path / "missing.jsonl", 3)


# --------------------------------------------------------------------------- a crash at any point of a command


def crash_points(journal: FsJournal) -> list[int]:
    """Crash points that cover each phase of a 2-epoch demo: around the manifest's rename, between the
    first checkpoint's rename and its LATEST, after it, during the second save, before the report."""
    mutating = [op for op in journal.ops if op.kind in FsJournal.MUTATING]
    renames = {
        name: [i for i, op in enumerate(mutating) if op.kind == "rename" and Path(op.dst or "").name.startswith(name)]
        for name in (MANIFEST_FILE, "ckpt-", "LATEST", "report.png")
    }
    return [
        renames[MANIFEST_FILE][0],  # the run has not started: no manifest
        renames[MANIFEST_FILE][0] + 1,  # a manifest and no checkpoint
        renames["ckpt-"][0] + 1,  # the first checkpoint complete, LATEST not written
        renames["LATEST"][0] + 1,  # the first checkpoint committed, metrics not written
        renames["ckpt-"][1] - 1,  # the second checkpoint half written
        renames["report.png"][0],  # everything but the report
    ]


def test_a_crash_at_any_step_of_demo_then_resume_ends_like_an_uninterrupted_run(
    tmp_path: Path, recorded: tuple[Path, FsJournal], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, demo_journal = recorded
    points = crash_points(demo_journal)
    assert len(set(points)) == 6 and max(points) < demo_journal.steps
    for n, k in enumerate(points):
        out = tmp_path / f"crash-{k}"
        journal = FsJournal(crash_at=k)
        with journal.installed(monkeypatch), pytest.raises(SimulatedCrash):
            cli.main(["demo", "--epochs", "2", *SYNTH, "--out", str(out)])
        if n % 2:
            journal.power_loss(tmp_path)
        where = f"crash before step {k}"
        if (out / MANIFEST_FILE).exists():
            rc, _, err = call("demo", "--epochs", "2", *SYNTH, "--out", str(out), capsys=capsys)
            assert rc == 2 and "already holds" in err, where
            rc, _, err = call("resume", str(out), capsys=capsys)
        else:  # the run never started: the directory is free for it
            rc, _, err = call("demo", "--epochs", "2", *SYNTH, "--out", str(out), capsys=capsys)
        assert rc == 0, f"{where}: {err}"
        assert_same_run(out, reference)


def test_a_pickled_file_named_like_a_run_file_is_never_loaded(tmp_path: Path, reference: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    marker = tmp_path / "PWNED"
    for ckpt_dir in (out / "checkpoints").glob("ckpt-*"):
        (ckpt_dir / "tensors.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    before = snapshot(out)
    rc, _, err = call("resume", str(out), "--epochs", "3", capsys=capsys)
    assert_one_line_error(rc, err, "resume")
    assert "no complete checkpoint" in err and "never loads pickles" in err
    assert not marker.exists() and snapshot(out) == before  # damaged checkpoints are never trained over
