"""The latent-variable models around the prior: generator, inference network, and the three prior
types with their learning signals (docs/papers.md B §2, §3, §4.1).

Every model holds

* the top-down hierarchy ``p_β(z̃) = p(z_L) Π_i p(z_i | z_{i+1})`` and, for ``ebm``, its joint tilt
  ``F = Σ_i f_i`` (``self.prior``, a :class:`hebm.HierarchicalPrior`; spectral norm, when asked,
  on the energies only);
* the generator ``p(x | z_1) = N(g(z_1), σ_x² I)`` (data in [-1, 1], fixed σ_x = 0.3 as the
  authors; images shown are the mean g(z_1)), an MLP or a DCGAN-like deconvolution net;
* the inference network ``q(z̃ | x)`` — by default *top-down* (:class:`TopDownInference`, LVAE's
  precision-weighted merge): a deterministic bottom-up pass ``d_1 = B_1(h(x)), d_i = B_i(d_{i−1})``
  gives per-layer Gaussian "likelihood" terms ``N(μ̂_i, σ̂_i²)``; sampling goes top-down,
  ``q(z_L | x) = N(μ̂_L, σ̂_L²)`` and ``q(z_i | z_{i+1}, x) ∝ N(μ̂_i, σ̂_i²) · p(z_i | z_{i+1})``, so a
  layer the data says nothing about falls back to its prior conditional instead of collapsing
  to N(0, I); the KL of every layer is analytic given the sampled layer above.  The mean-field
  bottom-up ``q(z_i | x)`` (:class:`BottomUpInference`) stays as an option (it collapses z_2, z_3:
  RESULTS.md).

The learning signals (batch means; parameter groups "generator" = encoder, inference, decoder,
conditionals; "energies"):

* ``gaussian`` — the negative ELBO ``−log p(x|z_1) + Σ_i KL_i``, with KL warm-up (weight β rising
  from 0 to 1) and free bits (a layer's mean KL below λ nats is not penalised).
* ``ebm``, variational (default): positives ``z̃⁺ ~ q(z̃|x)``, negatives ``z̃⁻ = T_β(u)`` from
  ũ-space prior Langevin on ``F(T_β(u)) − ½‖u‖²`` started at N(0, I) (both papers' short-run
  scheme in the whitened space);
  generator side ``−log p(x|z⁺_1) + Σ KL_i − F(z̃⁺) + Σ log p(z⁻_i | z⁻_{i+1})`` — the ELBO of the
  tilted prior (B §4.1) plus the negative phase of the conditionals, which enter log Z (B §2.2);
  energies ``mean F(z̃⁻) − mean F(z̃⁺)``, whose stationary point is E_q F = E_p F (logged as
  ``f_gap = f_pos − f_neg``).
* ``ebm`` with ``posterior="langevin"`` — the MLE scheme of paper 1 (B §2.2–2.3): positives by
  z-space posterior Langevin from N(0, I).
* ``ebm`` two-stage (``two_stage``, ``--init``) — the authors' two-stage scheme (B §2.5) on a frozen
  trained model: only the energies learn, ``mean F(z̃⁻) − mean F(z̃⁺)`` with ``z̃⁺ ~ q(z̃|x)`` of the
  frozen inference network and ``z̃⁻`` from the ũ-space prior chain; the EBM tilts p_β toward the
  aggregate posterior of that one generator (so priors are compared on the same generator).
* ``diffusion`` — paper 2 (B §3.4), two-stage on a frozen trained model: ``u_0 = T_β⁻¹(z̃ ~ q)``,
  a random level t per example, pairs by ``schedule.q_sample_pairs``, negatives by Langevin on
  ``p̃(u_t | u_{t+1})`` started at ``u_{t+1}``, loss ``mean[−(F(T(u⁺), t) − F(T(u⁻), t)) / s_t]``;
  the level-t model's energy is ``F/s_t``, so its energies and gaps are reported in nats of F/s_t.
  Its prior density (for scores) is the model's level-0 marginal ``exp(F(z̃, 0)/s_0) p_β(z̃)``
  (the recovery-likelihood parametrisation: the level-t EBM models the marginal at level t).

Sampling (``chains``) and the losses (``losses``) are separate calls, so the trainer times the
samplers from outside.

Files: :mod:`~hebm.models.networks` (encoders, decoders, the ladder generators),
:mod:`~hebm.models.inference` (q(z̃|x), the Posterior, KL), :mod:`~hebm.models.base`
(LatentModel, the Gaussian model), :mod:`~hebm.models.ebm`, :mod:`~hebm.models.diffusion`,
:mod:`~hebm.models.attributes` and :mod:`~hebm.models.controllable` (controllable synthesis),
:mod:`~hebm.models.build` (build and load).
"""
from .base import GaussianModel, LatentModel, NonFiniteError
from .build import MODELS, build_model, load_model, model_class
from .diffusion import DiffusionModel
from .ebm import EBMModel

__all__ = ["DiffusionModel", "EBMModel", "GaussianModel", "LatentModel", "MODELS", "NonFiniteError", "build_model",
           "load_model", "model_class"]
