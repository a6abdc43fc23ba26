"""The documentation site builds strictly: no broken link or anchor, every page in the nav.

`mkdocs build --strict` with mkdocs.yml's `validation` table turns each of
those into a failure; the site must also load nothing from elsewhere (the
lab's machines may have no internet), and each README section a page
includes must be there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
# About 1 s on the 2-core test machine; the deadline is for a stuck build.
BUILD_DEADLINE_S = 120.0


def build(site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of the repository's docs into `site`."""
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_DEADLINE_S,
        # Material's notice about MkDocs 2 is printed on every build; it says nothing of ours.
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = build(site)
    assert result.returncode == 0, result.stderr
    for page in ("index", "quick-start", "pi-agent", "client", "troubleshooting", "protocol"):
        assert (site / f"{page}.html").is_file(), f"no {page}.html"
    # A page that includes a README section carries its text, links rewritten.
    securing = (site / "securing.html").read_text()
    assert "Turn on authentication" in securing
    assert 'href="tls.html"' in securing
    assert "<!-- readme:" not in securing


def test_the_built_site_loads_nothing_from_elsewhere(tmp_path: Path) -> None:
    site = tmp_path / "site"
    assert build(site).returncode == 0
    loaded = re.compile(r"""<(?:script|link|img)\b[^>]*\b(?:src|href)="(https?:)?//""")
    offenders = [
        f"{page.relative_to(site)}: {match.group(0)}"
        for page in site.rglob("*.html")
        for match in loaded.finditer(page.read_text())
    ]
    assert not offenders, offenders


def test_a_page_that_names_a_missing_readme_section_breaks_the_build(tmp_path: Path) -> None:
    """The include hook fails loudly: a renamed README heading must not empty a page."""
    docs = tmp_path / "docs"
    (docs / "hooks").mkdir(parents=True)
    (docs / "hooks" / "readme_sections.py").write_text(
        (DOCS / "hooks" / "readme_sections.py").read_text()
    )
    (docs / "index.md").write_text("# Home\n\n<!-- readme: No such section -->\n")
    (tmp_path / "README.md").write_text("# Title\n\nIntro.\n\n## Quick start\n\nRun it.\n")
    (tmp_path / "mkdocs.yml").write_text(
        "site_name: t\nexclude_docs: |\n  /hooks/\nhooks:\n  - docs/hooks/readme_sections.py\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "s")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=BUILD_DEADLINE_S,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        check=False,
    )
    assert result.returncode != 0
    assert "the README has no section 'No such section'" in result.stderr
