"""The outlier scores (hebm.evaluation.scores): the terms against hand computations on a tiny model, the
family's formulas on known numbers, and the choice made on validation data alone."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hebm.config import ModelConfig, TrainConfig
from hebm.evaluation import scores
from hebm.models import build_model


def _tiny(prior="ebm"):
    torch.manual_seed(0)
    cfg = ModelConfig(prior=prior, arch="mlp", x_dim=16, image_shape=[1, 4, 4], latent_dims=[3, 2],
                      enc_hidden=[12], dec_hidden=[12, 12], prior_hidden=[6], energy_hidden=[5])
    return build_model(cfg).double().eval(), TrainConfig(langevin_steps=3, langevin_step_size=0.1)


def test_terms_against_a_hand_computation():
    """posterior_terms at one draw of q: log p(x|z) = −‖x − g(z)‖²/(2σ_x²) − D log(σ_x √2π), the
    per-layer log p_β and f_i, and log q — recomputed here from the networks directly."""
    m, tcfg = _tiny()
    x = torch.rand(5, 16, dtype=torch.float64) * 2 - 1
    t = scores.posterior_terms(m, tcfg, x, n_post=1, seed=3)
    post = m.posterior(x, torch.Generator().manual_seed(3 * 1000 + 0 + 0))
    z = post.z
    sx = m.sigma_x
    log_px = -((x - m.decoder(z)) ** 2).sum(1) / (2 * sx**2) - 16 * (math.log(sx) + 0.5 * math.log(2 * math.pi))
    z1, z2 = z[:, :3], z[:, 3:]
    top = torch.distributions.Normal(0.0, 1.0).log_prob(z2).sum(1)
    mu, sd = m.prior.conditional(0, z2)
    low = torch.distributions.Normal(mu, sd).log_prob(z1).sum(1)
    f = torch.stack([m.prior.energies[0](z1)[:, 0], m.prior.energies[1](z2)[:, 0]], 1)
    torch.testing.assert_close(t["log_px"], log_px.detach())
    torch.testing.assert_close(t["log_pb"], torch.stack([low, top], 1).detach())
    torch.testing.assert_close(t["tilt"], f.detach())
    torch.testing.assert_close(t["log_q"], post.log_q_layers.detach())


def test_hvae_form_at_k0_is_the_elbo_of_the_same_draw():
    m, tcfg = _tiny()
    x = torch.rand(6, 16, dtype=torch.float64) * 2 - 1
    h = scores.llr_hvae_oodd(m, x, seed=2, n_post=1)
    t = scores.posterior_terms(m, tcfg, x, n_post=1, seed=2)
    elbo = t["log_px"] + t["log_pb"].sum(1) + t["tilt"].sum(1) - t["log_q"].sum(1)
    torch.testing.assert_close(h[0], elbo)


def test_the_family_on_known_numbers():
    t = scores.ScoreTerms(log_px=torch.tensor([-10.0, -20.0]), log_pb=torch.tensor([[-1.0, -2.0], [-3.0, -4.0]]),
                          tilt=torch.tensor([[0.5, 0.25], [1.0, 2.0]]), log_q=torch.zeros(2, 2),
                          hvae={0: torch.tensor([5.0, 6.0]), 1: torch.tensor([4.0, 1.0])},
                          poster={0: torch.tensor([2.0, 3.0]), 1: torch.tensor([2.5, 0.0])})
    c = scores.candidates(2, tilted=True)
    assert c["L>0"](t).tolist() == [10 + 3 - 0.75, 20 + 7 - 3.0]
    assert c["L>0 w=10"](t).tolist() == [10 + 10 * (3 - 0.75), 20 + 10 * (7 - 3.0)]
    assert c["prior>1"](t).tolist() == [2 - 0.25, 4 - 2.0]
    assert c["energy>0"](t).tolist() == [-0.75, -3.0] and c["energy>1"](t).tolist() == [-0.25, -2.0]
    assert c["LLR>1[hvae]"](t).tolist() == [1.0, 5.0] and c["LLR>1[poster]"](t).tolist() == [-0.5, 3.0]
    assert "energy>0" not in scores.candidates(2, tilted=False)


def test_choose_reads_only_its_two_sets_and_picks_the_separating_score():
    """A candidate that separates normal from proxy perfectly is chosen; ties go to the earlier."""
    L = 2
    normal = scores.ScoreTerms(log_px=torch.zeros(20), log_pb=torch.zeros(20, L), tilt=torch.zeros(20, L),
                               log_q=torch.zeros(20, L), hvae={0: torch.zeros(20), 1: torch.zeros(20)},
                               poster={0: torch.zeros(20), 1: torch.zeros(20)})
    g = torch.Generator().manual_seed(0)
    noise = lambda: 100 * torch.randn(20, generator=g, dtype=torch.float64)  # noqa: E731  (a loud likelihood)
    normal.log_px = noise()
    proxy = scores.ScoreTerms(log_px=noise(), log_pb=torch.zeros(20, L), tilt=torch.zeros(20, L),
                              log_q=torch.zeros(20, L), hvae=dict(normal.hvae), poster=dict(normal.poster))
    normal.tilt = torch.zeros(20, L, dtype=torch.float64)
    proxy.tilt = -torch.ones(20, L, dtype=torch.float64)  # the proxies have low energy on every layer
    name, values = scores.choose(scores.candidates(L, tilted=True), normal, proxy)
    assert values[name] == pytest.approx(1.0)
    assert name == "prior>0"  # the first candidate (in the family's order) that reaches 1.0: −Σ(log_pb + tilt)
    assert values["L>0"] < 1.0  # the likelihood's noise blurs the full score


def test_the_choice_never_reads_the_held_out_split(monkeypatch):
    """anomaly_from_ckpt chooses its score before touching the test split: the test images are
    replaced by a guard that raises if read before the choice is made, and the run passes."""
    from hebm.data import RunData, VectorData
    from hebm.evaluation import detection

    m, tcfg = _tiny()
    tcfg = TrainConfig(holdout=1, langevin_steps=2, langevin_step_size=0.1)
    g = torch.Generator().manual_seed(0)
    mk = lambda n: VectorData(torch.rand(n, 16, generator=g, dtype=torch.float64) * 2 - 1,  # noqa: E731
                              torch.randint(0, 9, (n,), generator=g), (1, 4, 4), "toy")
    chosen = {"done": False}

    class GuardedTest:
        def __init__(self, real):
            self._real = real

        def __getattr__(self, name):
            if not chosen["done"]:
                raise AssertionError(f"the held-out split was read ({name}) before the score was chosen")
            return getattr(self._real, name)

        def __len__(self):
            return len(self._real)

    real_choose = scores.choose

    def choose_then_open(*a, **k):
        out = real_choose(*a, **k)
        chosen["done"] = True
        return out

    data = RunData(mk(30), GuardedTest(mk(20)), np.r_[np.zeros(12), np.ones(8)].astype(np.int64), mk(16))
    monkeypatch.setattr(detection, "load_model", lambda path, device: (m, None, tcfg, None))
    monkeypatch.setattr(detection, "run_data_for", lambda t: data)
    monkeypatch.setattr(detection, "choose", choose_then_open)
    d = detection.anomaly_from_ckpt("x", 1, n_post=1)
    assert chosen["done"] and d["score"] in d["test_all"] and d["chosen_on"].startswith("validation slice")
    # the choice is a function of the validation slice alone: other test images, the same choice
    chosen["done"] = False
    data.test = GuardedTest(mk(20))
    assert detection.anomaly_from_ckpt("x", 1, n_post=1)["score"] == d["score"]


def test_proxy_outliers_turn_and_flip():
    x = torch.arange(2 * 9, dtype=torch.float64).reshape(2, 9)
    p = scores.proxy_outliers(x, (1, 3, 3))
    assert torch.equal(p[0].reshape(3, 3), torch.rot90(x[0].reshape(3, 3), 1, (0, 1)))
    assert torch.equal(p[1].reshape(3, 3), torch.flip(x[1].reshape(3, 3), (0,)))
