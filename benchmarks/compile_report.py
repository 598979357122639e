"""Offline compile report for sm_90: the Triton Langevin kernel of each standard problem, and the
CUDA kernel, on a machine without a GPU.

    python -m benchmarks.compile_report [--problems toy,small,large] [--precisions ieee,tf32]
                                        [--batch 1024] [--json OUT] [--no-cuda] [--metropolis] [--draws M]

Triton: for each problem (``hebm.standard_problem(name, batch)``: seeded, kernel term on, no
trace) and dot precision, the kernel the launcher would build for a first GPU call — the same
spec and the same launch configuration (``hebm.sampler.backends.triton_backend.prepare`` with
``config_for="cuda"``), specialised on the same arguments by Triton's own JIT binder — compiled
cold (a fresh Triton cache) with ``triton.compile(..., target=GPUTarget("cuda", 90, 32))``.
Reported: form, BLOCK_B, warps, compile seconds (and per stage), registers, spill stores/loads and
stack frame (ptxas -v of that compile), shared memory (``metadata.shared``).

CUDA: ``csrc/cuda/langevin_kernel.cu`` compiled by nvcc with ``hebm.sampler.backends._build.cuda_cflags()``
for arch 90 only, ``-Xptxas -v``; registers / spills / static shared memory per kernel
instantiation (the launcher adds the dynamic shared memory of its workspace plan at launch).

``HEBM_COMPILE_REPORT_DUMP=DIR`` writes each Triton kernel's TTIR/TTGIR/LLIR/PTX/cubin and ptxas
log under ``DIR/<problem>_<precision>/``.  Exit status 1 if a compile failed.  Results:
benchmarks/NOTES.md, "Compile time and registers".
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# compiled mode, cold cache: both must hold before triton is imported
os.environ.pop("TRITON_INTERPRET", None)
_CACHE = tempfile.mkdtemp(prefix="hebm_compile_report_")
os.environ["TRITON_CACHE_DIR"] = _CACHE

import torch  # noqa: E402

from hebm import files  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PRECISIONS = {"ieee": "fp32", "fp32": "fp32", "tf32": "tf32", "bf16": "bf16"}  # table name -> hebm precision


# ---------------------------------------------------------------------------------- Triton
def _ptxas_numbers(log: str) -> dict:
    out = {}
    m = re.search(r"Used (\d+) registers", log)
    if m:
        out["registers"] = int(m.group(1))
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    if m:
        out["stack_frame"], out["spill_stores"], out["spill_loads"] = (int(g) for g in m.groups())
    return out


def _jit_inputs(kern, args, cfg, backend):
    """(ASTSource, options dict) exactly as ``JITFunction.run`` builds them for a launch with
    ``args`` and ``cfg`` (Triton's own binder: same signature, constexprs and alignment attributes)."""
    import triton
    from triton.compiler import ASTSource
    from triton.runtime import jit as tjit

    kwargs = dict(cfg)
    knobs = getattr(triton, "knobs", None)
    kwargs["debug"] = kwargs.get("debug", getattr(kern, "debug", None)) or bool(
        knobs and getattr(knobs.runtime, "debug", False))
    if knobs is not None and hasattr(knobs.compilation, "instrumentation_mode"):
        kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    binder = tjit.create_function_from_signature(kern.signature, kern.params, backend)
    bound_args, specialization, options = binder(*args, **kwargs)
    options, signature, constexprs, attrs = kern._pack_args(backend, kwargs, bound_args, specialization, options)
    return ASTSource(kern, signature, constexprs, attrs), options.__dict__


def _compile(src, target, options) -> tuple:
    """(compiled kernel, seconds, per-stage seconds, ptxas log)."""
    import triton
    from triton.compiler import make_backend

    stages_t: dict = {}
    cls = type(make_backend(target))
    orig = cls.add_stages

    def add_stages(self, stages, *a, **kw):
        orig(self, stages, *a, **kw)
        for name, fn in list(stages.items()):
            def timed(s, md, fn=fn, name=name):
                t0 = time.perf_counter()
                r = fn(s, md)
                stages_t[name] = time.perf_counter() - t0
                return r
            stages[name] = timed

    knobs = getattr(triton, "knobs", None)
    dump = knobs is not None and hasattr(knobs.nvidia, "dump_ptxas_log")
    buf = io.StringIO()
    cls.add_stages = add_stages
    try:
        if dump:
            knobs.nvidia.dump_ptxas_log = True
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(buf):
            kernel = triton.compile(src, target=target, options=options)
        dt = time.perf_counter() - t0
    finally:
        cls.add_stages = orig
        if dump:
            knobs.nvidia.dump_ptxas_log = False
    log = buf.getvalue()
    if "Used" not in log:  # no ptxas log from the compile: run ptxas -v on its PTX (not timed)
        log = _ptxas_v(kernel.asm["ptx"], target)
    return kernel, dt, stages_t, log


def _ptxas_v(ptx: str, target) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    ptxas = get_ptxas(target.arch).path if callable(get_ptxas) else get_ptxas().path
    arch = re.search(r"\.target\s+(\S+)", ptx).group(1)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "k.ptx"
        p.write_text(ptx)
        r = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", str(p), "-o", str(Path(d) / "k.o")],
                           capture_output=True, text=True)
    return r.stdout + r.stderr


def _scratch_arg() -> int:
    """Position of scratch_ptr among the kernel's arguments (the launcher's PARAMS)."""
    from hebm.sampler.backends import triton_backend as tb

    return [n for n, _ in tb.PARAMS].index("scratch_ptr")


def triton_report(problem: str, precision: str, batch: int, metropolis: bool = False, draws: int = 0,
                  ladder: int = 0) -> dict:
    """Compile one problem's kernel for sm_90 as a first GPU call would; the record of the table.
    ``metropolis``: the Metropolis-adjusted kernel (``metropolis=True``) instead; ``draws`` = m > 0:
    the kernel that records draws (``trace_every=m``); ``ladder`` = R > 0: the replica-exchange
    kernel (``temperatures`` of R rungs, a swap round every 2 steps, the problem's seeded noise)."""
    import torch

    import hebm
    from hebm.kernels import kernel_form
    from hebm.sampler.backends import triton_backend as tb
    from hebm.sampler.checks import check_langevin_args
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend

    rec = {"kind": "triton", "problem": problem + (" MALA" if metropolis else "") + (f" draws/{draws}" if draws else "")
           + (f" ladder/{ladder}" if ladder else ""), "precision": precision, "batch": batch}
    try:
        p = hebm.standard_problem(problem, batch)
        kwargs = {k: v for k, v in p.kwargs.items() if not (metropolis and k == "noise_scale")}
        if ladder:  # a ladder group shares λ, t, u_next, a, σ: scalars (and no kernel term)
            n = batch // ladder * ladder
            kwargs = {k: v for k, v in kwargs.items() if k not in ("u_next", "alpha", "sigma", "energy_scale", "t",
                                                                    "chain_ids", "noise")}
            kwargs.update(temperatures=[(r + 1) / ladder for r in range(ladder)], swap_every=2, energy_scale=1.0,
                          seed=kwargs.get("seed", 0) or 0, t=int(p.kwargs["t"].reshape(-1)[0]))
            for k in ("step_size", "noise_scale"):
                if isinstance(kwargs.get(k), torch.Tensor):
                    kwargs[k] = kwargs[k][:n]
            p_u = p.u[:n]
        else:
            p_u = p.u
        a = check_langevin_args(p.prior, p_u, metropolis=metropolis, trace_every=draws or None, **kwargs)
        pk, parts = tb.packed(p.prior)
        kw = tb.langevin_kwargs(a, precision=PRECISIONS[precision], trace=False)
        kern, args, cfg, spec, _ = tb.prepare(pk, parts, **kw, config_for="cuda")
        rec.update(form=kernel_form(spec), tile=spec.tile, dot=spec.precision, BLOCK_B=cfg["BLOCK_B"],
                   num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
        target = GPUTarget("cuda", 90, 32)
        src, options = _jit_inputs(kern, args, cfg, make_backend(target))
        kernel, dt, stages_t, log = _compile(src, target, options)
        dump = os.environ.get("HEBM_COMPILE_REPORT_DUMP")
        if dump:  # the kernel's IR / PTX / cubin, for reading what the compiler did
            d = Path(dump) / f"{problem}_{precision}"
            d.mkdir(parents=True, exist_ok=True)
            for ext, asm in kernel.asm.items():
                (d / f"langevin_kernel.{ext}").write_bytes(asm if isinstance(asm, bytes) else str(asm).encode())
            (d / "ptxas.log").write_text(log)
        rec.update(ok=True, compile_s=round(dt, 2), stages_s={k: round(v, 2) for k, v in stages_t.items()},
                   shared_bytes=int(kernel.metadata.shared), **_ptxas_numbers(log))
        scratch = args[_scratch_arg()]
        rec["scratch_floats_per_row"] = int(scratch.numel() // (-(-batch // cfg["BLOCK_B"]) * cfg["BLOCK_B"])) \
            if scratch is not args[0] else 0
    except Exception as e:  # a failed compile is a result of the report
        rec.update(ok=False, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e) else ''}")
    return rec


# ---------------------------------------------------------------------------------- CUDA
def _nvcc():
    home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    cand = Path(home) / "bin" / "nvcc"
    return str(cand) if cand.is_file() else shutil.which("nvcc")


def _demangle(names: list) -> dict:
    filt = shutil.which("c++filt")
    if filt and names:
        r = subprocess.run([filt], input="\n".join(names), capture_output=True, text=True)
        out = r.stdout.strip().splitlines()
        if len(out) == len(names):
            return {n: re.sub(r"^.*?hebm::cuda::", "", o.split("(")[0]) for n, o in zip(names, out)}
    return {n: n for n in names}


def cuda_report(nvcc: str) -> list:
    """ptxas -v of every kernel in csrc/cuda/langevin_kernel.cu, built with the extension's flags
    for arch 90."""
    from hebm.sampler.backends import _build

    old = os.environ.get("HEBM_CUDA_ARCH")
    os.environ["HEBM_CUDA_ARCH"] = "90"
    try:
        flags = _build.cuda_cflags()
    finally:
        if old is None:
            os.environ.pop("HEBM_CUDA_ARCH", None)
        else:
            os.environ["HEBM_CUDA_ARCH"] = old
    cu = _build.csrc_dir() / "cuda" / "langevin_kernel.cu"
    with tempfile.TemporaryDirectory() as d:
        cmd = [nvcc, *flags, *_build.CUDA_DEFINES, "-Xptxas", "-v", "-I", str(_build.csrc_dir()), "-c", str(cu),
               "-o", str(Path(d) / "k.o")]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        dt = time.perf_counter() - t0
    log = r.stdout + r.stderr
    if r.returncode != 0:
        return [{"kind": "cuda", "kernel": cu.name, "ok": False, "compile_s": round(dt, 2),
                 "error": log.strip().splitlines()[-1][:300] if log.strip() else f"nvcc exit {r.returncode}",
                 "flags": " ".join(flags)}]
    recs = cuda_records(log)
    for x in recs:
        x["compile_s"] = round(dt, 2)  # one nvcc run for all of them
        x["flags"] = " ".join(flags + ["-Xptxas", "-v"])
    return recs


def cuda_records(log: str) -> list:
    """One record per kernel of an ``nvcc -Xptxas -v`` log: its (demangled) name, arch, registers,
    stack frame, spills and static shared memory."""
    recs, cur = [], None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for '(\w+)'", line)
        if m:
            cur = {"kind": "cuda", "kernel": m.group(1), "arch": m.group(2), "ok": True}
            recs.append(cur)
            continue
        if cur is None:
            continue
        cur.update(_ptxas_numbers(line))
        m = re.search(r"(\d+) bytes smem", line)
        if m and "Used" in line:
            cur["shared_bytes"] = int(m.group(1))
        elif "Used" in line:
            cur.setdefault("shared_bytes", 0)
    names = _demangle([x["kernel"] for x in recs])
    for x in recs:
        x["kernel"] = names[x["kernel"]]
    return recs


# ---------------------------------------------------------------------------------- output
def machine() -> dict:
    import triton

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "triton": triton.__version__, "target": "cuda sm_90 (offline, no GPU)"}


def _fmt(v, dash="—"):
    return dash if v is None else str(v)


def print_tables(recs: list, info: dict, out=sys.stdout) -> None:
    print(f"# offline compile for sm_90 — {info['date']}, {info['cpu']} ({info['cores']} cores), "
          f"torch {info['torch']}, Triton {info['triton']}", file=out)
    tri = [r for r in recs if r["kind"] == "triton"]
    if tri:
        print("\n| problem | precision | form | BLOCK_B | warps | compile s | registers | spill stores / loads (B) "
              "| stack (B) | shared mem (B) |", file=out)
        print("|---|---|---|---|---|---|---|---|---|---|", file=out)
        for r in tri:
            if not r.get("ok"):
                print(f"| {r['problem']} | {r['precision']} | {_fmt(r.get('form'))} | {_fmt(r.get('BLOCK_B'))} | "
                      f"{_fmt(r.get('num_warps'))} | FAILED: {r.get('error')} | | | | |", file=out)
                continue
            print(f"| {r['problem']} | {r['precision']} | {r['form']} (tile {r['tile']}) | {r['BLOCK_B']} | "
                  f"{r['num_warps']} | {r['compile_s']} | {_fmt(r.get('registers'))} | "
                  f"{_fmt(r.get('spill_stores'))} / {_fmt(r.get('spill_loads'))} | {_fmt(r.get('stack_frame'))} | "
                  f"{r['shared_bytes']} |", file=out)
    cu = [r for r in recs if r["kind"] == "cuda"]
    if cu:
        print(f"\nCUDA csrc/cuda/langevin_kernel.cu (nvcc {cu[0].get('flags', '')}; one run: "
              f"{cu[0].get('compile_s')} s)\n", file=out)
        print("| kernel | registers | spill stores / loads (B) | stack (B) | static shared mem (B) |", file=out)
        print("|---|---|---|---|---|", file=out)
        for r in cu:
            if not r.get("ok"):
                print(f"| {r['kernel']} | FAILED: {r.get('error')} | | | |", file=out)
                continue
            print(f"| {r['kernel']} | {_fmt(r.get('registers'))} | {_fmt(r.get('spill_stores'))} / "
                  f"{_fmt(r.get('spill_loads'))} | {_fmt(r.get('stack_frame'))} | {_fmt(r.get('shared_bytes'))} |",
                  file=out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", default="toy,small,large")
    ap.add_argument("--precisions", default="ieee,tf32", help="ieee (= hebm's fp32), tf32, bf16")
    ap.add_argument("--batch", type=int, default=1024, help="chains (the launch configuration may depend on it)")
    ap.add_argument("--json", default=None, help="write the records (and the machine) to this file")
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA kernel")
    ap.add_argument("--no-triton", action="store_true", help="skip the Triton kernels")
    ap.add_argument("--metropolis", action="store_true", help="also the Metropolis-adjusted Triton kernels (MALA)")
    ap.add_argument("--draws", type=int, default=0, metavar="M",
                    help="also the Triton kernels that record draws inside the call (trace_every=M)")
    ap.add_argument("--ladder", type=int, default=0, metavar="R",
                    help="also the replica-exchange Triton kernels (temperatures of R rungs)")
    a = ap.parse_args(argv)
    recs = []
    try:
        if not a.no_triton:
            for prob in [x for x in a.problems.split(",") if x]:
                for prec in [x for x in a.precisions.split(",") if x]:
                    if prec not in PRECISIONS:
                        ap.error(f"unknown precision {prec!r}")
                    kinds = [(mala, m, lad) for mala in ((False, True) if a.metropolis else (False,))
                             for m in ((0, a.draws) if a.draws else (0,)) for lad in ((0, a.ladder) if a.ladder else (0,))]
                    for mala, m, lad in kinds:
                        recs.append(triton_report(prob, prec, a.batch, metropolis=mala, draws=m, ladder=lad))
                        r = recs[-1]
                        print(f"[triton] {r['problem']} {prec}: " + (
                            f"{r['compile_s']} s, {r.get('registers')} registers, "
                            f"spills {r.get('spill_stores')}/{r.get('spill_loads')} B"
                            if r.get("ok") else f"FAILED {r.get('error')}"), file=sys.stderr, flush=True)
        if not a.no_cuda:
            nvcc = _nvcc()
            if nvcc is None:
                print("[cuda] nvcc not found (CUDA_HOME/bin/nvcc or PATH): CUDA kernel skipped", file=sys.stderr)
            else:
                recs += cuda_report(nvcc)
        info = machine()
        print_tables(recs, info)
        if a.json:
            Path(a.json).write_text(files.json_text({"machine": info, "records": recs}, indent=1))
    finally:
        shutil.rmtree(_CACHE, ignore_errors=True)
    return 0 if all(r.get("ok") for r in recs) else 1


if __name__ == "__main__":
    sys.exit(main())
