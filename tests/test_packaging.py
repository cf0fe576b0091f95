"""The installed distribution describes itself as the source does."""

from __future__ import annotations

import importlib.metadata
import pathlib
import re
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


# Markdown links and images ([text](target), ![alt](target)), reference definitions ([id]: target)
# and HTML attributes (href="target", src="target").
_LINK_TARGETS = re.compile(
    r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)"
    r"|^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)"
    r"|\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']",
    re.MULTILINE,
)


def test_readme_links_are_absolute() -> None:
    # The README is the project page on the package index, where a relative link leads nowhere.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [next(group for group in match.groups() if group) for match in _LINK_TARGETS.finditer(text)]
    assert targets, "no links found: the pattern no longer matches the README"
    relative = [target for target in targets if not re.match(r"(?:https?|mailto):", target)]
    assert relative == [], f"README.md has relative links (make them https://github.com/esper-func/esper_func/blob/main/...): {relative}"
