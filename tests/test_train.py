"""hebm.train on tiny budgets: each prior type, --help, exact resume, NaN guard, bad checkpoints, fused == ref."""
import os
import subprocess
import sys

import pytest
import torch

from hebm.checkpoint import CheckpointError, load_checkpoint
from hebm.train import Trainer, default_config, load_model, main

TINY = dict(steps=3, batch_size=16, langevin_steps=3, quiet=True, enc_hidden=[32], dec_hidden=[32], prior_hidden=[16],
            energy_hidden=[16, 16], latent_dims=[6, 4, 2], ckpt_every=1, log_every=1, n_samples=8)


def tiny(prior, tmp, **kw):
    return default_config(prior, out=str(tmp), **{**TINY, **kw})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for p in ("gaussian", "ebm"):
        Trainer(tiny(p, root / p)).train()
        out[p] = root / p
    Trainer(tiny("diffusion", root / "diffusion", init=str(root / "ebm" / "ckpt.pt"))).train()
    out["diffusion"] = root / "diffusion"
    return out


@pytest.mark.parametrize("prior", ["gaussian", "ebm", "diffusion"])
def test_outputs(runs, prior):
    d = runs[prior]
    for f in ("config.json", "ckpt.pt", "samples.png", "recon.png", "metrics.jsonl"):
        assert (d / f).is_file(), f
    model, cfg, ck = load_model(str(d / "ckpt.pt"))
    assert ck["step"] == 3 and cfg["prior"] == prior and model.kind == prior


def test_cli_runs_and_help(tmp_path):
    rc = main(["--prior", "gaussian", "--steps", "2", "--batch-size", "16", "--latent-dims", "4,2", "--out", str(tmp_path), "--quiet"])
    assert rc == 0 and (tmp_path / "ckpt.pt").is_file()
    for mod in ("hebm.train", "hebm.sample", "hebm.evaluate"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout


def test_mle_posterior_langevin(tmp_path):
    res = Trainer(tiny("ebm", tmp_path, posterior="langevin", posterior_steps=3, steps=2)).train()
    assert res["status"] == "ok"


@pytest.mark.parametrize("prior", ["ebm", "gaussian"])
def test_resume_equals_uninterrupted(tmp_path, prior):
    full = Trainer(tiny(prior, tmp_path / "full", steps=6))
    full.train()
    part = Trainer(tiny(prior, tmp_path / "part", steps=3))
    part.train()
    resumed = Trainer(dict(prior=prior, resume=str(tmp_path / "part" / "ckpt.pt"), steps=6, quiet=True))
    resumed.train()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_nan_guard_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    tr = Trainer(tiny("ebm", tmp_path, steps=5))
    orig = tr._batch

    def poisoned(step):
        x = orig(step)
        return x * float("nan") if step == 2 else x

    monkeypatch.setattr(tr, "_batch", poisoned)
    res = tr.train()
    assert res["status"] == "nonfinite" and res["step"] == 2
    assert "--langevin-step-size" in res["message"] and "ckpt.pt" in res["message"]
    model, cfg, ck = load_model(str(tmp_path / "ckpt.pt"))
    assert ck["step"] == 2
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_bad_checkpoints(tmp_path, runs):
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(open(runs["gaussian"] / "ckpt.pt", "rb").read()[:300])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(bad))
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(str(tmp_path / "empty.pt"))
    torch.save({"a": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a hebm checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="settings differ"):
        Trainer(dict(prior="gaussian", resume=str(runs["gaussian"] / "ckpt.pt"), latent_dims=[8, 4], quiet=True))
    ck = torch.load(runs["gaussian"] / "ckpt.pt", weights_only=False)
    ck["model_config"]["latent_dims"] = [5, 4, 2]
    torch.save(ck, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(str(tmp_path / "mismatch.pt"))
    rc = main(["--prior", "gaussian", "--resume", str(bad), "--quiet"])
    assert rc == 2


@pytest.mark.parametrize("prior", ["ebm", "diffusion"])
def test_fused_equals_ref(tmp_path, runs, prior):
    import warnings

    extra = dict(init=str(runs["ebm"] / "ckpt.pt")) if prior == "diffusion" else {}
    a = Trainer(tiny(prior, tmp_path / "ref", steps=2, **extra))
    a.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = Trainer(tiny(prior, tmp_path / "fused", steps=2, fused=True, **extra))
        b.train()
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("posterior", ["q", "langevin"])
def test_ebm_joint_backward_equals_the_two_losses(tmp_path, posterior):
    """train_step takes one backward of loss_g + mean f(z⁻); its gradients must equal the
    scheme's two losses differentiated separately: loss_g in the generator parameters and
    loss_e = mean f(z⁻) − mean f(z⁺) (z⁺ detached) in the energy parameters."""
    from hebm.train import _grads

    tr = Trainer(tiny("ebm", tmp_path, posterior=posterior, posterior_steps=3))
    m, x = tr.model, tr.x_train[:16]
    seen = []
    energy = m.prior.energy
    m.prior.energy = lambda z, *a, **k: (seen.append(z), energy(z, *a, **k))[1]
    kw = dict(lseed=7, chain_ids=torch.arange(16), n_steps=3, step_size=0.3, fused=False, posterior=posterior,
              post_seed=3, post_steps=3, post_step_size=0.1)
    out = m.loss_ebm(x, torch.Generator().manual_seed(5), **kw)
    del m.prior.energy
    ref_g = [torch.zeros_like(p) if g is None else g for p, g in
             zip(tr.gparams, torch.autograd.grad(out["loss_g"], tr.gparams, retain_graph=True, allow_unused=True))]
    joint = _grads(out["loss_joint"], tr.gparams + tr.eparams)
    # the last two energy calls of loss_ebm (the reference samplers call it before): q scores z⁺
    # inside loss_g first; the MLE scheme scores z⁻ first
    z_pos, z_neg = (seen[-2], seen[-1]) if posterior == "q" else (seen[-1], seen[-2])
    z_pos, z_neg = z_pos.detach(), z_neg.detach()
    ref_e = _grads(m.prior.energy(z_neg).mean() - m.prior.energy(z_pos).mean(), tr.eparams)
    for a, b in zip(joint, ref_g + ref_e):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert any(float(g.abs().max()) > 0 for g in joint[len(tr.gparams):])
