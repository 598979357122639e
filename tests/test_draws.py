"""``trace_every``: draws recorded inside a sampler call (the keyword of the call record, its checks,
its meaning in the reference, the CPU kernel's copy of it, and the GPU backends' — the CUDA kernel's
block code in its host emulator, the Triton kernel in the interpreter, the graph backend's captured
body replayed eagerly — on a ladder too)."""
from __future__ import annotations

import copy
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is built

import pytest  # noqa: E402

import hebm  # noqa: E402
from hebm.sampler.backends import pack  # noqa: E402
from hebm.sampler.record import LANGEVIN, refusal, switched_on  # noqa: E402
from hebm.sampler.backends import ops  # noqa: E402
from hebm.sampler.checks import check_langevin_args  # noqa: E402
from hebm.sampler.reference import draws_info, start_draws  # noqa: E402
from tests.parity import make_kwargs, make_prior, on  # noqa: E402

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


def test_every_backend_takes_draws_and_a_ladder():
    """The record says where trace_every and the ladder run (runs_on): both everywhere, so no
    backend refuses either by name, draws or not (triton runs the swap rounds in its register-form
    kernel and refuses a ladder on a network that needs the streamed form by its own reason:
    tests/test_triton_backend.py)."""
    prior, u, kw = _setup(n_steps=4, trace_every=2)
    a = check_langevin_args(prior, u, **kw)
    assert switched_on(LANGEVIN, a) == ()  # (a keyword every backend runs needs no refusal)
    for name in ("ref", "cpu", "cuda", "graph", "triton"):
        assert refusal(name, ("trace_every",)) is None
        assert refusal(name, ("temperatures",)) is None, name
        assert refusal(name, ("temperatures", "trace_every")) is None, name
    ladder = check_langevin_args(prior, u, **dict(kw, temperatures=[0.5, 1.0], energy_scale=1.0, t=1, u_next=None,
                                                  alpha=None, sigma=None))
    assert switched_on(LANGEVIN, ladder) == ("temperatures",)


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


# ------------------------------------------------------------------------------ the GPU backends, on the CPU
# Each runner: ``(out, info)`` of one call with the draws' info, as hebm.Sampler.run assembles it.
def _emu(prior, u, kw):
    from hebm.sampler.backends import cuda as cb

    a = check_langevin_args(prior, u, **kw)
    start_draws(a, True, "cuda-emu")
    out, logd, _, _ = cb.run(pack.of(prior), a, precision="fp32", trace=True, namespace="hebm_cuda_emu")
    return out, {"log_density": logd, **draws_info(prior, a)}


def _graph_body(prior, u, kw):
    from hebm.sampler.backends import graph

    a = check_langevin_args(prior, u, **kw)
    start_draws(a, True, "graph-body")
    out, logd, _, _ = graph.run(pack.of(prior), a, precision="fp32", trace=True)
    return out, {"log_density": logd, **draws_info(prior, a)}


def _triton(prior, u, kw):
    out, info = hebm.langevin_fused(prior, u, backend="triton", precision="fp32", return_info=True, **kw)
    assert info["backend"] == "triton"
    return out, info


#: name -> (run, dtypes it runs, Triton tuning (None: not Triton))
GPU_RUNNERS = {
    "cuda-emu": (_emu, (torch.float32, F64), None),
    "triton-interp": (_triton, (torch.float32,), {}),
    "triton-interp[streamed]": (_triton, (torch.float32,), dict(reg_limit=0, tile=16)),
    "graph-body": (_graph_body, (torch.float32, F64), None),
}


@pytest.fixture(params=list(GPU_RUNNERS))
def gpu_runner(request, monkeypatch):
    name = request.param
    run, dtypes, tuning = GPU_RUNNERS[name]
    if name == "cuda-emu":
        from tests.test_cuda_backend import NVCC

        if NVCC is None:
            pytest.skip("nvcc not found: the CUDA extension (and its emulator) cannot be built here")
        monkeypatch.setenv("HEBM_CUDA_ARCH", os.environ.get("HEBM_CUDA_ARCH") or "90")
        from hebm.sampler.backends import cuda as cb

        mod, why = cb.load_emulator()
        assert mod is not None, f"the CUDA extension must build here: {why}"
    elif tuning is not None:
        if torch.cuda.is_available():
            pytest.skip("a GPU is present: the compiled Triton kernel is tested instead (tests/test_parity.py)")
        pytest.importorskip("triton")
        why = hebm.sampler.backends.unavailable("triton")
        if why is not None:
            pytest.skip(why)
        from hebm.sampler.backends import triton_backend as tb

        for k, v in tuning.items():
            monkeypatch.setitem(tb.TUNING, k, v)
    return name, run, dtypes


def _close_to_reference(name, got, want, dtype):
    """fp64: the reference to 1e-10 (the graph body runs the reference's own operations: equal);
    fp32: within 2× the fp32 reference's own error of the float64 one (tests/parity.py), computed
    by the caller and passed as ``want = (gold, err_ref)``."""
    if dtype == F64:
        if name == "graph-body":
            assert torch.equal(got, want), name
        else:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        return
    gold, err_ref = want
    err = float((got.double() - gold).abs().max())
    assert err <= 2 * err_ref + 1e-5 * max(1.0, float(gold.abs().max())), f"{name}: {err:.3e} vs fp32 ref {err_ref:.3e}"


def _reference(prior, u, kw, dtype):
    """The reference's draws in ``dtype`` (fp64), or (fp32) the float64 ones with the fp32
    reference's own error: ``{key: want}`` for draws and draws_log_density, and its info."""
    p64 = copy.deepcopy(prior).double()
    _, i64 = hebm.langevin_ref(p64, u.double(), return_info=True, **on(kw, F64, "cpu"))
    if dtype == F64:
        return {k: i64[k] for k in ("draws", "draws_log_density")}, i64
    _, i32 = hebm.langevin_ref(prior, u, return_info=True, **kw)
    return {k: (i64[k], float((i32[k].double() - i64[k]).abs().max())) for k in ("draws", "draws_log_density")}, i64


@pytest.mark.parametrize("metropolis", [False, True])
def test_gpu_draws_match_the_reference_and_leave_the_chain_alone(gpu_runner, metropolis):
    """Seeded, the last step a draw (ULA: one more evaluation for its log π): the draws are the
    states after k steps of the same backend, their log π what its trace reports for the state
    entering step k, the chain and its trace unchanged by recording, all against the reference."""
    name, run, dtypes = gpu_runner
    if metropolis and name == "triton-interp[streamed]":
        pytest.skip("the Triton Metropolis kernel has no streamed form (refused by name: test_metropolis.py)")
    for dtype in dtypes:
        prior = make_prior((7, 13, 3), n_levels=3, seed=6, dtype=dtype)
        u, kw = make_kwargs(prior, 19, n_steps=9, explicit_noise=False, seed=9, dtype=dtype)
        kw["trace_every"] = 3
        if metropolis:
            kw.update(metropolis=True, noise_scale=1.0)
        out, info = run(prior, u, kw)
        assert info["draws"].shape == (3, 19, prior.D) and info["draw_steps"].tolist() == [3, 6, 9]
        plain, pinfo = run(prior, u, dict(kw, trace_every=0))
        assert torch.equal(out, plain) and torch.equal(info["log_density"], pinfo["log_density"]), name
        assert torch.equal(info["draws"][-1], out)
        for j, k in enumerate((3, 6)):
            assert torch.equal(info["draws"][j], run(prior, u, dict(kw, n_steps=k, trace_every=0))[0]), (name, k)
            assert torch.equal(info["draws_log_density"][j], info["log_density"][k]), (name, k)
        want, _ = _reference(prior, u, kw, dtype)
        _close_to_reference(name, info["draws"], want["draws"], dtype)
        _close_to_reference(name, info["draws_log_density"], want["draws_log_density"], dtype)


@pytest.mark.parametrize("n_steps,every,offset", [(11, 4, 2), (10, 4, 2), (5, 1, 0), (7, 7, 3)],
                         ids=["last-not-a-draw", "offset-last-a-draw", "every-step", "one-draw-inside"])
def test_gpu_draws_with_explicit_noise_and_offsets(gpu_runner, n_steps, every, offset):
    """Explicit noise (the extra sweep after a final draw must not read past the last noise row),
    a step offset, a draw after every step, a single draw in the middle: the reference's draws."""
    name, run, dtypes = gpu_runner
    dtype = dtypes[-1]
    prior = make_prior((7, 13), seed=2, dtype=dtype)
    u, kw = make_kwargs(prior, 9, n_steps=n_steps, dtype=dtype)  # explicit noise
    kw.update(trace_every=every, step_offset=offset)
    out, info = run(prior, u, kw)
    want, i64 = _reference(prior, u, kw, dtype)
    assert info["draw_steps"].tolist() == i64["draw_steps"].tolist()
    _close_to_reference(name, info["draws"], want["draws"], dtype)
    _close_to_reference(name, info["draws_log_density"], want["draws_log_density"], dtype)
    assert torch.equal(out, run(prior, u, dict(kw, trace_every=0))[0])


@pytest.mark.parametrize("n_steps,offset,every", [(23, 2, 3), (20, 0, 6), (9, 5, 2), (12, 0, 4)])
def test_graph_chunks_end_at_draws(monkeypatch, n_steps, offset, every):
    """The graph backend's chunks (MAX_CAPTURE_STEPS = 4 here): cover the call, end at a draw where
    they reach one, and say which of their steps are draws; full chunks repeat one capture key.
    Replayed (eagerly) in those chunks, the draws are the reference's, bit for bit."""
    from hebm.sampler.backends import graph

    monkeypatch.setattr(graph, "MAX_CAPTURE_STEPS", 4)
    chunks = [c[:3] for c in graph._chunks(n_steps, offset, every)]
    assert sum(n for _, n, _ in chunks) == n_steps and all(1 <= n <= 4 for _, n, _ in chunks)
    got = [k0 + k for k0, _, ks in chunks for k in ks]
    assert got == [k for k in range(n_steps) if (offset + k + 1) % every == 0]
    assert all(ks[-1] == n - 1 for _, n, ks in chunks if ks)  # a chunk that reaches a draw ends at its last one
    assert len({(n, ks) for _, n, ks in chunks}) <= 4
    prior = make_prior((7, 13), seed=2, dtype=F64)
    u, kw = make_kwargs(prior, 5, n_steps=n_steps, explicit_noise=False, seed=4, dtype=F64)
    kw.update(trace_every=every, step_offset=offset)
    graph.clear_cache()
    for _ in range(2):  # the second call replays the cached chunks
        out, info = _graph_body(prior, u, kw)
        ref, rinfo = hebm.langevin_ref(prior, u, return_info=True, **kw)
        assert torch.equal(out, ref) and torch.equal(info["draws"], rinfo["draws"])
        assert torch.equal(info["draws_log_density"], rinfo["draws_log_density"])
    graph.clear_cache()


def test_emulator_op_fake_shapes_the_draws():
    from tests.test_cuda_backend import NVCC

    if NVCC is None:
        pytest.skip("nvcc not found: the CUDA extension (and its emulator) cannot be built here")
    os.environ.setdefault("HEBM_CUDA_ARCH", "90")
    from hebm.sampler.backends import cuda as cb

    assert cb.load_emulator()[0] is not None
    prior = make_prior((7, 13), seed=2)
    u, kw = make_kwargs(prior, 4, n_steps=7, explicit_noise=False)
    a = check_langevin_args(prior, u, trace_every=3, step_offset=1, **kw)
    args = (*ops._network_args(pack.of(prior)), *ops._LANGEVIN_VALUES(a), True, "fp32")
    meta = tuple(x.to("meta") if isinstance(x, torch.Tensor) else [w.to("meta") for w in x] if i == 0 else x
                 for i, x in enumerate(args))
    real = ops.op("langevin", "hebm_cuda_emu")(*args)
    fake = ops.op("langevin", "hebm_cuda_emu")(*meta)
    assert real[3].shape == fake[3].shape == (2, 4, prior.D) and real[4].shape == fake[4].shape == (2, 4)
