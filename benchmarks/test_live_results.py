"""The suite's own results file survives a run cut short (benchmarks/live.py).

A child ``pytest`` runs two cheap benchmarks (the torch.mm rate, then the cpu fixed cost) with
``--benchmark-json``, and a one-hook plugin SIGKILLs it right after the first test: as a killed or
timed-out run, it gets no session end.  The file must be valid JSON in pytest-benchmark's format
with that one cell, ``"complete": false``, readable by ``benchmarks.report``; its progress line
must have reached the terminal.  No timing is asserted.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.live import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]

KILLER = '''
import os, signal, pytest

@pytest.hookimpl(trylast=True)  # after benchmarks/live.py has written the file for this test
def pytest_runtest_logfinish(nodeid, location):
    os.kill(os.getpid(), signal.SIGKILL)
'''


def _child(tmp_path, out, files, *extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", *files, "--bench-quick", "--bench-device=cpu", "--bench-providers=cpu",
           f"--benchmark-json={out}", "-q", "-p", "no:cacheprovider", *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_killed_run_keeps_finished_cells(tmp_path):
    (tmp_path / "hebm_kill_after_first_test.py").write_text(KILLER)
    out = tmp_path / "bench.json"
    r = _child(tmp_path, out, ["benchmarks/test_matmul_peak.py", "benchmarks/test_fixed_cost.py::test_fixed_cost"],
               "-p", "hebm_kill_after_first_test")
    log = r.stdout + r.stderr
    assert r.returncode == -signal.SIGKILL, f"the child was not killed after its first test:\n{log[-3000:]}"
    assert out.exists(), f"no results file after the first cell:\n{log[-3000:]}"
    data = json.loads(out.read_text())
    assert data["complete"] is False
    assert [b["name"] for b in data["benchmarks"]] == ["test_mm"]
    b = data["benchmarks"][0]
    assert b["extra_info"]["entry"] == "mm" and b["stats"]["rounds"] >= 1 and len(b["stats"]["data"]) >= 1
    for key in ("machine_info", "commit_info", "datetime", "version"):  # pytest-benchmark's own fields
        assert key in data
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left
    # the report reads it and says the run is incomplete
    rows = report.rows_of(data)
    assert [r_["entry"] for r_ in rows] == ["mm"]
    assert "Incomplete run" in report.render(data)
    # the progress line was printed live (the child never reached its summary)
    assert "[hebm bench 1/2 " in log and "mm mm512 B=512 torch.mm: median" in log, log[-3000:]


def test_finished_run_is_complete(tmp_path):
    out = tmp_path / "bench.json"
    r = _child(tmp_path, out, ["benchmarks/test_matmul_peak.py"])
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    data = json.loads(out.read_text())  # pytest-benchmark's final write (made atomic), with the field set
    assert data["complete"] is True
    assert [b["name"] for b in data["benchmarks"]] == ["test_mm"]
    assert "Incomplete run" not in report.render(data)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_text(path, '{"a": 1}')

    with pytest.raises(TypeError):
        atomic_write_text(path, 12345)  # not text: the write fails half-way
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
