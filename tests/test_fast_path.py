"""The fast path of :func:`hebm.langevin_fused` for eager CPU calls (hebm/backends/cpu.py
``fast_langevin``, csrc/ops.cpp ``FastPlan``): for the argument forms it claims it gives the
general path's result bit for bit (and is actually taken), every other form is declined to the
general path, and a prior changed after its plan was made is never sampled with the old weights.
The bad-input matrix runs through it in tests/test_bad_input.py (``fused-cpu-planned``)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import hebm
import hebm.backends as backends
from hebm.backends import cpu, ops, pack

pytestmark = pytest.mark.skipif(backends.unavailable("cpu") is not None,
                                reason=f"cpu backend: {backends.unavailable('cpu')}")

B, DIMS, K = 6, (5, 3), 3
D = sum(DIMS)


@pytest.fixture
def taken(monkeypatch):
    """Whether each langevin_fused call since the fixture was answered by the fast path."""
    seen = []
    real = cpu.fast_langevin

    def spy(*a):
        r = real(*a)
        seen.append(r is not None)
        return r

    monkeypatch.setattr(cpu, "fast_langevin", spy)
    return seen


def general(prior, u, **kw):
    """The same call on the general path only."""
    real = cpu.fast_langevin
    cpu.fast_langevin = lambda *a: None
    try:
        return hebm.langevin_fused(prior, u, **kw)
    finally:
        cpu.fast_langevin = real


def fused(prior, u, **kw):
    kw.setdefault("backend", "cpu")
    return hebm.langevin_fused(prior, u, **kw)


def _state(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, D, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(B, D, generator=g, dtype=torch.float64).to(dtype))


def _forms(dtype):
    """(id, keyword arguments) in the forms the fast path takes, for a prior with 3 levels."""
    g = torch.Generator().manual_seed(7)
    _, nxt = _state(dtype, 1)

    def vec(lo, hi):
        return (lo + (hi - lo) * torch.rand(B, generator=g, dtype=torch.float64)).to(dtype)

    return [
        ("scalars", dict(n_steps=K, step_size=0.1, noise_scale=1.0, energy_scale=1, t=2, seed=3)),
        ("per-chain tensors", dict(n_steps=K, step_size=vec(0.05, 0.2), noise_scale=vec(0.5, 1.0),
                                   energy_scale=vec(0.5, 2.0), t=torch.tensor([0, 1, 2, 2, 1, 0]),
                                   chain_ids=torch.tensor([9, 3, 2**32 - 1, 0, 5, 6]), seed=2**63 + 5)),
        ("kernel term", dict(n_steps=K, step_size=0.05, t=1, u_next=nxt, alpha=0.9, sigma=vec(0.3, 0.6), seed=1)),
        ("kernel scalars", dict(n_steps=K, step_size=0.05, t=0, u_next=nxt, alpha=1, sigma=0.5, seed=1,
                                step_offset=2**32 - 1 - K)),
        ("explicit noise", dict(n_steps=K, step_size=0.1, t=1, noise=torch.randn(K, B, D, generator=g,
                                                                                   dtype=torch.float64).to(dtype))),
        ("no noise, no energy", dict(n_steps=1, step_size=0.3, noise_scale=0.0, energy_scale=0, t=1, seed=0,
                                     step_offset=11)),
        ("auto backend", dict(n_steps=K, step_size=0.1, t=1, seed=4, backend="auto", check="raise",
                              precision="tf32")),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_fast_path_matches_the_general_path_bit_for_bit(make_prior, taken, dtype):
    prior = make_prior(DIMS, n_levels=3, dtype=dtype)
    u, _ = _state(dtype)
    for name, kw in _forms(dtype):
        want = general(prior, u, **kw)  # (also makes the plan)
        del taken[:]
        got = fused(prior, u, **kw)
        assert taken == [True], f"{name}: the fast path was not taken"
        assert torch.equal(got, want), name
        ref = hebm.langevin_ref(prior, u, **{k: v for k, v in kw.items() if k not in ("backend", "precision")})
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4, msg=name)


def test_fast_path_reports_what_ran_and_the_trace(make_prior, taken):
    prior = make_prior(DIMS, dtype=torch.float32)
    u, _ = _state()
    kw = dict(n_steps=K, step_size=0.1, seed=5, return_info=True, precision="bf16")
    out_g, info_g = general(prior, u, **kw)
    out_f, info_f = fused(prior, u, **kw)
    assert taken == [True]
    assert torch.equal(out_f, out_g)
    assert info_f.keys() == info_g.keys() and info_f["backend"] == info_g["backend"] == "cpu"
    assert info_f["precision"] == info_g["precision"] == "fp32"
    assert torch.equal(info_f["log_density"], info_g["log_density"])
    # the trace is log π of the states: the reference's own values
    _, info_r = hebm.langevin_fused(prior, u, n_steps=K, step_size=0.1, seed=5, return_info=True, backend="ref")
    torch.testing.assert_close(info_f["log_density"], info_r["log_density"], rtol=1e-4, atol=1e-4)


def _declined_forms(u):
    """(id, u, keyword arguments): forms the general path normalises, which the fast path must leave to it."""
    grad_u = u.clone().requires_grad_(True)
    strided = torch.empty(D, B).t()
    strided.copy_(u)
    return [
        ("u requires grad", grad_u, {}),
        ("u not contiguous", strided, {}),
        ("u a Parameter", torch.nn.Parameter(u.clone(), requires_grad=False), {}),
        ("u as a list of layers", list(u.split(list(DIMS), 1)), {}),
        ("numpy scalar", u, dict(step_size=np.float32(0.1))),
        ("0-d tensor", u, dict(step_size=torch.tensor(0.1))),
        ("float64 step tensor", u, dict(step_size=torch.full((B,), 0.1, dtype=torch.float64))),
        ("int32 chain ids", u, dict(chain_ids=torch.arange(B, dtype=torch.int32))),
        ("numpy seed", u, dict(seed=np.int64(3))),
        ("float64 noise", u, dict(seed=None, noise=torch.randn(K, B, D, dtype=torch.float64))),
        ("noise not contiguous", u, dict(seed=None, noise=torch.randn(B, K, D).transpose(0, 1))),
        ("no steps", u, dict(n_steps=0)),
    ]


def test_fast_path_declines_other_forms_and_the_general_path_answers(make_prior, taken):
    prior = make_prior(DIMS, dtype=torch.float32)
    u, _ = _state()
    fused(prior, u, n_steps=K, step_size=0.1, seed=0)  # the plan
    for name, x, over in _declined_forms(u):
        kw = dict(n_steps=K, step_size=0.1, seed=0)
        kw.update(over)
        kw = {k: v for k, v in kw.items() if v is not None}
        del taken[:]
        got = fused(prior, x, **kw)
        # (a u that is not an exact torch.Tensor never reaches it)
        assert True not in taken, f"{name}: the fast path took a form it must leave to the general path"
        want = general(prior, x, **kw)
        if isinstance(want, list):
            assert all(torch.equal(a, b) for a, b in zip(got, want)), name
        else:
            assert torch.equal(got, want), name


def test_long_runs_are_chunked_by_the_general_path(make_prior, taken, monkeypatch):
    prior = make_prior(DIMS, dtype=torch.float32)
    u, _ = _state()
    want = fused(prior, u, n_steps=5, step_size=0.1, seed=2)
    monkeypatch.setattr(ops, "CHUNK_SECONDS", 1e-12)  # one step per chunk
    calls = []
    real = ops._langevin_call
    monkeypatch.setattr(ops, "_langevin_call", lambda *a: calls.append(1) or real(*a))
    del taken[:]
    got = fused(prior, u, n_steps=5, step_size=0.1, seed=2)
    assert taken == [False] and len(calls) == 5
    assert torch.equal(got, want)
    del taken[:]
    fused(prior, u, n_steps=1, step_size=0.1, seed=2)  # one step is never cut
    assert taken == [True]


def test_a_prior_changed_after_its_plan_is_never_sampled_with_old_weights(make_prior, taken):
    prior = make_prior(DIMS, n_levels=3, dtype=torch.float32)
    u, _ = _state()
    kw = dict(n_steps=K, step_size=0.1, t=1, seed=0)
    fused(prior, u, **kw)
    before = fused(prior, u, **kw)
    w = prior.energies[0].layers[0].weight
    old = w.detach().clone()
    with torch.no_grad():
        w.data.mul_(1.5)  # no version counter PyTorch tracks for .data, no registration hook
    del taken[:]
    changed = fused(prior, u, **kw)
    assert taken == [False]  # the byte comparison declined: the general path repacked
    torch.testing.assert_close(changed, hebm.langevin_ref(prior, u, **kw), rtol=1e-4, atol=1e-4)
    assert not torch.equal(changed, before)
    del taken[:]
    assert torch.equal(fused(prior, u, **kw), changed) and taken == [True]  # a new plan for the new pack
    with torch.no_grad():
        w.copy_(old)
    assert torch.equal(fused(prior, u, **kw), before)
    # a replaced parameter: the structure moved, the general path re-reads it
    prior.energies[0].layers[0].weight = torch.nn.Parameter(old * 0.5, requires_grad=False)
    del taken[:]
    again = fused(prior, u, **kw)
    assert taken == [False]
    torch.testing.assert_close(again, hebm.langevin_ref(prior, u, **kw), rtol=1e-4, atol=1e-4)
    e = pack.current_entry(prior)
    assert e is not None and e.fast[cpu.NAME][0].token == e.fast[cpu.NAME][2].op_structure()["token"]


def test_a_prior_that_is_no_longer_the_cpu_backends_is_left_to_the_general_path(make_prior, taken, monkeypatch):
    prior = make_prior(DIMS, dtype=torch.float32)
    u, _ = _state()
    fused(prior, u, n_steps=1, step_size=0.1, seed=0)
    monkeypatch.setitem(backends._MODULES, "cpu", "hebm.backends._not_built_for_this_test")
    del taken[:]
    with pytest.raises(hebm.BackendUnavailable):
        fused(prior, u, n_steps=1, step_size=0.1, seed=0)
    assert taken == [False]


@pytest.mark.parametrize("check", ["warn", "raise", "off"])
def test_divergence_on_the_fast_path_is_reported_as_on_the_general_path(make_prior, taken, check, recwarn):
    prior = make_prior(DIMS, dtype=torch.float32)
    u = torch.ones(B, D)
    kw = dict(n_steps=40, step_size=50.0, seed=0, check=check)

    def outcome(fn):
        from hebm import args
        args._warned.clear()  # the warning is once per cause: let both paths give it
        recwarn.clear()
        try:
            out = fn(prior, u, **kw)
        except hebm.DivergenceError as e:
            return "raised", str(e)
        msgs = [str(w.message) for w in recwarn if "diverged" in str(w.message)]
        assert not torch.isfinite(out).all()
        return "returned", msgs

    want = outcome(general)
    fused(prior, u, **dict(kw, check="off"))  # the plan
    del taken[:]
    got = outcome(fused)
    assert taken == [True]
    assert got == want
    assert (got[0] == "raised") == (check == "raise") and (check != "warn" or len(got[1]) == 1)


def test_fast_path_from_two_threads_agrees_with_serial_calls(make_prior):
    prior = make_prior(DIMS, dtype=torch.float32)
    u, _ = _state()
    seeds = list(range(8))
    want = [fused(prior, u, n_steps=K, step_size=0.1, seed=s) for s in seeds]
    got, errors = {}, []

    def work(part):
        try:
            for _ in range(20):
                for s in part:
                    got.setdefault(s, []).append(fused(prior, u, n_steps=K, step_size=0.1, seed=s))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(seeds[i::2],)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors and all(not th.is_alive() for th in threads)
    for s in seeds:
        assert all(torch.equal(x, want[s]) for x in got[s])
