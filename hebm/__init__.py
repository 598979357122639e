"""hebm: hierarchical latent-space EBM priors and fused Langevin samplers for them.

Public surface (docs/design.md §3)::

    hebm.langevin_ref(prior, u, *, n_steps, step_size, ...)      # eager reference (hebm/sampler/reference.py)
    hebm.langevin_fused(prior, u, *, ..., backend="auto", precision="auto")
    hebm.Sampler(prior, backend="auto", precision="auto")         # built once: .run(u, ...), .reverse_diffusion(...), .refresh()
    hebm.reverse_diffusion_ref(prior, schedule, ...) / hebm.reverse_diffusion(..., backend=...)
    hebm.standard_problem(name, batch, *, device="cpu", seed=0)
    hebm.HierarchicalPrior, hebm.DiffusionSchedule
    hebm.backends.unavailable(name)                               # the backend registry (hebm.sampler.backends)

The package is laid out by layer (docs/design.md §4): :mod:`hebm.prior` (what the sampler
operates on) → :mod:`hebm.sampler` → :mod:`hebm.models` → :mod:`hebm.evaluation` →
:mod:`hebm.training` → the command lines ``python -m hebm.train | sample | evaluate``.
"""
from .prior import MLP, SUPPORTED_ACTIVATIONS, Activation, DiffusionSchedule, HierarchicalPrior, initial_noise, philox_normal
from .sampler import backends
from .sampler.backends import BackendUnavailable
from .sampler.dispatch import Sampler, langevin_fused, reverse_diffusion
from .sampler.problems import standard_problem
from .sampler.reference import langevin_ref, langevin_z_ref, reverse_diffusion_ref
from .sampler.results import DivergenceError

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
    "backends",
    "langevin_fused",
    "langevin_ref",
    "langevin_z_ref",
    "initial_noise",
    "philox_normal",
    "reverse_diffusion",
    "reverse_diffusion_ref",
    "standard_problem",
]
