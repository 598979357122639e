"""The Metropolis-adjusted step (MALA, docs/design.md §2b; hebm/sampler/reference.py states the rule):
on Gaussian targets with a closed form its chains keep the exact law at a step where ULA's
stationary variance is visibly off (1/(P(1 − δ²P/4)) instead of 1/P), per backend; the fused
CPU kernel makes the reference's accept decisions exactly on fp64 (explicit noise and the
seeded stream 2); step adaptation reaches its target acceptance and freezes; bad arguments are
named."""
from __future__ import annotations

import math
import os

import pytest
import torch

import hebm
import hebm.sampler.backends as backends
from hebm.prior.philox import initial_noise, philox_accept_uniform

# the backends that implement the Metropolis test, each against the same analytic facts (the
# graph backend's captured body is tested on CPU tensors below; on a GPU it runs in the parity
# matrix of benchmarks/run_gpu.sh)
GPU = torch.cuda.is_available()
MALA_BACKENDS = [b for b in ("ref", "cpu", "triton", "cuda", "graph") if backends.unavailable(b) is None]
#: (dtype, chains, steps) per backend: Triton runs float32 only, and under the interpreter (no GPU)
#: one program of 16 chains at a time, so it gets fewer chains and steps (ULA's variance is within
#: 10⁻⁷ of its limit after 12 steps here; the z-score thresholds below hold for both)
SETUP = {"ref": (torch.float64, 4096, 40), "cpu": (torch.float64, 4096, 40),
         "triton": (torch.float32, 4096 if GPU else 256, 40 if GPU else 12),
         "cuda": (torch.float64, 4096, 40), "graph": (torch.float64, 4096, 40)}


def _device(backend: str) -> str:
    """Where a backend's tensors live (the GPU backends: on the GPU; Triton without one: the
    interpreter on the CPU)."""
    return "cuda" if GPU and backend in ("triton", "cuda", "graph") else "cpu"


def _sample(prior, backend, **kw):
    """The backend's chain, on its device; the result back on the CPU."""
    dev = _device(backend)
    kw = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    if backend == "ref":
        res = hebm.langevin_ref(prior.to(dev), **kw)
    else:
        res = hebm.langevin_fused(prior.to(dev), backend=backend, **kw)
    if isinstance(res, tuple):
        return res[0].cpu(), {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in res[1].items()}
    return res.cpu()


def _var_z(x: torch.Tensor, want_var: float, want_mean=0.0) -> float:
    """z-score of the sample variance of ``x`` (independent N(want_mean, want_var) entries if the
    law is right): SE of a Gaussian variance estimate is var·√(2/n)."""
    v = float(((x - want_mean) ** 2).mean())
    return (v - want_var) / (want_var * math.sqrt(2.0 / x.numel()))


@pytest.mark.parametrize("backend", MALA_BACKENDS)
def test_mala_keeps_the_exact_gaussian_law_where_ula_is_biased(make_prior, backend):
    """λ = 0: π = N(0, I) (P = 1).  Started exactly in π, MALA must stay there; ULA at δ = 1
    goes to variance 1/(1 − 1/4) = 4/3."""
    dtype, B, K = SETUP[backend]
    prior = make_prior((5, 3), dtype=dtype)
    delta = 1.0
    u0 = initial_noise(11, B, prior.D, dtype=dtype)
    kw = dict(n_steps=K, step_size=delta, energy_scale=0.0, seed=5)
    ula = _sample(prior, backend, u=u0, **kw)
    mala, info = _sample(prior, backend, u=u0, metropolis=True, return_info=True, **kw)
    ula_var = 1.0 / (1.0 - delta**2 / 4.0)
    assert abs(_var_z(ula, ula_var)) < 5  # the known ULA bias is what ULA does here ...
    assert _var_z(ula, 1.0) > 8           # ... visibly away from the exact law
    assert abs(_var_z(mala, 1.0)) < 5     # MALA: the exact law
    assert abs(float(mala.mean())) < 5 / math.sqrt(mala.numel())
    assert 0.3 < float(info["accept_rate"].mean()) < 0.95 and info["accepted"].dtype == torch.int64


@pytest.mark.parametrize("backend", MALA_BACKENDS)
def test_mala_is_exact_with_the_kernel_term(make_prior, backend):
    """With u_next, a = 1, σ = 1 and λ = 0: π = N(u_next/2, I/2) (P = 2).  δ = 0.9: ULA's
    variance is 1/(2(1 − 0.405)) = 0.840, MALA's must be 1/2."""
    dtype, B, K = SETUP[backend]
    prior = make_prior((5, 3), dtype=dtype)
    delta, P = 0.9, 2.0
    nxt = initial_noise(3, B, prior.D, dtype=dtype)
    u0 = nxt / 2 + initial_noise(4, B, prior.D, dtype=dtype) / math.sqrt(P)
    kw = dict(n_steps=K, step_size=delta, energy_scale=0.0, u_next=nxt, alpha=1.0, sigma=1.0, seed=9)
    ula = _sample(prior, backend, u=u0, **kw)
    mala = _sample(prior, backend, u=u0, metropolis=True, **kw)
    assert abs(_var_z(ula, 1 / (P * (1 - delta**2 * P / 4)), nxt / 2)) < 5
    assert _var_z(ula, 1 / P, nxt / 2) > 8
    assert abs(_var_z(mala, 1 / P, nxt / 2)) < 5


@pytest.mark.skipif("cpu" not in MALA_BACKENDS, reason="cpu backend unavailable")
@pytest.mark.parametrize("seeded", [False, True], ids=["explicit", "seeded"])
def test_cpu_kernel_makes_the_reference_accept_decisions_on_fp64(make_prior, seeded):
    prior = make_prior((5, 3), n_levels=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    B, K = 37, 12
    u = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
    nxt = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
    kw = dict(n_steps=K, step_size=torch.linspace(0.2, 1.5, B, dtype=torch.float64), t=torch.arange(B) % 3,
              u_next=nxt, alpha=0.8, sigma=0.7, energy_scale=2.0, metropolis=True, return_info=True)
    if seeded:
        kw.update(seed=2**40 + 3, chain_ids=torch.arange(B) * 7 + 1)
    else:
        kw.update(noise=torch.randn(K, B, prior.D, generator=g, dtype=torch.float64),
                  uniforms=torch.rand(K, B, generator=g, dtype=torch.float64).clamp(1e-9, 1 - 1e-9))
    want, wi = hebm.langevin_ref(prior, u, **kw)
    got, gi = hebm.langevin_fused(prior, u, backend="cpu", **kw)
    assert gi["backend"] == "cpu"
    assert torch.equal(gi["accepted"], wi["accepted"])
    assert 0 < int(wi["accepted"].sum()) < B * K  # both outcomes happen
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gi["log_density"], wi["log_density"], rtol=1e-10, atol=1e-10)


def test_seeded_uniforms_are_stream_2(make_prior):
    """The seeded test draws U from stream 2 at the step counter: the same chain as explicit
    uniforms taken from hebm.prior.philox.philox_accept_uniform (and explicit normals of stream 0)."""
    prior = make_prior((5, 3), dtype=torch.float64)
    B, K, seed, off = 9, 6, 77, 5
    ids = torch.arange(B) + 100
    u = initial_noise(1, B, prior.D, dtype=torch.float64)
    seeded = hebm.langevin_ref(prior, u, n_steps=K, step_size=1.2, seed=seed, chain_ids=ids, step_offset=off,
                               metropolis=True)
    noise = torch.stack([hebm.prior.philox.philox_normal(seed, ids, off + k, prior.D) for k in range(K)]).double()
    unif = torch.stack([philox_accept_uniform(seed, ids, off + k) for k in range(K)]).double()
    explicit = hebm.langevin_ref(prior, u, n_steps=K, step_size=1.2, noise=noise, uniforms=unif, metropolis=True)
    assert torch.equal(seeded, explicit)


@pytest.mark.parametrize("backend", [b for b in MALA_BACKENDS if b != "ref"])
def test_acceptance_rates_of_the_backends_and_the_reference_agree_on_fp32(make_prior, backend):
    """Same seeds, float32: a backend's decisions may differ from the reference's only where
    log U and log α are within rounding; the rates must agree within sampling error."""
    prior = make_prior((5, 3), n_levels=2, dtype=torch.float32)
    B = SETUP[backend][1] // 2
    u = initial_noise(8, B, prior.D)
    kw = dict(n_steps=SETUP[backend][2] // 2, step_size=1.4, t=torch.arange(B) % 2, seed=12, metropolis=True, return_info=True)
    out_r, wi = hebm.langevin_ref(prior, u, **kw)
    out_b, gi = _sample(prior, backend, u=u, **kw)
    assert gi["backend"] == backend
    r, c = float(wi["accept_rate"].mean()), float(gi["accept_rate"].mean())
    se = math.sqrt(r * (1 - r) / (B * kw["n_steps"]))
    assert abs(r - c) < 4 * se, (r, c, se)
    same = wi["accepted"] == gi["accepted"]  # chains whose every decision agreed end at the same state
    assert float(same.double().mean()) > 0.9
    torch.testing.assert_close(out_b[same], out_r[same], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", [b for b in MALA_BACKENDS if b != "triton" or GPU])  # (K one-step launches:
@pytest.mark.parametrize("rule", ["dual_averaging", "robbins_monro"])                 # slow in the interpreter)
def test_step_adaptation_reaches_its_target_and_then_freezes(make_prior, backend, rule):
    dtype = SETUP[backend][0]
    prior = make_prior((5, 3), dtype=dtype)
    B, N, K = 256, 300, 400
    u = initial_noise(2, B, prior.D, dtype=dtype)
    kw = dict(step_size=3.0, energy_scale=0.0, seed=4, metropolis=True, adapt=rule, return_info=True)
    out, info = _sample(prior, backend, u=u, n_steps=K, adapt_steps=N, **kw)
    rate = float(info["accept_rate"].mean())  # over the K − N frozen steps
    # Robbins–Monro's last iterate lands on the target; dual averaging's averaged δ̄ lags a
    # short warm-up and accepts more (measured 0.62–0.65 at N = 200, RESULTS.md §8)
    lo, hi = (0.544, 0.604) if rule == "robbins_monro" else (0.544, 0.70)
    assert lo < rate < hi, rate
    assert info["step_size"].shape == (B,) and float(info["step_size"].mean()) < 3.0
    # frozen: the same chain is the warm-up, then a plain MALA run at the returned δ
    warm, wi = _sample(prior, backend, u=u, n_steps=N, adapt_steps=N, **kw)
    assert torch.equal(wi["step_size"], info["step_size"])
    rest = _sample(prior, backend, u=warm, n_steps=K - N, step_size=info["step_size"], energy_scale=0.0, seed=4,
                   step_offset=N, metropolis=True)
    if backend in ("ref", "cpu"):  # (bit-identical on the CPU; a GPU's reductions need not be)
        assert torch.equal(rest, out)
    else:
        torch.testing.assert_close(rest, out, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif("cpu" not in MALA_BACKENDS, reason="cpu backend unavailable")
def test_reverse_diffusion_with_the_test_matches_the_reference(make_prior):
    prior = make_prior((5, 3), n_levels=3, dtype=torch.float64)
    sched = hebm.DiffusionSchedule(3)
    kw = dict(n_steps=6, batch=16, seed=3, metropolis=True)
    want = hebm.reverse_diffusion_ref(prior, sched, **kw)
    got, info = hebm.reverse_diffusion(prior, sched, backend="cpu", return_info=True, **kw)
    assert info["accepted"].shape == (3, 16) and int(info["accepted"].sum()) > 0
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    _, ri = hebm.reverse_diffusion(prior, sched, backend="ref", return_info=True, **kw)
    assert torch.equal(ri["accepted"], info["accepted"])


U = torch.zeros(4, 8)
BAD = [
    ("noise_scale not 1", dict(noise_scale=0.5), ValueError, r"metropolis=True needs noise_scale = 1"),
    ("uniforms without metropolis", dict(metropolis=False, uniforms=torch.full((2, 4), 0.5)), ValueError,
     r"uniforms are the Metropolis test's"),
    ("explicit noise without uniforms", dict(seed=None, noise=torch.zeros(2, 4, 8)), ValueError,
     r"needs uniforms too: a \[K, B\] = \[2, 4\]"),
    ("uniforms with seed", dict(uniforms=torch.full((2, 4), 0.5)), ValueError, r"uniforms go with an explicit noise"),
    ("uniforms shape", dict(seed=None, noise=torch.zeros(2, 4, 8), uniforms=torch.full((2, 5), 0.5)), ValueError,
     r"uniforms must be a tensor \[K, B\] = \[2, 4\]"),
    ("uniforms at 0", dict(seed=None, noise=torch.zeros(2, 4, 8), uniforms=torch.zeros(2, 4)), ValueError,
     r"uniforms must be > 0"),
    ("uniforms at 1", dict(seed=None, noise=torch.zeros(2, 4, 8), uniforms=torch.ones(2, 4)), ValueError,
     r"uniforms must lie in \(0, 1\)"),
    ("adapt_steps too many", dict(adapt_steps=3), ValueError, r"adapt_steps must be in \[0, n_steps = 2\]"),
    ("adapt without metropolis", dict(metropolis=False, adapt_steps=1), ValueError, r"adapt_steps steers"),
    ("target_accept", dict(target_accept=1.5), ValueError, r"target_accept must be a number in \(0, 1\)"),
    ("adapt rule", dict(adapt="nuts"), ValueError, r"adapt must be one of robbins_monro, dual_averaging"),
    ("metropolis not bool", dict(metropolis="yes"), TypeError, r"metropolis must be True or False"),
]


@pytest.mark.parametrize("sampler", [b for b in MALA_BACKENDS if b in ("ref", "cpu")])
@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_metropolis_arguments_are_named(make_prior, sampler, case):
    prior = make_prior((5, 3), dtype=torch.float32)
    _, over, exc, pattern = case
    kw = dict(n_steps=2, step_size=0.1, seed=0, metropolis=True)
    kw.update(over)
    kw = {k: v for k, v in kw.items() if v is not None}
    with pytest.raises(exc, match=pattern):
        _sample(prior, sampler, u=U, **kw)


@pytest.mark.parametrize("seeded", [False, True], ids=["explicit", "seeded"])
def test_graph_backend_body_makes_the_reference_decisions(make_prior, seeded, monkeypatch):
    """The graph backend's captured body (replayed eagerly on CPU tensors, the same code a GPU
    captures), cut into chunks of 4 steps: the reference's chain and accept counts."""
    from hebm.sampler.backends import graph, pack
    from hebm.sampler.checks import check_langevin_args
    monkeypatch.setattr(graph, "MAX_CAPTURE_STEPS", 4)
    prior = make_prior((5, 3), n_levels=3, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    B, K = 11, 10
    u = torch.randn(B, prior.D, generator=g, dtype=torch.float64)
    kw = dict(n_steps=K, step_size=0.9, t=1, metropolis=True)
    if seeded:
        kw.update(seed=21)
    else:
        kw.update(noise=torch.randn(K, B, prior.D, generator=g, dtype=torch.float64),
                  uniforms=torch.rand(K, B, generator=g, dtype=torch.float64).clamp(1e-9, 1 - 1e-9))
    want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
    a = check_langevin_args(prior, u, **kw)
    got, logs, _, stats = graph.run(pack.of(prior), a, precision="fp32", trace=True)
    assert torch.equal(stats[0].round().long(), wi["accepted"])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logs, wi["log_density"], rtol=1e-12, atol=1e-12)


@pytest.mark.skipif("triton" not in MALA_BACKENDS, reason="triton backend unavailable")
@pytest.mark.parametrize("case", ["plain", "levels+kernel", "no energies"])
def test_triton_kernel_makes_the_reference_decisions(make_prior, case):
    """The generated Metropolis kernel (register form, also for networks the ULA kernel would
    stream) with explicit noise and uniforms: the reference's accept counts, chains and trace on
    float32 (the decisions are compared where the reference's test is not within rounding)."""
    dims, nl, kern = {"plain": ((5, 3), None, False), "levels+kernel": ((5, 3, 2), 3, True),
                      "no energies": ((4, 2), None, False)}[case]
    prior = make_prior(dims, n_levels=nl, dtype=torch.float32, **({"energy_hidden": None} if case == "no energies"
                                                                     else {}))
    g = torch.Generator().manual_seed(1)
    B, K = 19, 6
    u = torch.randn(B, prior.D, generator=g)
    kw = dict(n_steps=K, step_size=0.7, metropolis=True, return_info=True,
              noise=torch.randn(K, B, prior.D, generator=g),
              uniforms=torch.rand(K, B, generator=g).clamp(1e-6, 1 - 1e-6))
    if nl:
        kw["t"] = torch.arange(B) % nl
    if kern:
        kw.update(u_next=torch.randn(B, prior.D, generator=g), alpha=0.9, sigma=0.8)
    want, wi = hebm.langevin_ref(prior, u, **kw)
    got, gi = hebm.langevin_fused(prior, u, backend="triton", **kw)
    assert gi["backend"] == "triton"
    assert torch.equal(gi["accepted"], wi["accepted"]) and 0 < int(wi["accepted"].sum()) < B * K
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gi["log_density"], wi["log_density"], rtol=1e-4, atol=1e-4)
    seeded = dict(kw, noise=None, uniforms=None, seed=9)
    seeded = {k: v for k, v in seeded.items() if v is not None}
    _, si = hebm.langevin_ref(prior, u, **seeded)
    _, ti = hebm.langevin_fused(prior, u, backend="triton", **seeded)
    assert torch.equal(si["accepted"], ti["accepted"])


@pytest.mark.skipif("triton" not in MALA_BACKENDS, reason="triton backend unavailable")
def test_triton_refuses_the_test_for_a_network_that_needs_the_streamed_form(make_prior, monkeypatch):
    from hebm.sampler.backends import pack
    from hebm.sampler.backends import triton_backend as tb
    monkeypatch.setitem(tb.TUNING, "reg_limit", 0)  # every network with an MLP streams
    monkeypatch.setattr(pack, "_NETWORKS", {})  # (a structure keeps its verdicts: these are for this tuning)
    prior = make_prior((5, 3), dtype=torch.float32)
    u = torch.zeros(4, prior.D)
    with pytest.raises(hebm.BackendUnavailable, match=r"Metropolis kernel holds state.*streamed form"):
        hebm.langevin_fused(prior, u, n_steps=2, step_size=0.1, seed=0, metropolis=True, backend="triton")
    hebm.langevin_fused(prior, u, n_steps=2, step_size=0.1, seed=0, backend="triton")  # ULA streams fine


def _cuda_emulator():
    from hebm.sampler.backends import cuda as cb
    mod, why = cb.load_emulator()
    return why


@pytest.mark.skipif(os.environ.get("CUDA_HOME") is None and not os.path.isdir("/usr/local/cuda"),
                    reason="no CUDA toolkit to build the CUDA kernel's host emulator")
@pytest.mark.parametrize("seeded", [False, True], ids=["explicit", "seeded"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
def test_cuda_block_code_makes_the_reference_decisions(make_prior, seeded, dtype):
    """The CUDA kernel's block code (langevin_block.cuh) run by its host emulator: the reference's
    accept counts, chains and trace, the kernel term and per-row levels on (fp64: exactly the
    reference's decisions; fp32 with the same data, which here are far from the boundary)."""
    why = _cuda_emulator()
    assert why is None, why
    from hebm.sampler.backends import cuda as cb
    from hebm.sampler.backends import pack
    from hebm.sampler.checks import check_langevin_args
    prior = make_prior((5, 3, 2), n_levels=3, dtype=dtype)
    g = torch.Generator().manual_seed(4)
    B, K = 21, 7  # a partial row block
    u = torch.randn(B, prior.D, generator=g, dtype=torch.float64).to(dtype)
    kw = dict(n_steps=K, step_size=torch.linspace(0.3, 1.3, B, dtype=torch.float64).to(dtype), t=torch.arange(B) % 3,
              u_next=torch.randn(B, prior.D, generator=g, dtype=torch.float64).to(dtype), alpha=0.9, sigma=0.8,
              metropolis=True)
    if seeded:
        kw.update(seed=31, chain_ids=torch.arange(B) + 5)
    else:
        kw.update(noise=torch.randn(K, B, prior.D, generator=g, dtype=torch.float64).to(dtype),
                  uniforms=torch.rand(K, B, generator=g, dtype=torch.float64).clamp(1e-9, 1 - 1e-9).to(dtype))
    want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
    a = check_langevin_args(prior, u, **kw)
    got, logd, _, stats = cb.run(pack.of(prior), a, precision="fp32", trace=True, namespace="hebm_cuda_emu")
    assert torch.equal(stats[0].round().long(), wi["accepted"]) and 0 < int(wi["accepted"].sum()) < B * K
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    torch.testing.assert_close(logd, wi["log_density"], rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", [b for b in MALA_BACKENDS if b != "triton" or GPU])
def test_info_comes_back_detached(make_prior, backend):
    # the fused CPU kernel's op returned log_density, accept_rate and the adapted step_size with an
    # autograd history on the prior's weights (the state itself was detached); every backend now
    # returns info as the reference does, free of autograd
    prior = make_prior((5, 3), dtype=SETUP[backend][0])
    for p in prior.parameters():  # as a trained model's weights are
        p.requires_grad_(True)
    u = initial_noise(2, 8, prior.D, dtype=SETUP[backend][0])
    out, info = _sample(prior, backend, u=u, n_steps=6, step_size=0.3, seed=1, metropolis=True, adapt_steps=3,
                        return_info=True)
    assert not out.requires_grad
    for k in ("log_density", "accept_rate", "step_size"):
        assert not info[k].requires_grad and info[k].grad_fn is None, k
