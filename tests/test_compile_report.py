"""benchmarks/compile_report.py on the toy problem: the Triton kernel compiles offline for sm_90 at
both precisions exactly as a first GPU call builds it, with 0 spill bytes; the report reads the
CUDA kernel's ptxas numbers.  (The CUDA kernel's own sm_90 compile, ptxas included, is the
extension build of tests/test_cuda_backend.py: the report's second compile of it, ~3 min on 2
cores, is left to ``python -m benchmarks.compile_report``.  The report for every problem and the
measured table: benchmarks/NOTES.md, "Compile time and registers".)

Runs the report in a subprocess: offline compilation needs Triton in compiled mode, while the
other Triton tests of a CPU-only run set ``TRITON_INTERPRET=1`` for the whole process.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parent.parent


def _has_ptxas() -> bool:
    try:
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _has_ptxas(), reason="this Triton install has no NVIDIA backend/ptxas to compile with")
def test_compile_report_toy(tmp_path):
    out = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("CUDA_HOME", "/usr/local/cuda")
    r = subprocess.run([sys.executable, "-m", "benchmarks.compile_report", "--problems", "toy",
                        "--precisions", "ieee,tf32", "--no-cuda", "--json", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"compile report failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    recs = json.loads(out.read_text())["records"]
    tri = {x["precision"]: x for x in recs if x["kind"] == "triton"}
    assert set(tri) == {"ieee", "tf32"}
    for prec, x in tri.items():
        assert x["ok"], x
        assert x["BLOCK_B"] == 16 and x["num_warps"] == 4 and x["num_stages"] == 1, x
        assert x.get("registers") is not None, f"no ptxas register count parsed for toy {prec}: {x}"
        assert x["spill_stores"] == 0 and x["spill_loads"] == 0, f"toy {prec} spills: {x}"
    assert "| toy | ieee |" in r.stdout and "| toy | tf32 |" in r.stdout


def test_cuda_records_read_a_ptxas_log():
    """The CUDA rows of the report from an ``nvcc -Xptxas -v`` log (the form nvcc 13 writes).  In a
    subprocess, as the report itself: importing it puts Triton in compiled mode (it drops
    ``TRITON_INTERPRET``), which the interpreter tests of this process must not meet."""
    log = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'langevin_kernel_a' for 'sm_90'
ptxas info    : Function properties for langevin_kernel_a
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 168 registers, 16384 bytes smem, 536 bytes cmem[0]
ptxas info    : Compiling entry function 'langevin_kernel_b' for 'sm_90'
ptxas info    : Function properties for langevin_kernel_b
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 96 registers, 536 bytes cmem[0]
"""
    code = "import json, sys; from benchmarks.compile_report import cuda_records; print(json.dumps(cuda_records(sys.stdin.read())))"
    r = subprocess.run([sys.executable, "-c", code], input=log, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = json.loads(r.stdout.strip().splitlines()[-1])
    assert a == dict(kind="cuda", kernel="langevin_kernel_a", arch="sm_90", ok=True, registers=168, stack_frame=8,
                     spill_stores=4, spill_loads=12, shared_bytes=16384)
    assert b["kernel"] == "langevin_kernel_b" and b["registers"] == 96 and b["shared_bytes"] == 0
    assert b["spill_stores"] == b["spill_loads"] == 0
