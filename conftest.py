"""Collection rules shared by the test suite and the doctests of ``esper_func/``.

``pytest`` runs the examples in esper_func's docstrings as doctests
(``--doctest-modules`` in pyproject.toml). A module whose doctests need an
optional dependency is not collected when that dependency is missing, so the
doctests pass on a core-only install (``pip install esper-func pytest``,
then ``python -m pytest esper_func``).
"""

from __future__ import annotations

import importlib

#: Doctest modules (globs relative to this directory) and the optional packages they import.
OPTIONAL_DOCTESTS: dict[str, tuple[str, ...]] = {
    "esper_func/testing/*.py": ("hypothesis",),  # the `testing` extra: raises on import without it
    "esper_func/report.py": ("matplotlib",),
    "esper_func/checkpoint.py": ("safetensors",),
    "esper_func/runs.py": ("safetensors",),
}


def _missing(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return True
    return False


collect_ignore_glob = [
    pattern for pattern, packages in OPTIONAL_DOCTESTS.items() if any(_missing(p) for p in packages)
]
