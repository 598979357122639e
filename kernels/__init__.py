"""Triton kernels of hebm, installed as ``hebm.kernels`` (imports nothing else from hebm:
kernel → dispatch → API).

* :mod:`hebm.kernels.device` — every ``@triton.jit`` device function: activations with
  derivatives, hebm's Philox4x32-10 normal stream, weight/bias tiles, register-form chunk products
  and streamed (scratch) layers, the update rule; plus the RNG debug kernel of the tests.
* :mod:`hebm.kernels.params` — the kernels' own parameter buffer (every layer a zero-padded,
  aligned ``Wᵀ`` block), derived from hebm's flat pack.
* :mod:`hebm.kernels.codegen` — the per-network glue: one persistent Langevin kernel per network
  structure, written as a sequence of device-function calls with literal widths and offsets,
  cached on disk, built on first use; the launcher is ``hebm.sampler.backends.triton_backend``.
* ``kernels/generated/`` — a committed copy of one generated kernel (the ``small`` problem), so
  what the generator writes can be read and reviewed; a test regenerates it byte for byte.

``hebm.kernels.device`` jits its functions when it is imported, and Triton picks the interpreter
or the compiler at that moment.  Nothing here imports it eagerly, so ``TRITON_INTERPRET=1`` only
has to be set before the first kernel is built; :func:`jit_device` hands every kernel the copy
made for the current mode (a second copy is made if the mode changed since the first import).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading

from .codegen import LangevinSpec, MLPSpec, TLayer, build_kernel, generate_source, kernel_form, latent_geometry, pad

_lock = threading.Lock()
_device: dict = {}


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def jit_device():
    """:mod:`hebm.kernels.device` jitted for this process's current ``TRITON_INTERPRET`` mode."""
    interp = _interpret()
    mod = _device.get(interp)
    if mod is not None:
        return mod
    with _lock:
        mod = _device.get(interp)
        if mod is None:
            public = sys.modules.get(__name__ + ".device")
            if public is None:
                public = importlib.import_module(__name__ + ".device")
            if public.INTERPRETED == interp:
                mod = public
            else:  # the public module was jitted in the other mode: a private copy for this one
                name = f"{__name__}._device_{'interp' if interp else 'jit'}"
                spec = importlib.util.spec_from_file_location(name, public.__file__)
                mod = importlib.util.module_from_spec(spec)
                sys.modules[name] = mod
                spec.loader.exec_module(mod)
            if interp:
                _fast_nested_calls(mod)
            _device[interp] = mod
    return mod


def _fast_nested_calls(mod) -> None:
    """Interpreter only: a device function called from a running kernel skips re-patching
    ``triton.language`` (the interpreter does it on every call, ~0.3 ms — 40 % of a test run;
    the launch has already patched the same module objects for the whole run).  Left as is if the
    interpreter's internals are not the expected ones."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:  # pragma: no cover - depends on the Triton version
        return
    if not callable(getattr(InterpretedFunction, "rewrite", None)):  # pragma: no cover
        return

    class _Nested(InterpretedFunction):
        def __call__(self, *args, **kwargs):
            return self.rewrite()(*args, **kwargs)

    for value in list(vars(mod).values()):
        if type(value) is InterpretedFunction:
            value.__class__ = _Nested


def rng_debug_kernel():
    """The jitted debug kernel writing hebm's Philox words and normals (tests)."""
    return jit_device().rng_debug_kernel


__all__ = ["LangevinSpec", "MLPSpec", "TLayer", "build_kernel", "generate_source", "jit_device", "kernel_form",
           "latent_geometry", "pad", "rng_debug_kernel"]
