"""Backend "graph" (CUDA-graph replay of the reference loop).

On a GPU: parity with the float64 reference through tests/parity.py (explicit noise and seeded
noise), fresh noise on every replay, in-place weight updates seen by the next replay, long chains
in chunks, reverse diffusion, and "auto" choosing it for networks the kernels cannot take.
On the CPU: the backend says why it is unavailable, a request for it raises, and everything but
the capture itself (the in-graph Philox stream, the static-buffer body, chunking) is checked
against the reference bit for bit.
"""
from __future__ import annotations

import pytest
import torch

import hebm
from hebm.prior.philox import normals_from_key, philox_normal, seed_to_key
from hebm.sampler.backends import BackendUnavailable, graph, pack
from hebm.sampler.checks import check_langevin_args
from hebm.sampler.reference import langevin_loop
from tests.parity import make_kwargs, make_prior, parity

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="backend 'graph' needs a CUDA GPU")


# ------------------------------------------------------------------------------ CPU
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_unavailable_without_cuda():
    why = hebm.sampler.backends.unavailable("graph")
    assert why is not None and "CUDA" in why
    prior = make_prior()
    u, kw = make_kwargs(prior, 4)
    with pytest.raises(BackendUnavailable, match="CUDA"):
        hebm.langevin_fused(prior, u, backend="graph", **kw)


def test_unsupported_on_cpu_tensors():
    prior = make_prior()
    u, kw = make_kwargs(prior, 3)
    assert "cpu" in graph.unsupported(None, device=u.device, dtype=u.dtype)


@pytest.mark.parametrize("seed", [0, 12345, 2**64 - 1, 2**40 + 3])
@pytest.mark.parametrize("step", [0, 7, 2**32 - 1])
@pytest.mark.parametrize("D", [1, 4, 97])
def test_in_graph_philox_is_the_reference_stream(seed, step, D):
    ids = torch.tensor([0, 5, 2**32 - 1, 77, 33])
    want = philox_normal(seed, ids, step, D)
    k0, k1 = (torch.tensor(k) for k in seed_to_key(seed))
    got = normals_from_key((k0, k1), ids, torch.tensor(step), D)
    assert torch.equal(want, got)


@pytest.mark.parametrize("seeded", [True, False])
@pytest.mark.parametrize("levels", [None, 3])
def test_captured_body_equals_reference_on_cpu(monkeypatch, seeded, levels):
    """The exact body that is captured on a GPU, replayed eagerly on CPU tensors: bit-identical."""
    monkeypatch.setattr(graph, "MAX_CAPTURE_STEPS", 3)  # 7 steps = chunks of 3, 3, 1
    prior = make_prior((7, 13, 5), n_levels=levels)
    u, kw = make_kwargs(prior, 33, n_steps=7, explicit_noise=not seeded, seed=99)
    if levels is None:
        kw.pop("t", None)
    a = check_langevin_args(prior, u, step_offset=11 if seeded else 0, **kw)
    want, want_ld, _ = langevin_loop(prior, a, trace=True)
    graph.clear_cache()
    for _ in range(2):  # second call: cached "graphs", new inputs copied into the static buffers
        got, got_ld, _, _ = graph.run(pack.of(prior), a, precision="fp32", trace=True)
        assert torch.equal(got, want)
        assert torch.equal(got_ld, want_ld)
    u2 = u + 0.5
    a2 = check_langevin_args(prior, u2, step_offset=11 if seeded else 0, **kw)
    assert torch.equal(graph.run(pack.of(prior), a2, precision="fp32", trace=False)[0], langevin_loop(prior, a2)[0])
    graph.clear_cache()


# ------------------------------------------------------------------------------ GPU
CASES = [
    dict(dims=(7, 13), kernel=True, per_row=True),
    dict(dims=(97,), kernel=False, per_row=False),
    dict(dims=(5, 11, 3), kernel=True, per_row=True, n_levels=4),
    dict(dims=(2, 2), kernel=True, per_row=False, act="silu"),
]


@cuda
def test_replay_draws_fresh_noise_and_sees_new_weights():
    prior = make_prior((7, 13), device="cuda")
    u, kw = make_kwargs(prior, 16, n_steps=5, explicit_noise=False, device="cuda")
    kw.pop("seed")
    graph.clear_cache()
    outs = {}
    for seed in (1, 2, 1):
        got = hebm.langevin_fused(prior, u, backend="graph", seed=seed, **kw)
        want = hebm.langevin_ref(prior, u, seed=seed, **kw)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        outs.setdefault(seed, got)
    assert not torch.allclose(outs[1], outs[2])
    with torch.no_grad():
        for p in prior.parameters():
            p.mul_(0.9)  # an optimiser step: in place
    got = hebm.langevin_fused(prior, u, backend="graph", seed=3, **kw)
    torch.testing.assert_close(got, hebm.langevin_ref(prior, u, seed=3, **kw), rtol=1e-5, atol=1e-5)


@cuda
def test_long_chain_in_chunks(monkeypatch):
    monkeypatch.setattr(graph, "MAX_CAPTURE_STEPS", 4)
    prior = make_prior((7, 13))
    u, kw = make_kwargs(prior, 33, n_steps=10, explicit_noise=False)
    parity(prior, u, kw, "graph", device="cuda")


@cuda
def test_auto_uses_graph_for_unsupported_networks():
    class Custom(hebm.HierarchicalPrior):
        def log_density(self, u, **kw):  # a network the kernels do not take
            return super().log_density(u, **kw) - 0.01 * torch.tanh(u).pow(2).sum(1)

    prior = Custom((6, 3), prior_hidden=(8,), energy_hidden=(8, 8)).cuda().eval()
    for q in prior.parameters():
        q.requires_grad_(False)
    u = torch.randn(8, 9, device="cuda")
    _, info = hebm.langevin_fused(prior, u, n_steps=3, step_size=0.1, seed=0, return_info=True)
    assert info["backend"] == "graph"


# ------------------------------------------------------------------------------ replica exchange
@pytest.mark.parametrize("mala", [False, True], ids=["ula", "mala"])
@pytest.mark.parametrize("n_steps,offset,every,draws", [(23, 2, 3, 2), (20, 0, 4, 0), (9, 5, 2, 3), (13, 1, 7, 5)])
def test_ladder_chunks_replay_the_references_rounds(monkeypatch, mala, n_steps, offset, every, draws):
    """Replica exchange in the captured chunks (MAX_CAPTURE_STEPS = 4 here): the chunks cover the
    call and end at their last swap round, so full chunks repeat one capture; replayed (eagerly on
    the CPU) the chain, its swap rounds and its draws are the reference's bit for bit, on the first
    call and on the second, which replays the cached chunks."""
    from hebm.sampler.reference import swap_record_info

    monkeypatch.setattr(graph, "MAX_CAPTURE_STEPS", 4)
    chunks = list(graph._chunks(n_steps, offset, draws, every))
    assert sum(n for _, n, _, _ in chunks) == n_steps
    assert [k0 + k for k0, _, _, ks in chunks for k in ks] == [k for k in range(n_steps) if (offset + k + 1) % every == 0]
    if every <= 4:  # a chunk that reaches a round ends at its last one
        assert all(ks[-1] == n - 1 for _, n, _, ks in chunks if ks)
    prior = make_prior((7, 13), n_levels=3, seed=2, dtype=torch.float64)
    G, R = 2, 3
    g = torch.Generator().manual_seed(5)
    u = torch.randn(G * R, prior.D, generator=g, dtype=torch.float64)
    kw = dict(n_steps=n_steps, step_offset=offset, temperatures=[0.0, 0.5, 1.0], swap_every=every, energy_scale=25.0,
              step_size=0.25 if mala else 0.08, metropolis=mala, seed=3, trace_every=draws or None,
              t=torch.tensor([1, 1, 1, 2, 2, 2]))
    want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
    graph.clear_cache()
    for _ in range(2):
        a = check_langevin_args(prior, u, **kw)
        a.draws = []
        out, logd, _, stats, record = graph.run_replica(pack.of(prior), a, precision="fp32", trace=True)
        info = swap_record_info(a, record, trace=True)
        assert torch.equal(out, want) and torch.equal(logd, wi["log_density"])
        for k in ("swap_attempts", "swap_accepted", "replica", "round_trips", "swapped", "swap_energy"):
            assert torch.equal(info[k], wi[k]), k
        if mala:
            assert torch.equal(stats[0].round().long(), wi["accepted"])
        if draws:
            assert torch.equal(torch.cat([s for s, _ in a.draws]), wi["draws"])
            assert torch.equal(torch.cat([lp for _, lp in a.draws]), wi["draws_log_density"])
    assert int(wi["swap_accepted"].sum()) > 0
    assert len(graph._cache[prior]) <= 4  # (the first chunk, the full ones, the last)
    graph.clear_cache()


@pytest.mark.parametrize("ladder", [False, True], ids=["plain", "ladder"])
def test_a_prior_that_cannot_be_captured_runs_eagerly_with_one_warning(monkeypatch, ladder):
    """The first capture fails (here: made to): the prior is marked, one warning says what runs
    instead (the eager reference; with a ladder the same chunks eagerly), and the result is still
    the reference's, bit for bit; a second call warns no more."""
    import warnings as w

    from hebm.sampler.reference import swap_record_info

    real_get = graph._get

    def failing_get(*a, eager=False, **kw):
        if not eager:
            raise RuntimeError("operation not permitted when stream is capturing")
        return real_get(*a, eager=eager, **kw)

    monkeypatch.setattr(graph, "_get", failing_get)
    graph.clear_cache()
    prior = make_prior((7, 13), n_levels=3, seed=2, dtype=torch.float64)
    u = torch.randn(6, prior.D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    kw = dict(n_steps=7, step_size=0.08, seed=3, t=1, energy_scale=20.0)
    if ladder:
        kw.update(temperatures=[0.0, 0.5, 1.0], swap_every=2)
    want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
    for call in range(2):
        a = check_langevin_args(prior, u, **kw)
        with w.catch_warnings(record=True) as caught:
            w.simplefilter("always")
            if ladder:
                out, _, _, _, record = graph.run_replica(pack.of(prior), a, precision="fp32", trace=True)
                assert torch.equal(swap_record_info(a, record, trace=True)["swapped"], wi["swapped"])
            else:
                out = graph.run(pack.of(prior), a, precision="fp32", trace=True)[0]
        said = [str(x.message) for x in caught if "could not capture" in str(x.message)]
        assert len(said) == (1 if call == 0 else 0)
        if said:
            assert ("the same steps eagerly" if ladder else "the eager reference") in said[0]
        assert torch.equal(out, want)
    graph.clear_cache()
