"""The ladder generator (every latent layer reaches the image, each at its own scale) and the
hierarchy measures, on cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hebm.config import ModelConfig
from hebm.evaluation.hierarchy import is_hierarchical, linear_probe, resample_class_change
from hebm.models import build_model
from hebm.models.networks import LadderConvDecoder, LadderMLPDecoder, ladder_entries


# ------------------------------------------------------------------------------ the ladder generator
def test_ladder_entries_top_coarsest_bottom_finest():
    assert ladder_entries(3, 3) == [2, 1, 0]  # z_1 at the last (finest) stage, z_3 at the first
    assert ladder_entries(2, 3) == [2, 0]
    assert ladder_entries(5, 3) == [2, 2, 1, 0, 0]
    assert ladder_entries(1, 3) == [0]
    e = ladder_entries(4, 6)
    assert e[0] == 5 and e[-1] == 0 and all(a >= b for a, b in zip(e, e[1:]))


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_ladder_conv_shapes_scales_and_gradients(shape):
    """Every layer gets a gradient, and each enters at its own resolution: z_3 as an H/4 map, z_2 as
    an H/2 map, z_1 as a per-channel scale and shift of the H-sized map (FiLM)."""
    C, H, W = shape
    dims = [6, 4, 2]
    dec = LadderConvDecoder(dims, shape, 8, "gelu")
    assert [dec.maps[e][1] for e in dec.entry] == [H, H // 2, H // 4] and dec.film == [True, False, False]
    assert [m.out_features for m in dec.inject] == [2 * dec.maps[2][0], dec.maps[1][0] * (H // 2) ** 2,
                                                     dec.maps[0][0] * (H // 4) ** 2]
    z = torch.randn(4, sum(dims), requires_grad=True)
    y = dec(z)
    assert y.shape == (4, C * H * W) and float(y.detach().abs().max()) <= 1.0
    y.sum().backward()
    for i, (a, b) in enumerate(zip(np.cumsum([0] + dims[:-1]), np.cumsum(dims))):
        assert float(z.grad[:, a:b].abs().sum()) > 0, f"z_{i + 1} does not reach the image"
    for name, p in dec.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_ladder_conv_z1_is_a_per_channel_modulation():
    """The finest map after z_1 is, channel by channel, an affine function of the map before it
    (one scale and one shift per channel over every pixel): z_1 cannot paint a spatial pattern."""
    torch.manual_seed(0)
    dec = LadderConvDecoder([5, 3, 2], (1, 28, 28), 4, "gelu")
    seen = {}
    dec.act.register_forward_hook(lambda mod, inp, out: seen.setdefault(len(seen), inp[0].detach()))
    ups = {}
    dec.ups[1].register_forward_hook(lambda mod, inp, out: ups.setdefault("pre", out.detach()))
    dec(torch.randn(3, 10))
    pre, post = ups["pre"], seen[2]  # the finest map before and after z_1's modulation
    for b in range(3):
        for ch in range(pre.shape[1]):
            x, y = pre[b, ch].flatten().double(), post[b, ch].flatten().double()
            A = torch.stack([x, torch.ones_like(x)], 1)
            coef = torch.linalg.lstsq(A, y[:, None]).solution
            assert float((A @ coef - y[:, None]).abs().max()) < 1e-5


def test_ladder_mlp_depth_of_each_layer():
    """The top layer passes every Linear, z_1 only the last: z_1's effect on the output is affine
    before the tanh (its second derivative in z_1 through the pre-activation is zero), z_3's is not."""
    torch.manual_seed(0)
    dims = [3, 2, 2]
    dec = LadderMLPDecoder(dims, [16, 16], 5, "gelu").double()
    assert dec.entry == [2, 1, 0]
    z = torch.randn(1, 7, dtype=torch.float64)

    def pre(zz):  # the output pre-activation (atanh of the output)
        return torch.atanh(dec(zz)).sum()

    H = torch.autograd.functional.hessian(pre, z)[0, :, 0, :]
    assert float(H[:3, :3].abs().max()) < 1e-8  # z_1: affine into the output layer
    assert float(H[5:, 5:].abs().max()) > 1e-4  # z_3: through two nonlinear layers


def _tiny_model(generator="ladder", dims=(4, 3, 2)):
    cfg = ModelConfig(prior="gaussian", arch="mlp", generator=generator, x_dim=10, latent_dims=list(dims),
                      enc_hidden=[16], dec_hidden=[16, 16], prior_hidden=[8])
    return build_model(cfg)


@pytest.mark.parametrize("generator", ["ladder", "bottom"])
def test_every_prior_builds_and_samples_on_both_generators(generator):
    from hebm.config import PRIOR_TYPES

    for prior in PRIOR_TYPES:
        cfg = ModelConfig(prior=prior, arch="mlp", generator=generator, x_dim=10, latent_dims=[4, 3, 2],
                          enc_hidden=[16], dec_hidden=[16, 16], prior_hidden=[8], energy_hidden=[8], base_prior="gaussian",
                          T=2)
        m = build_model(cfg)
        x = m.sample(5, seed=1, n_steps=2, step_size=0.1)
        assert x.shape == (5, 10) and torch.isfinite(x).all()
        post = m.posterior(torch.rand(5, 10) * 2 - 1, torch.Generator().manual_seed(0))
        assert torch.isfinite(m.log_px(torch.zeros(5, 10), post.z)).all()


def test_bottom_generator_ignores_the_upper_layers_ladder_does_not():
    torch.manual_seed(0)
    for generator, upper_matters in (("bottom", False), ("ladder", True)):
        m = _tiny_model(generator)
        z = torch.randn(3, 9)
        z2 = z.clone()
        z2[:, 4:] = torch.randn(3, 5)
        changed = not torch.allclose(m.decode(z), m.decode(z2))
        assert changed == upper_matters, generator


def test_checkpoints_before_the_ladder_load_as_the_bottom_generator(tmp_path):
    """A checkpoint written before the ``generator`` setting existed holds a g(z_1) decoder: it
    loads as one (not as the new default)."""
    from hebm.checkpoint import load_checkpoint, save_checkpoint
    from hebm.models import load_model
    from hebm.training.trainer import Trainer

    run = tmp_path / "r"
    tr = Trainer.from_settings(dict(prior="gaussian", steps=2, out=str(run), quiet=True, generator="bottom",
                                    eval_every=0))
    assert tr.train()["status"] == "ok"
    ck = load_checkpoint(str(run / "ckpt.pt"))
    del ck["model_config"]["generator"]  # as written before 2026-12-06
    save_checkpoint(str(tmp_path / "old.pt"), {k: v for k, v in ck.items() if k not in ("integrity", "format", "version")})
    m, mcfg, _, _ = load_model(str(tmp_path / "old.pt"))
    assert mcfg.generator == "bottom" and not m.ladder


# ------------------------------------------------------------------------------ the measures
class _SignModel(torch.nn.Module):
    """A generator with a known hierarchy: x = z̃ (the decoder is the identity on the flat
    latents), layers (1, 1, 1), conditionals that ignore the layer above (μ = 0, σ = 1), so
    z = ũ; a 'class' is the sign pattern of chosen coordinates."""

    def __init__(self):
        super().__init__()
        from tests.parity import make_prior

        self.prior = make_prior((1, 1, 1), prior_hidden=(), energy_hidden=None, sigma_min=0.0, dtype=torch.float32)
        with torch.no_grad():
            for p in self.prior.conditionals.parameters():
                p.zero_()
        self.dims = [1, 1, 1]
        self.D = 3

    def decode(self, z):
        return z


def test_class_change_known_answers():
    """classify = sign of x_3 (the top coordinate): resampling z_3 changes the class with
    probability 1/2 exactly (two independent fair signs), z_1 and z_2 never; 'independent' = 1/2."""
    m = _SignModel()
    assert torch.allclose(m.prior.T(torch.eye(3)), torch.eye(3))  # μ = 0, σ = exp(0): z = ũ
    out = resample_class_change(m, lambda x: (x[:, 2] > 0).long(), n=4000, seed=3)
    assert out["per_layer"][0] == 0.0 and out["per_layer"][1] == 0.0
    se = (0.25 / 4000) ** 0.5
    assert abs(out["per_layer"][2] - 0.5) < 5 * se
    assert abs(out["independent"] - 0.5) < 5 * se
    # a classifier that reads every layer: each resampled layer flips its own sign half the time
    out = resample_class_change(m, lambda x: ((x > 0).long() * torch.tensor([1, 2, 4])).sum(1), n=4000, seed=3)
    for r in out["per_layer"]:
        assert abs(r - 0.5) < 5 * se
    assert abs(out["independent"] - (1 - 1 / 8)) < 0.02


def test_a_layer_the_generator_ignores_scores_zero_change_and_chance_probe():
    """A model whose top layer reaches neither the image nor the layers below (its decoder input,
    its conditional's input and its inference head zeroed): resampling it changes no class, and
    the probe from it scores the held-out majority rate."""
    torch.manual_seed(0)
    m = _tiny_model("ladder")
    with torch.no_grad():
        m.decoder.inject[2].weight.zero_()  # (its bias is a constant: the stream's starting point)
        first = next(p for p in m.prior.conditionals[1].parameters() if p.dim() == 2)
        first.zero_()  # g_2(z_3): its first Linear's weights, so z_2's conditional ignores z_3
        m.inference.heads[2].weight.zero_()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(300, 10, generator=g) * 2 - 1
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0.5).long()
    change = resample_class_change(m, lambda xx: (xx[:, :3] > 0).long().sum(1), n=500, seed=1)
    assert change["per_layer"][2] == 0.0
    assert change["per_layer"][0] > 0.0  # the bottom layer does reach the image
    probe = linear_probe(m, x[:200], y[:200].numpy(), x[200:], y[200:].numpy())
    assert probe["per_layer"][2] == pytest.approx(probe["chance"])
    majority = np.bincount(y[:200].numpy()).argmax()
    assert probe["chance"] == pytest.approx(float(np.mean(y[200:].numpy() == majority)))


def test_is_hierarchical_bar():
    assert is_hierarchical([0.2, 0.5, 0.85])
    assert not is_hierarchical([0.3, 0.5, 0.85])  # the bottom changes the class too often
    assert not is_hierarchical([0.2, 0.9, 0.85])  # not monotone
    assert not is_hierarchical([0.1, 0.4, 0.7])  # the top does not decide it


# ------------------------------------------------------------------------------ the controllable scores
def test_attribute_agreement_and_chance_known_answers():
    from hebm.evaluation.controllable import attribute_agreement, chance_agreement

    y = torch.tensor([[0, 1], [1, 1], [2, 0], [3, 0]])
    pred = torch.tensor([[0, 1], [1, 0], [0, 0], [3, 0]])
    per, joint = attribute_agreement(pred, y)
    assert per == [0.75, 0.75] and joint == 0.5
    ch, joint_ch = chance_agreement(y)
    assert ch[0] == pytest.approx(4 * (1 / 4) ** 2) and ch[1] == pytest.approx(0.5)
    assert joint_ch == pytest.approx(0.25)  # four distinct combinations, one each


def test_thickness_formula_against_per_class_medians():
    from hebm.models.attributes import class_ink_medians, thickness_given_medians, thickness_labels

    g = torch.Generator().manual_seed(0)
    x = torch.rand(40, 16, generator=g) * 2 - 1
    y = torch.arange(40) % 3
    med = class_ink_medians(x, y)
    assert torch.equal(thickness_given_medians(x, y, med), thickness_labels(x, y))
    # an image with more ink than its class's median is thick whatever the other classes do
    full = torch.ones(1, 16)
    assert int(thickness_given_medians(full, torch.tensor([1]), med)) == 1


def test_attribute_layers_defaults_follow_the_generator_and_a_name_twice_is_refused():
    from hebm.models.controllable import default_layers, parse_layers

    names = ["digit", "thickness", "slant"]
    assert parse_layers(names, None, 3, default_layers("ladder", 3)) == [2, 0, 0]  # digit on top, style on z_1
    assert parse_layers(names, None, 3, default_layers("bottom", 3)) == [0, 0, 0]
    with pytest.raises(ValueError, match="digit is given twice"):
        parse_layers(names, ["digit:1", "digit:3"], 3, default_layers("ladder", 3))
