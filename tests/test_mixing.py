"""Mixing diagnostics (hebm.evaluation.mixing, ``hebm.sample --diagnostics``), checked against
analytic facts: the ESS of independent draws and of an AR(1) process, R-hat of agreeing and of
shifted chains, a hand-counted class-switch trace; and the per-chain traces of a long run, which
leave the chain exactly as it was."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hebm import sample
from hebm.evaluation import mixing
from hebm.evaluation.samples import long_run
from hebm.models import load_model
from hebm.training.trainer import Trainer

DRAWS, CHAINS = 1000, 8


def ar1(rho: float, n: int, chains: int, seed: int) -> np.ndarray:
    """``[n, chains]`` stationary AR(1) with unit innovations: x_t = ρ x_{t−1} + ε_t."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, chains))
    x[0] = rng.standard_normal(chains) / np.sqrt(1 - rho * rho)
    e = rng.standard_normal((n, chains))
    for t in range(1, n):
        x[t] = rho * x[t - 1] + e[t]
    return x


# ------------------------------------------------------------------------------ the numbers
def test_ess_of_independent_draws_is_their_number():
    x = np.random.default_rng(0).standard_normal((DRAWS, CHAINS))
    d = mixing.diagnostics(torch.from_numpy(x), seconds=2.0)
    n = DRAWS * CHAINS
    # sampling error of the ESS estimate is a few per cent; a wrong ESS (per chain, halved, an
    # autocorrelation mistaken for none or the reverse) is off by a factor
    assert 0.85 * n < d["ess_bulk"] < 1.15 * n and 0.85 * n < d["ess_tail"] < 1.15 * n
    assert d["ess_bulk_per_s"] == pytest.approx(d["ess_bulk"] / 2.0)
    assert 0.85 < d["iat_steps"] < 1.15
    assert d["mcse_mean"] == pytest.approx(d["sd"] / np.sqrt(d["ess_bulk"]), rel=0.1)  # σ/√ESS


def test_ess_of_an_ar1_process():
    """ESS of the mean of AR(1) with ρ = 0.9: N(1 − ρ)/(1 + ρ); τ = (1 + ρ)/(1 − ρ) = 19 steps."""
    rho, n, c = 0.9, 4000, 8
    d = mixing.diagnostics(ar1(rho, n, c, seed=1), every=3)
    want = n * c * (1 - rho) / (1 + rho)
    assert 0.75 * want < d["ess_bulk"] < 1.25 * want
    assert 0.75 * 19 * 3 < d["iat_steps"] < 1.25 * 19 * 3  # in sampler steps: 3 per draw


def test_rhat_of_agreeing_and_of_shifted_chains():
    x = np.random.default_rng(2).standard_normal((DRAWS, CHAINS))
    assert mixing.diagnostics(x)["rhat"] < 1.01
    x[:, 0] += 3.0  # one chain stuck 3σ away
    assert mixing.diagnostics(x)["rhat"] > 1.1


def test_diagnostics_of_the_draws_a_call_recorded():
    """mixing.draws_traces: a traced sampler call's info as the [draws, chains] traces of diagnostics."""
    import hebm

    p = hebm.standard_problem("toy", 8)
    out, info = hebm.langevin_ref(p.prior, p.prior.split(p.u), return_info=True, trace_every=5,
                                  **dict(p.kwargs, n_steps=40))
    traces, every = mixing.draws_traces(info, coordinates=[0, 3])
    assert every == 5 and sorted(traces) == ["log_density", "u[0]", "u[3]"]
    assert traces["u[3]"].shape == (8, 8) and torch.equal(traces["u[3]"][-1], torch.cat(out, 1)[:, 3])
    d = mixing.draws_diagnostics(info, seconds=1.0)
    assert d["log_density"]["draws"] == 8 and d["log_density"]["chains"] == 8 and d["log_density"]["every"] == 5
    with pytest.raises(ValueError, match="trace_every"):
        mixing.draws_traces({"log_density": info["log_density"]})


def test_class_switches_counted_by_hand():
    y = np.array([[0, 1, 2],
                  [0, 1, 2],
                  [1, 1, 2],
                  [1, 0, 2],
                  [0, 0, 2]])  # chain 0: 2 switches, chain 1: 1, chain 2: none
    c = mixing.class_switches(torch.from_numpy(y), every=10)
    assert c["switches"] == [2, 1, 0] and c["classes_visited"] == [2, 2, 1]
    assert c["switches_per_1000_steps"] == pytest.approx(1000 * 3 / (4 * 10 * 3))
    e = mixing.indicator_ess(y, 4)
    assert e["per_class"][3] is None  # never visited: no ESS
    assert None not in e["per_class"][:3] and e["min"] == min(e["per_class"][:3])
    assert mixing.indicator_ess(np.full((5, 3), 1), 2)["per_class"] == [None, None]  # always / never


def test_indicator_ess_of_independent_labels():
    y = np.random.default_rng(3).integers(0, 3, (DRAWS, CHAINS))
    e = mixing.indicator_ess(y, 3)
    assert all(0.85 * DRAWS * CHAINS < v < 1.15 * DRAWS * CHAINS for v in e["per_class"])


def test_indicator_rhat_flags_chains_that_keep_their_class():
    """R-hat of the class indicators against what it must say: chains that never leave their class
    (half of them in class 0, half in class 1) have not mixed (R-hat infinite: no chain varies),
    while their indicator ESS still counts about one draw per chain — the number a stuck sampler
    reports as its ESS; chains that leave their class rarely are flagged too (R-hat > 1.01), and
    independent labels are not."""
    stuck = np.zeros((DRAWS, CHAINS), dtype=np.int64)
    stuck[:, CHAINS // 2:] = 1
    e = mixing.indicator_ess(stuck, 3)
    assert e["rhat_per_class"][:2] == [math.inf, math.inf] and e["rhat_per_class"][2] is None
    assert e["rhat_max"] == math.inf and e["rhat_ok"] is False
    assert e["min"] < 2 * CHAINS  # what the ESS of a stuck sampler reads: the chains, not the draws
    rare = stuck.copy()
    rare[::50, :] = 1 - rare[::50, :]  # every chain visits the other class for one draw in 50
    r = mixing.indicator_ess(rare, 2)
    assert math.isfinite(r["rhat_max"]) and r["rhat_max"] > 1.5 and r["rhat_ok"] is False
    y = np.random.default_rng(3).integers(0, 3, (DRAWS, CHAINS))
    i = mixing.indicator_ess(y, 3)
    assert i["rhat_ok"] is True and all(abs(v - 1.0) < 0.01 for v in i["rhat_per_class"])


def test_ess_of_ula_on_a_gaussian_is_the_ar1s():
    """What benchmarks/test_ess_per_second.py measures, against an analytic fact: with the energy
    switched off (λ = 0) the target is N(0, I) and ULA's update u' = (1 − δ²/2)·u + δ·ε is an AR(1)
    per coordinate, ρ = 1 − δ²/2, stationary variance 1/(1 − δ²/4).  Recorded every m steps by
    segmented ``Sampler.run`` calls continued with ``step_offset`` (one chain), the bulk ESS of a
    coordinate is N(1 − ρ^m)/(1 + ρ^m) and that of ‖u‖² (correlation ρ^(2k) for a Gaussian
    process) N(1 − ρ^(2m))/(1 + ρ^(2m)).  Tolerances: the ESS estimate's sampling error (seeds 1-5:
    0.92-1.12 of the formula), not the CPU's rounding."""
    import math

    import hebm

    p = hebm.standard_problem("toy", 64)
    d, m, keep, seed = 0.5, 2, 1000, 1
    rho, var = 1 - d * d / 2, 1 / (1 - d * d / 4)
    sampler = hebm.Sampler(p.prior, backend="auto")
    u = torch.randn(64, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float32) * math.sqrt(var)
    states = []
    for j in range(keep // m):  # started at stationarity: no burn-in
        u = sampler.run(u, n_steps=m, step_size=d, energy_scale=0.0, t=2, seed=seed, step_offset=j * m)
        states.append(u.clone())
    U = torch.stack(states).double()  # [draws, chains, D]
    n = U.shape[0] * U.shape[1]
    want = n * (1 - rho ** m) / (1 + rho ** m)
    for k in range(U.shape[-1]):
        assert 0.75 * want < mixing.diagnostics(U[..., k], every=m)["ess_bulk"] < 1.25 * want
    want_sq = n * (1 - rho ** (2 * m)) / (1 + rho ** (2 * m))
    assert 0.7 * want_sq < mixing.diagnostics((U * U).sum(-1), every=m)["ess_bulk"] < 1.3 * want_sq
    assert abs(float(U.var()) / var - 1) < 0.04  # ULA's own variance (N(0, 1) would be 6 % lower)


# ------------------------------------------------------------------------------ the traces of a long run
TINY = dict(steps=3, batch_size=16, langevin_steps=3, quiet=True, enc_hidden=[32], dec_hidden=[32], prior_hidden=[16],
            energy_hidden=[16, 16], latent_dims=[6, 4, 2], n_samples=8, eval_every=0)


@pytest.fixture(scope="module")
def ebm_ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    Trainer.from_settings(dict(prior="ebm", out=str(root / "e"), **TINY)).train()
    return str(root / "e" / "ckpt.pt")


@pytest.mark.parametrize("metropolis", [False, True])
def test_traced_long_run_is_the_same_chain(ebm_ckpt, metropolis):
    """Tracing splits the run at every 3rd step; the log π profile, the snapshots and the
    acceptance are those of the untraced run bit for bit, and the per-chain log π averages to it."""
    model = load_model(ebm_ckpt, "cpu")[0]
    kw = dict(n_chains=5, K=20, seed=4, step_size=0.05, metropolis=metropolis)
    acc0, acc1, traces = [], [], {}
    logs0, e0, _, marks0, snaps0 = long_run(model, acceptance=acc0, **kw)
    logs1, e1, _, marks1, snaps1 = long_run(model, acceptance=acc1, traces=traces, every=3,
                                            classify=lambda x: (x[:, 0] > 0).long(), **kw)
    assert torch.equal(logs0, logs1) and torch.equal(snaps0, snaps1) and e0 == e1 and marks0 == marks1
    assert acc0 == acc1
    ld = traces["log_density"]
    assert ld.shape == (7, 5) and traces["steps"] == [0, 3, 6, 9, 12, 15, 18]  # states 0, 3, …, 18
    torch.testing.assert_close(ld.mean(1), logs0[::3][:7])
    assert traces["class_label"].shape == (7, 5) and traces["sampler_seconds"] > 0


@pytest.mark.parametrize("fused", [False, True])
def test_traced_long_run_labels_the_states_after_every_mth_step(ebm_ckpt, fused):
    """The labels of a traced long run (its states recorded inside the sampler calls, trace_every)
    are those of the chain run separately to each multiple of every, bit for bit."""
    import hebm

    model = load_model(ebm_ckpt, "cpu")[0]
    seen = []

    def classify(x):
        seen.append(x.clone())
        return (x[:, 0] > 0).long()

    traces = {}
    long_run(model, n_chains=5, K=20, seed=4, step_size=0.05, traces=traces, every=3, classify=classify, fused=fused,
             snapshots=4)
    assert traces["steps"] == [0, 3, 6, 9, 12, 15, 18] and len(seen) == 7
    from hebm.evaluation.samples import initial_noise
    ids = torch.arange(5)
    p0 = next(model.parameters())
    u0 = initial_noise(4, 5, model.D, chain_ids=ids, device=p0.device, dtype=p0.dtype)
    for s, x in zip(traces["steps"][1:], seen[1:]):
        run = hebm.langevin_fused if fused else hebm.langevin_ref
        u = run(model.sampling_prior, u0, n_steps=s, step_size=0.05, seed=4, chain_ids=ids,
                **({"backend": "auto"} if fused else {}))
        assert torch.equal(model.decode(model.prior.T(u)), x)


def test_sample_diagnostics_cli(ebm_ckpt, tmp_path, capsys):
    import xarray as xr

    out, nc = tmp_path / "s", tmp_path / "trace.nc"
    assert sample.main(["--ckpt", ebm_ckpt, "--n", "4", "--long-run", "40", "--nchains", "4", "--diagnostics",
                        "--metropolis", "--trace-netcdf", str(nc), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ESS bulk" in printed and "R-hat" in printed and "MALA acceptance" in printed
    rep = json.loads((tmp_path / "s_longrun.json").read_text())
    d = rep["diagnostics"]
    assert d["warmup_draws"] == 20 and d["library"].startswith("arviz-stats")
    ld = d["log_density"]
    assert ld["draws"] == 20 and ld["chains"] == 4
    for k in ("ess_bulk", "ess_tail", "rhat", "mcse_mean", "iat_steps", "ess_bulk_per_s", "ess_tail_per_s"):
        assert k in ld
    assert 0 < ld["ess_bulk"] <= 4 * 20 * 10 and ld["ess_bulk_per_s"] > 0  # (ArviZ caps ESS at N·log10 N)
    cls = d["classes"]  # digits have labels: the classifier's view of the decodes
    assert len(cls["switches"]) == len(cls["classes_visited"]) == 4 and len(cls["indicator_ess"]["per_class"]) == 10
    assert all(1 <= v <= 10 for v in cls["classes_visited"])
    with xr.open_datatree(nc) as dt:
        post = dt["posterior"].to_dataset()
        assert post["log_density"].dims == ("chain", "draw") and post["log_density"].shape == (4, 20)
        assert post["class_indicator"].shape == (4, 20, 10)
        assert (post["class_indicator"].sum("class") == 1).all()
        assert dt["warmup_posterior"].to_dataset()["log_density"].shape == (4, 20)


@pytest.mark.parametrize("flag", [["--diagnostics"], ["--trace-netcdf", "t.nc"]])
def test_diagnostics_need_a_long_run(ebm_ckpt, tmp_path, capsys, flag):
    assert sample.main(["--ckpt", ebm_ckpt, "--n", "4", *flag, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag[0] in err[0] and "--long-run" in err[0]


def test_diagnostics_refuse_the_diffusion_prior(tmp_path, capsys):
    Trainer.from_settings(dict(prior="gaussian", out=str(tmp_path / "g"), holdout=1, **TINY)).train()
    Trainer.from_settings(dict(prior="diffusion", out=str(tmp_path / "d"), init=str(tmp_path / "g" / "ckpt.pt"),
                               holdout=1, **TINY)).train()
    capsys.readouterr()
    assert sample.main(["--ckpt", str(tmp_path / "d" / "ckpt.pt"), "--n", "4", "--long-run", "6", "--diagnostics",
                        "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--diagnostics" in err[0] and "diffusion" in err[0]
    assert not (tmp_path / "s_longrun.json").exists()


def test_total_variation_is_half_the_l1_distance():
    """Analytic facts: 0 for equal distributions, 1 for disjoint supports, symmetric, and ½·Σ|p − q|
    on a worked case (0.5·(0.2 + 0.1 + 0.1) = 0.2)."""
    p, q = [0.5, 0.3, 0.2], [0.3, 0.4, 0.3]
    assert mixing.total_variation(p, p) == 0.0
    assert mixing.total_variation([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert mixing.total_variation(p, q) == pytest.approx(0.2)
    assert mixing.total_variation(q, p) == mixing.total_variation(p, q)
