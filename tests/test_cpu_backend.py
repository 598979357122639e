"""The fused C++ CPU sampler (backend="cpu"): build, environment, the op schema (opcheck), one call
per reverse diffusion, threads, weight updates and bad input.  Its parity with the reference is
in tests/test_parity.py (the one matrix every backend runs).

The extension must build here: a failed build FAILS these tests (CI has a compiler); only
the simulated build failures below are expected to fall back.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

import hebm
from hebm.sampler import backends
from hebm.sampler.backends import _build
from hebm.sampler.backends import cpu as cpu_backend
from hebm.sampler.backends import ops
from hebm.sampler.backends import pack
from hebm.sampler.checks import check_langevin_args
from tests.parity import make_kwargs, make_prior, parity

ACTS = ["gelu", "gelu_tanh", "silu", "leaky_relu:0.2", "tanh", "relu", "softplus"]


@pytest.fixture(scope="module")
def ext():
    mod, why = _build.load_cpu_ops()
    assert mod is not None, f"the C++ CPU extension must build here: {why}"
    return mod


# ---------------------------------------------------------------------------------------- build
def test_extension_loads_and_backend_available(ext):
    assert ops.op("langevin") is not None and ops.op("reverse_diffusion") is not None
    assert cpu_backend.unavailable() is None
    assert isinstance(ext.isa(), str) and ext.vector_bytes() in (16, 32, 64)


def test_philox_normals_match_reference(ext):
    ids = torch.tensor([0, 1, 7, 99, 2**32 - 1], dtype=torch.int64)
    for seed, step, D, stream in [(0, 0, 13, 0), (12345, 7, 4, 0), (2**33 + 5, 3, 9, 1)]:
        want = hebm.philox_normal(seed, ids, step, D, stream=stream)
        got = ext.philox_normal(seed, ids, step, D, stream)
        # same bits into Box–Muller; libm vs ATen's cos/sin/log may differ by an ulp
        torch.testing.assert_close(got, want, rtol=4e-7, atol=4e-7)


# ---------------------------------------------------------------------------------------- parity
def test_kernel_threads_setting(ext):
    """set_num_threads changes how many threads split the chains, never the chains (rows are
    independent), and 0/None go back to following torch.get_num_threads()."""
    prior = make_prior((7, 13), n_levels=3, seed=4)
    u, kw = make_kwargs(prior, 70, n_steps=12, explicit_noise=False, seed=5)
    try:
        outs = []
        for n in (1, 2, 3):
            cpu_backend.set_num_threads(n)
            assert cpu_backend.get_num_threads() == n
            outs.append(hebm.langevin_fused(prior, u, backend="cpu", **kw))
        for o in outs[1:]:
            torch.testing.assert_close(o, outs[0], rtol=0, atol=0)
        with pytest.raises(ValueError, match="n must be"):
            cpu_backend.set_num_threads(-1)
    finally:
        cpu_backend.set_num_threads(None)
    assert cpu_backend.get_num_threads() == torch.get_num_threads()


_POOL_STRESS = r"""
import torch, hebm
from hebm.sampler.backends import cpu as cpu_backend
from tests.parity import make_kwargs, make_prior
cpu_backend.set_num_threads(3)
prior = make_prior((5, 7), n_levels=3, seed=2)
u, kw = make_kwargs(prior, 64, n_steps=8, explicit_noise=False, seed=3)
n_params = sum(p.numel() for p in prior.parameters())
# above csrc/ops.cpp's kOneThreadFlops (8e6, 4*B*params*K), so every call wakes the workers
assert 4 * 64 * n_params * 8 > 8e6, n_params
want = hebm.langevin_fused(prior, u, backend="cpu", **kw)
for i in range(3000):  # back-to-back calls: the wake-up race the first pool lost
    got = hebm.langevin_fused(prior, u, backend="cpu", **kw)
    assert torch.equal(got, want), i
print("done")
"""


def test_thread_pool_survives_back_to_back_calls(ext):
    """Thousands of one-step calls in a row (each wakes the workers) finish and agree bit for
    bit; run in a child under a deadline, so a hang fails the test instead of the suite."""
    import os
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", _POOL_STRESS], cwd=root, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr[-2000:]


def test_concurrent_callers_agree_with_serial(ext):
    """Two Python threads calling the kernel at once (the op releases the GIL): one gets the pool,
    the other runs its chunks itself; both results equal the serial ones."""
    import threading
    priors = [make_prior((7, 13), n_levels=3, seed=s) for s in (4, 6)]
    cases = [make_kwargs(p, 64, n_steps=20, explicit_noise=False, seed=5 + i) for i, p in enumerate(priors)]
    want = [hebm.langevin_fused(p, u, backend="cpu", **kw) for p, (u, kw) in zip(priors, cases)]
    cpu_backend.set_num_threads(2)
    got: dict = {}
    errors: list = []

    def go(i):
        try:
            for _ in range(20):
                out = hebm.langevin_fused(priors[i], cases[i][0], backend="cpu", **cases[i][1])
                if not torch.equal(out, want[i]):
                    got[i] = out
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
    try:
        ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in ts), "a caller hung"
    finally:
        cpu_backend.set_num_threads(None)
    assert not errors, errors
    assert not got, f"results differed for callers {sorted(got)}"


def test_auto_picks_cpu(ext):
    p = hebm.standard_problem("toy", 4)
    _, info = hebm.langevin_fused(p.prior, p.u, return_info=True, **dict(p.kwargs, n_steps=2))
    assert info["backend"] == "cpu"


def test_a_weight_update_reaches_the_next_call(ext):
    prior = make_prior((7, 13), seed=9)
    u, kw = make_kwargs(prior, 5, n_steps=3)
    a = hebm.langevin_fused(prior, u, backend="cpu", **kw)
    with torch.no_grad():
        prior.energies[0].layers[0].weight.mul_(1.5)
    b = hebm.langevin_fused(prior, u, backend="cpu", **kw)
    torch.testing.assert_close(b, hebm.langevin_ref(prior, u, **kw), rtol=2e-5, atol=2e-5)
    assert not torch.equal(a, b)


# ---------------------------------------------------------------------------------------- reverse diffusion
def test_reverse_diffusion_is_one_call(ext, monkeypatch):
    """A whole reverse diffusion is one op call (all T levels × K steps), and a long one that
    would keep Ctrl-C waiting runs level by level, with the same result."""
    p = hebm.standard_problem("toy", 9)
    calls = []
    real = ops.reverse_diffusion
    monkeypatch.setattr(ops, "reverse_diffusion", lambda *a, **k: calls.append(1) or real(*a, **k))
    one = hebm.reverse_diffusion(p.prior, p.schedule, n_steps=5, batch=9, seed=3, backend="cpu")
    assert calls == [1]
    monkeypatch.setattr(ops, "CHUNK_SECONDS", 1e-9)  # every call is "long": one step per chunk
    split = hebm.reverse_diffusion(p.prior, p.schedule, n_steps=5, batch=9, seed=3, backend="cpu")
    assert calls == [1]
    torch.testing.assert_close(split, one, rtol=0, atol=0)


def test_long_chains_run_in_chunks(ext, monkeypatch):
    """Long CPU calls are cut into chunks (Ctrl-C reaches Python between them): same chains, same trace."""
    p = hebm.standard_problem("toy", 7)
    kw = dict(p.kwargs, n_steps=9)
    whole, info = hebm.langevin_fused(p.prior, p.u, backend="cpu", return_info=True, **kw)
    monkeypatch.setattr(ops, "CHUNK_SECONDS", 1e-9)
    assert ops.steps_per_chunk(pack.of(p.prior), 7, torch.device("cpu")) == 1
    parts, info2 = hebm.langevin_fused(p.prior, p.u, backend="cpu", return_info=True, **kw)
    torch.testing.assert_close(parts, whole, rtol=0, atol=0)
    torch.testing.assert_close(info2["log_density"], info["log_density"], rtol=0, atol=0)


# ---------------------------------------------------------------------------------------- statistics
def test_zero_energy_stationary_variance(ext):
    # F ≡ 0, no kernel: u ← (1 − δ²/2) u + δ ε, stationary variance 1 / (1 − δ²/4)
    prior = make_prior((3, 1), energy_hidden=None, seed=0)
    B, delta = 4000, 0.5
    out = hebm.langevin_fused(prior, torch.zeros(B, prior.D), n_steps=150, step_size=delta, seed=3, backend="cpu")
    var = out.double().var(0)
    want = 1.0 / (1.0 - delta**2 / 4)
    se = want * (2.0 / B) ** 0.5
    assert torch.all((var - want).abs() < 5 * se), (var, want)
    assert out.double().mean(0).abs().max() < 5 * (want / B) ** 0.5


# ---------------------------------------------------------------------------------------- op schema
def _op_args(prior, u, kw, trace):
    """The op's arguments for a checked call, in its schema's order (hebm.sampler.backends.ops)."""
    a = check_langevin_args(prior, u, **kw)
    return (*ops._network_args(pack.of(prior)), *ops._field_values(a, ops.LANGEVIN_FIELDS), trace, "fp32")


@pytest.mark.parametrize("trace", [False, True])
def test_opcheck_langevin(ext, trace):
    prior = make_prior((7, 13), n_levels=3, seed=1)
    u, kw = make_kwargs(prior, 6, n_steps=3)
    torch.library.opcheck(ops.op("langevin").default, _op_args(prior, u, kw, trace))
    kw = dict(kw, noise=None, seed=2**64 - 5, metropolis=True, noise_scale=1.0)  # a seed above 2**63, MALA
    torch.library.opcheck(ops.op("langevin").default, _op_args(prior, u, kw, trace))


def test_opcheck_reverse_diffusion(ext):
    prior = make_prior((7, 13), n_levels=3, seed=1)
    sched = hebm.DiffusionSchedule(3, 1e-3)
    B = 5
    u = torch.randn(B, prior.D)
    for return_levels in (False, True):
        r = hebm.sampler.checks.check_reverse_args(prior, sched, u, n_steps=4, seed=1)
        lv = [sched.level_params(t) for t in range(2, -1, -1)]
        args = (*ops._network_args(pack.of(prior)), *ops._field_values(r, ops.REVERSE_FIELDS),
                *[[p[key] for p in lv] for _, _, key in ops.LEVELS], return_levels, "fp32")
        torch.library.opcheck(ops.op("reverse_diffusion").default, args)


def test_op_guards_its_memory(ext):
    """The op refuses a network whose tables and tensors disagree (what would read outside them)."""
    prior = make_prior((7, 13), seed=1)
    u, kw = make_kwargs(prior, 4, n_steps=3)
    args = list(_op_args(prior, u, kw, False))
    args[2] = args[2][:-pack.LAY_NCOLS]  # drop a layer row
    with pytest.raises(RuntimeError, match="hebm"):
        ops.op("langevin")(*args)
    args = list(_op_args(prior, u, kw, False))
    args[0] = [w[:, :-1] if w.dim() == 2 else w for w in args[0]]  # every W one input short
    with pytest.raises(RuntimeError, match="W must be"):
        ops.op("langevin")(*args)
    args = list(_op_args(prior, u, kw, False))
    args[0] = [w.double() for w in args[0]]
    with pytest.raises(RuntimeError, match=r"weights\[0\] must be Float"):
        ops.op("langevin")(*args)


# ---------------------------------------------------------------------------------------- bad input
def test_non_contiguous_input(ext):
    prior = make_prior((7, 13), seed=14)
    u, kw = make_kwargs(prior, 33, n_steps=5)
    wide = torch.zeros(prior.D, 33).t()  # column-major view [33, D]
    wide.copy_(u)
    assert not wide.is_contiguous()
    got = hebm.langevin_fused(prior, wide, backend="cpu", **kw)
    torch.testing.assert_close(got, hebm.langevin_ref(prior, u, **kw), rtol=2e-5, atol=2e-5)
    strided = torch.zeros(33, 2 * prior.D)[:, ::2]
    strided.copy_(u)
    got2 = hebm.langevin_fused(prior, strided, backend="cpu", **kw)
    torch.testing.assert_close(got2, got, rtol=0, atol=0)


def test_bad_dtype_and_nan(ext):
    prior = make_prior((7, 13), seed=1)
    u, kw = make_kwargs(prior, 4, n_steps=2)
    with pytest.raises(TypeError):
        hebm.langevin_fused(prior, u.half(), backend="cpu", **kw)
    with pytest.raises(TypeError):
        hebm.langevin_fused(prior, u.double(), backend="cpu", **kw)  # prior is float32
    bad = u.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        hebm.langevin_fused(prior, bad, backend="cpu", **kw)


def test_wrong_device_is_refused(ext):
    prior = make_prior((7, 13), seed=1)
    u, kw = make_kwargs(prior, 4, n_steps=2)
    net, _ = pack.read(prior)
    why = cpu_backend.unsupported(net, device=torch.device("meta"), dtype=torch.float32)
    assert why is not None and "meta" in why
    # the op itself refuses non-CPU tensors on its CPU kernel and shapes them on meta
    meta = _op_args(prior, u, kw, True)
    meta = tuple(a.to("meta") if isinstance(a, torch.Tensor) else [w.to("meta") for w in a] if i == 0 else a
                 for i, a in enumerate(meta))
    out, logd, _, draws, _, _ = ops.op("langevin")(*meta)
    assert out.device.type == "meta" and out.shape == u.shape and logd.shape == (kw["n_steps"], 4)
    assert draws.shape == (0, 4, u.shape[1])  # no trace_every: no draws


class _ShiftedPrior(hebm.HierarchicalPrior):
    def T(self, u):  # not the math the kernel implements
        return super().T(u)


def test_unsupported_network_falls_back(ext, monkeypatch):
    monkeypatch.setattr(backends, "_warned", set())
    prior = _ShiftedPrior([3, 2], prior_hidden=(8,), energy_hidden=(8,))
    for p in prior.parameters():
        p.requires_grad_(False)
    u = torch.randn(5, prior.D)
    with pytest.warns(RuntimeWarning, match="overrides T"):
        _, info = hebm.langevin_fused(prior, u, n_steps=2, step_size=0.1, seed=0, return_info=True)
    assert info["backend"] == "ref"
    with pytest.raises(hebm.BackendUnavailable, match="overrides T"):
        hebm.langevin_fused(prior, u, n_steps=2, step_size=0.1, seed=0, backend="cpu")


def test_missing_compiler_falls_back(ext, monkeypatch):
    """Simulated machine without a compiler: auto warns once and uses ref; "cpu" names the fix."""
    monkeypatch.setattr(_build, "_CACHE", {})
    monkeypatch.setattr(backends, "_warned", set())
    monkeypatch.setenv("HEBM_FORCE_BUILD", "1")  # ignore the extension this process already has
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    prior = make_prior((7, 13), seed=1)
    u, kw = make_kwargs(prior, 4, n_steps=2)
    why = cpu_backend.unavailable()
    assert why is not None and "compiler" in why and "install" in why
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        _, info = hebm.langevin_fused(prior, u, return_info=True, **kw)
        _, info2 = hebm.langevin_fused(prior, u, return_info=True, **kw)
    assert info["backend"] == info2["backend"] == "ref"
    assert len([w for w in rec if "no fused backend" in str(w.message)]) == 1
    with pytest.raises(hebm.BackendUnavailable, match="compiler"):
        hebm.langevin_fused(prior, u, backend="cpu", **kw)


def test_build_failure_and_skip_switch(ext, monkeypatch, tmp_path):
    monkeypatch.setattr(_build, "_CACHE", {})
    monkeypatch.setenv("HEBM_SKIP_CPU_BUILD", "1")
    monkeypatch.setenv("HEBM_FORCE_BUILD", "1")
    mod, why = _build.load_cpu_ops()
    assert mod is None and "HEBM_SKIP_CPU_BUILD" in why
    monkeypatch.delenv("HEBM_SKIP_CPU_BUILD")
    monkeypatch.setattr(_build, "_CACHE", {})
    bad = tmp_path / "broken.cpp"
    bad.write_text("this is not C++\n")
    monkeypatch.setenv("HEBM_EXTENSIONS_DIR", str(tmp_path / "ext"))
    mod, why = _build.load_extension("_C_broken_test", [str(bad)])
    assert mod is None and "failed" in why and "backend='ref'" in why
    assert _build.load_extension("_C_broken_test", [str(bad)]) == (None, why)  # cached, no second build
