"""Build plumbing for hebm's compiled parts (the C++ CPU kernel here, the CUDA kernel too).

One entry point, :func:`load_extension`, used by every compiled backend:

1. a module prebuilt by ``setup.py`` (``hebm._C``, ``hebm._C_cuda``) is imported when present
   and built from the current sources (its ``source_hash`` matches);
2. otherwise the sources are JIT-compiled with :func:`torch.utils.cpp_extension.load` and ninja
   into a stable cache (``$HEBM_EXTENSIONS_DIR``, default ``~/.cache/hebm/extensions/<torch>``),
   once per machine (later processes load the cached ``.so`` in well under a second);
3. any failure returns ``(None, "one-line reason and the fix")`` — nothing here raises.

Environment switches (the flash-attention / mamba convention):

* ``HEBM_SKIP_CPU_BUILD=1`` / ``HEBM_SKIP_CUDA_BUILD=1``: never compile that part (a prebuilt
  module is still used); backends report themselves unavailable with this reason.
* ``HEBM_FORCE_BUILD=1``: ignore prebuilt modules and (re)compile; in ``setup.py`` also build
  the CUDA part without a visible GPU.
* ``HEBM_NATIVE=0``: portable code (no ``-march=native``).  JIT builds default to native code
  (they run where they are compiled); ``setup.py`` builds do too unless ``HEBM_NATIVE=0`` —
  set it when building a wheel for other machines.
* ``HEBM_VERBOSE_BUILD=1``: show the compiler output.

This file imports nothing from hebm and torch only lazily, so ``setup.py`` can load it by path.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Optional, Sequence

_CACHE: dict = {}
_LOCK = threading.RLock()

CPU_EXTENSION = "_C"
CUDA_EXTENSION = "_C_cuda"


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def csrc_dir() -> Path:
    """The C++/CUDA sources: ``hebm/_csrc`` in an installed wheel, ``<repo>/csrc`` in a checkout."""
    pkg = Path(__file__).resolve().parents[2]  # hebm/sampler/backends/_build.py -> hebm/
    for cand in (pkg / "_csrc", pkg.parent / "csrc"):
        if (cand / "hebm_kernel.h").is_file():
            return cand
    return pkg.parent / "csrc"


def cpu_sources() -> list:
    """Sources of the CPU extension (schema, bindings, kernel)."""
    root = csrc_dir()
    return [str(root / "ops.cpp"), *sorted(str(p) for p in (root / "cpu").glob("*.cpp"))]


def source_hash(sources: Sequence, root: Optional[Path] = None) -> str:
    """Hash of ``sources`` plus every header under ``csrc`` (what a prebuilt module was built from)."""
    root = Path(root) if root is not None else csrc_dir()
    files = {Path(s).resolve() for s in sources}
    files |= {p.resolve() for ext in ("*.h", "*.cuh", "*.hpp") for p in root.rglob(ext)}
    h = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.name + str(p.parent.name)):
        try:
            rel = f.relative_to(root.resolve()).as_posix()
        except ValueError:
            rel = f.name
        h.update(rel.encode())
        h.update(b"\0")
        h.update(f.read_bytes() if f.is_file() else b"<missing>")
        h.update(b"\0")
    return h.hexdigest()[:16]


def extensions_dir() -> Path:
    """Stable JIT cache: ``$HEBM_EXTENSIONS_DIR`` or ``~/.cache/hebm/extensions/<torch>-py<ver>``."""
    import torch

    env = os.environ.get("HEBM_EXTENSIONS_DIR")
    if env:
        return Path(env).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser()
    tag = f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}".replace("+", "_")
    return cache / "hebm" / "extensions" / tag


def _compiler_accepts(flags: list) -> bool:
    cxx = os.environ.get("CXX", "c++")
    try:
        r = subprocess.run([cxx, *flags, "-x", "c++", "-E", "-o", os.devnull, os.devnull], capture_output=True,
                           timeout=30)
        return r.returncode == 0
    except Exception:
        return False


_PROBES: dict = {}


def _probe(flag: str) -> bool:
    if flag not in _PROBES:
        _PROBES[flag] = _compiler_accepts([flag])
    return _PROBES[flag]


def native_flags() -> list:
    """``-march=native`` where the compiler takes it and ``HEBM_NATIVE`` is not 0;
    ``HEBM_MARCH=haswell`` (any -march value) builds for that target instead — e.g. to test the
    AVX2 code path on an AVX-512 machine (the CI machine may be either)."""
    march = os.environ.get("HEBM_MARCH", "").strip()
    if march:
        flag = f"-march={march}"
        if not _probe(flag):
            raise RuntimeError(f"HEBM_MARCH={march!r}: the compiler does not accept {flag}")
        return [flag]
    if os.environ.get("HEBM_NATIVE", "1").strip() == "0":
        return []
    return ["-march=native"] if _probe("-march=native") else []


def cxx_flags() -> list:
    """Host compiler flags of every hebm extension (JIT and setup.py alike)."""
    return ["-O3", "-ffp-contract=fast", "-fno-math-errno", *native_flags()]


def cuda_arch_list() -> list:
    """Compute capabilities to build for, e.g. ``["80", "90"]`` (PTX of the last one is added):
    ``HEBM_CUDA_ARCH`` (``"90"``, ``"80;90"``), else the visible GPU's own, else ``80;90``."""
    import torch

    env = os.environ.get("HEBM_CUDA_ARCH", "").strip()
    if env:
        archs = [a.strip().replace(".", "") for a in env.replace(",", ";").split(";") if a.strip()]
    elif torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        archs = [f"{major}{minor}"]
    else:
        archs = ["80", "90"]
    return sorted(set(archs), key=int)


def cuda_cflags() -> list:
    """nvcc flags of the CUDA extension (JIT and setup.py alike).  No ``--use_fast_math``: the
    exact path keeps IEEE expf/erff/logf/division."""
    archs = cuda_arch_list()
    flags = ["-O3", "-std=c++17", "-lineinfo"]
    for a in archs:
        flags.append(f"-gencode=arch=compute_{a},code=sm_{a}")
    flags.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
    return flags


# the CUDA extension's host code registers its CUDA kernels only under this define (without it the
# module holds just the CPU emulator) — both build paths must pass it
CUDA_DEFINES = ["-DHEBM_WITH_CUDA"]


def ld_flags() -> list:
    return []


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    # the compiler's first "error:" line says more than ninja's wrapper
    for line in text:
        if "error:" in line:
            return line.strip()[:300]
    return (text[0] if text else type(e).__name__)[:300]


def _marker(path: str) -> Optional[str]:
    """The source hash a compiled module was built from, read from its file ("hebm-source-hash:h<hex>"
    is one string literal in the binary) — without importing it, so a stale module never
    registers its kernels in this process."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    i = data.find(b"hebm-source-hash:h")
    if i < 0:
        return None
    j = i + len(b"hebm-source-hash:h")
    k = j
    while k < len(data) and chr(data[k]) in "0123456789abcdef":
        k += 1
    return data[j:k].decode()


def _prebuilt(name: str, sources: Sequence) -> tuple:
    spec = importlib.util.find_spec(f"hebm.{name}")
    if spec is None or not spec.origin:
        return None, f"no prebuilt hebm.{name}"
    if all(Path(s).is_file() for s in sources):
        have = _marker(spec.origin)
        if have is None:
            return None, f"prebuilt hebm.{name} ({spec.origin}) carries no source hash; it is rebuilt from the sources"
        if have != source_hash(sources):
            return None, f"prebuilt hebm.{name} is older than the sources in {csrc_dir()}"
    try:
        mod = importlib.import_module(f"hebm.{name}")
    except ImportError as e:  # not built, or built for another torch
        return None, f"no usable prebuilt hebm.{name} ({_first_line(e)})"
    except OSError as e:
        return None, f"prebuilt hebm.{name} does not load ({_first_line(e)})"
    if name == CUDA_EXTENSION and not getattr(mod, "with_cuda", False):
        return None, f"prebuilt hebm.{name} was built without -DHEBM_WITH_CUDA (it holds no CUDA kernels)"
    return mod, None


def load_extension(name: str, sources: Sequence, *, cuda: bool = False, extra_cflags=(), extra_cuda_cflags=(),
                   extra_ldflags=()) -> tuple:
    """``(module, None)`` or ``(None, reason)`` for the extension ``name`` (e.g. ``"_C"``).

    Cached per process (success and failure alike).  The extensions only register kernels for
    the ops whose schema :mod:`hebm.sampler.backends.ops` defines, so each loads on its own.
    """
    with _LOCK:
        if name in _CACHE:
            return _CACHE[name]
        res = _load(name, [str(s) for s in sources], cuda, tuple(extra_cflags), tuple(extra_cuda_cflags),
                    tuple(extra_ldflags))
        _CACHE[name] = res
        return res


def _load(name, sources, cuda, extra_cflags, extra_cuda_cflags, extra_ldflags) -> tuple:
    what = "CUDA" if cuda else "C++ CPU"
    skip_var = "HEBM_SKIP_CUDA_BUILD" if cuda else "HEBM_SKIP_CPU_BUILD"
    try:
        import torch  # noqa: F401
        from torch.utils import cpp_extension
    except Exception as e:  # pragma: no cover - torch is a hard dependency
        return None, f"torch's C++ extension support is missing ({_first_line(e)})"
    prebuilt_why = None
    if not _flag("HEBM_FORCE_BUILD"):
        mod, prebuilt_why = _prebuilt(name, sources)
        if mod is not None:
            return mod, None
    if _flag(skip_var):
        return None, (f"{skip_var}=1 is set and there is no usable prebuilt hebm.{name} ({prebuilt_why or 'ignored'}); "
                      f"unset {skip_var} to compile the {what} extension on first use (needs a C++ compiler and "
                      f"ninja)")
    missing = [s for s in sources if not Path(s).is_file()]
    if missing:
        return None, f"the {what} sources are missing ({missing[0]}); reinstall hebm from a full checkout"
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return None, (f"no C++ compiler found (looked for {cxx!r}) to build the {what} extension; install one "
                      f"(e.g. `apt install g++` or `conda install gxx`) or set CXX, or use backend='ref'")
    if not cpp_extension.is_ninja_available():
        return None, f"ninja is missing to build the {what} extension; `pip install ninja` (or use backend='ref')"
    if cuda and cpp_extension.CUDA_HOME is None:
        return None, ("CUDA_HOME is not set and nvcc was not found; export CUDA_HOME=/usr/local/cuda "
                      "(and use a CUDA build of torch) to build the CUDA extension")
    build_dir = extensions_dir() / f"hebm{name}"
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        mod = cpp_extension.load(
            name=f"hebm{name}",
            sources=list(sources),
            extra_cflags=[*cxx_flags(), *extra_cflags],
            extra_cuda_cflags=list(extra_cuda_cflags),
            extra_ldflags=[*ld_flags(), *extra_ldflags],
            extra_include_paths=[str(csrc_dir())],
            build_directory=str(build_dir),
            with_cuda=cuda,
            verbose=_flag("HEBM_VERBOSE_BUILD"),
        )
    except Exception as e:
        return None, (f"building the {what} extension failed: {_first_line(e)} — fix the compiler setup "
                      f"(HEBM_VERBOSE_BUILD=1 shows the log; build dir {build_dir}) or use backend='ref'")
    return mod, None


def load_cpu_ops() -> tuple:
    """The CPU extension (CPU kernels of ``torch.ops.hebm.langevin`` / ``reverse_diffusion``).
    After the first call a dictionary lookup: no file-system work on the sampler's hot path."""
    hit = _CACHE.get(CPU_EXTENSION)
    if hit is not None:
        return hit
    return load_extension(CPU_EXTENSION, cpu_sources())


def loaded_cpu_ops():
    """The CPU extension if it is already loaded, else None; never builds (for callers on the hot
    path that can do without it)."""
    hit = _CACHE.get(CPU_EXTENSION)
    return hit[0] if hit is not None else None


def reset_cache() -> None:
    """Forget cached results (tests); an extension already imported stays loaded."""
    with _LOCK:
        _CACHE.clear()


__all__ = ["csrc_dir", "cpu_sources", "cxx_flags", "ld_flags", "extensions_dir", "load_cpu_ops", "loaded_cpu_ops", "load_extension",
           "native_flags", "source_hash", "cuda_arch_list", "cuda_cflags", "CUDA_DEFINES", "reset_cache", "CPU_EXTENSION", "CUDA_EXTENSION"]
