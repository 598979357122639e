"""Providers (the lines of every benchmark table), the correctness gate, and the measurements.

A provider is a name → a callable that runs one sampler entry point on a standard problem:

* ``plain``   — the Langevin loop a researcher writes (:mod:`benchmarks.plain`): the same networks
  as plain tensors, ``torch.autograd.grad``, ``torch.randn_like`` noise — the main eager baseline;
* ``torchebm`` — TorchEBM's ``LangevinDynamics`` on the same target (a peer library; skipped with
  the reason where it is not installed);
* ``ref``     — :func:`hebm.langevin_ref`, hebm's eager reference (pure-PyTorch Philox noise);
* ``compile`` — ``torch.compile`` of the reference step (:func:`hebm.sampler.reference.ref_step`), a
  PyTorch baseline written here, not a hebm backend;
* any hebm backend (``graph``, ``cpu``, ``triton``, ``cuda``) — :func:`hebm.langevin_fused`
  with ``backend=name``.  A backend that is unavailable here or does not take the problem is
  *skipped* with its own reason, never failed.

Correctness before timing: :func:`check_against_reference` runs the float64 reference on the
first rows of the batch (chains are independent and the seeded noise is keyed by chain id, so a
sub-batch reproduces those rows exactly) and applies tests/parity.py's rule — the provider's error
against float64 at most ``REL``× PyTorch's own fp32 error, plus ``ATOL``·scale.
"""
from __future__ import annotations

import copy
import datetime
import os
import platform
import threading
import time
from typing import Callable, Optional

import torch

import hebm
from hebm.prior.philox import initial_noise
from hebm.sampler import backends
from hebm.sampler.checks import check_langevin_args
from hebm.sampler.reference import ref_step, step_coefficients, step_noise, target

from .plain import PlainNets, plain_langevin, plain_reverse_diffusion, torchebm_available, torchebm_sampler

PROVIDERS = ("plain", "torchebm", "ref", "graph", "compile", "cpu", "triton", "cuda")
HEBM_BACKENDS = ("graph", "cpu", "triton", "cuda")
#: the providers a user would run without hebm's fused backends: speed-ups are quoted against the fastest
EAGER = ("plain", "torchebm", "ref", "compile")

# tests/parity.py's rule (fp32); TF32 runs get an absolute tolerance of TF32's own size
REL = 2.0
ATOL = {"fp32": 1e-5, "tf32": 5e-3, "bf16": 5e-2}
N_CHECK_ROWS = 16


# ------------------------------------------------------------------------------ environment
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()} ({os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()})"


def versions() -> dict:
    try:
        import triton

        tv = triton.__version__
    except Exception:  # noqa: BLE001 - an absent or broken triton is just "none"
        tv = None
    return {
        "torch": torch.__version__,
        "triton": tv,
        "cuda": torch.version.cuda,
        "hebm": hebm.__version__,
        "python": platform.python_version(),
    }


def environment(device: str) -> dict:
    return {
        "device": device,
        "device_name": device_name(device),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        **versions(),
    }


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------ providers
def skip_reason(name: str, prior, u, kw: dict) -> Optional[str]:
    """None if ``name`` can run this problem here, else why not (the pytest skip message)."""
    if name in ("ref", "plain"):
        return None
    if name == "torchebm":
        return torchebm_available()
    if name == "compile":
        if os.environ.get("HEBM_BENCH_NO_COMPILE"):
            return "compile provider switched off (HEBM_BENCH_NO_COMPILE is set)"
        return None
    try:
        hebm.Sampler(prior, backend=name)._backend_for(bool(kw.get("metropolis", False)))
    except hebm.BackendUnavailable as e:
        return str(e)
    return None


# torch.compile caches per code object; every (problem, B, kernel on/off) is one more entry
try:
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
except Exception:  # noqa: BLE001
    pass


def _compiled_step():
    if not hasattr(_compiled_step, "fn"):
        _compiled_step.fn = torch.compile(ref_step)
    return _compiled_step.fn


def langevin_compiled(prior, u, *, n_steps, seed=None, noise=None, step_offset=0, **kw):
    """K steps of ``torch.compile(ref_step)`` — the reference step compiled by Inductor.

    The noise is the same seeded Philox stream as the reference, drawn eagerly (Philox on int64
    words is what a user of plain PyTorch would have to write too)."""
    a = check_langevin_args(prior, u, n_steps=n_steps, seed=seed, noise=noise, step_offset=step_offset, **kw)
    step = _compiled_step()
    half_d2, amp = step_coefficients(a)
    log_pi = target(prior, a)
    x = a.u.detach().clone()
    for k in range(a.n_steps):
        x, _ = step(log_pi, x, step_noise(a, k), half_d2, amp)
    return x.detach()


def reverse_diffusion_compiled(prior, schedule, *, n_steps, batch, seed, chain_ids=None):
    """The reverse diffusion of :func:`hebm.reverse_diffusion` (seeded), each level run by
    :func:`langevin_compiled`; checked against the reference before it is timed."""
    p0 = next(prior.parameters())
    u = initial_noise(seed, batch, prior.D, chain_ids=chain_ids, device=p0.device, dtype=p0.dtype)
    for j, t in enumerate(range(schedule.T - 1, -1, -1)):
        kw = schedule.langevin_kwargs(t, u)
        u = langevin_compiled(prior, u, n_steps=n_steps, seed=seed, chain_ids=chain_ids, step_offset=j * n_steps, **kw)
    return u


def _plain_kw(kw: dict) -> dict:
    return {k: v for k, v in kw.items() if k not in ("seed", "chain_ids", "step_offset")}


def langevin_fn(name: str, prior, u, kw: dict, precision: str) -> Callable[[], torch.Tensor]:
    if name == "ref":
        return lambda: hebm.langevin_ref(prior, u, **kw)
    if name == "plain":
        nets = PlainNets(prior)
        return lambda: plain_langevin(nets, u, **_plain_kw(kw))
    if name == "torchebm":
        sampler, x0 = torchebm_sampler(PlainNets(prior), u, **_plain_kw(one_level(kw)))
        return lambda: sampler.sample(x=x0, n_steps=kw["n_steps"])
    if name == "compile":
        return lambda: langevin_compiled(prior, u, **kw)
    return lambda: hebm.langevin_fused(prior, u, backend=name, precision=precision, **kw)


def reverse_diffusion_fn(name: str, prior, schedule, K: int, B: int, seed: int, precision: str, chain_ids=None):
    if name == "plain":
        nets = PlainNets(prior)
        p0 = next(prior.parameters())
        u_T = torch.randn(B, prior.D, device=p0.device, dtype=p0.dtype)
        return lambda: plain_reverse_diffusion(nets, schedule, u_T, n_steps=K)
    if name == "compile":
        return lambda: reverse_diffusion_compiled(prior, schedule, n_steps=K, batch=B, seed=seed, chain_ids=chain_ids)
    extra = {} if name == "ref" else {"precision": precision}
    return lambda: hebm.reverse_diffusion(prior, schedule, n_steps=K, batch=B, seed=seed, chain_ids=chain_ids,
                                          backend=name, **extra)


# ------------------------------------------------------------------------------ correctness
def rows(kw: dict, n: int, B: int) -> dict:
    """The sampler keywords restricted to the first ``n`` chains (per-chain tensors sliced)."""
    out = {}
    for k, v in kw.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == B:
            out[k] = v[:n]
        else:
            out[k] = v
    return out


def to_dtype(kw: dict, dtype, device="cpu") -> dict:
    out = {}
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device)
            out[k] = v.to(dtype) if v.dtype.is_floating_point else v
        else:
            out[k] = v
    return out


def tolerance_check(out: torch.Tensor, gold: torch.Tensor, ref32: torch.Tensor, precision: str, what: str) -> dict:
    out = out.detach().cpu().double()
    scale = max(1.0, float(gold.abs().max()))
    err_ref = float((ref32.double() - gold).abs().max())
    err = float((out - gold).abs().max())
    bound = REL * err_ref + ATOL.get(precision, 1e-5) * scale
    if not err <= bound:  # also catches NaN
        raise AssertionError(f"{what}: max error {err:.3e} vs the float64 reference exceeds the bound {bound:.3e} "
                             f"({REL:g}× PyTorch's fp32 error {err_ref:.3e} + {ATOL.get(precision, 1e-5):g}·{scale:.3g})")
    return {"max_err": err, "max_err_fp32_ref": err_ref, "err_bound": bound, "checked_rows": int(gold.shape[0])}


#: float64 / fp32 reference outputs already computed this session: every provider of a cell is
#: checked against the same gold (the standard problems are deterministic in their name, B and seed)
_GOLD: dict = {}


def cached_gold(key: tuple, make: Callable[[], tuple]) -> tuple:
    """``make()`` once per ``key`` (a cell's gold: the same for every provider of the cell).  Only
    the last few keys are kept: the cells run one after another, each holding 16 rows."""
    if key not in _GOLD:
        if len(_GOLD) >= 8:
            _GOLD.clear()
        _GOLD[key] = make()
    return _GOLD[key]


def langevin_gold(problem, kw: dict, n: int):
    """(float64 reference, fp32 reference) of the first ``n`` chains, on the CPU."""
    B = problem.batch
    sub = rows(kw, n, B)
    prior64 = copy.deepcopy(problem.prior).to(device="cpu", dtype=torch.float64)
    gold = hebm.langevin_ref(prior64, problem.u[:n].cpu().double(), **to_dtype(sub, torch.float64))
    prior32 = copy.deepcopy(problem.prior).to(device="cpu", dtype=torch.float32)
    ref32 = hebm.langevin_ref(prior32, problem.u[:n].cpu().float(), **to_dtype(sub, torch.float32))
    return gold, ref32


def plain_check(problem, kw: dict, n: int) -> torch.Tensor:
    """The plain loop on the first ``n`` chains with the seeded stream as explicit noise: the same
    trajectories as the reference (checked against float64 before ``plain`` is timed)."""
    from hebm.prior.philox import philox_noise

    B = problem.batch
    sub = rows(kw, n, B)
    ids = torch.arange(n)
    noise = philox_noise(sub["seed"], ids, sub["n_steps"], problem.prior.D, step_offset=sub.get("step_offset", 0))
    prior32 = copy.deepcopy(problem.prior).to(device="cpu", dtype=torch.float32)
    return plain_langevin(PlainNets(prior32), problem.u[:n].cpu().float(), noise=noise,
                          **to_dtype(_plain_kw(sub), torch.float32))


def one_level(kw: dict, level: int = 1) -> dict:
    """The standard problem with every chain at diffusion level ``level`` (scalar δ, λ, a, σ and
    one t): the same work per step, in the form a sampler with one scalar step size takes."""
    from hebm.prior.diffusion import DiffusionSchedule
    from hebm.sampler.problems import BASE_STEP, T_LEVELS

    out = dict(kw)
    lv = DiffusionSchedule(T_LEVELS, BASE_STEP).level_params(level)
    out.update(step_size=lv["step_size"], energy_scale=lv["energy_scale"], t=level)
    if "u_next" in kw and lv["alpha"] != 0.0:
        out.update(alpha=lv["alpha"], sigma=lv["sigma"])
    return out


def torchebm_check(problem, kw: dict, n: int):
    """TorchEBM's drift against the reference's on the one-level problem (:func:`one_level`), noise
    off (TorchEBM's noise scale at 1e-30, hebm's at 0), first ``n`` chains; returns (out, gold64, ref32)."""
    B = problem.batch
    sub = to_dtype(rows(one_level(kw), n, B), torch.float64)
    sub.update(noise_scale=0.0)
    prior64 = copy.deepcopy(problem.prior).to(device="cpu", dtype=torch.float64)
    gold = hebm.langevin_ref(prior64, problem.u[:n].cpu().double(), **sub)
    prior32 = copy.deepcopy(problem.prior).to(device="cpu", dtype=torch.float32)
    sub32 = to_dtype(sub, torch.float32)
    ref32 = hebm.langevin_ref(prior32, problem.u[:n].cpu().float(), **sub32)
    sampler, x0 = torchebm_sampler(PlainNets(prior32), problem.u[:n].cpu().float(), **_plain_kw(sub32))
    return sampler.sample(x=x0, n_steps=kw["n_steps"]), gold, ref32


def plain_diffusion_check(problem, K: int, n: int, seed: int) -> torch.Tensor:
    """The plain reverse diffusion on ``n`` chains with the reference's ũ_T and noise as explicit tensors."""
    from hebm.prior.philox import initial_noise, philox_noise

    T, D = problem.schedule.T, problem.prior.D
    ids = torch.arange(n)
    u_T = initial_noise(seed, n, D)
    noise = philox_noise(seed, ids, T * K, D)
    prior32 = copy.deepcopy(problem.prior).to(device="cpu", dtype=torch.float32)
    return plain_reverse_diffusion(PlainNets(prior32), problem.schedule, u_T, n_steps=K, noise=noise)


def diffusion_gold(problem, K: int, n: int, seed: int):
    prior64 = copy.deepcopy(problem.prior).to(device="cpu", dtype=torch.float64)
    gold = hebm.reverse_diffusion(prior64, problem.schedule, n_steps=K, batch=n, seed=seed, backend="ref")
    prior32 = copy.deepcopy(problem.prior).to(device="cpu", dtype=torch.float32)
    ref32 = hebm.reverse_diffusion(prior32, problem.schedule, n_steps=K, batch=n, seed=seed, backend="ref")
    return gold, ref32


# ------------------------------------------------------------------------------ memory
class _RssSampler:
    """Peak resident set size while a block runs (sampled every 2 ms from /proc/self/statm)."""

    def __init__(self, period: float = 0.002):
        self.period = period
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _loop(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.period)

    def __enter__(self):
        self.base = self._rss()
        self.peak = self.base
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())


def peak_memory(fn: Callable, device: str) -> dict:
    """Peak memory of one call of ``fn`` above what was allocated before it."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return {"peak_mem_bytes": int(torch.cuda.max_memory_allocated() - base),
                "peak_mem_method": "torch.cuda.max_memory_allocated() minus allocated before the call"}
    if not os.path.exists("/proc/self/statm"):
        return {"peak_mem_bytes": None, "peak_mem_method": "no /proc/self/statm: not measured"}
    with _RssSampler() as s:
        fn()
    return {"peak_mem_bytes": int(s.peak - s.base),
            "peak_mem_method": "resident-set-size growth during one call, sampled every 2 ms (the CPU allocator "
                               "reuses freed pages, so this is a lower bound; 0 = served from memory already held)"}


# ------------------------------------------------------------------------------ timing
def measure(benchmark, fn: Callable[[], torch.Tensor], device: str, *, max_time: float, min_rounds: int,
            max_rounds: int, first_call_s: float) -> None:
    """Time ``fn`` with pytest-benchmark: synchronised, warm (the first call and a warm-up run
    happened before), rounds chosen so the whole measurement takes about ``max_time``."""

    def timed():
        r = fn()
        sync(device)
        return r

    t0 = time.perf_counter()
    timed()
    warm = time.perf_counter() - t0
    rounds = int(max(min_rounds, min(max_rounds, max_time / max(warm, 1e-6))))
    benchmark.extra_info["first_call_s"] = first_call_s
    benchmark.extra_info["setup_s"] = max(0.0, first_call_s - warm)  # compile / JIT / capture, estimated
    benchmark.pedantic(timed, rounds=rounds, iterations=1, warmup_rounds=0)


def run_entry(benchmark, cfg, *, entry: str, provider: str, problem: str, batch: int, fn: Callable,
              check: Callable[[torch.Tensor], dict], flops: Optional[float]) -> None:
    """The one recipe of every benchmark: first call (timed apart: compile / JIT / capture),
    correctness against the float64 reference, peak memory, then the timed rounds."""
    import pytest

    if provider == "compile" and cfg.quick:
        pytest.skip("torch.compile takes ~40 s per shape to build on 2 CPU cores: not in --bench-quick")
    info = benchmark.extra_info
    info.update(environment(cfg.device))
    info.update(entry=entry, provider=provider, problem=problem, B=batch, K=cfg.steps, precision=cfg.precision,
                flops=flops, quick=cfg.quick)
    t0 = time.perf_counter()
    out = fn()
    sync(cfg.device)
    first = time.perf_counter() - t0
    if provider == "graph":
        from hebm.sampler.backends import graph

        info["capture_s"] = graph.last_capture_seconds
    info.update(check(out))  # raises: a wrong provider is never timed
    info.update(peak_memory(fn, cfg.device))
    measure(benchmark, fn, cfg.device, max_time=cfg.max_time, min_rounds=cfg.min_rounds,
            max_rounds=cfg.max_rounds, first_call_s=first)
    med = benchmark.stats.stats.median
    info["median_s"] = med
    info["gflops"] = (flops / med / 1e9) if (flops and med > 0) else None
