"""Every ```python block in the README and docs/ runs, top to bottom, per file."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


DOCS = [p for p in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]) if python_blocks(p)]


def test_the_readme_and_the_api_docs_have_examples() -> None:
    names = {p.name for p in DOCS}
    assert {"README.md", "api.md", "model.md", "counterfactuals.md", "lifecycle.md", "training.md"} <= names


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(path)
    monkeypatch.chdir(tmp_path)
    # The blocks run as one module that is importable while they run, as a script's
    # would be: dataclasses and pickling look classes up by their module.
    module = types.ModuleType(f"docs_{path.stem}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for index, source in enumerate(blocks):
        code = compile(source, f"{path.name}[block {index}]", "exec")
        exec(code, namespace)
