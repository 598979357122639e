"""Replica exchange inside the CPU kernel (backend="cpu"; the rule: hebm/sampler/reference.py,
docs/design.md §2): the swap decisions and every ``info`` entry equal the reference's in fp64 and
the states agree to rounding (ULA and MALA, both schedules, seeded and explicit noise, chain ids,
a step offset, the kernel term); fp32 meets the parity rule (tests/parity.py); a call cut into
chunks or run on two threads is the same chain; a call without a ladder is untouched; on a
two-mode target the cold chains find both modes in their weights."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import hebm
import hebm.sampler.backends as backends
from hebm.prior.philox import initial_noise
from hebm.sampler.backends import ops
from tests.parity import parity

pytestmark = pytest.mark.skipif(backends.unavailable("cpu") is not None, reason="the C++ CPU extension is unavailable")

INT_KEYS = ("swap_attempts", "swap_accepted", "replica", "round_trips")


def _ladder_kwargs(prior, G, R, *, K=11, mala=False, explicit=False, kernel=True, every=2, offset=3,
                   schedule="deo", dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, D = G * R, prior.D
    u = torch.randn(B, D, generator=g, dtype=torch.float64)
    ladder = [0.0, 0.2, 0.45, 0.7, 1.0][-R:] if R <= 5 else [i / (R - 1) for i in range(R)]
    kw = dict(n_steps=K, temperatures=ladder, swap_every=every, swap_schedule=schedule, step_offset=offset,
              energy_scale=40.0, metropolis=mala,
              step_size=(0.3 if mala else 0.08) * (1.0 + torch.rand(B, generator=g, dtype=torch.float64)))
    if prior.n_levels is not None:
        kw["t"] = torch.randint(0, prior.n_levels, (G,), generator=g).repeat_interleave(R)
    if kernel:
        kw["u_next"] = torch.randn(G, 1, D, generator=g, dtype=torch.float64).expand(G, R, D).reshape(B, D)
        kw["alpha"], kw["sigma"] = 0.7, 0.8
    if explicit:
        n = ops.swap_rounds(K, offset, every)
        kw["noise"] = torch.randn(K, B, D, generator=g, dtype=torch.float64)
        kw["swap_uniforms"] = torch.rand(n, B, generator=g, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
        if mala:
            kw["uniforms"] = torch.rand(K, B, generator=g, dtype=torch.float64).clamp(1e-6, 1 - 1e-6)
    else:
        kw["seed"] = 77
        kw["chain_ids"] = torch.randperm(1000, generator=g)[:B]
    cast = lambda v: v.to(dtype) if isinstance(v, torch.Tensor) and v.dtype.is_floating_point else v
    return u.to(dtype), {k: cast(v) for k, v in kw.items()}


def _same_info(got, want, *, exact_float=False):
    for k in INT_KEYS:
        assert torch.equal(got[k], want[k]), k
    assert torch.equal(got["swapped"], want["swapped"])
    assert torch.equal(got["swap_rate"].isnan(), want["swap_rate"].isnan())
    torch.testing.assert_close(got["swap_rate"].nan_to_num(-1), want["swap_rate"].nan_to_num(-1), rtol=0, atol=0)
    torch.testing.assert_close(got["round_trip_rate"], want["round_trip_rate"], rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(got["swap_energy"], want["swap_energy"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got["log_density"], want["log_density"], rtol=1e-11, atol=1e-11)
    if "accepted" in want:
        assert torch.equal(got["accepted"], want["accepted"])


@pytest.mark.parametrize("explicit", [False, True], ids=["seeded", "explicit"])
@pytest.mark.parametrize("schedule", ["deo", "even_odd"])
@pytest.mark.parametrize("mala", [False, True], ids=["ula", "mala"])
def test_fp64_the_kernel_makes_the_references_swaps(make_prior, mala, schedule, explicit):
    prior = make_prior((5, 3), n_levels=3)
    u, kw = _ladder_kwargs(prior, 6, 4, mala=mala, explicit=explicit, schedule=schedule)
    want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
    got, gi = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
    assert gi["backend"] == "cpu"
    assert int(wi["swap_accepted"].sum()) > 0 and int((wi["swap_attempts"] - wi["swap_accepted"]).sum()) > 0
    _same_info(gi, wi)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cut", [False, True], ids=["one-call", "cut"])
@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize("mala", [False, True], ids=["ula", "mala"])
def test_fp64_draws_on_a_ladder_are_the_references(make_prior, monkeypatch, mala, every, cut):
    """trace_every with temperatures: per chain slot, the state after the step and before the swap
    round that may follow it, with its log π at the slot's β — the reference's draws, recorded in
    the kernel (draws that fall on a swap round and between rounds; the op cut into chunks too)."""
    prior = make_prior((5, 3), n_levels=3)
    u, kw = _ladder_kwargs(prior, 4, 3, K=12, mala=mala, every=every, offset=1)
    kw["trace_every"] = 2
    want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
    if cut:
        monkeypatch.setattr(ops, "steps_per_chunk", lambda *a: 5)
    got, gi = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
    assert gi["backend"] == "cpu"
    _same_info(gi, wi)
    assert int(wi["swapped"].sum()) > 0  # swaps happened between draws
    assert torch.equal(gi["draw_steps"], wi["draw_steps"]) and gi["draws"].shape == wi["draws"].shape == (6, 12, 8)
    torch.testing.assert_close(gi["draws"], wi["draws"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gi["draws_log_density"], wi["draws_log_density"], rtol=1e-11, atol=1e-11)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("R", [1, 2, 3, 5])
def test_fp64_ladders_of_any_width_and_no_energy(make_prior, R):
    """R = 1 (no pairs), odd R (a chunk of lcm(4, R) rows), and a prior without energies (E = 0:
    every proposed pair swaps)."""
    for prior in (make_prior((4, 3)), make_prior((4, 3), energy_hidden=None)):
        u, kw = _ladder_kwargs(prior, 5, R, K=7, every=1, offset=0, kernel=False)
        want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
        got, gi = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
        _same_info(gi, wi)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mala", [False, True], ids=["ula", "mala"])
def test_fp32_meets_the_parity_rule(make_prior, mala):
    prior = make_prior((5, 3), dtype=torch.float32)
    u, kw = _ladder_kwargs(prior, 4, 4, mala=mala, explicit=True, dtype=torch.float32)
    parity(prior, u, kw, "cpu")
    # and the swap decisions are the fp64 reference's (this problem's margins are wide)
    p64 = copy.deepcopy(prior).double()
    kw64 = {k: (v.double() if isinstance(v, torch.Tensor) and v.dtype.is_floating_point else v) for k, v in kw.items()}
    _, wi = hebm.langevin_ref(p64, u.double(), return_info=True, **kw64)
    _, gi = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
    assert torch.equal(gi["swapped"], wi["swapped"]) and torch.equal(gi["replica"], wi["replica"])


@pytest.mark.parametrize("mala", [False, True], ids=["ula", "mala"])
def test_chunks_threads_and_split_calls_are_the_same_chain(make_prior, monkeypatch, mala):
    prior = make_prior((5, 3))
    u, kw = _ladder_kwargs(prior, 8, 3, K=13, mala=mala, every=3, offset=1)
    one = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
    # two threads: chunks of lcm(4, 3) = 12 rows, whole groups
    from hebm.sampler.backends import cpu as cpu_backend
    n0 = cpu_backend.get_num_threads()
    try:
        cpu_backend.set_num_threads(2)
        two = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
    finally:
        cpu_backend.set_num_threads(n0)
    # the op cut into chunks of 4 steps (a swap round at a chunk's end, rows of swap_uniforms sliced)
    monkeypatch.setattr(ops, "steps_per_chunk", lambda *a: 4)
    cut = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
    for other in (two, cut):
        assert torch.equal(other[1]["replica"], one[1]["replica"])
        assert torch.equal(other[1]["swapped"], one[1]["swapped"])
        torch.testing.assert_close(other[0], one[0], rtol=1e-12, atol=1e-12)


def test_explicit_swap_uniforms_are_sliced_by_round_when_cut(make_prior, monkeypatch):
    prior = make_prior((5, 3))
    u, kw = _ladder_kwargs(prior, 3, 4, K=10, explicit=True, every=3, offset=2)
    want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
    monkeypatch.setattr(ops, "steps_per_chunk", lambda *a: 3)
    got, gi = hebm.langevin_fused(prior, u, backend="cpu", return_info=True, **kw)
    _same_info(gi, wi)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_the_sampler_and_auto_run_the_ladder_in_the_kernel(make_prior, recwarn):
    prior = make_prior((5, 3))
    u, kw = _ladder_kwargs(prior, 2, 4, K=6)
    s = hebm.Sampler(prior, backend="auto")
    out, info = s.run(u, return_info=True, **kw)
    assert info["backend"] == "cpu" and not [w for w in recwarn if "no fused backend" in str(w.message)]
    want, wi = hebm.langevin_ref(prior, u, return_info=True, **kw)
    _same_info(info, wi)
    # and a call without a ladder is today's (the golden outputs pin it bit for bit)
    plain = {k: v for k, v in kw.items() if k not in ("temperatures", "swap_every", "swap_schedule")}
    a = hebm.langevin_fused(prior, u, backend="cpu", **plain)
    torch.testing.assert_close(a, hebm.langevin_ref(prior, u, **plain), rtol=1e-10, atol=1e-10)


def test_a_ladder_longer_than_a_backends_limit_goes_to_the_next_backend(make_prior, monkeypatch):
    """A backend with a ``max_ladder(device)`` (cuda, triton: a ladder group lives in one thread block)
    refuses a longer ladder by name when asked for, and ``auto`` moves past it to the next backend
    of the device (on a GPU cuda → triton → graph; here the cpu kernel, the only one of the CPU,
    given a limit for the test, so auto ends at the reference with one warning naming it)."""
    from hebm.sampler.backends import cpu

    monkeypatch.setattr(cpu, "max_ladder", lambda device: 4, raising=False)
    prior = make_prior((5, 3))
    u8, kw8 = _ladder_kwargs(prior, 2, 5, K=4, kernel=False)
    with pytest.raises(hebm.BackendUnavailable, match=r"R = 5 .* at most 4 .*backend='graph'"):
        hebm.Sampler(prior, backend="cpu").run(u8, **kw8)
    with pytest.warns(RuntimeWarning, match=r"using the reference \(cpu: temperatures has R = 5"):
        out, info = hebm.Sampler(prior, backend="auto").run(u8, return_info=True, **kw8)
    assert info["backend"] == "ref"
    torch.testing.assert_close(out, hebm.langevin_ref(prior, u8, **kw8), rtol=0, atol=0)
    # within the limit the kernel runs it; without a ladder the limit means nothing
    u4, kw4 = _ladder_kwargs(prior, 2, 4, K=4, kernel=False)
    assert hebm.Sampler(prior, backend="auto").run(u4, return_info=True, **kw4)[1]["backend"] == "cpu"


# ------------------------------------------------------------------------------ two modes, by MLP
A_LEFT, A_RIGHT = 5.0, 5.17  # F(z) = A_R·relu(z) + A_L·relu(−z): log π = F − z²/2, modes at −5 and +5.17


def _mlp_two_modes():
    """A one-layer prior whose energy is an MLP the kernel takes (1 → 2 → 1, ReLU): a double well
    with a 12.5-nat barrier at 0 and known mode weights (right: 0.70)."""
    prior = hebm.HierarchicalPrior((1,), prior_hidden=(), energy_hidden=(2,), act="relu").double()
    lin = [m for m in prior.energies[0].modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        lin[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        lin[0].bias.zero_()
        lin[1].weight.copy_(torch.tensor([[A_RIGHT, A_LEFT]]))
        lin[1].bias.zero_()
    for p in prior.parameters():
        p.requires_grad_(False)
    return prior.eval()


def _right_weight() -> float:
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))
    right = math.exp(A_RIGHT**2 / 2) * phi(A_RIGHT)
    left = math.exp(A_LEFT**2 / 2) * phi(A_LEFT)
    return right / (right + left)


@pytest.mark.parametrize("mala", [False, True], ids=["ula", "mala"])
def test_cpu_cold_chains_find_both_modes_in_their_weights(mala):
    prior = _mlp_two_modes()
    x = torch.linspace(-3, 3, 7, dtype=torch.float64)[:, None]
    assert torch.allclose(prior.energy(prior.T(x)), A_RIGHT * x[:, 0].clamp(min=0) + A_LEFT * (-x[:, 0]).clamp(min=0))
    ladder = [0.0, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0]
    G, K, R = 512, 400, len(ladder)
    step = torch.tensor([0.4 + 0.6 * (1.0 - b) for b in ladder], dtype=torch.float64).repeat(G)
    u0 = torch.full((G * R, 1), -A_LEFT, dtype=torch.float64)
    out, info = hebm.langevin_fused(prior, u0, backend="cpu", n_steps=K, step_size=step, seed=3, temperatures=ladder,
                                    metropolis=mala, return_info=True)
    assert info["backend"] == "cpu"
    cold = out.view(G, R)[:, -1]
    w = _right_weight()
    share = float((cold > 0).double().mean())
    z = (share - w) / math.sqrt(w * (1 - w) / G)
    assert abs(z) < 5, (share, w)
    print(f"cold share {share:.3f} vs {w:.3f} (z = {z:.2f}), swap rates {info['swap_rate'].nanmean(0).tolist()}")
    assert bool((info["swap_rate"].nanmean(0) > 0.2).all()) and int(info["round_trips"].sum()) > 0
    plain = hebm.langevin_fused(prior, u0[:G], backend="cpu", n_steps=R * K, step_size=0.4, seed=4, metropolis=mala)
    assert float((plain > 0).double().mean()) < 0.05  # one chain alone stays behind the barrier
