"""The Langevin samplers of a :class:`hebm.HierarchicalPrior` (docs/design.md §2, §3):

* :mod:`~hebm.sampler.record` — the call record, every keyword of a call stated once;
* :mod:`~hebm.sampler.checks`, :mod:`~hebm.sampler.values` — the checks derived from it;
* :mod:`~hebm.sampler.results` — divergence reported, results in the caller's structure;
* :mod:`~hebm.sampler.reference` — the update rules, stated once, and the eager reference loops
  (``langevin_ref``, ``reverse_diffusion_ref``, ``langevin_z_ref``);
* :mod:`~hebm.sampler.dispatch` — :class:`Sampler`, ``langevin_fused``, ``reverse_diffusion``;
* :mod:`~hebm.sampler.backends` — the registry and one module per backend, the op boundary and
  the prior's networks packed for the kernels;
* :mod:`~hebm.sampler.problems` — the standard benchmark problems.

It imports :mod:`hebm.prior` and the Triton kernels (:mod:`hebm.kernels`), nothing above.
"""
