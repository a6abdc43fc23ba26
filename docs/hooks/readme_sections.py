"""MkDocs hook: a page takes a section of the README instead of a copy of it.

A line `<!-- readme: Installing on a Pi -->` in a page under docs/ is replaced
by the body of the README's `## Installing on a Pi` section (its heading left
out, the page has its own); `<!-- readme: (intro) -->` takes what stands
between the README's title and its first `##` heading. The README is written
for GitHub, at the repository's root, so its links are rewritten on the way in:

- `docs/X` becomes `X` (pages and images of the site);
- `#a-readme-section` becomes the page that includes that section;
- anything else in the repository (`deploy/`, `examples/...`) is named as a
  path, since the site does not carry it.

A marker naming no README section, or a README link to a section no page
includes, stops the build: the site must not quietly lose text or links.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^<!-- readme: (.+?) -->$", re.MULTILINE)
INTRO = "(intro)"
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")

# Set in on_config: the README's sections by name, and which page includes each.
_sections: dict[str, str] = {}
_pages_of_slug: dict[str, str] = {}
_root = Path()


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading ("Securing a deployment" -> securing-a-deployment)."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def split_readme(text: str) -> dict[str, str]:
    """The README's `##` sections by heading, and its intro under INTRO."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    intro = re.sub(r"\A# .*\n", "", parts[0])
    sections = {INTRO: intro}
    for heading, body in zip(parts[1::2], parts[2::2], strict=True):
        sections[heading.strip()] = body
    return sections


def on_config(config: Any) -> Any:
    """Read the README, and find which page includes which of its sections."""
    global _root
    docs = Path(config["docs_dir"])
    _root = docs.parent
    _sections.clear()
    _sections.update(split_readme((_root / "README.md").read_text(encoding="utf-8")))
    _pages_of_slug.clear()
    for page in sorted(docs.rglob("*.md")):
        for name in MARKER.findall(page.read_text(encoding="utf-8")):
            _pages_of_slug[slug(name)] = page.relative_to(docs).as_posix()
    return config


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each marker with its README section, links rewritten for this page."""

    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in _sections:
            raise PluginError(f"{page.file.src_uri}: the README has no section {name!r}")
        return rewrite_links(_sections[name].strip("\n"), page.file.src_uri)

    return MARKER.sub(include, markdown)


def rewrite_links(text: str, page_uri: str) -> str:
    """The README's links as they must read from the page at `page_uri` in docs/."""
    here = posixpath.dirname(page_uri)

    def relative(target: str) -> str:
        return posixpath.relpath(target, here or ".")

    def replace(match: re.Match[str]) -> str:
        bang, label, target = match.groups()
        if re.match(r"[a-z]+:", target):
            return match.group(0)  # https:, mailto:
        if target.startswith("#"):
            page = _pages_of_slug.get(target[1:])
            if page is None:
                raise PluginError(f"the README links to {target}, which no docs page includes")
            return f"{bang}[{label}]({relative(page)})"
        path, _, anchor = target.partition("#")
        if path.startswith("docs/") and not (_root / path).is_dir():
            new = relative(path.removeprefix("docs/")) + (f"#{anchor}" if anchor else "")
            return f"{bang}[{label}]({new})"
        # In the repository, not on the site.
        shown = path.rstrip("/") + ("/" if path.endswith("/") else "")
        return label if shown in label else f"{label} (`{shown}` in the repository)"

    return LINK.sub(replace, text)
