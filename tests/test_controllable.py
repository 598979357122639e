"""Controllable synthesis (hebm.models.attributes, hebm.models.controllable): the attribute definitions on
synthetic images with known answers, the merged energies against F + G, conditional chains
(batch-independent; the parity matrix runs them on every backend), a tiny fine-tune end to end,
and bad input."""
import json

import numpy as np
import pytest
import torch

import hebm
from hebm import evaluate, sample
from hebm.data import VectorData
from hebm.models.attributes import ATTRIBUTES, ink_mass, labels, second_moment_slant, thickness_labels
from hebm.models.controllable import (AttributeHeads, combination_index, combinations, conditional_prior, draw_values,
                                      parse_fixed, parse_layers)
from hebm.prior.hierarchical import HierarchicalPrior
from hebm.training.trainer import Trainer

H = W = 12


def image(points, width=0):
    """A flat [-1, 1] image with ink 1 at the given (row, col) points (and ``width`` neighbours)."""
    im = torch.full((H, W), -1.0)
    for r, c in points:
        for dc in range(-width, width + 1):
            if 0 <= c + dc < W:
                im[r, c + dc] = 1.0
    return im.reshape(1, -1)


def line(k, c0=5.5, width=0):
    """A stroke with column c = c0 + k·(r_mid − r): leaning right (top to the right) for k > 0."""
    return image([(r, int(round(c0 + k * (5.5 - r)))) for r in range(1, 11)], width)


def test_slant_known_answers():
    """The second-moment slant of a sheared line is its shear: −μ₁₁/μ₀₂ = k for c = c0 + k(r̄ − r)
    (continuous coordinates, so exactly k); rounded to pixels, within the rounding."""
    r = torch.arange(1, 11, dtype=torch.float64)
    for k in (0.5, -0.5, 0.25, 0.0):
        c = 5.5 + k * (5.5 - r)
        # the exact answer on the pixel grid: weights 1 at (r, round(c))
        cc = torch.round(c)
        want = -(((cc - cc.mean()) * (r - r.mean())).sum() / ((r - r.mean()) ** 2).sum())
        got = second_moment_slant(line(k), (1, H, W))
        assert torch.allclose(got, want.reshape(1), atol=1e-12), (k, got, want)
        assert abs(float(want) - k) <= 0.11
    x = torch.cat([line(0.5), line(-0.5), line(0.0), image([])])
    y = torch.zeros(4, dtype=torch.long)
    got = ATTRIBUTES["slant"].compute(x, y, (1, H, W))
    assert got.tolist() == [1, 0, 0, 0]  # "/" leans right; "\" and "|" do not; an empty image has slant 0


def test_thickness_is_relative_to_the_class_median():
    thin, thick = line(0.3, width=0), line(0.3, width=1)
    assert float(ink_mass(thin)) == 10.0 and float(ink_mass(thick)) == 30.0
    # class 0: masses 10, 30, 30, 10, 20 (median 20) — class 1: masses 30, 50, 70 (median 50)
    x = torch.cat([thin, thick, thick, thin, line(0.3, width=0) * 0 + image([(r, c) for r in range(1, 11)
                                                                             for c in (4, 5)]),
                   thick, image([(r, c) for r in range(1, 11) for c in range(3, 8)]),
                   image([(r, c) for r in range(1, 11) for c in range(2, 9)])])
    y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1])
    assert ink_mass(x).tolist() == [10, 30, 30, 10, 20, 30, 50, 70]
    assert thickness_labels(x, y).tolist() == [0, 1, 1, 0, 0, 0, 0, 1]
    data = VectorData(x, y, (1, H, W), "synthetic")
    assert labels(data, ["digit", "thickness"]).tolist() == [[int(a), b] for a, b in zip(y, [0, 1, 1, 0, 0, 0, 0, 1])]
    with pytest.raises(ValueError, match="unknown attribute 'colour'"):
        labels(data, ["digit", "colour"])


def test_combinations_and_layers():
    nv = [10, 2, 2]
    allc = combinations(nv)
    assert allc.shape == (40, 3) and torch.equal(combination_index(allc, nv), torch.arange(40))
    assert parse_layers(["digit", "slant"], ["slant:2"], 3, {"digit": 3, "slant": 1}) == [2, 1]
    with pytest.raises(ValueError, match="layers 1..3"):
        parse_layers(["digit"], ["digit:4"], 3, {})
    assert parse_fixed(["digit=3"], ["digit", "slant"]) == {"digit": 3}
    for bad, msg in [("digit=10", "0..9"), ("thickness=1", "fine-tuned for digit, slant"), ("digit", "NAME=VALUE"),
                     ("digit=1.5", "0..9")]:
        with pytest.raises(ValueError, match=msg):
            parse_fixed([bad], ["digit", "slant"])
    lab = torch.tensor([[1, 0], [1, 1], [2, 1]])
    v = draw_values(lab, ["digit", "slant"], {"digit": 1}, 50, seed=0)
    assert (v[:, 0] == 1).all() and set(v[:, 1].tolist()) == {0, 1}
    with pytest.raises(ValueError, match="no training image has digit=2, slant=0"):
        draw_values(lab, ["digit", "slant"], {"digit": 2, "slant": 0}, 5, seed=0)


@pytest.mark.parametrize("with_energies,spectral", [(True, True), (True, False), (False, False)])
def test_merged_energies_are_f_plus_g(with_energies, spectral):
    """One MLP per layer computes f_i(z_i) + g_i(z_i, y) at the row of y's combination: F + G to
    float64 rounding, with a spectrally normalised F, without F (a gaussian run), and on a layer
    without heads."""
    torch.manual_seed(0)
    prior = HierarchicalPrior([5, 3, 2], prior_hidden=[16], energy_hidden=[8, 8] if with_energies else None,
                              spectral_norm=spectral).double()
    heads = AttributeHeads([5, 3, 2], ["digit", "thickness", "slant"], [2, 0, 0], [6, 4], "gelu").double()
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_()
    cp = conditional_prior(prior, heads)
    z = torch.randn(64, 10, dtype=torch.float64)
    y = torch.stack([torch.randint(0, n, (64,)) for n in heads.n_values], 1)
    F = prior.energy(z) if with_energies else 0
    want = F + heads(z, y)
    got = cp.energy(z, combination_index(y, heads.n_values))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert heads.terms(z, y)[:, 1].abs().max() == 0  # z_2 carries no attribute


def test_conditional_chains_are_batch_independent():
    """A chain's result depends on its own attribute values and chain id only (the fused CPU
    kernel when built, else the reference): mixed values in one batch = each chain alone."""
    torch.manual_seed(1)
    prior = HierarchicalPrior([5, 3, 2], prior_hidden=[16], energy_hidden=[8, 8])
    heads = AttributeHeads([5, 3, 2], ["digit", "slant"], [2, 0], [8, 8], "gelu")
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_()
    cp = conditional_prior(prior, heads)
    y = torch.tensor([[3, 0], [7, 1], [3, 1], [0, 0]])
    t = combination_index(y, heads.n_values)
    u = hebm.initial_noise(5, 4, 10)
    both = hebm.langevin_fused(cp, u, n_steps=15, step_size=0.2, seed=9, t=t)
    for b in range(4):
        one = hebm.langevin_fused(cp, u[b: b + 1], n_steps=15, step_size=0.2, seed=9, t=t[b: b + 1],
                                  chain_ids=torch.tensor([b]))
        torch.testing.assert_close(one[0], both[b], rtol=1e-6, atol=1e-6)
    want = hebm.langevin_ref(cp, u, n_steps=15, step_size=0.2, seed=9, t=t)
    torch.testing.assert_close(both, want, rtol=1e-4, atol=1e-5)


TINY = dict(steps=3, batch_size=16, langevin_steps=3, quiet=True, enc_hidden=[32], dec_hidden=[32], prior_hidden=[16],
            energy_hidden=[16, 16], latent_dims=[6, 4, 2], n_samples=8, eval_every=0)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctrl")
    assert Trainer.from_settings(dict(prior="ebm", out=str(root / "e"), **TINY)).train()["status"] == "ok"
    res = Trainer.from_settings(dict(init=str(root / "e" / "ckpt.pt"), attributes=["digit", "thickness", "slant"],
                                     attribute_layers=["slant:2"], out=str(root / "c"), steps=4, batch_size=16,
                                     langevin_steps=3, quiet=True, eval_every=0, lr_ebm=1e-2)).train()
    assert res["status"] == "ok"
    return root


def test_fine_tune_end_to_end(tuned, tmp_path, capsys):
    root = tuned
    s1 = torch.load(str(root / "e" / "ckpt.pt"), weights_only=True)
    s2 = torch.load(str(root / "c" / "ckpt.pt"), weights_only=True)
    assert s2["model_config"]["attributes"] == ["digit", "thickness", "slant"] and s2["model_config"]["prior"] == "ebm"
    for k, v in s1["model"].items():  # the trained run is frozen bit for bit, spectral-norm buffers included
        assert torch.equal(s2["model"][k], v), k
    assert any(k.startswith("heads.") for k in s2["model"])
    out = tmp_path / "s"
    assert sample.main(["--ckpt", str(root / "c" / "ckpt.pt"), "--n", "6", "--attribute", "digit=3", "--save",
                        str(out), "--out", str(tmp_path / "grid")]) == 0
    assert len(list(out.glob("*.png"))) == 6
    j = tmp_path / "c.json"
    assert evaluate.main(["--ckpt", str(root / "c" / "ckpt.pt"), "--json", str(j), "controllable", "--n", "40",
                          "--seeds", "1", "--figure", str(tmp_path / "f.png")]) == 0
    r = json.loads(j.read_text())
    assert set(r["accuracy"]) == {"digit", "thickness", "slant"} and 0 <= r["joint_accuracy"] <= 1
    # the ladder generator's default: the digit on the top layer (thickness on z_1; slant was asked on z_2)
    assert r["attribute_layers"] == [3, 1, 2] and {"conditional", "unconditional", "per_value"} <= set(r["fd"])
    assert set(r["ignore_y"]) == {"digit", "thickness", "slant", "joint"} and set(r["formula"]) == {"thickness", "slant"}
    assert r["chance"]["joint"] <= min(r["chance"][k] for k in ("digit", "thickness", "slant"))
    assert (tmp_path / "f.png").is_file() and "thickness on z_1, slant on z_2" in (tmp_path / "f.txt").read_text()
    # the model's Python API: values of the wrong shape or range are named
    from hebm.models import load_model

    model = load_model(str(root / "c" / "ckpt.pt"))[0]
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        model.sample_latents_given(torch.zeros(4, 2, dtype=torch.long), seed=0, n_steps=1, step_size=0.1)
    with pytest.raises(ValueError, match="thickness takes values 0..1"):
        model.sample_latents_given(torch.tensor([[1, 2, 0]]), seed=0, n_steps=1, step_size=0.1)


def test_bad_input_is_one_line(tuned, tmp_path, capsys):
    root = tuned
    c, e = str(root / "c" / "ckpt.pt"), str(root / "e" / "ckpt.pt")
    cases = [
        (sample.main, ["--ckpt", c, "--attribute", "colour=1"], "unknown attribute 'colour'"),
        (sample.main, ["--ckpt", c, "--attribute", "digit=12"], "digit takes the values 0..9"),
        (sample.main, ["--ckpt", e, "--attribute", "digit=1"], "has no attribute heads"),
        (evaluate.main, ["--ckpt", e, "controllable"], "has no attribute heads"),
    ]
    from hebm.train import main as train_main

    cases += [(train_main, ["--init", e, "--attributes", "digit,colour", "--out", str(tmp_path / "x")],
               "unknown attribute 'colour'"),
              (train_main, ["--attributes", "digit", "--out", str(tmp_path / "y")], "pass --init"),
              (train_main, ["--init", c, "--attributes", "digit", "--out", str(tmp_path / "z")],
               "already has attribute heads"),
              (train_main, ["--init", e, "--attributes", "digit", "--latent-dims", "3,3", "--out", str(tmp_path / "w")],
               "keeps the trained run's model")]
    for main, argv, msg in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, (argv, err)
