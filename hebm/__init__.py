"""hebm: hierarchical latent-space EBM priors and fused Langevin samplers for them.

Public surface (docs/design.md §3)::

    hebm.langevin_ref(prior, u, *, n_steps, step_size, ...)      # eager reference (hebm/reference.py)
    hebm.langevin_fused(prior, u, *, ..., backend="auto", precision="auto")
    hebm.Sampler(prior, backend="auto", precision="auto")         # built once: .run(u, ...), .reverse_diffusion(...), .refresh()
    hebm.reverse_diffusion_ref(prior, schedule, ...) / hebm.reverse_diffusion(..., backend=...)
    hebm.standard_problem(name, batch, *, device="cpu", seed=0)
    hebm.HierarchicalPrior, hebm.DiffusionSchedule
"""
from .args import DivergenceError
from .backends import BackendUnavailable
from .diffusion import DiffusionSchedule
from .nn import MLP, SUPPORTED_ACTIVATIONS, Activation
from .philox import initial_noise, philox_normal
from .prior import HierarchicalPrior
from .problems import standard_problem
from .reference import langevin_ref, langevin_z_ref, reverse_diffusion_ref
from .dispatch import Sampler, langevin_fused, reverse_diffusion

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "BackendUnavailable",
    "DiffusionSchedule",
    "DivergenceError",
    "HierarchicalPrior",
    "MLP",
    "SUPPORTED_ACTIVATIONS",
    "Sampler",
    "langevin_fused",
    "langevin_ref",
    "langevin_z_ref",
    "initial_noise",
    "philox_normal",
    "reverse_diffusion",
    "reverse_diffusion_ref",
    "standard_problem",
]
