"""A griffe extension for the API reference: the reST bits of esper_func's docstrings, as Markdown.

The docstrings are Google style, with a few reStructuredText constructs that
Markdown does not know. Before mkdocstrings parses a docstring, this rewrites:

- cross-reference roles (``:func:`name```, ``:class:`~pkg.mod.Name```,
  ``:mod:`.stages```, ...) into links to the object's entry in the reference,
  resolved in the docstring's own scope, as Sphinx resolves them. A target
  the reference does not render is shown as code, without a link (the link
  is marked optional, so the strict build does not fail on it);
- a paragraph ending in ``::`` (reST's literal block marker) into one ending
  in ``:`` (the indented block that follows is a Markdown code block too);
- reST simple tables (``====  ====`` borders) into fenced text blocks, so
  they keep their columns;
- reST hyperlinks (```text <url>`_``) into Markdown links.

Used by ``mkdocs.yml`` (``plugins.mkdocstrings...extensions``); the docstrings
themselves are not changed.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

__all__ = ["RstToMarkdown", "rewrite"]

_ROLE = re.compile(r":(?:py:)?(func|meth|class|attr|data|mod|exc|obj|const):`(~?)([^`<>]+?)(?:\s*<([^`>]+)>)?`")
_LINK = re.compile(r"`([^`<>]+?)\s*<(https?://[^`>]+)>`__?")
_BORDER = re.compile(r"^\s*=+(?:\s+=+)+\s*$")
_LITERAL_MARKER = re.compile(r"(?<=\S)::$")


def _resolve(obj: griffe.Object, target: str) -> str | None:
    """The full path of ``target`` as seen from ``obj``'s scope, or None when it cannot be found."""
    if target.startswith("."):
        package = obj.module if obj.is_module else obj.parent
        while package is not None and not package.is_module:
            package = package.parent
        if package is None:
            return None
        base = package.path if package.is_package or package.is_init_module else package.path.rpartition(".")[0]
        dots = len(target) - len(target.lstrip("."))
        for _ in range(dots - 1):
            base = base.rpartition(".")[0]
        return f"{base}.{target.lstrip('.')}"
    head, _, rest = target.partition(".")
    try:
        resolved = obj.resolve(head)
    except griffe.NameResolutionError:
        if "." not in target:
            return None
        resolved = head
    path = f"{resolved}.{rest}" if rest else resolved
    # A re-exported name links to the object it names, wherever the reference renders it.
    try:
        return str(obj.modules_collection[path].canonical_path)
    except (KeyError, ValueError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return path


def _role(obj: griffe.Object, match: re.Match[str]) -> str:
    role, short, text, explicit = match.groups()
    target = (explicit or text).strip()
    if explicit:
        title = text.strip()
    elif short:
        title = target.rpartition(".")[2]
    else:
        title = target.lstrip(".")
    if role in ("func", "meth") and not explicit and not title.endswith(")"):
        title += "()"
    code = f"<code>{html.escape(title)}</code>"
    path = _resolve(obj, target)
    if path is None:
        return code
    return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'


def _tables(lines: list[str]) -> list[str]:
    """Wrap every reST simple table (three border lines) in a fenced text block."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        if _BORDER.match(lines[i]):
            borders = [j for j in range(i, len(lines)) if _BORDER.match(lines[j])][:3]
            if len(borders) == 3:
                indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
                out += ["", f"{indent}```text", *lines[i : borders[2] + 1], f"{indent}```", ""]
                i = borders[2] + 1
                continue
        out.append(lines[i])
        i += 1
    return out


def rewrite(obj: griffe.Object, text: str) -> str:
    """``text`` (a docstring of ``obj``) with its reST constructs in Markdown."""
    lines = _tables(text.splitlines())
    result: list[str] = []
    fenced = False
    for line in lines:
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if not fenced:
            if line.strip() == "::":
                line = ""
            else:
                line = _LITERAL_MARKER.sub(":", line)
            line = _LINK.sub(r"[\1](\2)", line)
            line = _ROLE.sub(lambda m: _role(obj, m), line)
        result.append(line)
    return "\n".join(result)


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring of a loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self._walk(pkg, set())

    def _walk(self, obj: griffe.Object, seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
        for member in obj.members.values():
            if not member.is_alias and isinstance(member, griffe.Object):
                self._walk(member, seen)
