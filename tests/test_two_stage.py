"""Two-stage priors on a frozen generator (docs/design.md §2b): the two-stage joint EBM and the
diffusion leave the stage-1 model bit for bit; level energies start neutral (F ≡ 0, and the
reverse diffusion is then the plain prior chain); the diffusion reports its energies in nats of
F/s_t; the papers' gap-closed metric."""
import math

import numpy as np
import pytest
import torch

import hebm
from hebm import evaluate, sample
from hebm.config import PRIOR_DEFAULTS, ModelConfig, build
from hebm.errors import UserError
from hebm.evaluation import metrics
from hebm.models import build_model
from hebm.prior.hierarchical import HierarchicalPrior
from hebm.train import build_parser
from hebm.training.settings import resolve_settings
from hebm.training.trainer import Trainer

TINY = dict(steps=3, batch_size=16, langevin_steps=3, quiet=True, enc_hidden=[32], dec_hidden=[32], prior_hidden=[16],
            energy_hidden=[16, 16], latent_dims=[6, 4, 2], n_samples=8, eval_every=0)


def train(prior, out, **kw):
    res = Trainer.from_settings(dict(prior=prior, out=str(out), **{**TINY, **kw})).train()
    assert res["status"] == "ok", res
    return torch.load(str(out / "ckpt.pt"), weights_only=True)["model"]


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_stage")
    state = train("gaussian", root / "g", holdout=3)
    return root, state


@pytest.mark.parametrize("prior,fresh", [("ebm", "prior.energies."), ("diffusion", "dprior.")])
def test_two_stage_changes_nothing_but_the_new_energies(stage1, prior, fresh):
    """Every tensor the stage-1 run wrote is bit-identical after stage 2; the energies moved."""
    root, s1 = stage1
    s2 = train(prior, root / prior, init=str(root / "g" / "ckpt.pt"), steps=4, lr_ebm=1e-2)
    stage1_keys = [k for k in s2 if not k.startswith(fresh)]
    assert stage1_keys and all(k in s1 for k in stage1_keys)
    for k in stage1_keys:
        assert torch.equal(s1[k], s2[k]), k
    if prior == "diffusion":  # the level energies share the frozen conditionals
        for k, v in s1.items():
            if k.startswith("prior.conditionals."):
                assert torch.equal(s2["d" + k], v), k
    new = [k for k in s2 if k.startswith(fresh) and "layers" in k]
    init = build_model(build(ModelConfig, torch.load(str(root / prior / "ckpt.pt"),
                                                     weights_only=True)["model_config"])).state_dict()
    assert any(not torch.equal(s2[k], init[k]) for k in new)  # they learned
    cfg = torch.load(str(root / prior / "ckpt.pt"), weights_only=True)["train_config"]
    assert cfg["holdout"] == 3  # the frozen model's data split is kept


def test_two_stage_defaults_and_refusals(stage1):
    root, _ = stage1
    parse = lambda argv: resolve_settings(vars(build_parser().parse_args(argv)))  # noqa: E731
    init = str(root / "g" / "ckpt.pt")
    m, t = parse(["--prior", "ebm", "--init", init])
    d = PRIOR_DEFAULTS["ebm-two-stage"]
    assert m.two_stage and m.neutral_init and not m.spectral_norm and t.lr_ebm == d["lr_ebm"]
    assert m.latent_dims == [6, 4, 2]  # the stage-1 architecture
    m, t = parse(["--prior", "ebm"])
    assert not m.two_stage and m.spectral_norm and not m.neutral_init  # joint training is unchanged
    assert parse(["--prior", "diffusion", "--init", init])[0].neutral_init
    with pytest.raises(UserError, match="--init is for the two-stage priors"):
        parse(["--prior", "gaussian", "--init", init])
    with pytest.raises(UserError, match="--posterior langevin"):
        parse(["--prior", "ebm", "--init", init, "--posterior", "langevin"])
    with pytest.raises(ValueError, match="--no-spectral-norm"):
        Trainer.from_settings(dict(prior="ebm", init=init, spectral_norm=True, out=str(root / "sn"), **TINY))


def test_neutral_level_energies_and_the_plain_prior_chain():
    """With the level energies neutral, F(·, t) ≡ 0 at every level, and the reverse diffusion —
    reference and fused CPU kernel — is the same chain as on the same hierarchy without energies."""
    torch.manual_seed(0)
    cfg = build(ModelConfig, dict(prior="diffusion", latent_dims=[5, 3], x_dim=8, prior_hidden=[16], energy_hidden=[16, 16],
                                  enc_hidden=[16], dec_hidden=[16], arch="mlp", neutral_init=True))
    model = build_model(cfg).double()
    z = torch.randn(40, 8, dtype=torch.float64) * 3
    for t in range(model.schedule.T):
        assert torch.equal(model.dprior.energy(z, torch.full((40,), t)), torch.zeros(40, dtype=torch.float64))
    plain = HierarchicalPrior([5, 3], prior_hidden=[16], energy_hidden=None, sigma_min=cfg.sigma_min,
                              sigma_clamp=cfg.sigma_clamp).double()
    plain.conditionals.load_state_dict(model.dprior.conditionals.state_dict())
    kw = dict(n_steps=7, batch=33, seed=11)
    # the plain prior chain, level by level: Langevin on N(0, I)·[recovery kernel] with each level's
    # step size, the step counter running on across levels, ũ_T from stream 1 (docs/design.md §2)
    sched, K = model.schedule, 7
    u = hebm.initial_noise(11, 33, 8, dtype=torch.float64)
    for j, t in enumerate(range(sched.T - 1, -1, -1)):
        p = sched.level_params(t)
        extra = dict(u_next=u, alpha=p["alpha"], sigma=p["sigma"]) if p["alpha"] > 0 else {}
        u = hebm.langevin_ref(plain, u, n_steps=K, step_size=p["step_size"], seed=11, step_offset=j * K, **extra)
    want = u
    assert torch.equal(hebm.reverse_diffusion_ref(model.dprior, model.schedule, **kw), want)
    got = hebm.reverse_diffusion(model.dprior, model.schedule, backend="auto", **kw)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # default PyTorch init instead: the energies are not zero, and the chain moves away
    cfg2 = build(ModelConfig, {**cfg.__dict__, "neutral_init": False})
    torch.manual_seed(0)
    m2 = build_model(cfg2).double()
    m2.dprior.conditionals.load_state_dict(model.dprior.conditionals.state_dict())
    assert not torch.equal(hebm.reverse_diffusion_ref(m2.dprior, m2.schedule, **kw), want)


def test_per_level_gaps_in_nats_against_a_hand_computation():
    """The diffusion's training log reports F(·, t)/s_t: per level, the mean over that level's
    rows of (F(z⁺, t) − F(z⁻, t)) / s_t, computed here by hand."""
    torch.manual_seed(1)
    cfg = build(ModelConfig, dict(prior="diffusion", latent_dims=[4, 2], x_dim=8, prior_hidden=[16], energy_hidden=[16],
                                  enc_hidden=[16], dec_hidden=[16], arch="mlp", neutral_init=False, T=3))
    model = build_model(cfg).double()
    zp, zn = torch.randn(30, 6, dtype=torch.float64), torch.randn(30, 6, dtype=torch.float64)
    t = torch.tensor([0, 1, 2] * 10)
    out = model.losses(torch.zeros(30, 8, dtype=torch.float64), dict(z_pos=zp, z_neg=zn, t=t),
                       generator=None, settings=None, step=0)
    s = [float(model.schedule.step_variance(j)) for j in range(3)]
    with torch.no_grad():
        for j in range(3):
            rows = t == j
            fp = sum(float(model.dprior.energies[i](zi[rows], torch.full((10,), j))[:, 0].sum())
                     for i, zi in enumerate(torch.split(zp, [4, 2], 1)))
            fn = sum(float(model.dprior.energies[i](zi[rows], torch.full((10,), j))[:, 0].sum())
                     for i, zi in enumerate(torch.split(zn, [4, 2], 1)))
            want = (fp - fn) / 10 / s[j]
            assert math.isclose(out["f_gap_per_level"][j], want, rel_tol=1e-9), (j, out["f_gap_per_level"][j], want)
        assert math.isclose(float(out["loss_e"]), -sum(out["f_gap_per_level"]) / 3, rel_tol=1e-9)
    assert 1 / s[0] > 5e4  # why units matter: a gap of 1e-5 in F is ~0.7 nats at level 0


def test_gap_closed_known_answers():
    assert metrics.gap_closed(10.0, 10.0, 2.0) == 0.0
    assert metrics.gap_closed(10.0, 2.0, 2.0) == 1.0
    assert metrics.gap_closed(10.0, 6.0, 2.0) == 0.5
    assert metrics.gap_closed(10.0, 14.0, 2.0) == -0.5  # worse than the base
    assert math.isnan(metrics.gap_closed(2.0, 1.0, 2.0))  # no gap to close
    # through frechet_distance: identity covariances, so FD = ‖μ‖² exactly in the limit
    rng = np.random.RandomState(0)
    data = rng.randn(200000, 3)
    mean = lambda m: rng.randn(200000, 3) + np.array(m)  # noqa: E731
    fd = lambda x: metrics.frechet_distance(x, data)  # noqa: E731
    base, prior, floor = fd(mean([2.0, 0, 0])), fd(mean([1.0, 0, 0])), fd(mean([0, 0.5, 0]))
    want = (4.0 - 1.0) / (4.0 - 0.25)
    assert abs(metrics.gap_closed(base, prior, floor) - want) < 0.01


def test_fd_reports_base_recon_and_gap(stage1, tmp_path):
    root, _ = stage1
    j = tmp_path / "f.json"
    assert evaluate.main(["--ckpt", str(root / "g" / "ckpt.pt"), "--json", str(j), "fd", "--n", "200", "--seeds",
                          "2"]) == 0
    import json

    r = json.loads(j.read_text())
    assert r["fd_values"] == r["fd_gaussian_values"]  # a gaussian model's prior is its p_β
    assert r["gap_closed"] in (0.0, None)  # no gap to close: NaN, written as JSON's null
    assert len(r["fd_recon_values"]) == 2 and all(v >= 0 for v in r["fd_recon_values"])
    if (root / "ebm" / "ckpt.pt").is_file():
        assert evaluate.main(["--ckpt", str(root / "ebm" / "ckpt.pt"), "--json", str(j), "fd", "--n", "200",
                              "--seeds", "2"]) == 0
        r2 = json.loads(j.read_text())
        # the same generator: its p_β and Recon are the stage-1 model's, to the bit
        assert r2["fd_gaussian_values"] == r["fd_gaussian_values"] and r2["fd_recon_values"] == r["fd_recon_values"]


def test_sample_save_and_recon(stage1, tmp_path, capsys):
    root, _ = stage1
    ck = str(root / "g" / "ckpt.pt")
    d = tmp_path / "imgs"
    assert sample.main(["--ckpt", ck, "--n", "7", "--save", str(d), "--out", str(tmp_path / "grid")]) == 0
    pngs = sorted(p.name for p in d.glob("*.png"))
    assert pngs == [f"{i:06d}.png" for i in range(7)]
    z = np.load(d / "samples.npz")
    assert z["images"].shape == (7, 8, 8, 1) and z["images"].dtype == np.uint8 and z["z"].shape == (7, 12)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(d / "000003.png")), z["images"][3, :, :, 0])
    assert np.array_equal(z["images"], ((torch.tensor(z["x"]).clamp(-1, 1) + 1) / 2 * 255).round()
                          .reshape(7, 1, 8, 8).permute(0, 2, 3, 1).to(torch.uint8).numpy())
    assert sample.main(["--ckpt", ck, "--n", "7", "--save", str(d)]) == 2  # never mixes two sets
    r = tmp_path / "recon"
    assert sample.main(["--ckpt", ck, "--n", "5", "--save", str(r), "--recon"]) == 0
    assert len(list(r.glob("*.png"))) == 5
    assert sample.main(["--ckpt", ck, "--recon"]) == 2
    err = capsys.readouterr().err
    assert "--recon writes" in err and "Traceback" not in err


def test_diffusion_stationarity_is_per_level_in_nats(stage1):
    root, _ = stage1
    from hebm.data import run_data
    from hebm.models import load_model

    train("diffusion", root / "d2", init=str(root / "g" / "ckpt.pt"), steps=2)
    model, _, tcfg, _ = load_model(str(root / "d2" / "ckpt.pt"))
    x = run_data("digits", holdout=3).train.x
    st = hebm.evaluation.metrics.stationarity(model, x, n=64, seed=0, n_steps=3, step_size=0.0)
    assert len(st["f_gap_per_level"]) == model.schedule.T
    for p, q, g in zip(st["f_pos_per_level"], st["f_neg_per_level"], st["f_gap_per_level"]):
        assert math.isclose(p - q, g, rel_tol=1e-12, abs_tol=1e-12)
