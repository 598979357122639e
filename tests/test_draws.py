"""``trace_every``: draws recorded inside a sampler call (the keyword of the call record, its checks,
its meaning in the reference, the CPU kernel's copy of it, the backends that refuse it)."""
from __future__ import annotations

import pytest
import torch

import hebm
from hebm.sampler.backends import pack
from hebm.sampler.record import DRAWS_BACKENDS, LANGEVIN, refusal, switched_on
from hebm.sampler.backends import ops
from tests.parity import make_kwargs, make_prior

F64 = torch.float64


def _setup(n_steps=10, B=6, seed=3, **kw):
    prior = make_prior((7, 13, 3), n_levels=3, seed=6, dtype=F64)
    u, a = make_kwargs(prior, B, n_steps=n_steps, explicit_noise=False, seed=seed, dtype=F64)
    return prior, u, dict(a, **kw)


def test_reference_draws_are_the_states_after_every_mth_step():
    prior, u, kw = _setup(n_steps=10, trace_every=3)
    out, info = hebm.langevin_ref(prior, u, return_info=True, **kw)
    assert info["draw_steps"].tolist() == [3, 6, 9]
    assert info["draws"].shape == (3, 6, prior.D) and info["draws_log_density"].shape == (3, 6)
    for j, k in enumerate((3, 6, 9)):
        short = hebm.langevin_ref(prior, u, **dict(kw, n_steps=k, trace_every=None))
        assert torch.equal(info["draws"][j], short)
        # log π of the draw: what log_density reports for the state entering step k
        assert torch.equal(info["draws_log_density"][j], info["log_density"][k])
    plain = hebm.langevin_ref(prior, u, **dict(kw, trace_every=0))
    assert torch.equal(out, plain)


def test_reference_last_draw_and_offset():
    prior, u, kw = _setup(n_steps=8, trace_every=4, step_offset=2)  # counters 3 … 10: draws after 4 and 8
    out, info = hebm.langevin_ref(prior, u, return_info=True, **kw)
    assert info["draw_steps"].tolist() == [4, 8]
    prior2, u2, kw2 = _setup(n_steps=8, trace_every=4)  # counters 1 … 8: the last draw is the final state
    out2, info2 = hebm.langevin_ref(prior2, u2, return_info=True, **kw2)
    assert torch.equal(info2["draws"][-1], out2)
    want = prior2.log_density(out2, energy_scale=kw2["energy_scale"], t=kw2["t"], u_next=kw2["u_next"],
                              alpha=kw2["alpha"], sigma=kw2["sigma"])
    torch.testing.assert_close(info2["draws_log_density"][-1], want, rtol=1e-12, atol=1e-12)


def test_list_form_and_metropolis():
    prior, u, kw = _setup(n_steps=6, trace_every=2, metropolis=True, noise_scale=1.0)
    out, info = hebm.langevin_ref(prior, prior.split(u), return_info=True, **kw)
    assert isinstance(info["draws"], list) and [d.shape for d in info["draws"]] == [(3, 6, d) for d in prior.dims]
    assert torch.equal(torch.cat([d[-1] for d in info["draws"]], 1), torch.cat(out, 1))
    # MALA: the draw's log π is the chain's own (accepted or kept) log π
    flat = torch.cat(info["draws"], 2)
    for j in range(2):
        torch.testing.assert_close(info["draws_log_density"][j], info["log_density"][2 * (j + 1)], rtol=0, atol=0)
    assert flat.shape == (3, 6, prior.D)


def test_adaptation_and_replica_exchange_in_the_reference():
    prior, u, kw = _setup(n_steps=9, trace_every=3, metropolis=True, noise_scale=1.0, adapt_steps=4)
    out, info = hebm.langevin_ref(prior, u, return_info=True, **kw)
    assert info["draw_steps"].tolist() == [3, 6, 9] and torch.equal(info["draws"][-1], out)
    # a ladder: per chain slot, the state before the swap round that follows the step
    prior, u, kw = _setup(n_steps=8, B=6, trace_every=2, temperatures=[0.3, 1.0], swap_every=2,
                          energy_scale=1.0, t=1, u_next=None, alpha=None, sigma=None)
    out, info = hebm.langevin_ref(prior, u, return_info=True, **kw)
    assert info["draws"].shape == (4, 6, prior.D)
    swapped_last = info["swapped"][-1]
    assert torch.equal(info["draws"][-1][~swapped_last], out[~swapped_last])


@pytest.mark.parametrize("bad,match", [
    (dict(trace_every=-1), "trace_every must be an int >= 1"),
    (dict(trace_every=2.0), "trace_every must be an int"),
    (dict(trace_every=11), "records no state in this call"),
])
def test_checks_name_the_argument(bad, match):
    prior, u, kw = _setup(n_steps=10)
    with pytest.raises((ValueError, TypeError), match=match):
        hebm.langevin_ref(prior, u, return_info=True, **dict(kw, **bad))


def test_needs_return_info_and_memory_bound(monkeypatch):
    prior, u, kw = _setup(n_steps=10, trace_every=2)
    with pytest.raises(ValueError, match="return_info=True"):
        hebm.langevin_ref(prior, u, **kw)
    monkeypatch.setattr(hebm.sampler.checks, "TRACE_MAX_BYTES", 1000)
    with pytest.raises(ValueError, match=r"GiB, more than hebm.sampler.checks.TRACE_MAX_BYTES"):
        hebm.langevin_ref(prior, u, return_info=True, **kw)


def test_backends_that_do_not_record_refuse_by_name():
    """The record says where trace_every runs (runs_on); the registry refuses it elsewhere, by name."""
    prior, u, kw = _setup(n_steps=4, trace_every=2)
    a = hebm.sampler.checks.check_langevin_args(prior, u, **kw)
    assert switched_on(LANGEVIN, a) == ("trace_every",)
    assert switched_on(LANGEVIN, hebm.sampler.checks.check_langevin_args(prior, u, **dict(kw, trace_every=0))) == ()
    for name in ("ref", "cpu", "cuda", "graph", "triton"):
        why = refusal(name, ("trace_every",))
        if name in DRAWS_BACKENDS:
            assert why is None
        else:
            assert why.startswith("trace_every runs in the reference and cpu backends only"), why


# ------------------------------------------------------------------------------ the CPU kernel
def _cpu():
    why = hebm.sampler.backends.unavailable("cpu")
    if why is not None:
        pytest.skip(why)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("metropolis", [False, True])
def test_cpu_draws_match_the_reference_and_leave_the_chain_alone(dtype, metropolis):
    _cpu()
    prior = make_prior((7, 13, 3), n_levels=3, seed=6, dtype=dtype)
    u, kw = make_kwargs(prior, 37, n_steps=20, explicit_noise=False, seed=9, dtype=dtype)
    kw["trace_every"] = 5
    if metropolis:
        kw.update(metropolis=True, noise_scale=1.0)
    out, info = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
    assert info["backend"] == "cpu" and info["draws"].shape == (4, 37, prior.D)
    plain, pinfo = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **dict(kw, trace_every=None))
    assert torch.equal(out, plain) and torch.equal(info["log_density"], pinfo["log_density"])
    assert torch.equal(info["draws"][-1], out)
    # draws inside the kernel = the states after k steps of the same kernel; log π as log_density reports
    for j, k in enumerate((5, 10, 15)):
        assert torch.equal(info["draws"][j], hebm.langevin_fused(prior, u, backend="cpu", **dict(kw, n_steps=k, trace_every=0)))
        assert torch.equal(info["draws_log_density"][j], info["log_density"][k])
    ref, rinfo = hebm.langevin_ref(prior, u, return_info=True, **kw)
    tol = 1e-10 if dtype == F64 else 2e-4
    torch.testing.assert_close(info["draws"], rinfo["draws"], rtol=tol, atol=tol)
    torch.testing.assert_close(info["draws_log_density"], rinfo["draws_log_density"], rtol=tol, atol=tol)


def test_cpu_draws_across_chunks_and_explicit_noise(monkeypatch):
    _cpu()
    prior = make_prior((7, 13), seed=2, dtype=F64)
    u, kw = make_kwargs(prior, 9, n_steps=23, dtype=F64)  # explicit noise
    kw["trace_every"] = 4
    whole, info = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
    monkeypatch.setattr(ops, "steps_per_chunk", lambda *a: 3)  # chunks of 3 steps: draws fall inside and at ends
    cut, cinfo = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
    assert torch.equal(whole, cut) and torch.equal(info["draws"], cinfo["draws"])
    assert torch.equal(info["draws_log_density"], cinfo["draws_log_density"])
    assert info["draw_steps"].tolist() == [4, 8, 12, 16, 20]


def test_auto_picks_a_backend_that_records():
    _cpu()
    prior = make_prior((7, 13), seed=2)
    u, kw = make_kwargs(prior, 4, n_steps=6, explicit_noise=False)
    s = hebm.Sampler(prior, backend="auto")
    _, info = s.run(u, return_info=True, trace_every=3, **kw)
    assert info["backend"] == "cpu" and info["draws"].shape == (2, 4, prior.D)


def test_draws_on_a_ladder_run_in_the_cpu_kernel():
    """A ladder with draws runs in the cpu kernel (through 'auto' too), the reference's chain and
    draws (tests/test_replica_exchange_cpu.py checks them on every kind of call)."""
    _cpu()
    prior, u, kw = _setup(n_steps=8, B=6, trace_every=2, temperatures=[0.3, 1.0], swap_every=2,
                          energy_scale=1.0, t=1, u_next=None, alpha=None, sigma=None)
    out, info = hebm.langevin_fused(prior, u, backend="auto", return_info=True, **kw)
    ref, rinfo = hebm.langevin_ref(prior, u, return_info=True, **kw)
    assert info["backend"] == "cpu"
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(info["draws"], rinfo["draws"], rtol=1e-10, atol=1e-10)


def test_op_fake_shapes_the_draws():
    _cpu()
    prior = make_prior((7, 13), seed=2)
    u, kw = make_kwargs(prior, 4, n_steps=7, explicit_noise=False)
    a = hebm.sampler.checks.check_langevin_args(prior, u, trace_every=3, step_offset=1, **kw)
    args = (*ops._network_args(pack.of(prior)), *ops._LANGEVIN_VALUES(a), True, "fp32")
    meta = tuple(x.to("meta") if isinstance(x, torch.Tensor) else [w.to("meta") for w in x] if i == 0 else x
                 for i, x in enumerate(args))
    real = ops.op("langevin")(*args)
    fake = ops.op("langevin")(*meta)
    assert real[3].shape == fake[3].shape == (2, 4, prior.D) and real[4].shape == fake[4].shape == (2, 4)
