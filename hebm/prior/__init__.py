"""The objects the sampler operates on, below it in the layering (docs/design.md §4):

* :mod:`~hebm.prior.nn` — the MLP family every backend takes (activations, level-conditioned
  biases, spectral norm);
* :mod:`~hebm.prior.hierarchical` — :class:`HierarchicalPrior`: the top-down conditionals, the
  map T_β and its inverse, the joint energy, the ũ-space target ``log_density``;
* :mod:`~hebm.prior.diffusion` — :class:`DiffusionSchedule`, paper 2's ũ-space schedule;
* :mod:`~hebm.prior.philox` — the counter-based noise stream every backend draws.

Nothing here imports another part of hebm.
"""
from .diffusion import DiffusionSchedule
from .hierarchical import HierarchicalPrior
from .nn import MLP, SUPPORTED_ACTIVATIONS, Activation
from .philox import initial_noise, philox_normal

__all__ = ["Activation", "DiffusionSchedule", "HierarchicalPrior", "MLP", "SUPPORTED_ACTIVATIONS", "initial_noise",
           "philox_normal"]
