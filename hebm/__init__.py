"""hebm: hierarchical latent-space EBM priors and fused Langevin samplers for them.

Public surface (DESIGN.md §3)::

    hebm.langevin_ref(prior, u, *, n_steps, step_size, ...)      # eager reference
    hebm.langevin_fused(prior, u, *, ..., backend="auto", precision="auto")
    hebm.standard_problem(name, batch, *, device="cpu", seed=0)
    hebm.HierarchicalPrior, hebm.DiffusionSchedule, hebm.reverse_diffusion
"""
from .backends import BackendUnavailable
from .diffusion import DiffusionSchedule
from .nn import MLP, SUPPORTED_ACTIVATIONS, Activation
from .philox import philox_normal
from .prior import HierarchicalPrior
from .problems import standard_problem
from .sampling import langevin_fused, langevin_ref, langevin_z_ref, reverse_diffusion

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "BackendUnavailable",
    "DiffusionSchedule",
    "HierarchicalPrior",
    "MLP",
    "SUPPORTED_ACTIVATIONS",
    "langevin_fused",
    "langevin_ref",
    "langevin_z_ref",
    "philox_normal",
    "reverse_diffusion",
    "standard_problem",
]
