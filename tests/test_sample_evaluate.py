"""hebm.sample and hebm.evaluate on tiny checkpoints."""
import json

import numpy as np
import pytest
import torch

from hebm import evaluate, sample
from hebm.evaluation import metrics
from hebm.training.trainer import Trainer

TINY = dict(steps=3, batch_size=16, langevin_steps=3, quiet=True, enc_hidden=[32], dec_hidden=[32], prior_hidden=[16],
            energy_hidden=[16, 16], latent_dims=[6, 4, 2], n_samples=8, eval_every=0)


def train(prior, out, **kw):
    return Trainer.from_settings(dict(prior=prior, out=str(out), **{**TINY, **kw})).train()


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("se")
    out = {}
    train("gaussian", root / "g", holdout=1)
    train("ebm", root / "e")
    train("diffusion", root / "d", init=str(root / "g" / "ckpt.pt"), holdout=1)
    for k, d in (("gaussian", "g"), ("ebm", "e"), ("diffusion", "d")):
        out[k] = str(root / d / "ckpt.pt")
    return out, root


@pytest.mark.parametrize("prior", ["gaussian", "ebm", "diffusion"])
def test_sample_cli(ckpts, prior, tmp_path):
    c, _ = ckpts
    args = ["--ckpt", c[prior], "--n", "8", "--hierarchical", "--ncol", "4", "--out", str(tmp_path / "s")]
    if prior != "gaussian":
        args += ["--long-run", "6", "--nchains", "3"]
    assert sample.main(args) == 0
    assert (tmp_path / "s.png").is_file() and (tmp_path / "s_hierarchical.png").is_file()
    if prior != "gaussian":
        assert (tmp_path / "s_longrun_energy.png").is_file() and (tmp_path / "s_longrun_chain.png").is_file()
        rep = json.loads((tmp_path / "s_longrun.json").read_text())
        assert len(rep["inside_fraction"]) == len(rep["mean_energy"]) == len(rep["steps"])
        assert isinstance(rep["stays_in_data_region"], bool)
    if prior == "diffusion":
        assert (tmp_path / "s_levels.png").is_file()


@pytest.mark.parametrize("prior", ["ebm", "diffusion"])
def test_sample_long_run_with_the_metropolis_test(ckpts, prior, tmp_path, capsys):
    c, _ = ckpts
    out = tmp_path / "m"
    assert sample.main(["--ckpt", c[prior], "--n", "4", "--long-run", "6", "--nchains", "3", "--metropolis",
                        "--out", str(out)]) == 0
    rep = json.loads((tmp_path / "m_longrun.json").read_text())
    assert rep["metropolis"] is True and len(rep["acceptance"]) == len(rep["steps"])
    assert all(0.0 <= a <= 1.0 for a in rep["acceptance"])
    assert "MALA acceptance" in capsys.readouterr().out
    assert sample.main(["--ckpt", c[prior], "--n", "4", "--metropolis", "--out", str(tmp_path / "x")]) == 2
    assert "--metropolis adjusts the long-run chain: pass --long-run K" in capsys.readouterr().err


def test_sample_gaussian_long_run_refused(ckpts, tmp_path):
    c, _ = ckpts
    assert sample.main(["--ckpt", c["gaussian"], "--n", "4", "--long-run", "5", "--out", str(tmp_path / "s")]) == 2


@pytest.mark.parametrize("prior", ["gaussian", "diffusion"])
def test_anomaly_from_ckpt(ckpts, prior, tmp_path):
    c, _ = ckpts
    j = tmp_path / "a.json"
    assert evaluate.main(["--ckpt", c[prior], "--json", str(j), "anomaly", "--holdout", "1", "--n-post", "1"]) == 0
    d = json.loads(j.read_text())["auprc"]["1"]
    assert 0 <= d["auprc"] <= 1 and d["auprc"] == d["test_all"][d["score"]]
    assert d["chosen_on"].startswith("validation slice") and set(d["validation"]) == set(d["test_all"])


def test_anomaly_train_protocol(tmp_path, capsys):
    """The protocol end to end, then rerun: a finished run is reused (not retrained), a run cut
    short (its checkpoint set back one step, as after a SIGKILL) is resumed and scores exactly as
    before, and a runs directory trained with other settings is refused rather than overwritten."""
    import shutil

    j = tmp_path / "a.json"
    run = tmp_path / "r" / "ebm-holdout4-seed0"
    cmd = ["--json", str(j), "anomaly", "--train", "--prior", "ebm", "--holdout", "4", "--seeds", "1",
           "--steps", "3", "--set", "batch_size=16", "--set", "langevin_steps=2", "--set", "eval_every=0",
           "--set", "ckpt_every=1", "--runs-dir", str(tmp_path / "r"), "--n-post", "1"]
    assert evaluate.main(cmd) == 0
    t = json.loads(j.read_text())["table"]["4"]
    assert len(t["values"]) == 1 and 0 <= t["mean"] <= 1
    first = t["values"][0]
    mtime = (run / "ckpt.pt").stat().st_mtime_ns
    capsys.readouterr()

    assert evaluate.main(cmd) == 0
    assert "finished run reused" in capsys.readouterr().out
    assert (run / "ckpt.pt").stat().st_mtime_ns == mtime
    assert json.loads(j.read_text())["table"]["4"]["values"] == [first]

    shutil.copy(run / "ckpt.prev.pt", run / "ckpt.pt")  # back to step 2 of 3
    (run / "summary.json").unlink()
    assert evaluate.main(cmd) == 0
    assert "resuming from step 2" in capsys.readouterr().out
    assert json.loads(j.read_text())["table"]["4"]["values"] == [first]

    other = [c if c != "langevin_steps=2" else "langevin_steps=3" for c in cmd]
    assert evaluate.main(other) == 2
    err = capsys.readouterr().err
    assert "--langevin-steps 2 there, 3 asked" in err and "--runs-dir" in err and "Traceback" not in err
    assert (run / "ckpt.pt").is_file()


def test_anomaly_two_stage_protocol_and_score_terms(tmp_path):
    """``--two-stage``: each ebm model of the protocol trains its energies on the gaussian run of
    the same digit and seed (``--stage1-runs``); the score's terms are reported, and they add up:
    without the tilt the score is the gaussian stage 1's own (the same generator)."""
    from hebm.checkpoint import load_checkpoint

    common = ["anomaly", "--train", "--holdout", "4", "--seeds", "1", "--steps", "3", "--set", "batch_size=16",
              "--set", "langevin_steps=2", "--set", "eval_every=0", "--n-post", "1"]
    g = tmp_path / "g"
    assert evaluate.main(["--json", str(tmp_path / "g.json")] + common + ["--prior", "gaussian", "--runs-dir", str(g)]) == 0
    j = tmp_path / "e.json"
    assert evaluate.main(["--json", str(j)] + common + ["--prior", "ebm", "--two-stage", "--stage1-runs", str(g),
                                                        "--runs-dir", str(tmp_path / "e")]) == 0
    res = json.loads(j.read_text())
    assert res["two_stage"] is True
    d = res["table"]["4"]["details"][0]
    ck = load_checkpoint(str(tmp_path / "e" / "ebm-holdout4-seed0" / "ckpt.pt"))
    assert ck["train_config"]["init"] == str(g / "gaussian-holdout4-seed0" / "ckpt.pt") and ck["model_config"]["two_stage"]
    gauss = json.loads((tmp_path / "g.json").read_text())["table"]["4"]["details"][0]["auprc_L0"]
    assert d["auprc_base"] == pytest.approx(gauss, abs=1e-12)  # same generator, same q draws, no tilt
    assert {"log_px", "log_p_beta", "tilt", "tilt_1", "tilt_3"} <= set(d["spread"]) and d["spread"]["tilt"] >= 0
    assert evaluate.main(["anomaly", "--train", "--holdout", "4", "--prior", "gaussian", "--two-stage"]) == 2


@pytest.mark.parametrize("prior", ["ebm", "diffusion"])
def test_ood_and_fd(ckpts, prior, tmp_path):
    c, _ = ckpts
    j = tmp_path / "o.json"
    assert evaluate.main(["--ckpt", c[prior], "--json", str(j), "ood", "--ood-data", "photos"]) == 0
    res = json.loads(j.read_text())
    rows = res["rows"]
    assert {"L>0", "LLR>1[hvae]", "LLR>2[poster]", "energy>2", "prior>1"} <= {r["score"] for r in rows}
    assert all(0 <= r["auroc"] <= 1 for r in rows) and sum(r["chosen"] for r in rows) == 1
    assert res["chosen_on"].startswith("validation slice")
    assert evaluate.main(["--ckpt", c[prior], "--json", str(j), "fd", "--n", "100", "--seeds", "2"]) == 0
    r = json.loads(j.read_text())
    assert np.isfinite(r["fd"]) and r["fd"] >= 0 and len(r["fd_values"]) == 2 and r["n_train"] > 1000


def test_metrics_match_sklearn_definitions():
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])
    m = metrics.ood_metrics(labels, scores)
    assert abs(m["auroc"] - 8 / 9) < 1e-9
    assert 0 <= metrics.auprc(labels, scores) <= 1
    f = np.random.RandomState(0).randn(200, 4)
    assert abs(metrics.frechet_distance(f, f)) < 1e-6


def test_bad_ckpt_is_clear(tmp_path, capsys):
    p = tmp_path / "x.pt"
    p.write_bytes(b"garbage")
    assert evaluate.main(["--ckpt", str(p), "fd"]) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("prior", ["gaussian", "ebm"])
def test_summary(ckpts, prior, tmp_path):
    c, _ = ckpts
    j = tmp_path / "s.json"
    assert evaluate.main(["--ckpt", c[prior], "--json", str(j), "summary", "--n", "200"]) == 0
    r = json.loads(j.read_text())
    assert len(r["prior_hole_gaussian"]) == len(r["prior_hole_model"]) == len(r["active_units"]) == 3
    assert ("f_gap" in r) == (prior == "ebm")


def test_latents_figure(tmp_path):
    train("ebm", tmp_path / "r", classes=[0, 1], latent_dims=[2, 2])
    assert evaluate.main(["--ckpt", str(tmp_path / "r" / "ckpt.pt"), "latents", "--figure", str(tmp_path / "l.png")]) == 0
    assert (tmp_path / "l.png").is_file()


@pytest.mark.parametrize("prior", ["ebm", "diffusion"])
def test_training_chains_take_the_metropolis_test(prior, tmp_path, monkeypatch):
    """``--metropolis`` reaches the prior chains of training (every sampler call of a step)."""
    import hebm.models.base as models
    seen = []
    real = models.run_langevin
    monkeypatch.setattr(models, "run_langevin", lambda *a, **k: seen.append(k.get("metropolis")) or real(*a, **k))
    extra = {}
    if prior == "diffusion":
        train("gaussian", tmp_path / "g")
        extra = dict(init=str(tmp_path / "g" / "ckpt.pt"))
    del seen[:]
    train(prior, tmp_path / "r", metropolis=True, **extra)
    steps = TINY["steps"]  # one prior chain per training step; the end-of-run sample grid follows
    assert len(seen) > steps and seen[:steps] == [True] * steps


def test_hierarchy_task_end_to_end(ckpts, tmp_path):
    """``evaluate hierarchy`` on a tiny ladder run (the default generator): one number per layer, in
    range, the probe's chance level the held-out frequency of the training split's majority class
    (computed here from the run's own split), and the bar applied to the rates it reports."""
    from hebm.data import run_data_for
    from hebm.evaluation.hierarchy import is_hierarchical
    from hebm.models import load_model

    c, _ = ckpts
    _, mcfg, tcfg, _ = load_model(c["ebm"], "cpu")
    assert mcfg.generator == "ladder"
    j = tmp_path / "h.json"
    assert evaluate.main(["--ckpt", c["ebm"], "--json", str(j), "hierarchy", "--n", "200"]) == 0
    r = json.loads(j.read_text())
    for key in ("class_change", "probe", "kl_per_layer", "active_units"):
        assert len(r[key]) == 3, key
    assert all(0.0 <= v <= 1.0 for v in r["class_change"] + r["probe"])
    data = run_data_for(tcfg)
    majority = np.bincount(data.train.y.numpy()).argmax()
    assert r["probe_chance"] == pytest.approx(float(np.mean(data.test.y.numpy() == majority)))
    assert r["hierarchical"] == is_hierarchical(r["class_change"])


def test_sample_long_run_with_replica_exchange(ckpts, tmp_path, capsys):
    """--temperatures: the long run's chains are the cold chains of ladders — a one-rung ladder [1]
    is the plain run number for number; a two-rung ladder reports its swap rate and round trips,
    with --diagnostics (draws recorded on the ladder) and --fused alike (the same numbers)."""
    c, _ = ckpts
    base = ["--ckpt", c["ebm"], "--n", "4", "--long-run", "12", "--nchains", "3"]
    reps = {}
    for name, extra in (("plain", []), ("one", ["--temperatures", "1"]),
                        ("ref", ["--temperatures", "0.3,1", "--swap-every", "2", "--diagnostics"]),
                        ("fused", ["--temperatures", "0.3,1", "--swap-every", "2", "--diagnostics", "--fused"])):
        assert sample.main(base + extra + ["--out", str(tmp_path / name)]) == 0, capsys.readouterr().err
        reps[name] = json.loads((tmp_path / f"{name}_longrun.json").read_text())
    for k in ("log_density_first", "log_density_last", "mean_energy"):
        assert reps["one"][k] == reps["plain"][k], k
    pt = reps["ref"]["replica_exchange"]
    assert pt["temperatures"] == [0.3, 1.0] and pt["swap_every"] == 2 and len(pt["swap_rate_per_pair"]) == 1
    assert 0.0 <= pt["swap_rate_per_pair"][0] <= 1.0 and pt["swap_attempts_per_pair"] == [3 * 3]  # (deo, R = 2: the pair proposes in the even rounds of 6)
    assert "diagnostics" in reps["ref"] and "replica exchange, ladder [0.3, 1.0]" in capsys.readouterr().out
    assert reps["fused"]["replica_exchange"]["swap_rate_per_pair"] == pytest.approx(pt["swap_rate_per_pair"])
    assert reps["fused"]["log_density_last"] == pytest.approx(reps["ref"]["log_density_last"], rel=1e-4)
    for bad, msg in ((["--temperatures", "0.3,1"], "pass --long-run K too"),
                     (["--long-run", "6", "--temperatures", "1,0.3"], "--temperatures must be increasing"),
                     (["--long-run", "6", "--swap-every", "2"], "--swap-every belongs to --temperatures")):
        assert sample.main(["--ckpt", c["ebm"], "--n", "4", *bad, "--out", str(tmp_path / "bad")]) == 2
        assert msg in capsys.readouterr().err
    assert sample.main(["--ckpt", c["diffusion"], "--n", "4", "--long-run", "6", "--temperatures", "0.5,1",
                        "--out", str(tmp_path / "bad")]) == 2
    assert "the diffusion's long run changes target" in capsys.readouterr().err
