"""MkDocs hooks for the documentation build (``hooks:`` in ``mkdocs.yml``).

The reference page of the top-level namespace lists every name that
``esper_func/__init__.py`` re-exports, under the topic comments that group
them there, each linked to its entry in the module pages (a name that no
page documents fails the strict build), so the list cannot drift from the
package.

``mkdocs build --strict`` fails on any warning. A few docstrings still have
known, harmless formatting problems that griffe warns about (listed in
``KNOWN_DOCSTRING_WARNINGS``, each with the fix it needs); these warnings, and
only these, are let through. Once a docstring is fixed its entry must go:
an entry that matched nothing during a build is itself a warning, so the list
cannot outlive the problems it names.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

__all__ = ["KNOWN_DOCSTRING_WARNINGS", "namespace_tables", "on_config", "on_page_markdown", "on_post_build"]

#: The placeholder in ``docs/reference/esper_func.md`` that the tables replace.
NAMESPACE_PLACEHOLDER = "<!-- esper_func namespace -->"

#: ``(file, text)``: a griffe warning about ``file`` whose message contains ``text`` is expected.
#: Each entry names a docstring to fix in the source; then delete the entry.
KNOWN_DOCSTRING_WARNINGS: tuple[tuple[str, str], ...] = ()

_GRIFFE_LOGGER = "mkdocs.plugins.griffe"


class _KnownWarnings(logging.Filter):
    """Drops the expected griffe warnings and counts which entries matched."""

    def __init__(self) -> None:
        super().__init__()
        self.matched: set[tuple[str, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        message = record.getMessage()
        for entry in KNOWN_DOCSTRING_WARNINGS:
            path, text = entry
            if path in message and text in message:
                self.matched.add(entry)
                return False
        return True


_filter = _KnownWarnings()


def on_config(config: Any, **kwargs: Any) -> Any:
    logger = logging.getLogger(_GRIFFE_LOGGER)
    if _filter not in logger.filters:
        logger.addFilter(_filter)
    _filter.matched.clear()
    return config


def on_post_build(config: Any, **kwargs: Any) -> None:
    stale = [entry for entry in KNOWN_DOCSTRING_WARNINGS if entry not in _filter.matched]
    for path, text in stale:
        logging.getLogger("mkdocs.plugins.esper_func").warning(
            "tools/mkdocs_hooks.py: the known docstring warning (%s, %s) did not occur; "
            "remove it from KNOWN_DOCSTRING_WARNINGS",
            path,
            text,
        )


def _summary(obj: Any) -> str:
    """The first line of ``obj``'s docstring, made safe for a table cell."""
    docstring = obj.docstring
    if docstring is None:
        return ""
    first = docstring.value.strip().split("\n\n")[0]
    return " ".join(first.split()).replace("|", "\\|")


def namespace_tables(root: Path) -> str:
    """Markdown tables of the names ``esper_func/__init__.py`` re-exports, by its topic comments."""
    import griffe

    source = (root / "esper_func" / "__init__.py").read_text(encoding="utf-8")
    lines = source.splitlines()
    rst = griffe.load_extensions(f"{root / 'tools' / 'griffe_rst.py'}:RstToMarkdown")
    package = griffe.load("esper_func", search_paths=[str(root)], docstring_parser=None, extensions=rst)
    sections: dict[str, list[str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ImportFrom) or node.module is None or node.module == "__future__":
            continue
        title = "Other names"
        for line in reversed(lines[: node.lineno - 1]):
            if line.startswith("# "):
                title = line[2:].strip()
                break
            if not line.strip():
                continue
        rows = sections.setdefault(title, [])
        for alias in node.names:
            name = alias.asname or alias.name
            target = package[name]
            if target.is_module:
                rows.append(f"| `ef.{name}` | [`{target.path}`][{target.path}] | {_summary(target)} |")
            else:
                canonical = target.canonical_path
                rows.append(f"| [`ef.{name}`][{canonical}] | `{canonical}` | {_summary(target.final_target)} |")
    parts = []
    for title, rows in sections.items():
        parts += [f"## {title}", "", "| name | defined in | summary |", "|---|---|---|", *rows, ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    if NAMESPACE_PLACEHOLDER not in markdown:
        return markdown
    root = Path(config["config_file_path"]).resolve().parent
    return markdown.replace(NAMESPACE_PLACEHOLDER, namespace_tables(root))
