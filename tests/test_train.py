"""hebm.train on tiny budgets: each prior type, --help, exact resume, NaN guard, fused == ref, the
joint backward, the per-layer reports."""
import json
import subprocess
import sys
import warnings

import pytest
import torch

from hebm.checkpoint import load_checkpoint
from hebm.models import load_model
from hebm.train import main
from hebm.training.trainer import Trainer, _grads

TINY = dict(steps=3, batch_size=16, langevin_steps=3, quiet=True, enc_hidden=[32], dec_hidden=[32], prior_hidden=[16],
            energy_hidden=[16, 16], latent_dims=[6, 4, 2], ckpt_every=1, log_every=1, n_samples=8, eval_every=2)


def tiny(prior, tmp, **kw):
    return dict(prior=prior, out=str(tmp), **{**TINY, **kw})


def run(settings):
    return Trainer.from_settings(settings).train()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for p in ("gaussian", "ebm"):
        assert run(tiny(p, root / p))["status"] == "ok"
        out[p] = root / p
    assert run(tiny("diffusion", root / "diffusion", init=str(root / "ebm" / "ckpt.pt")))["status"] == "ok"
    out["diffusion"] = root / "diffusion"
    return out


@pytest.mark.parametrize("prior", ["gaussian", "ebm", "diffusion"])
def test_outputs(runs, prior):
    d = runs[prior]
    for f in ("config.json", "ckpt.pt", "ckpt.prev.pt", "samples.png", "recon.png", "metrics.jsonl", "summary.json"):
        assert (d / f).is_file(), f
    model, mcfg, tcfg, ck = load_model(str(d / "ckpt.pt"))
    assert ck["step"] == 3 and mcfg.prior == prior and model.kind == prior
    summary = json.loads((d / "summary.json").read_text())
    assert len(summary["active_units"]) == 3 and len(summary["kl_per_layer"]) == 3
    rows = [json.loads(line) for line in open(d / "metrics.jsonl")]
    evals = [r for r in rows if "active_units" in r]
    assert [r["step"] for r in evals] == [2, 3]  # --eval-every 2, and the end
    if prior == "ebm":
        assert all(k in evals[-1] for k in ("eval_f_pos", "eval_f_neg", "eval_f_gap"))
        assert all("f_gap" in r for r in rows if "loss_g" in r)
    if prior == "diffusion":
        assert all(len(r["f_gap_per_level"]) == 3 for r in rows if "loss_e" in r)


def test_cli_runs_and_help(tmp_path):
    rc = main(["--prior", "gaussian", "--steps", "2", "--batch-size", "16", "--latent-dims", "4,2", "--out", str(tmp_path),
               "--quiet"])
    assert rc == 0 and (tmp_path / "ckpt.pt").is_file()
    for mod in ("hebm.train", "hebm.sample", "hebm.evaluate"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout


def test_prior_defaults_and_negatable_flags():
    """A prior type's defaults (config.PRIOR_DEFAULTS) apply unless a flag says otherwise, and a
    boolean that defaults on can be turned off (--no-spectral-norm)."""
    from hebm.config import PRIOR_DEFAULTS
    from hebm.train import build_parser
    from hebm.training.settings import resolve_settings
    parse = lambda argv: resolve_settings(vars(build_parser().parse_args(argv)))  # noqa: E731
    m, t = parse(["--prior", "ebm"])
    assert m.spectral_norm is True and t.lr_ebm == PRIOR_DEFAULTS["ebm"]["lr_ebm"]
    assert t.langevin_steps == PRIOR_DEFAULTS["ebm"]["langevin_steps"]
    m, t = parse(["--prior", "ebm", "--no-spectral-norm", "--lr-ebm", "3e-4"])
    assert m.spectral_norm is False and t.lr_ebm == 3e-4
    m, t = parse(["--prior", "gaussian", "--spectral-norm"])
    assert m.spectral_norm is True and t.langevin_steps == 0
    assert parse(["--prior", "gaussian"])[0].spectral_norm is False


def test_mle_posterior_langevin(tmp_path):
    res = run(tiny("ebm", tmp_path, posterior="langevin", posterior_steps=3, steps=2))
    assert res["status"] == "ok"


@pytest.mark.parametrize("prior", ["ebm", "gaussian"])
def test_resume_equals_uninterrupted(tmp_path, prior):
    full = Trainer.from_settings(tiny(prior, tmp_path / "full", steps=6))
    full.train()
    part = Trainer.from_settings(tiny(prior, tmp_path / "part", steps=3))
    part.train()
    resumed = Trainer.from_checkpoint(str(tmp_path / "part" / "ckpt.pt"), {"steps": 6}, announce=None)
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_nan_guard_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    tr = Trainer.from_settings(tiny("ebm", tmp_path, steps=5))
    orig = tr._batch

    def poisoned(step):
        x, labels = orig(step)
        return (x * float("nan") if step == 2 else x), labels

    monkeypatch.setattr(tr, "_batch", poisoned)
    res = tr.train()
    assert res["status"] == "nonfinite" and res["step"] == 2
    assert "--langevin-step-size" in res["message"] and "--lr " in res["message"] and "ckpt.pt" in res["message"]
    model, mcfg, tcfg, ck = load_model(str(tmp_path / "ckpt.pt"))
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("prior", ["ebm", "diffusion"])
def test_fused_equals_ref(tmp_path, runs, prior):
    extra = dict(init=str(runs["ebm"] / "ckpt.pt")) if prior == "diffusion" else {}
    a = Trainer.from_settings(tiny(prior, tmp_path / "ref", steps=2, **extra))
    a.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = Trainer.from_settings(tiny(prior, tmp_path / "fused", steps=2, fused=True, **extra))
        b.train()
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("prior", ["ebm", "diffusion"])
def test_the_training_chains_sample_the_current_weights(tmp_path, runs, prior):
    """--fused: the training chains run on one hebm.Sampler per prior, refreshed after every
    change of the weights (optimiser step, power iteration), so after a step they sample exactly
    what langevin_fused (which reads the prior at every call) samples — and not the prior of
    before the step."""
    import hebm
    # (the ebm run with spectral norm: its power iteration moves the weights too)
    extra = dict(init=str(runs["ebm"] / "ckpt.pt")) if prior == "diffusion" else dict(spectral_norm=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tr = Trainer.from_settings(tiny(prior, tmp_path, steps=2, fused=True, **extra))
        tr.train_step()
    assert tr.samplers and all(isinstance(s, hebm.Sampler) for s in tr.samplers.values())
    stale = {p: hebm.Sampler(p) for p in tr.samplers}
    tr.train_step()
    for p, s in tr.samplers.items():
        g = torch.Generator().manual_seed(1)
        u = torch.randn(5, p.D, generator=g)
        kw = dict(n_steps=3, step_size=0.1, seed=2)
        if p.n_levels is not None:
            kw["t"] = 1
        got = s.run(u, **kw)
        assert torch.equal(got, hebm.langevin_fused(p, u, **kw))
        if p.has_energy and any(q.requires_grad for q in p.energies.parameters()):
            assert not torch.equal(got, stale[p].run(u, **kw))  # the step moved the energies


@pytest.mark.parametrize("posterior", ["q", "langevin"])
def test_ebm_joint_backward_equals_the_two_losses(tmp_path, posterior):
    """The variational EBM step takes one backward of loss_g + mean f(z⁻); its gradients must
    equal the scheme's two losses differentiated separately: loss_g in the generator parameters
    and loss_e = mean f(z⁻) − mean f(z⁺) (z⁺ detached) in the energy parameters."""
    tr = Trainer.from_settings(tiny("ebm", tmp_path, posterior=posterior, posterior_steps=3))
    m, x, cfg = tr.model, tr.x_train[:16], tr.cfg
    chains = m.chains(x, generator=torch.Generator().manual_seed(4), seed=7, chain_ids=torch.arange(16), settings=cfg,
                      fused=False)
    seen = []
    energy = m.prior.energy
    m.prior.energy = lambda z, *a, **k: (seen.append(z), energy(z, *a, **k))[1]
    out = m.losses(x, chains, generator=torch.Generator().manual_seed(5), settings=cfg, step=0)
    del m.prior.energy
    if posterior == "q":
        joint = _grads(out["loss_joint"], tr.gparams + tr.eparams)
        # loss_g again with the same generator draw, differentiated alone
        m2 = m.losses(x, chains, generator=torch.Generator().manual_seed(5), settings=cfg, step=0)
        loss_g = m2["loss_joint"] - m.prior.energy(chains["z_neg"]).mean()
        ref_g = _grads(loss_g, tr.gparams)
        z_pos = seen[1].detach()  # losses scores z⁻ first, then z⁺ (from q)
    else:  # no joint loss: the trainer differentiates the two losses separately
        again = m.losses(x, chains, generator=torch.Generator().manual_seed(5), settings=cfg, step=0)
        joint = _grads(out["loss_g"], tr.gparams) + _grads(out["loss_e"], tr.eparams)
        ref_g = _grads(again["loss_g"], tr.gparams)
        z_pos = chains["z_pos"]
    ref_e = _grads(m.prior.energy(chains["z_neg"]).mean() - m.prior.energy(z_pos).mean(), tr.eparams)
    for a, b in zip(joint, ref_g + ref_e):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(float(g.abs().max()) > 0 for g in joint[len(tr.gparams):])


def test_checkpoint_holds_only_plain_data(runs):
    """Everything a checkpoint holds loads with torch.load(weights_only=True) (no pickled code)."""
    ck = torch.load(runs["ebm"] / "ckpt.pt", weights_only=True)
    assert ck["format"] == "hebm-checkpoint" and isinstance(ck["model_config"], dict)
    assert load_checkpoint(str(runs["ebm"] / "ckpt.pt"))["step"] == 3


def test_replica_exchange_in_training(tmp_path):
    """--temperatures: each negative sample is the cold chain of a ladder group (a one-rung ladder
    [1] is the plain chain exactly: the same ids, the same noise); a two-rung ladder trains on the
    reference and fused alike, logs its swap rate, and resumes with it."""
    from hebm.models.ebm import EBMModel

    tr = Trainer.from_settings(tiny("ebm", tmp_path / "plain", steps=1))
    model, cfg = tr.model, tr.cfg
    x = torch.zeros(5, model.cfg.x_dim)
    ids = torch.arange(10, 15)
    kw = dict(generator=None, seed=3, chain_ids=ids, fused=False)
    plain = EBMModel.chains(model, x, settings=cfg, **kw)["z_neg"]
    import dataclasses
    one = EBMModel.chains(model, x, settings=dataclasses.replace(cfg, temperatures=[1.0]), **kw)["z_neg"]
    assert torch.equal(one, plain)
    two = EBMModel.chains(model, x, settings=dataclasses.replace(cfg, temperatures=[0.5, 1.0], swap_every=1), **kw)
    assert two["z_neg"].shape == plain.shape and not torch.equal(two["z_neg"], plain)
    assert 0.0 <= float(two["swap_rate"]) <= 1.0
    runs = {}
    for fused in (False, True):
        d = tmp_path / f"ladder-{fused}"
        assert run(tiny("ebm", d, steps=2, temperatures=[0.3, 1.0], swap_every=2, fused=fused))["status"] == "ok"
        rows = [json.loads(line) for line in open(d / "metrics.jsonl")]
        rates = [r["swap_rate"] for r in rows if "swap_rate" in r]
        assert rates and all(0.0 <= r <= 1.0 for r in rates)
        runs[fused] = load_checkpoint(str(d / "ckpt.pt"))
    for k, v in runs[False]["model"].items():
        torch.testing.assert_close(runs[True]["model"][k], v, rtol=1e-4, atol=1e-5)
    res = Trainer.from_checkpoint(str(tmp_path / "ladder-False" / "ckpt.pt"), {"steps": 3}).train()
    assert res["status"] == "ok"
