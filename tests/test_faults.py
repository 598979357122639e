"""Faults and hostile-but-realistic use of the sampler API: every case asserts the specific error
or the right result (stale caches, autograd leaks, counter overflow, diverging chains, reported
precision, unsupported modules, inference mode, mixed dtypes, Ctrl-C).  The CLI and checkpoint
faults are in tests/test_cli_faults.py."""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch

import hebm
from hebm.sampler import backends
from tests.parity import make_kwargs, make_prior


def _cpu():
    why = backends.unavailable("cpu")
    if why is not None:
        pytest.fail(f"the C++ CPU backend must be available here: {why}")


FUSED = ["cpu", "ref"]


# ------------------------------------------------------------------------------ weight updates
def _mutations():
    """Ways a training loop changes weights in place (each must reach the next langevin_fused
    call, and a Sampler's next call after refresh())."""

    def data_mul(prior):  # EMA-style: .data writes bump no version counter
        for q in prior.parameters():
            q.data.mul_(0.5)

    def no_grad_copy(prior):
        with torch.no_grad():
            for q in prior.parameters():
                q.copy_(q * 0.7 + 0.01)

    def load_state(prior):
        sd = {k: v * 1.3 for k, v in prior.state_dict().items()}
        prior.load_state_dict(sd)

    def optimiser(prior):
        for q in prior.parameters():
            q.requires_grad_(True)
        opt = torch.optim.SGD(prior.parameters(), lr=0.5)
        loss = sum((q * q).sum() for q in prior.parameters())
        loss.backward()
        opt.step()
        for q in prior.parameters():
            q.requires_grad_(False)
            q.grad = None

    def reassign(prior):  # a new tensor object behind the parameter
        w = prior.energies[0].layers[0].weight
        w.data = w.data * 2.0

    def storage_write(prior):  # through a NumPy view of the same memory
        arr = prior.energies[0].layers[0].weight.detach().numpy()
        arr *= -1.0

    def to_dtype_and_back(prior):  # .to(dtype) replaces every parameter's data, twice
        prior.to(torch.float64)
        with torch.no_grad():
            prior.energies[1].layers[0].weight.add_(0.25)
        prior.to(torch.float32)

    return {f.__name__: f for f in (data_mul, no_grad_copy, load_state, optimiser, reassign, storage_write,
                                    to_dtype_and_back)}


@pytest.mark.parametrize("how", list(_mutations()))
def test_langevin_fused_follows_every_weight_update(how):
    _cpu()
    prior = make_prior((7, 13), n_levels=3, seed=9)
    u, kw = make_kwargs(prior, 6, n_steps=3)
    before = hebm.langevin_fused(prior, u, backend="cpu", **kw)
    _mutations()[how](prior)
    after = hebm.langevin_fused(prior, u, backend="cpu", **kw)
    want = hebm.langevin_ref(prior, u, **kw)
    torch.testing.assert_close(after, want, rtol=2e-5, atol=2e-5)
    assert not torch.equal(before, after)


@pytest.mark.parametrize("how", list(_mutations()))
def test_a_sampler_samples_its_copy_until_refresh(how):
    """A Sampler samples the prior as it was read: after a weight update, bit for bit the chains of
    before (never a mixture of old and new numbers); after refresh(), bit for bit langevin_fused's."""
    _cpu()
    prior = make_prior((7, 13), n_levels=3, seed=9)
    u, kw = make_kwargs(prior, 6, n_steps=3)
    sampler = hebm.Sampler(prior, backend="cpu")
    before = sampler.run(u, **kw)
    assert torch.equal(before, hebm.langevin_fused(prior, u, backend="cpu", **kw))
    _mutations()[how](prior)
    assert torch.equal(sampler.run(u, **kw), before)
    after = sampler.refresh().run(u, **kw)
    assert torch.equal(after, hebm.langevin_fused(prior, u, backend="cpu", **kw))
    assert not torch.equal(after, before)


def test_to_dtype_is_followed():
    """prior.to(float64): langevin_fused samples in float64 at once; a Sampler built before keeps
    sampling its float32 copy, and samples float64 after refresh()."""
    _cpu()
    prior = make_prior((7, 13), n_levels=3, seed=9)
    u, kw = make_kwargs(prior, 6, n_steps=3)
    sampler = hebm.Sampler(prior, backend="cpu")
    before = sampler.run(u, **kw)
    prior.to(torch.float64)
    kw64 = {k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kw.items()}
    got = hebm.langevin_fused(prior, u.double(), backend="cpu", **kw64)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, hebm.langevin_ref(prior, u.double(), **kw64), rtol=1e-10, atol=1e-10)
    assert torch.equal(sampler.run(u, **kw), before)
    with pytest.raises(TypeError, match=r"\bu\b is torch.float32 but the prior's parameters are torch.float64"):
        hebm.langevin_fused(prior, u, backend="cpu", **kw)
    assert sampler.refresh().dtype == torch.float64
    assert torch.equal(sampler.run(u.double(), **kw64), got)


def test_langevin_fused_sees_spectral_norm_buffers_and_structure():
    _cpu()
    prior = make_prior((7, 13), spectral_norm=True, seed=2)
    u, kw = make_kwargs(prior, 5, n_steps=2)
    hebm.langevin_fused(prior, u, backend="cpu", **kw)
    with torch.no_grad():
        prior.energies[0].layers[0].weight.add_(0.3)
    prior.power_iteration(5)  # the u, v buffers move
    torch.testing.assert_close(hebm.langevin_fused(prior, u, backend="cpu", **kw), hebm.langevin_ref(prior, u, **kw),
                               rtol=2e-5, atol=2e-5)
    prior.energies[1].act = hebm.Activation("tanh")  # same tensors, other math
    torch.testing.assert_close(hebm.langevin_fused(prior, u, backend="cpu", **kw), hebm.langevin_ref(prior, u, **kw),
                               rtol=2e-5, atol=2e-5)
    prior.energies[1].act.name = "silu"  # an attribute of the activation: plain Python, read at every call
    torch.testing.assert_close(hebm.langevin_fused(prior, u, backend="cpu", **kw), hebm.langevin_ref(prior, u, **kw),
                               rtol=2e-5, atol=2e-5)


def test_a_sampler_decides_once_and_keeps_a_private_copy():
    """What a Sampler reads at build — the structure's verdict, the backend, a copy of the values
    (its token lets the CPU kernel keep its panel weights) — stays until refresh()."""
    prior = make_prior((7, 13), seed=3)
    sampler = hebm.Sampler(prior, backend="auto")
    tok = sampler._pack.token
    assert tok > 0 and sampler.backend in ("cpu", "ref")
    w = prior.energies[0].layers[0].weight
    assert all(v.data_ptr() != w.data_ptr() for v in sampler._pack.values)  # a copy, not the parameter
    u, kw = make_kwargs(prior, 4, n_steps=2)
    sampler.run(u, **kw)
    assert sampler._pack.token == tok
    assert sampler.refresh()._pack.token not in (0, tok)


# ------------------------------------------------------------------------------ autograd contract
@pytest.mark.parametrize("backend", FUSED)
def test_outputs_are_detached_on_every_backend(backend):
    _cpu()
    prior = make_prior((7, 13), seed=1)
    u, kw = make_kwargs(prior, 4, n_steps=2)
    u = u.clone().requires_grad_(True)
    kw["step_size"] = kw["step_size"].clone().requires_grad_(True)
    for fn in (lambda: hebm.langevin_ref(prior, u, **kw), lambda: hebm.langevin_fused(prior, u, backend=backend, **kw)):
        out = fn()
        assert not out.requires_grad and out.grad_fn is None
    parts = hebm.langevin_fused(prior, prior.split(u), backend=backend, **kw)
    assert not any(p.requires_grad for p in parts)


# ------------------------------------------------------------------------------ counters
@pytest.mark.parametrize("sampler", [hebm.langevin_ref, lambda *a, **k: hebm.langevin_fused(*a, backend="cpu", **k)])
def test_step_counter_range(sampler):
    prior = make_prior((3, 2), seed=1)
    u = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="step_offset"):
        sampler(prior, u, n_steps=1, step_size=0.1, seed=0, step_offset=2**32)
    with pytest.raises(ValueError, match=r"step_offset \+ n_steps"):
        sampler(prior, u, n_steps=2, step_size=0.1, seed=0, step_offset=2**32 - 1)
    with pytest.raises(ValueError, match="n_steps"):
        sampler(prior, u, n_steps=2**63, step_size=0.1, seed=0)
    with pytest.raises(ValueError, match="step_offset"):
        sampler(prior, u, n_steps=1, step_size=0.1, seed=0, step_offset=2**63)
    # the last step of the 32-bit counter is allowed and differs from step 0
    a = sampler(prior, u, n_steps=1, step_size=0.1, seed=0, step_offset=2**32 - 1)
    b = sampler(prior, u, n_steps=1, step_size=0.1, seed=0, step_offset=0)
    assert not torch.equal(a, b)


def test_reverse_diffusion_counter_range():
    prior = make_prior((3, 2), n_levels=3, seed=1)
    sched = hebm.DiffusionSchedule(3)
    with pytest.raises(ValueError, match="n_steps"):
        hebm.reverse_diffusion(prior, sched, batch=2, seed=0, n_steps=2**31)


# ------------------------------------------------------------------------------ diverging chains
@pytest.mark.parametrize("backend", ["ref", "cpu"])
def test_divergence_is_reported(backend, monkeypatch):
    _cpu()
    from hebm.sampler import results as A

    monkeypatch.setattr(A, "_warned", set())
    prior = make_prior((3, 2), seed=1)
    u = torch.ones(4, 5)
    run = hebm.langevin_ref if backend == "ref" else (lambda *a, **k: hebm.langevin_fused(*a, backend="cpu", **k))
    with pytest.warns(RuntimeWarning, match=r"diverged.*step_size"):
        out = run(prior, u, n_steps=60, step_size=50.0, seed=0)
    assert not torch.isfinite(out).all()
    kernel = dict(u_next=torch.zeros(4, 5), alpha=1.0, sigma=1e-20)
    with pytest.warns(RuntimeWarning, match=r"diverged.*raise sigma"):
        run(prior, u, n_steps=20, step_size=0.1, seed=0, **kernel)
    with pytest.raises(hebm.DivergenceError, match="step_size"):
        run(prior, u, n_steps=60, step_size=50.0, seed=0, check="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(prior, u, n_steps=60, step_size=50.0, seed=0, check="off")
    with pytest.raises(ValueError, match="check"):
        run(prior, u, n_steps=1, step_size=0.1, seed=0, check="loud")


def test_reverse_diffusion_divergence_is_reported(monkeypatch):
    from hebm.sampler import results as A

    monkeypatch.setattr(A, "_warned", set())
    prior = make_prior((3, 2), n_levels=2, seed=1, scale=30.0)
    sched = hebm.DiffusionSchedule(2, base_step_size=50.0)
    with pytest.warns(RuntimeWarning, match="diverged"):
        hebm.reverse_diffusion(prior, sched, batch=4, seed=0, n_steps=40, backend="ref")


# ------------------------------------------------------------------------------ options and precision
def test_precision_reports_what_ran():
    _cpu()
    prior = make_prior((7, 13), seed=1)
    u, kw = make_kwargs(prior, 4, n_steps=2)
    for asked in ("bf16", "tf32", "fp32", "auto"):
        _, info = hebm.langevin_fused(prior, u, backend="cpu", precision=asked, return_info=True, **kw)
        assert info["precision"] == "fp32", (asked, info)
    _, info = hebm.langevin_fused(prior.double(), u.double(), backend="cpu", precision="bf16", return_info=True,
                                  **{k: v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v
                                     for k, v in kw.items()})
    assert info["precision"] == "fp64"


def test_both_entry_points_validate_options_the_same_way():
    p = hebm.standard_problem("toy", 3)
    for fn in (lambda **o: hebm.langevin_fused(p.prior, p.u, **p.kwargs, **o),
               lambda **o: hebm.reverse_diffusion(p.prior, p.schedule, batch=3, seed=0, n_steps=1, **o)):
        with pytest.raises(ValueError, match=r"precision must be one of .*'fp8'"):
            fn(precision="fp8")
        with pytest.raises(ValueError, match=r"backend must be one of .*'tpu'"):
            fn(backend="tpu")
        with pytest.raises(ValueError, match=r"backend must be one of"):
            fn(backend=None)


def test_reverse_diffusion_bad_arguments():
    p = hebm.standard_problem("toy", 3)
    with pytest.raises(TypeError, match="schedule"):
        hebm.reverse_diffusion(p.prior, object(), batch=3, seed=0, n_steps=1)
    with pytest.raises(ValueError, match="u_T or batch"):
        hebm.reverse_diffusion(p.prior, p.schedule, torch.zeros(3, 4), batch=3, seed=0, n_steps=1)
    with pytest.raises(ValueError, match=r"u_T must have shape"):
        hebm.reverse_diffusion(p.prior, p.schedule, torch.zeros(3, 5), seed=0, n_steps=1)
    with pytest.raises(ValueError, match="u_T.*NaN"):
        hebm.reverse_diffusion(p.prior, p.schedule, torch.full((3, 4), math.nan), seed=0, n_steps=1)
    with pytest.raises(ValueError, match=r"noise must have shape \[T\*K, B, D\]"):
        hebm.reverse_diffusion(p.prior, p.schedule, torch.zeros(3, 4), noise=torch.zeros(2, 3, 4), n_steps=1)
    with pytest.raises(TypeError, match="batch"):
        hebm.reverse_diffusion(p.prior, p.schedule, batch=2.5, seed=0, n_steps=1)


# ------------------------------------------------------------------------------ prior construction
@pytest.mark.parametrize("kw,exc,pattern", [
    (dict(dims=[3.7, 2]), TypeError, r"dims.*3\.7 is not an integer"),
    (dict(dims=[3, True]), TypeError, r"dims"),
    (dict(dims=[3, 2], prior_hidden=[8.5]), TypeError, r"prior_hidden"),
    (dict(dims=[3, 2], energy_hidden=[0]), ValueError, r"energy_hidden"),
    (dict(dims=[3, 2], act="leaky_relu:nan"), ValueError, r"slope must be a finite number"),
    (dict(dims=[3, 2], energy_act="leaky_relu:inf"), ValueError, r"slope must be a finite number"),
    (dict(dims=[3, 2], sigma_min=math.nan), ValueError, r"sigma_min"),
])
def test_bad_prior_arguments(kw, exc, pattern):
    dims = kw.pop("dims")
    with pytest.raises(exc, match=pattern):
        hebm.HierarchicalPrior(dims, **kw)


def test_standard_problem_bad_arguments():
    with pytest.raises(TypeError, match="batch"):
        hebm.standard_problem("toy", 2.5)
    with pytest.raises(ValueError, match="batch"):
        hebm.standard_problem("toy", 0)
    with pytest.raises(ValueError, match="unknown problem"):
        hebm.standard_problem("huge", 4)
    with pytest.raises(TypeError, match="dtype"):
        hebm.standard_problem("toy", 4, dtype=torch.float16)


def test_spectral_norm_is_on_the_energies_only():
    prior = hebm.HierarchicalPrior([3, 2], spectral_norm=True)
    assert all(layer.spectral_norm for f in prior.energies for layer in f.layers)
    assert not any(layer.spectral_norm for g in prior.conditionals for layer in g.layers)


# ------------------------------------------------------------------------------ unsupported modules
def _foreign_priors():
    def sequential():
        prior = make_prior((3, 2), seed=4)
        prior.energies[0] = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Mish(), torch.nn.Linear(8, 1))
        return prior, "energies[0] is a torch.nn.modules.container.Sequential"

    def mish_act():
        prior = make_prior((3, 2), seed=4)
        prior.energies[1].act = torch.nn.Mish()
        return prior, "energies[1].act is a torch.nn.modules.activation.Mish"

    return {"sequential": sequential, "mish": mish_act}


@pytest.mark.parametrize("kind", list(_foreign_priors()))
def test_unsupported_module_falls_back_and_is_named(kind, monkeypatch):
    _cpu()
    monkeypatch.setattr(backends, "_warned", set())
    prior, where = _foreign_priors()[kind]()
    for q in prior.parameters():
        q.requires_grad_(False)
    u = torch.randn(5, prior.D)
    ref = hebm.langevin_ref(prior, u, n_steps=3, step_size=0.1, seed=0)  # the reference runs any module
    assert torch.isfinite(ref).all()
    with pytest.warns(RuntimeWarning, match="using the reference"):
        out, info = hebm.langevin_fused(prior, u, n_steps=3, step_size=0.1, seed=0, return_info=True)
    assert info["backend"] == "ref" and torch.equal(out, ref)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning, not one per call
        hebm.langevin_fused(prior, u, n_steps=3, step_size=0.1, seed=0)
    with pytest.raises(hebm.BackendUnavailable, match=where.replace(".", r"\.").replace("[", r"\[").replace("]", r"\]")):
        hebm.langevin_fused(prior, u, n_steps=3, step_size=0.1, seed=0, backend="cpu")


# ------------------------------------------------------------------------------ inference mode, dtypes, t
def test_samplers_inside_inference_mode():
    _cpu()
    p = hebm.standard_problem("toy", 5)
    kw = dict(p.kwargs, n_steps=3)
    want = hebm.langevin_ref(p.prior, p.u, **kw)
    zprior = make_prior((3, 2))
    with torch.inference_mode():
        got_ref = hebm.langevin_ref(p.prior, p.u, **kw)
        got_cpu = hebm.langevin_fused(p.prior, p.u, backend="cpu", **kw)
        rd = hebm.reverse_diffusion_ref(p.prior, p.schedule, batch=4, seed=1, n_steps=2)
        z = hebm.langevin_z_ref(zprior, torch.zeros(4, 5), n_steps=2, step_size=0.1, seed=0)
    assert torch.equal(got_ref, want)
    torch.testing.assert_close(got_cpu, want, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(rd, hebm.reverse_diffusion_ref(p.prior, p.schedule, batch=4, seed=1, n_steps=2),
                               rtol=0, atol=0)
    assert torch.isfinite(z).all()


def test_mixed_dtype_prior_is_named():
    prior = make_prior((3, 2), seed=1)
    prior.energies[0].double()
    with pytest.raises(TypeError, match=r"prior's parameters mix dtypes"):
        hebm.langevin_ref(prior, torch.zeros(2, 5), n_steps=1, step_size=0.1, seed=0)
    with pytest.raises(TypeError, match=r"prior's parameters mix dtypes"):
        hebm.langevin_fused(prior, torch.zeros(2, 5), n_steps=1, step_size=0.1, seed=0)


def test_levels_as_lists_and_numpy():
    prior = make_prior((3, 2), n_levels=3, seed=1)
    u = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    want = hebm.langevin_ref(prior, u, n_steps=2, step_size=0.1, seed=0, t=torch.tensor([0, 2, 1]))
    for t in ([0, 2, 1], np.array([0, 2, 1]), (0, 2, 1)):
        assert torch.equal(hebm.langevin_ref(prior, u, n_steps=2, step_size=0.1, seed=0, t=t), want)
    assert torch.equal(hebm.langevin_ref(prior, u, n_steps=2, step_size=0.1, seed=0, t=np.int64(2)),
                       hebm.langevin_ref(prior, u, n_steps=2, step_size=0.1, seed=0, t=2))
    with pytest.raises(TypeError, match=r"\bt\b"):
        hebm.langevin_ref(prior, u, n_steps=2, step_size=0.1, seed=0, t=[0.5, 1.0, 2.0])
    with pytest.raises(TypeError, match=r"\bt\b"):
        hebm.langevin_ref(prior, u, n_steps=2, step_size=0.1, seed=0, t="1")
    with pytest.raises(ValueError, match=r"\bt\b.*\[0, 2\]"):
        hebm.langevin_ref(prior, u, n_steps=2, step_size=0.1, seed=0, t=[0, 3, 1])


# ------------------------------------------------------------------------------ Ctrl-C
def _sigint_as_from_a_terminal():
    """In the child, before exec: SIGINT at its default disposition and unblocked, as a user's
    terminal gives it.  pytest started under ``nohup`` or as a background job of a non-interactive
    shell (``bash -c 'pytest ... & wait'``) has SIGINT ignored; the child would inherit SIG_IGN,
    Python would keep it (it installs its KeyboardInterrupt handler only over SIG_DFL) and the
    signal the test sends would never arrive.  ``restore_signals`` does not cover SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_interrupts_a_long_cpu_chain(tmp_path):
    """SIGINT during a chain of 2³¹−1 steps on backend='cpu' ends it with KeyboardInterrupt in
    about a chunk's time (hebm.sampler.backends.ops.CHUNK_SECONDS), not after the whole chain."""
    _cpu()
    script = tmp_path / "long_chain.py"
    script.write_text(textwrap.dedent("""
        import sys, time, torch, hebm
        p = hebm.standard_problem("toy", 64)
        kw = dict(p.kwargs, n_steps=2**31 - 1)
        hebm.langevin_fused(p.prior, p.u[:, :], backend="cpu", **dict(kw, n_steps=2))  # warm (build, pack)
        print("started", flush=True)
        try:
            hebm.langevin_fused(p.prior, p.u, backend="cpu", **kw)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(7)
    """))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, preexec_fn=_sigint_as_from_a_terminal)
    try:
        line = proc.stdout.readline()
        assert "started" in line, proc.stderr.read()
        time.sleep(1.0)
        t0 = time.time()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        waited = time.time() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 7, (rc, proc.stderr.read())
    # the chain would run for hours (2³¹ toy steps); a kernel that returns to Python between its
    # ~0.25 s chunks ends within seconds.  The bound is loose on purpose: no assertion here may
    # depend on how fast or how loaded the machine is, only on hours vs seconds.
    assert waited < 25.0, f"Ctrl-C took {waited:.1f} s to take effect"


# ------------------------------------------------------------------------------ the noise stream across backends
def test_cpu_normals_agree_with_the_reference_within_one_ulp():
    """docs/design.md §2: every backend draws the same Philox bits and runs Box–Muller in float64,
    rounding each normal once to float32.  Two correct double libms (glibc here, Sleef in torch —
    its AVX2 or AVX-512 code by CPU —, libdevice on GPUs) agree to an ulp of double, so the
    rounded normals can differ only where a double result lies within that of a float32 rounding
    boundary, and then by one ulp: the machine-independent fact asserted here.  (Measured: no
    difference in 1.7·10⁸ normals, native and HEBM_MARCH=haswell builds, ATen's default, AVX2
    and AVX-512 code, 2026-12-05; in fp32 5–21 % differed, by up to 4 ulp.)"""
    _cpu()
    from hebm.sampler.backends import _build

    ext, _ = _build.load_cpu_ops()
    ids = torch.arange(4096, dtype=torch.int64)
    for seed, step in [(0, 0), (12345, 7), (2**62 + 5, 2**32 - 1), (99, 3), (7, 100)]:
        want = hebm.philox_normal(seed, ids, step, 33)
        got = ext.philox_normal(seed, ids, step, 33, 0)
        assert torch.equal(want.sign(), got.sign())
        ulps = (want.view(torch.int32).long() - got.view(torch.int32).long()).abs()
        assert int(ulps.max()) <= 1, f"normals differ by up to {int(ulps.max())} ulp"
