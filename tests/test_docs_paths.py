"""Every file the documents cite is in the repository: each relative link or image of a tracked
Markdown file, and each path of the repository's own folders written in backticks
(`results/…`, `benchmarks/…`, `docs/…`, `hebm/…`, `csrc/…`, `kernels/…`, `tests/…`), resolved from
the document's folder or from the root.  Paths with placeholders (``{a,b}``, ``<run>``, ``*``) are
commands for the reader, not citations, and are left out.

Why: results once cited raw run outputs that a ``.gitignore`` pattern had kept out of git
(RESULTS.md §9), and moved modules left their old paths in the notes; neither failed anything."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
CITED = re.compile(r"`((?:results|benchmarks|docs|tests|hebm|csrc|kernels)/[^`\s]*)`")
PLACEHOLDER = set("{}*<>[]$")


def _markdown_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every .md file then
        return sorted(p for p in ROOT.rglob("*.md") if ".venv" not in p.parts)
    return [ROOT / line for line in out.splitlines() if line]


def _cited(text: str) -> list[str]:
    paths = [m.group(1).split("#")[0] for m in LINK.finditer(text)]
    paths = [p for p in paths if p and not p.startswith(("http:", "https:", "mailto:"))]
    for m in CITED.finditer(text):
        p = m.group(1).rstrip(".,;:")
        if not PLACEHOLDER & set(p):
            paths.append(p.split("::")[0].split(":")[0])  # (a test id or a line number after the path)
    return paths


def _missing(doc: Path) -> list[str]:
    return [p for p in _cited(doc.read_text(encoding="utf-8"))
            if not (doc.parent / p).exists() and not (ROOT / p).exists()]


DOCS = _markdown_files()


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_path_a_document_cites_exists(doc):
    assert not _missing(doc), f"{doc.relative_to(ROOT)} cites paths that are not in the repository"


def test_the_check_finds_a_missing_path(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("see `results/no/such/file.json`, ![f](figs/none.png), `results/{a,b}/` and [ok](x.md)\n")
    assert _missing(doc) == ["figs/none.png", "results/no/such/file.json"]
