"""Replica exchange (parallel tempering, docs/design.md §2c; hebm/sampler/reference.py states the
rule): on a two-mode target with known weights and a barrier no local sampler crosses, the cold
chains of a ladder find both modes in the right proportion while ULA and MALA from one mode, with
the same gradient budget, stay in it; the swap decisions are the rule's, recomputed in fp64 from
the traced energies and the stream-3 uniforms; without a ladder (or on a ladder of β = 1 that never
swaps) the chain is today's bit for bit; DEO makes more round trips than the reversible schedule;
the GPU backends refuse the ladder by name (the cpu kernel runs it: test_replica_exchange_cpu.py);
bad arguments are named."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import hebm
import hebm.sampler.backends as backends
from hebm.prior.philox import initial_noise, philox_accept_uniform, philox_noise, philox_swap_uniforms

# ------------------------------------------------------------------------------ a two-mode target
M, SD, W2 = 2.5, 0.4, 0.7  # modes at ±M, each N(·, SD²); weight W2 on +M
LADDER = [0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0]


class TwoModes(nn.Module):
    """F(z) = log[(1 − w)·N(z; −M, SD²) + w·N(z; M, SD²)] + ½z² (+ const): with the −½‖u‖² of the
    target (a one-layer prior: T_β is the identity), π is exactly that mixture.  The barrier at 0 is
    M²/(2 SD²) ≈ 19.5 nats deep."""

    def forward(self, z):
        z = z[:, 0]
        comp = torch.stack([math.log(1 - W2) - (z + M) ** 2 / (2 * SD**2), math.log(W2) - (z - M) ** 2 / (2 * SD**2)], 1)
        return (torch.logsumexp(comp, 1) + 0.5 * z * z)[:, None]


def two_mode_prior():
    prior = hebm.HierarchicalPrior((1,), prior_hidden=(), energy_hidden=(2,)).double()
    prior.energies = nn.ModuleList([TwoModes()])  # the reference runs any energy module
    return prior


def _weight_z(x: torch.Tensor) -> float:
    """z-score of the share of chains in the +M mode against W2 (independent chains: binomial)."""
    share = float((x > 0).double().mean())
    return (share - W2) / math.sqrt(W2 * (1 - W2) / x.numel())


@pytest.fixture(scope="module")
def two_mode_runs():
    """G independent ladder groups started in the −M mode, K steps each (R·K gradients per group),
    against G single chains of ULA and MALA from the same mode with R·K steps each.  Measured
    (seeds 1, 7, 8): the cold chains' weight z within ±2.1 for ULA and MALA; the single chains
    never leave −M (z = −34.6)."""
    prior, G, K, R = two_mode_prior(), 512, 400, len(LADDER)
    step = torch.tensor([SD + (1.0 - SD) * (1.0 - b) for b in LADDER], dtype=torch.float64).repeat(G)  # hot: larger
    u0 = torch.full((G * R, 1), -M, dtype=torch.float64)
    out = {}
    for mala in (False, True):
        x, info = hebm.langevin_ref(prior, u0, n_steps=K, step_size=step, seed=1, temperatures=LADDER,
                                    metropolis=mala, return_info=True)
        out["pt", mala] = (x.view(G, R)[:, -1], info)
        out["plain", mala] = hebm.langevin_ref(prior, u0[:G], n_steps=R * K, step_size=SD, seed=2, metropolis=mala)
    return out


@pytest.mark.parametrize("mala", [False, True], ids=["ula", "mala"])
def test_the_cold_chains_find_both_modes_in_their_weights(two_mode_runs, mala):
    cold, info = two_mode_runs["pt", mala]
    assert abs(_weight_z(cold)) < 5, float((cold > 0).double().mean())
    assert _weight_z(two_mode_runs["plain", mala]) < -8  # one mode only: the barrier holds
    rate = info["swap_rate"]
    assert rate.shape == (512, len(LADDER) - 1) and bool((rate.nanmean(0) > 0.3).all())
    assert int(info["round_trips"].sum()) > 0
    assert sorted(info["replica"].tolist()) == list(range(512 * len(LADDER)))
    # the permutation stays within each group
    assert torch.equal(info["replica"].view(512, -1).sort(1).values // len(LADDER),
                       torch.arange(512)[:, None].expand(512, len(LADDER)))


# ------------------------------------------------------------------------------ exact decisions
def _expected_swaps(ladder, E, U, round_index, schedule):
    """The rule by hand, in fp64 Python floats: the chains whose state is exchanged in one round."""
    R, B = len(ladder), E.shape[0]
    out = [False] * B
    for g in range(B // R):
        b0 = g * R
        parity = round_index % 2 if schedule == "deo" else (0 if float(U[b0 + R - 1]) < 0.5 else 1)
        for r in range(parity, R - 1, 2):
            log_alpha = (ladder[r + 1] - ladder[r]) * (float(E[b0 + r]) - float(E[b0 + r + 1]))
            if math.log(float(U[b0 + r])) < log_alpha:
                out[b0 + r] = out[b0 + r + 1] = True
    return out


ENERGY_SCALE = 40.0  # the random prior's F varies by ~0.05 between states: λ makes swaps a real test


@pytest.mark.parametrize("schedule", ["deo", "even_odd"])
@pytest.mark.parametrize("mala", [False, True], ids=["ula", "mala"])
def test_swap_decisions_are_the_rule_on_fp64_and_stream_3_is_the_explicit_form(make_prior, schedule, mala):
    prior = make_prior((5, 3), n_levels=2, dtype=torch.float64)
    ladder, R, G, K, m, off, seed = [0.0, 0.3, 0.6, 1.0], 4, 5, 12, 2, 3, 2**40 + 7
    B = R * G
    ids = torch.arange(B) * 3 + 11
    u = initial_noise(4, B, prior.D, dtype=torch.float64)
    kw = dict(n_steps=K, step_size=torch.linspace(0.3, 0.9, B, dtype=torch.float64), energy_scale=ENERGY_SCALE,
              t=torch.arange(B) // R % 2, temperatures=ladder, swap_every=m, swap_schedule=schedule, metropolis=mala,
              step_offset=off)
    seeded, info = hebm.langevin_ref(prior, u, seed=seed, chain_ids=ids, return_info=True, **kw)
    rounds = [k for k in range(K) if (off + k + 1) % m == 0]  # the call's steps that a round follows
    assert info["swapped"].shape == (len(rounds), B) == info["swap_energy"].shape
    U = torch.stack([philox_swap_uniforms(seed, ids, off + k, R) for k in rounds]).double()
    want = [_expected_swaps(ladder, info["swap_energy"][n], U[n], (off + k + 1) // m - 1, schedule)
            for n, k in enumerate(rounds)]
    assert info["swapped"].tolist() == want
    att, acc = info["swap_attempts"], info["swap_accepted"]
    assert 2 * int(acc.sum()) == int(info["swapped"].sum())
    assert 0 < int(acc.sum()) < int(att.sum())  # both outcomes happen
    if schedule == "deo":  # alternation: every pair proposes in every other round
        assert torch.equal(att, torch.full((G, R - 1), len(rounds) // 2))
    # the seeded chain is the explicit one with stream 0 noise, stream 2 uniforms and stream 3 swap uniforms
    noise = philox_noise(seed, ids, K, prior.D, step_offset=off).double()
    extra = dict(uniforms=torch.stack([philox_accept_uniform(seed, ids, off + k) for k in range(K)]).double()) \
        if mala else {}
    explicit, info2 = hebm.langevin_ref(prior, u, noise=noise, swap_uniforms=U, return_info=True, **kw, **extra)
    assert torch.equal(seeded, explicit) and torch.equal(info["swapped"], info2["swapped"])


def test_a_split_call_is_the_same_chain(make_prior):
    """Rounds and DEO's alternation are counted on the step counter, so K1 + K2 steps in two calls
    (step_offset = K1) end where K1 + K2 steps in one do."""
    prior = make_prior((5, 3), dtype=torch.float64)
    u = initial_noise(2, 8, prior.D, dtype=torch.float64)
    kw = dict(step_size=0.5, energy_scale=3.0, seed=9, temperatures=[0.25, 1.0], swap_every=3)
    whole = hebm.langevin_ref(prior, u, n_steps=11, **kw)
    half = hebm.langevin_ref(prior, u, n_steps=5, **kw)
    assert torch.equal(whole, hebm.langevin_ref(prior, half, n_steps=6, step_offset=5, **kw))


@pytest.mark.parametrize("mala", [False, True], ids=["ula", "mala"])
def test_a_ladder_that_never_swaps_is_todays_chain(make_prior, mala):
    """β = 1 everywhere with no round inside the call, and a ladder of one β = 1 with a round after
    every step: the chain of a call without a ladder, bit for bit (seeded and explicit noise)."""
    prior = make_prior((5, 3), n_levels=3, dtype=torch.float64)
    B, K = 6, 9
    u = initial_noise(5, B, prior.D, dtype=torch.float64)
    kw = dict(n_steps=K, step_size=torch.linspace(0.2, 1.0, B, dtype=torch.float64), t=1, energy_scale=2.0,
              metropolis=mala, return_info=True)
    today, ti = hebm.langevin_ref(prior, u, seed=4, **kw)
    for ladder, m in (([1.0, 1.0, 1.0], K + 1), ([1.0], 1)):
        got, gi = hebm.langevin_ref(prior, u, seed=4, temperatures=ladder, swap_every=m, **kw)
        assert torch.equal(got, today) and torch.equal(gi["log_density"], ti["log_density"])
        if mala:
            assert torch.equal(gi["accepted"], ti["accepted"])
    noise = torch.randn(K, B, prior.D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    extra = dict(uniforms=torch.rand(K, B, generator=torch.Generator().manual_seed(1), dtype=torch.float64)) \
        if mala else {}
    today = hebm.langevin_ref(prior, u, noise=noise, **kw, **extra)[0]
    got = hebm.langevin_ref(prior, u, noise=noise, temperatures=[1.0, 1.0], swap_every=K + 1,
                            swap_uniforms=torch.empty(0, B, dtype=torch.float64), **kw, **extra)[0]
    assert torch.equal(got, today)


def test_deo_makes_more_round_trips_than_the_reversible_schedule():
    """A ladder of 4 (swap rates ≈ 0.2, 0.57, 0.75 here): DEO's replicas sweep the ladder, the
    reversible schedule's diffuse.  Measured over seeds 3–6: DEO 1433–1478 round trips, even_odd
    1016–1043 (ratio 1.38–1.45); asserted: ratio > 1.2."""
    prior, G, K = two_mode_prior(), 64, 300
    ladder = [0.0, 0.33, 0.67, 1.0]
    step = torch.tensor([SD + (1.0 - SD) * (1.0 - b) for b in ladder], dtype=torch.float64).repeat(G)
    u0 = torch.full((4 * G, 1), -M, dtype=torch.float64)
    trips = {}
    for schedule in ("deo", "even_odd"):
        _, info = hebm.langevin_ref(prior, u0, n_steps=K, step_size=step, seed=3, temperatures=ladder,
                                    swap_schedule=schedule, metropolis=True, return_info=True)
        trips[schedule] = int(info["round_trips"].sum())
        assert info["round_trip_rate"].shape == (G,)
    assert trips["even_odd"] > 0 and trips["deo"] > 1.2 * trips["even_odd"], trips


# ------------------------------------------------------------------------------ backends
def test_every_fused_backend_takes_the_ladder(make_prior):
    """No backend refuses a ladder by name (the cpu, cuda and triton kernels run it in their step
    loops, graph in its captured chunks: tests/test_parity.py test_replica_exchange_parity; triton's
    own limits — R > BLOCK_B, the streamed form — tests/test_triton_backend.py); on the CPU "auto"
    runs it in the cpu kernel."""
    from hebm.sampler.record import refusal
    assert all(refusal(name, ("temperatures",)) is None for name in ("cpu", "cuda", "graph", "triton"))
    prior = make_prior((5, 3), dtype=torch.float64)
    u = initial_noise(1, 8, prior.D, dtype=torch.float64)
    kw = dict(n_steps=6, step_size=0.5, seed=1, temperatures=[0.5, 1.0], energy_scale=3.0, return_info=True)
    want, wi = hebm.langevin_ref(prior, u, **kw)
    cpu_runs = backends.unavailable("cpu") is None
    got, gi = hebm.langevin_fused(prior, u, backend="auto", **kw)  # the cpu kernel, else the reference
    assert gi["backend"] == ("cpu" if cpu_runs else "ref") and torch.equal(gi["replica"], wi["replica"])
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    if cpu_runs:
        # without a ladder the same Sampler still runs its own backend
        s = hebm.Sampler(prior, backend="auto")
        assert s.run(u, n_steps=2, step_size=0.5, seed=1, return_info=True)[1]["backend"] == "cpu"


# ------------------------------------------------------------------------------ bad input
BAD = [
    (dict(temperatures=[0.0, 0.6, 0.3, 1.0]), "temperatures must be increasing"),
    (dict(temperatures=[-0.1, 1.0]), r"temperatures must lie in \[0, 1\]"),
    (dict(temperatures=[0.5, 1.5]), r"temperatures must lie in \[0, 1\]"),
    (dict(temperatures=[0.2, 0.5]), "temperatures must end at"),
    (dict(temperatures=[0.0, 0.5, 1.0]), "temperatures has R = 3 .* B = 8 .*multiple"),
    (dict(temperatures=[]), "temperatures must hold at least one"),
    (dict(temperatures=[[0.5, 1.0]]), "temperatures must be a 1-d ladder"),
    (dict(temperatures=[0.5, 1.0], swap_every=0), "swap_every must be an int >= 1"),
    (dict(temperatures=[0.5, 1.0], swap_every=1.5), "swap_every"),
    (dict(temperatures=[0.5, 1.0], swap_schedule="random"), "swap_schedule must be one of deo, even_odd"),
    (dict(swap_every=2), "swap_every belongs to replica exchange: pass temperatures"),
    (dict(swap_schedule="deo"), "swap_schedule belongs to replica exchange"),
    (dict(temperatures=[0.5, 1.0], swap_uniforms=torch.full((4, 8), 0.5)), "swap_uniforms go with an explicit noise"),
    (dict(temperatures=[0.5, 1.0], adapt_steps=2, metropolis=True), "adapt_steps does not run with temperatures"),
    (dict(temperatures=[0.5, 1.0], energy_scale=torch.arange(8.0)), "energy_scale differs between the chains"),
]


@pytest.mark.parametrize("kw,match", BAD, ids=[m.split()[0] + str(i) for i, (_, m) in enumerate(BAD)])
def test_bad_ladder_arguments_are_named(make_prior, kw, match):
    prior = make_prior((5, 3), dtype=torch.float64)
    u = initial_noise(1, 8, prior.D, dtype=torch.float64)
    with pytest.raises((ValueError, TypeError), match=match):
        hebm.langevin_ref(prior, u, n_steps=4, step_size=0.5, seed=1, **kw)


def test_explicit_noise_needs_one_swap_uniform_row_per_round(make_prior):
    prior = make_prior((5, 3), n_levels=2, dtype=torch.float64)
    u = initial_noise(1, 8, prior.D, dtype=torch.float64)
    kw = dict(n_steps=7, step_size=0.5, noise=torch.zeros(7, 8, prior.D, dtype=torch.float64),
              temperatures=[0.5, 1.0], swap_every=2)
    with pytest.raises(ValueError, match=r"needs swap_uniforms too: a \[n_rounds, B\] = \[3, 8\]"):
        hebm.langevin_ref(prior, u, t=0, **kw)
    with pytest.raises(ValueError, match=r"one row per swap round, \[n_rounds, B\] = \[3, 8\]"):
        hebm.langevin_ref(prior, u, t=0, swap_uniforms=torch.full((4, 8), 0.5, dtype=torch.float64), **kw)
    with pytest.raises(ValueError, match="swap_uniforms"):
        hebm.langevin_ref(prior, u, t=0, swap_uniforms=torch.full((3, 8), 1.0, dtype=torch.float64), **kw)
    with pytest.raises(ValueError, match="t differs between the chains of one ladder group"):
        hebm.langevin_ref(prior, u, t=torch.arange(8) % 2, swap_uniforms=torch.full((3, 8), 0.5), **kw)


# ------------------------------------------------------------------------------ the replicas' walk
def _walk_round_by_round(src, R):
    """The rule of ``round_trips`` followed one round at a time (what replica_walk vectorises): a
    replica is labelled 'cold' when it sits in slot R − 1 (at the start or after a round), becomes
    'cold, then hot' on reaching slot 0 with that label, and completes a trip on reaching slot R − 1
    again with it."""
    n, B = src.shape
    held = list(range(B))
    label = {i: ("cold" if i % R == R - 1 else None) for i in range(B)}
    trips = [0] * B
    for s in src.tolist():
        held = [held[j] for j in s]
        for b, i in enumerate(held):
            if b % R == 0 and label[i] == "cold":
                label[i] = "hot"
        for b, i in enumerate(held):
            if b % R == R - 1:
                trips[i] += label[i] == "hot"
                label[i] = "cold"
    return held, trips


def test_replica_walk_counts_the_trips_of_a_worked_example():
    from hebm.sampler.reference import replica_walk, swap_sources

    # one group of R = 3: replica 2 starts cold; it moves 2 → 1 → 0 (hot) → 1 → 2 (back: one trip)
    pairs = torch.tensor([[False, True], [True, False], [True, False], [False, True]])  # (0,1), (1,2) accepted
    src = swap_sources(pairs[:, None, :]).numpy()
    replica, trips = replica_walk(src, 3)
    assert replica.tolist() == [0, 1, 2] and trips.tolist() == [0, 0, 1]
    want_held, want_trips = _walk_round_by_round(src, 3)
    assert want_held == [0, 1, 2] and want_trips == [0, 0, 1]


@pytest.mark.parametrize("R,G,n", [(2, 3, 1), (3, 4, 17), (4, 5, 64), (7, 2, 300), (5, 8, 0)])
def test_replica_walk_is_the_round_by_round_walk(R, G, n):
    """The vectorised walk (prefix compositions, events) against the plain per-round one, on random
    rounds of both parities with many accepted pairs (trips happen)."""
    from hebm.sampler.reference import replica_walk, swap_sources

    g = torch.Generator().manual_seed(R * 100 + n)
    parity = torch.arange(n) % 2
    proposed = (torch.arange(R - 1)[None, None, :] % 2) == parity[:, None, None]
    accepted = proposed & (torch.rand(n, G, R - 1, generator=g) < 0.8)
    src = swap_sources(accepted).numpy().reshape(n, G * R)
    replica, trips = replica_walk(src, R)
    want_held, want_trips = _walk_round_by_round(src, R)
    assert replica.tolist() == want_held and trips.tolist() == want_trips
    if n > 50:
        assert sum(want_trips) > 0
