"""The scripts under ``results/`` stay runnable with the package as it is: every Python script
imports (its work only under ``__main__``), every shell script parses, and the scripts that lay
out RESULTS.md's tables run on the committed results — as written, and rewritten as the standard
JSON hebm writes now (``null`` for NaN), so a table never depends on Python's NaN extension.
The scripts that train or sample need checkpoints and hours; importing them is what CI can do.
"""
from __future__ import annotations

import importlib.util
import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
PY = sorted(RESULTS.rglob("*.py"))
SH = sorted(RESULTS.rglob("*.sh"))
#: the table scripts and their arguments (relative to the results folder), as their docstrings give them
TABLES = {
    "tables.py": ["experiments"],
    "controllable/table.py": ["controllable"],
    "priors/table.py": ["priors/mnist5k", "priors/digits"],
    "priors/sweep_table.py": ["priors/sweep"],
    "hierarchy/table.py": ["hierarchy/screen/mnist5k", "hierarchy/screen/digits", "hierarchy/runs/mnist5k",
                           "hierarchy/runs/digits"],
    "detection/ood_table.py": ["detection/ood"],
    "mixing/table.py": ["mixing"],
    "detection/anomaly_table.py": ["detection/anomaly"],
    "priors/anomaly_table.py": ["priors/anomaly/anom_mn_gauss.json", "priors/anomaly/anom_mn_ts.json",
                                "priors/anomaly/anom_mn_df.json"],
}


def test_every_script_is_covered():
    assert PY and SH and set(TABLES) <= {str(p.relative_to(RESULTS)) for p in PY}


@pytest.mark.parametrize("path", PY, ids=[str(p.relative_to(RESULTS)) for p in PY])
def test_script_imports(path, monkeypatch):
    """Importing runs nothing (the work is under ``if __name__ == "__main__"``) and every hebm name
    it uses exists."""
    monkeypatch.setattr(sys, "argv", [str(path)])
    spec = importlib.util.spec_from_file_location(f"_results_{path.stem}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # (a script that worked at import would fail here: no arguments)


@pytest.mark.parametrize("path", SH, ids=[str(p.relative_to(RESULTS)) for p in SH])
def test_shell_script_parses(path):
    r = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _as_standard_json(root: Path) -> None:
    """Rewrite every JSON / JSON-lines file under ``root`` as hebm writes JSON now."""
    from hebm.files import json_text

    for p in root.rglob("*.json"):
        p.write_text(json_text(json.loads(p.read_text()), indent=1))
    for p in root.rglob("*.jsonl"):
        p.write_text("".join(json_text(json.loads(line)) + "\n" for line in p.read_text().splitlines() if line.strip()))


@pytest.fixture(scope="module")
def standard_copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("results") / "results"
    shutil.copytree(RESULTS, root)
    _as_standard_json(root)
    return root


@pytest.mark.parametrize("form", ["as-written", "standard-json"])
@pytest.mark.parametrize("script", sorted(TABLES))
def test_table_script_runs_on_the_committed_results(script, form, standard_copy, monkeypatch, capsys):
    root = RESULTS if form == "as-written" else standard_copy
    monkeypatch.setattr(sys, "argv", [script, *(os.path.join(root, a) for a in TABLES[script])])
    runpy.run_path(str(root / script), run_name="__main__")
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) >= 2, rows  # a header and at least one row of numbers
