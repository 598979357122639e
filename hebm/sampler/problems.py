"""The standard benchmark problems of docs/design.md §5 (toy, small, large).

Each is a paper-2 training step: a level-conditioned prior (T = 3 levels, GELU, fp32), chains
at a random level per row with the schedule's step size ``√s_t``, energy scale ``1/s_t`` and
recovery kernel (rows at the top level have none: ``alpha = 0``), K = 60 steps, seeded noise.

    p = hebm.standard_problem("small", 256)
    u = hebm.langevin_ref(p.prior, p.u, **p.kwargs)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..prior.diffusion import DiffusionSchedule
from ..prior.hierarchical import HierarchicalPrior
from .values import as_int

# name: (layer dims bottom→top, prior MLP hidden (1 layer), energy MLP hidden (2 layers))
PROBLEMS = {
    "toy": ((2, 2), 64, 64),
    "small": ((64, 32, 16), 256, 256),
    "large": ((128,) * 5, 512, 512),
}
N_STEPS = 60
T_LEVELS = 3
# base variance step of the schedule: s_t = 1e-3 · (0.48, 58.9, 96.0) ≈ (5e-4, 0.06, 0.1)
BASE_STEP = 1e-3


@dataclass
class Problem:
    name: str
    prior: HierarchicalPrior
    u: torch.Tensor
    kwargs: dict
    schedule: DiffusionSchedule

    @property
    def batch(self) -> int:
        return self.u.shape[0]

    def n_params(self) -> int:
        """Weights of the networks a step runs through (conditionals and energies)."""
        return sum(p.numel() for n, p in self.prior.named_parameters() if "level_net" not in n and "weight" in n)

    def flops_per_run(self) -> float:
        """docs/design.md §5 FLOP model: 4·B·params per step (forward + backward to the input)."""
        return 4.0 * self.batch * self.n_params() * self.kwargs["n_steps"]


def standard_problem(name: str, batch: int, *, device="cpu", seed: int = 0, dtype=torch.float32) -> Problem:
    """Build the named problem with ``batch`` chains; everything is deterministic in ``seed``."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; expected one of {', '.join(PROBLEMS)}")
    batch = as_int("batch", batch, "an int >= 1")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    seed = as_int("seed", seed, "an int >= 0")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    dims, prior_h, energy_h = PROBLEMS[name]
    state = torch.random.get_rng_state()  # module init draws from the global generator: restore it after
    try:
        torch.manual_seed(seed)
        prior = HierarchicalPrior(dims, prior_hidden=(prior_h,), energy_hidden=(energy_h, energy_h), act="gelu",
                                  n_levels=T_LEVELS)
    finally:
        torch.random.set_rng_state(state)
    prior = prior.to(device=device, dtype=dtype).eval()
    for p in prior.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed + 1)
    D = sum(dims)
    u = torch.randn(batch, D, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    u_next = torch.randn(batch, D, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    t = torch.randint(0, T_LEVELS, (batch,), generator=g).to(device)
    schedule = DiffusionSchedule(T_LEVELS, BASE_STEP)
    kwargs = dict(n_steps=N_STEPS, seed=seed, **schedule.langevin_kwargs(t, u_next))
    return Problem(name, prior, u, kwargs, schedule)
