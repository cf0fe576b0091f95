"""The installed distribution describes itself as the source does."""

from __future__ import annotations

import importlib.metadata
import pathlib
import subprocess
import sys

import esper_func as ef

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_version_has_one_source() -> None:
    assert importlib.metadata.version("esper-func") == ef.__version__


def test_license_is_an_spdx_expression_with_its_file() -> None:
    meta = importlib.metadata.metadata("esper-func")
    assert meta["License-Expression"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_changelog_names_the_current_version() -> None:
    assert f"## [{ef.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def test_import_prints_no_warning() -> None:
    # torch warns "Failed to initialize NumPy" when numpy is missing; numpy is a core dependency.
    result = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import esper_func"], capture_output=True, text=True, check=True
    )
    assert result.stderr == ""
