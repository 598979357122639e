"""The one parity matrix: every backend × one table of cases, against the float64 reference.

Backends (each a *runner*; the ones that cannot run here are skipped with the reason):

* ``cpu``            — the C++ kernel through ``hebm.langevin_fused(backend="cpu")``;
* ``cuda-emu``       — the CUDA kernel's own block code run on host fibers (``hebm_cuda_emu`` ops),
  plus variants that force each workspace plan (``cuda-emu[...]``);
* ``triton-interp``  — the Triton kernel under ``TRITON_INTERPRET=1`` on CPU tensors (no GPU
  present), plus ``triton-interp[tiled]`` (the scratch-tiled layer form at small widths);
* ``graph-body``     — the exact body the graph backend captures, replayed eagerly on the CPU;
* ``cuda``, ``triton``, ``graph`` — the real backends on a GPU.

The rule (tests/parity.py): the fp32 result within 2× PyTorch's own fp32 error of the float64
reference, for the same explicit noise or seed; traces within 1e-3 relative; float64 runs within
1e-10 (explicit noise) of the float64 reference.  Backend test files keep only what is particular
to a backend (build, environment, opcheck, launch counts).
"""
from __future__ import annotations

import copy
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is built

import pytest  # noqa: E402

import hebm  # noqa: E402
from hebm.sampler.backends import pack  # noqa: E402
from hebm.sampler.checks import check_langevin_args, check_reverse_args
from hebm.sampler.record import LADDER_BACKENDS  # noqa: E402
from hebm.sampler.reference import draws_info, run_chain, start_draws, swap_record_info  # noqa: E402
from hebm.sampler.results import finish  # noqa: E402
from tests.parity import attribute_prior, make_kwargs, make_prior, on, parity  # noqa: E402

GPU = torch.cuda.is_available()
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy σ(x → −∞) in Triton's interpreter


# ------------------------------------------------------------------------------ runners
class Runner:
    """How one backend runs a Langevin call and a reverse diffusion, on which device."""

    name = ""
    device = "cpu"
    fp64 = True
    cases = None  # None: every case; else the case names this variant runs
    env: dict = {}

    def skip(self):
        return None

    def langevin(self, prior, u, kw, precision):
        return hebm.langevin_fused(prior, u, backend=self.backend, precision=precision, return_info=True, **kw)

    def reverse(self, prior, sched, u_T, kw, return_levels):
        return hebm.reverse_diffusion(prior, sched, u_T, backend=self.backend, precision="fp32",
                                      return_levels=return_levels, **kw)


class Fused(Runner):
    def __init__(self, name, backend=None, device="cpu", fp64=True):
        self.name, self.backend, self.device, self.fp64 = name, backend or name, device, fp64

    def skip(self):
        if self.device == "cuda" and not GPU:
            return f"backend {self.backend!r} needs a CUDA GPU"
        return hebm.sampler.backends.unavailable(self.backend)


class CudaEmu(Runner):
    """The CUDA extension's ``hebm_cuda_emu`` ops: the kernel's block code on host fibers."""

    def __init__(self, name="cuda-emu", env=None, cases=None):
        self.name, self.env, self.cases = name, env or {}, cases

    def skip(self):
        from tests.test_cuda_backend import NVCC

        if NVCC is None:
            return "nvcc not found: the CUDA extension (and its emulator) cannot be built here"
        os.environ.setdefault("HEBM_CUDA_ARCH", "90" if not GPU else os.environ.get("HEBM_CUDA_ARCH", ""))
        from hebm.sampler.backends import cuda as cb

        mod, why = cb.load_emulator()
        assert mod is not None, f"the CUDA extension must build here: {why}"
        return None

    def langevin(self, prior, u, kw, precision):
        from hebm.sampler.backends import cuda as cb

        a = check_langevin_args(prior, u, **kw)
        start_draws(a, True, self.name)
        ran, pt = [None], {}

        def run(args):  # (as hebm.Sampler.run drives a backend: the swap rounds inside the launch)
            if args.temperatures is None:
                out, logd, ran[0], stats = cb.run(pack.of(prior), args, precision=precision, trace=True,
                                                  namespace="hebm_cuda_emu")
            else:
                out, logd, ran[0], stats, record = cb.run_replica(pack.of(prior), args, precision=precision,
                                                                  trace=True, namespace="hebm_cuda_emu")
                pt.update(swap_record_info(args, record, trace=True))
            return out, logd, stats

        out, logd, extra, _ = run_chain(run, a, trace=True)
        info = {"backend": self.name, "precision": ran[0], "log_density": logd, **extra, **pt, **draws_info(prior, a)}
        return finish(prior, a, out, info, True)

    def reverse(self, prior, sched, u_T, kw, return_levels):
        from hebm.sampler.backends import cuda as cb

        r = check_reverse_args(prior, sched, u_T, **kw)
        levels, _ = cb.run_reverse(pack.of(prior), sched, r, precision="fp32", return_levels=return_levels,
                                   namespace="hebm_cuda_emu")
        return (levels[-1], levels) if return_levels else levels[-1]


class TritonInterp(Fused):
    def __init__(self, name="triton-interp", tuning=None, cases=None):
        super().__init__(name, "triton", "cpu", fp64=False)
        self.tuning, self.cases = tuning or {}, cases

    def skip(self):
        if GPU:
            return "a GPU is present: the compiled Triton kernel is tested instead of the interpreter"
        pytest.importorskip("triton")
        return super().skip()

    def _tuned(self, fn):
        from hebm.sampler.backends import triton_backend as tb

        old = dict(tb.TUNING)
        tb.TUNING.update(self.tuning)
        try:
            return fn()
        finally:
            tb.TUNING.update(old)

    def langevin(self, prior, u, kw, precision):
        return self._tuned(lambda: super(TritonInterp, self).langevin(prior, u, kw, precision))

    def reverse(self, prior, sched, u_T, kw, return_levels):
        return self._tuned(lambda: super(TritonInterp, self).reverse(prior, sched, u_T, kw, return_levels))


class GraphBody(Runner):
    """The graph backend's captured body, replayed eagerly on CPU tensors (everything but the capture)."""

    name = "graph-body"

    def langevin(self, prior, u, kw, precision):
        from hebm.sampler.backends import graph

        a = check_langevin_args(prior, u, **kw)
        start_draws(a, True, self.name)
        ran, pt = [None], {}

        def run(args):  # (as hebm.Sampler.run drives a backend: the swap rounds in the chunks)
            if args.temperatures is None:
                out, logd, ran[0], stats = graph.run(pack.of(prior), args, precision=precision, trace=True)
            else:
                out, logd, ran[0], stats, record = graph.run_replica(pack.of(prior), args, precision=precision,
                                                                     trace=True)
                pt.update(swap_record_info(args, record, trace=True))
            return out, logd, stats

        out, logd, extra, _ = run_chain(run, a, trace=True)
        info = {"backend": self.name, "precision": ran[0], "log_density": logd, **extra, **pt, **draws_info(prior, a)}
        return finish(prior, a, out, info, True)

    def reverse(self, prior, sched, u_T, kw, return_levels):
        from hebm.sampler.backends import graph
        from hebm.sampler.reference import reverse_loop

        r = check_reverse_args(prior, sched, u_T, **kw)
        levels = reverse_loop(prior, sched, r,
                              run=lambda p, a: graph.run(pack.of(p), a, precision="fp32", trace=False)[:2] + (None,))
        return (levels[-1], levels) if return_levels else levels[-1]


PLAN_CASES = ("default", "levels-per-row", "wide-odd", "L3-seeded")
RUNNERS = [
    Fused("cpu"),
    CudaEmu(),
    CudaEmu("cuda-emu[ws=global]", {"HEBM_CUDA_WS": "global"}, PLAN_CASES),
    CudaEmu("cuda-emu[stage=0]", {"HEBM_CUDA_STAGE": "0"}, PLAN_CASES),
    CudaEmu("cuda-emu[store=0]", {"HEBM_CUDA_STORE": "0"}, PLAN_CASES),
    CudaEmu("cuda-emu[rows=16,store=1]", {"HEBM_CUDA_ROWS": "16", "HEBM_CUDA_STORE": "1"}, PLAN_CASES),
    CudaEmu("cuda-emu[rows=8]", {"HEBM_CUDA_ROWS": "8"}, PLAN_CASES),
    CudaEmu("cuda-emu[global,stage=0,rows=16]", {"HEBM_CUDA_WS": "global", "HEBM_CUDA_STAGE": "0", "HEBM_CUDA_ROWS": "16"},
            PLAN_CASES),
    TritonInterp(),
    TritonInterp("triton-interp[tiled]", dict(reg_limit=0, tile=16), ("default", "L3-seeded", "levels-per-row", "tiled-33")),
    GraphBody(),
    Fused("cuda", device="cuda"),
    Fused("triton", device="cuda", fp64=False),
    Fused("graph", device="cuda"),
]
BASE = [r for r in RUNNERS if r.cases is None]  # the variants run the case table only


def _ready(r, monkeypatch):
    why = r.skip()
    if why is not None:
        pytest.skip(f"{r.name}: {why}")
    for k, v in r.env.items():
        monkeypatch.setenv(k, v)
    return r


@pytest.fixture(params=BASE, ids=[r.name for r in BASE])
def runner(request, monkeypatch):
    return _ready(request.param, monkeypatch)


# ------------------------------------------------------------------------------ the case table
ACTS = ["relu", "leaky_relu:0.1", "tanh", "silu", "gelu", "gelu_tanh", "softplus"]

# name: (prior keywords, run keywords incl. B)
CASES = {
    "default": (dict(dims=(7, 13)), dict(B=33, n_steps=3)),
    **{f"act-{a}": (dict(dims=(5, 6), prior_hidden=(9,), energy_hidden=(11, 7), act=a, scale=2.5, seed=3),
                    dict(B=9, n_steps=2, per_row=a in ("gelu", "tanh", "softplus", "relu")))
       for a in ACTS},
    "L1": (dict(dims=(13,)), dict(B=6)),
    "L3-seeded": (dict(dims=(7, 13, 3)), dict(B=9, explicit_noise=False)),
    "L4-deep": (dict(dims=(4, 3, 5, 2), prior_hidden=(17, 9), energy_hidden=(19, 11, 6), seed=4), dict(B=17, n_steps=2)),
    "no-bias": (dict(dims=(7, 3), bias=False), dict(B=5)),
    "spectral-deep-sigma0": (dict(dims=(7, 3), prior_hidden=(9, 5), energy_hidden=(9, 7, 5), spectral_norm=True,
                                  sigma_min=0.0, energy_act="silu"), dict(B=6)),
    "levels-per-row": (dict(dims=(7, 13), n_levels=4), dict(B=7)),
    "levels-scalar": (dict(dims=(3, 7), n_levels=3), dict(B=5, per_row=False)),
    "no-kernel": (dict(dims=(7, 13)), dict(B=8, kernel=False)),
    "scalar-params-bigseed": (dict(dims=(7, 13)), dict(B=5, per_row=False, explicit_noise=False, seed=2**63 + 17)),
    "seeded-ids-offset": (dict(dims=(7, 13), n_levels=3), dict(B=20, n_steps=3, explicit_noise=False, seed=2**40 + 17,
                                                               chain_ids=True, step_offset=5)),
    "zero-noise": (dict(dims=(7, 13, 3), seed=11), dict(B=8, zero_noise=True)),
    "gaussian": (dict(dims=(7, 13, 3), energy_hidden=None), dict(B=5)),
    "gaussian-no-kernel": (dict(dims=(7, 13, 3), energy_hidden=None), dict(B=5, kernel=False)),
    "linear-nets": (dict(dims=(3, 7, 13), prior_hidden=(), energy_hidden=()), dict(B=5, explicit_noise=False)),
    "energy-act-differs": (dict(dims=(7, 13, 3), act="tanh", energy_act="silu", seed=11), dict(B=8)),
    "wide-odd": (dict(dims=(97, 13), prior_hidden=(130,), energy_hidden=(97, 66), seed=5, scale=0.5), dict(B=33, n_steps=2)),
    "tiled-33": (dict(dims=(7, 13, 3), prior_hidden=(33,), energy_hidden=(33, 20), n_levels=3), dict(B=18, n_steps=2)),
    "B1": (dict(dims=(7, 13, 3), seed=11), dict(B=1)),
    # attribute-coupled energies (hebm.models.controllable): each chain its own attribute values (t)
    "attributes-per-row": (dict(dims=(7, 13, 3), seed=11, attributes=(("digit", "thickness", "slant"), (2, 0, 0),
                                                                       (19, 11))), dict(B=33, n_steps=3)),
    "attributes-gaussian-seeded": (dict(dims=(7, 13, 3), energy_hidden=None, seed=12,
                                        attributes=(("digit", "slant"), (0, 2), (9, 5))),
                                   dict(B=17, n_steps=3, explicit_noise=False, kernel=False)),
    "two-programs": (dict(dims=(7, 13)), dict(B=21, n_steps=2, explicit_noise=False)),
    # the soft clamp of log σ, in its nonlinear range (weights scaled up: |ℓ| ~ c)
    "sigma-clamp": (dict(dims=(7, 13, 3), sigma_clamp=1.0, scale=3.0, seed=7), dict(B=9, n_steps=3)),
    "sigma-clamp-levels-seeded": (dict(dims=(5, 6), n_levels=3, sigma_clamp=0.5, scale=3.0), dict(B=7, n_steps=2,
                                                                                               explicit_noise=False)),
    "dims-3-6-5-no-kernel": (dict(dims=(3, 6, 5), seed=3), dict(B=17, n_steps=2, kernel=False, per_row=False)),
    "no-bias-spectral": (dict(dims=(7, 13), bias=False, spectral_norm=True), dict(B=19, n_steps=2)),
    "sigma0-one-hidden": (dict(dims=(7, 13), sigma_min=0.0, energy_hidden=(23,)), dict(B=19, n_steps=2)),
    "wide-300": (dict(dims=(97, 13), prior_hidden=(300,), energy_hidden=(70, 33), seed=5, scale=0.5), dict(B=33, n_steps=8)),
    "long-60": (dict(dims=(7, 13), n_levels=3, seed=2), dict(B=33, n_steps=60, explicit_noise=False, seed=2**40 + 17)),
    # 60 steps of every activation and depth, 20 of every network variant: chains long enough for
    # rounding differences to compound (the compiled backends run them; the emulators are too slow)
    **{f"act-{a}-60": (dict(dims=(7, 13), act=a, seed=3), dict(B=33, n_steps=60)) for a in ACTS},
    **{f"depth-{'x'.join(map(str, d))}-60": (dict(dims=d, prior_hidden=(17, 9), energy_hidden=(19, 11, 6), seed=len(d)),
                                             dict(B=33, n_steps=60, data_seed=len(d)))
       for d in [(5,), (7, 13), (13, 7, 3), (2, 5, 9, 4)]},
    **{f"variant-{v}-20": (dict(dims=(7, 13, 3), seed=11, **pk), dict(B=b, n_steps=20, **rk)) for v, pk, rk, b in [
        ("no-bias", dict(bias=False), {}, 33), ("spectral", dict(spectral_norm=True), {}, 33),
        ("levels-per-row", dict(n_levels=4), {}, 33), ("levels-scalar", dict(n_levels=3), dict(per_row=False), 33),
        ("scalar-params", {}, dict(per_row=False), 33), ("no-kernel", {}, dict(kernel=False), 33),
        ("zero-noise", {}, dict(zero_noise=True), 33), ("gaussian", dict(energy_hidden=None), {}, 33),
        ("gaussian-no-kernel", dict(energy_hidden=None), dict(kernel=False), 33), ("sigma-min-0", dict(sigma_min=0.0), {}, 33),
        ("energy-act-differs", dict(act="tanh", energy_act="silu"), {}, 33), ("B1", {}, {}, 1)]},
}
# cases too slow for the host emulators at their size: the compiled backends run them
HEAVY = {c for c in CASES if c.endswith("-60") or c.endswith("-20") or c == "wide-300"}


def build_case(name, device, dtype=torch.float32):
    pk, rk = CASES[name]
    rk = dict(rk)
    B = rk.pop("B")
    chain_ids, step_offset, zero_noise = rk.pop("chain_ids", False), rk.pop("step_offset", 0), rk.pop("zero_noise", False)
    pk = dict(pk)
    attrs = pk.pop("attributes", None)
    prior = make_prior(**pk)
    if attrs is not None:
        prior = attribute_prior(prior, *attrs, seed=pk.get("seed", 0))
    u, kw = make_kwargs(prior, B, **rk)
    if chain_ids:
        kw["chain_ids"] = torch.arange(B) * 7 + 3
    if step_offset:
        kw["step_offset"] = step_offset
    if zero_noise:
        kw["noise_scale"] = torch.zeros(B)
    return prior, u, kw


def _emulated(runner) -> bool:
    return isinstance(runner, (CudaEmu, TritonInterp))


PAIRS = [(r, c) for r in RUNNERS for c in CASES if r.cases is None or c in r.cases]


@pytest.mark.parametrize("runner,case", PAIRS, ids=[f"{r.name}-{c}" for r, c in PAIRS])
def test_langevin_parity(runner, case, monkeypatch):
    runner = _ready(runner, monkeypatch)
    if case in HEAVY and _emulated(runner):
        pytest.skip(f"{case}: too slow for {runner.name}; the compiled backends run it")
    prior, u, kw = build_case(case, runner.device)
    parity(prior.to(runner.device), u.to(runner.device), on(kw, torch.float32, runner.device), runner.langevin)


def test_float64(runner):
    if not runner.fp64:
        pytest.skip(f"{runner.name} runs float32 only")
    prior = make_prior((7, 13, 5), n_levels=2, seed=6, dtype=torch.float64)
    u, kw = make_kwargs(prior, 11, n_steps=10, dtype=torch.float64)
    want, info_ref = hebm.langevin_ref(prior, u, return_info=True, **kw)
    got, info = runner.langevin(copy.deepcopy(prior).to(runner.device), u.to(runner.device),
                                on(kw, torch.float64, runner.device), "fp32")
    assert got.dtype == torch.float64 and info["precision"] == "fp64"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(info["log_density"].cpu(), info_ref["log_density"], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name,n_steps", [("toy", 60), ("small", 20), ("large", 6)])
def test_standard_problems(runner, name, n_steps):
    if _emulated(runner) and name != "toy":
        pytest.skip(f"{name}: too slow for {runner.name} at full width; the compiled backends run it")
    p = hebm.standard_problem(name, 8, device=runner.device)
    parity(p.prior, p.u, dict(p.kwargs, n_steps=n_steps), runner.langevin)


def test_chain_alone_equals_chain_in_batch(runner):
    prior = make_prior((7, 13), n_levels=3, seed=4).to(runner.device)
    u, kw = make_kwargs(prior, 40, n_steps=5, explicit_noise=False, seed=99, device=runner.device)
    batch, _ = runner.langevin(prior, u, kw, "fp32")
    for b in (0, 17, 39):
        one = {k: (v[b:b + 1] if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == 40 else v)
               for k, v in kw.items()}
        alone, _ = runner.langevin(prior, u[b:b + 1], dict(one, chain_ids=torch.tensor([b], device=runner.device)), "fp32")
        torch.testing.assert_close(alone, batch[b:b + 1], rtol=0, atol=1e-6)


def test_list_io_zero_steps_and_trace(runner):
    prior = make_prior((7, 13), seed=8).to(runner.device)
    u, kw = make_kwargs(prior, 9, n_steps=4, device=runner.device)
    parts = prior.split(u)
    out, info = runner.langevin(prior, parts, kw, "fp32")
    assert isinstance(out, list) and [p.shape for p in out] == [p.shape for p in parts]
    assert info["log_density"].shape == (4, 9)
    torch.testing.assert_close(torch.cat(out, 1).cpu(), hebm.langevin_ref(prior.cpu(), u.cpu(), **on(kw, torch.float32, "cpu")),
                               rtol=2e-5, atol=2e-5)
    same, info0 = runner.langevin(prior, u, dict(kw, n_steps=0, noise=kw["noise"][:0]), "fp32")
    assert torch.equal(same, u) and info0["log_density"].shape == (0, 9)


# ------------------------------------------------------------------------------ reverse diffusion
@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("seeded", [True, False])
def test_reverse_diffusion_parity(runner, T, seeded):
    prior = make_prior((7, 13), n_levels=3, seed=12)
    sched = hebm.DiffusionSchedule(T, base_step_size=1e-2)
    B, K = 17, 4
    g = torch.Generator().manual_seed(0)
    u_T = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
    kw = dict(n_steps=K)
    if seeded:
        kw.update(seed=77, chain_ids=torch.arange(B) * 3)
    else:
        kw.update(noise=torch.randn(T * K, B, prior.D, generator=g, dtype=torch.float64), noise_scale=0.7)
    gold, gold_lv = hebm.reverse_diffusion_ref(copy.deepcopy(prior).double(), sched, u_T, return_levels=True, **kw)
    ref32 = hebm.reverse_diffusion_ref(prior, sched, u_T.float(), **on(kw, torch.float32, "cpu"))
    kwd = on(kw, torch.float32, runner.device)
    out, lv = runner.reverse(prior.to(runner.device), sched, u_T.float().to(runner.device), kwd, True)
    assert len(lv) == T + 1
    torch.testing.assert_close(lv[0].cpu(), u_T.float(), rtol=0, atol=0)
    scale = max(1.0, float(gold.abs().max()))
    bound = 2 * float((ref32.double() - gold).abs().max()) + 1e-5 * scale
    assert float((out.cpu().double() - gold).abs().max()) <= bound
    for a, b in zip(lv, gold_lv):
        assert float((a.cpu().double() - b).abs().max()) <= 2e-4 * scale
    only = runner.reverse(prior.to(runner.device), sched, u_T.float().to(runner.device), kwd, False)
    torch.testing.assert_close(only.cpu(), out.cpu(), rtol=0, atol=0)


def test_reverse_diffusion_float64(runner):
    if not runner.fp64:
        pytest.skip(f"{runner.name} runs float32 only")
    T, K, B = 2, 6, 6
    prior = make_prior((7, 5), n_levels=T, seed=13, dtype=torch.float64)
    sched = hebm.DiffusionSchedule(T, base_step_size=1e-2)
    g = torch.Generator().manual_seed(5)
    u_T = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
    nz = torch.randn(T * K, B, prior.D, generator=g, dtype=torch.float64)
    want = hebm.reverse_diffusion_ref(prior, sched, u_T, n_steps=K, noise=nz)
    got = runner.reverse(prior.to(runner.device), sched, u_T.to(runner.device), dict(n_steps=K, noise=nz.to(runner.device)),
                         False)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-10)
    # seeded: the fp32 Box–Muller normals may differ by an ulp between libraries (docs/design.md §2)
    want = hebm.reverse_diffusion_ref(prior, sched, u_T, n_steps=K, seed=5)
    got = runner.reverse(prior.to(runner.device), sched, u_T.to(runner.device), dict(n_steps=K, seed=5), False)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-6, atol=1e-6)



# ------------------------------------------------------------------------------ draws inside the call
def test_draws_parity(runner):
    """``trace_every``: the draws and their log π against the float64 reference (fp32: the 2× rule's
    tolerance; fp64: 1e-10), and the traced call's final state equal to the untraced one's.  Every
    backend records them (a ladder with draws stays refused where the backend has no swap rounds:
    tests/test_draws.py)."""
    dev = runner.device
    for metropolis in (False, True):
        prior = make_prior((7, 13, 3), n_levels=3, seed=6, dtype=torch.float64)
        u, kw = make_kwargs(prior, 11, n_steps=12, explicit_noise=False, seed=5, dtype=torch.float64)
        kw = dict(kw, trace_every=4, step_offset=2)  # draws after the counters 4, 8, 12 (steps 1, 5, 9 of 12)
        if metropolis:
            kw = dict(kw, metropolis=True, noise_scale=1.0)
        want, iref = hebm.langevin_ref(prior, u, return_info=True, **kw)
        if runner.fp64:
            got, info = runner.langevin(prior.to(dev), u.to(dev), on(kw, torch.float64, dev), "fp32")
            assert info["draw_steps"].tolist() == [4, 8, 12] and info["draws"].shape == (3, 11, prior.D)
            torch.testing.assert_close(info["draws"].cpu(), iref["draws"], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(info["draws_log_density"].cpu(), iref["draws_log_density"], rtol=1e-10,
                                       atol=1e-10)
            plain = runner.langevin(prior.to(dev), u.to(dev),
                                    on({k: v for k, v in kw.items() if k != "trace_every"}, torch.float64, dev), "fp32")[0]
            assert torch.equal(got, plain)
            prior = prior.cpu()
        # fp32 against the float64 reference
        p32, u32, kw32 = copy.deepcopy(prior).float(), u.float(), on(kw, torch.float32, "cpu")
        got32, i32 = runner.langevin(copy.deepcopy(p32).to(dev), u32.to(dev), on(kw, torch.float32, dev), "fp32")
        i32 = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in i32.items()}
        assert i32["draw_steps"].tolist() == [4, 8, 12] and i32["draws"].shape == (3, 11, prior.D)
        plain32 = runner.langevin(copy.deepcopy(p32).to(dev), u32.to(dev),
                                  on({k: v for k, v in kw.items() if k != "trace_every"}, torch.float32, dev), "fp32")
        assert torch.equal(got32, plain32[0]), f"{runner.name}: the draws changed the chain"
        ref32 = hebm.langevin_ref(p32, u32, return_info=True, **kw32)[1]
        err = float((i32["draws"].double() - iref["draws"]).abs().max())
        err_ref = float((ref32["draws"].double() - iref["draws"]).abs().max())
        assert err <= 2 * err_ref + 1e-5 * max(1.0, float(iref["draws"].abs().max())), (err, err_ref)
        torch.testing.assert_close(i32["draws_log_density"].double(), iref["draws_log_density"], rtol=1e-3, atol=1e-3)


# ------------------------------------------------------------------------------ replica exchange
LADDER_INT_KEYS = ("swap_attempts", "swap_accepted", "replica", "round_trips")


def _triton_streamed(runner, prior) -> bool:
    """Whether ``runner`` is a Triton one whose kernel for ``prior`` takes the streamed form (its
    tuning, the device's defaults at fp32): the form without a Metropolis kernel."""
    if getattr(runner, "backend", None) != "triton":
        return False
    from hebm.kernels import kernel_form
    from hebm.sampler.backends import triton_backend as tb

    old = dict(tb.TUNING)
    tb.TUNING.update(getattr(runner, "tuning", {}))
    try:
        spec = tb.kernel_spec(tb.packed(prior)[0].network, has_kernel=False, unext_from_state=False, seeded=True,
                              trace=False, store_levels=False, precision="fp32", interpret=runner.device == "cpu")
        return kernel_form(spec) != "register"
    finally:
        tb.TUNING.update(old)


def test_replica_exchange_parity(runner):
    """``temperatures`` where the record says a backend runs them (``LADDER_BACKENDS``; the others
    refuse by name, tests/test_draws.py): in fp64 every swap decision, the swap and round-trip
    statistics and the draws equal the reference's, the states to 1e-10 — ULA and MALA, both
    schedules, seeded and explicit noise, rounds that fall inside and at the ends of the chunks; in
    fp32 the final state meets the parity rule where the decisions agree.  A Triton kernel in the
    streamed form (the fp32 GPU kernel of this prior) runs ULA and refuses MALA naming the form —
    checked here, not skipped."""
    if runner.name.split("[")[0].replace("-body", "").replace("-emu", "").replace("-interp", "") not in LADDER_BACKENDS:
        pytest.skip(f"{runner.name}: its backend refuses a ladder by name (tests/test_draws.py)")
    from hebm.sampler.backends import ops

    dev = runner.device
    prior = make_prior((5, 3), n_levels=3, seed=7, dtype=torch.float64)
    G, R, K, every, off = 3, 4, 13, 3, 2
    B = G * R
    g = torch.Generator().manual_seed(3)
    for mala, schedule, explicit in ((False, "deo", False), (True, "even_odd", False), (False, "even_odd", True),
                                     (True, "deo", True)):
        u = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
        kw = dict(n_steps=K, temperatures=[0.0, 0.3, 0.6, 1.0], swap_every=every, swap_schedule=schedule,
                  step_offset=off, energy_scale=30.0, metropolis=mala, trace_every=4,
                  step_size=(0.3 if mala else 0.08) * (1.0 + torch.rand(B, generator=g, dtype=torch.float64)),
                  t=torch.randint(0, 3, (G,), generator=g).repeat_interleave(R))
        if explicit:
            kw["noise"] = torch.randn(K, B, prior.D, generator=g, dtype=torch.float64)
            kw["swap_uniforms"] = torch.rand(ops.swap_rounds(K, off, every), B, generator=g,
                                             dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
            if mala:
                kw["uniforms"] = torch.rand(K, B, generator=g, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        else:
            kw.update(seed=11, chain_ids=torch.randperm(500, generator=g)[:B])
        want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
        assert int(wi["swap_accepted"].sum()) > 0 and int((wi["swap_attempts"] - wi["swap_accepted"]).sum()) > 0
        if runner.fp64:
            got, gi = runner.langevin(prior.to(dev), u.to(dev), on(kw, torch.float64, dev), "fp32")
            gi = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in gi.items()}
            for k in LADDER_INT_KEYS + ("swapped",):
                assert torch.equal(gi[k], wi[k]), (runner.name, k)
            if mala:
                assert torch.equal(gi["accepted"], wi["accepted"])
            for k in ("swap_energy", "log_density", "draws", "draws_log_density"):
                torch.testing.assert_close(gi[k], wi[k], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-10)
            prior = prior.cpu()
        # fp32: where the fp32 reference makes the float64 reference's swaps, the parity rule
        p32, kw32 = copy.deepcopy(prior).float(), on(kw, torch.float32, "cpu")
        if mala and _triton_streamed(runner, p32):
            with pytest.raises((hebm.BackendUnavailable, ValueError), match="streamed form"):
                runner.langevin(copy.deepcopy(p32).to(dev), u.float().to(dev), on(kw, torch.float32, dev), "fp32")
            continue
        ref32, ri32 = hebm.langevin_ref(p32, u.float(), return_info=True, **kw32)
        got32, gi32 = runner.langevin(copy.deepcopy(p32).to(dev), u.float().to(dev), on(kw, torch.float32, dev), "fp32")
        assert torch.equal(ri32["swapped"], wi["swapped"])  # (this seed's decisions are not near a tie)
        assert torch.equal(gi32["swapped"].cpu(), wi["swapped"]), runner.name
        err = float((got32.cpu().double() - want).abs().max())
        err_ref = float((ref32.double() - want).abs().max())
        assert err <= 2 * err_ref + 1e-5 * max(1.0, float(want.abs().max())), (runner.name, err, err_ref)
