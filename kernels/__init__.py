"""Triton kernels of hebm, installed as ``hebm.kernels`` (imports nothing else from hebm:
kernel → dispatch → API).

* :mod:`kernels.codegen` — one persistent Langevin kernel per network structure, generated as
  Triton source (every width, offset, activation and flag a literal), cached on disk, built on
  first use;  the launcher is ``hebm.backends.triton_backend``.
* :mod:`kernels.device_src` — the device functions pasted into every generated kernel:
  activations with derivatives, hebm's Philox4x32-10 normal stream.

Nothing here is jitted at import time, so ``TRITON_INTERPRET=1`` only has to be set before the
first kernel is built (not before ``import hebm.kernels``).
"""
from .codegen import LangevinSpec, MLPSpec, build_kernel, generate_source, pad, rng_debug_kernel

__all__ = ["LangevinSpec", "MLPSpec", "build_kernel", "generate_source", "pad", "rng_debug_kernel"]
