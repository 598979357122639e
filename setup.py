"""Build script.  Pure-Python install unless torch is importable at build time.

* ``pip install --no-build-isolation -e .`` (torch already installed): builds the C++ CPU
  extension ``hebm._C`` now (≈1 min on 2 cores), and the CUDA extension ``hebm._C_cuda`` from
  ``csrc/cuda`` when nvcc/CUDA_HOME is there *and* a GPU is visible (or ``HEBM_FORCE_BUILD=1`` /
  ``FORCE_CUDA=1``) — on a GPU-less CI box the slow CUDA compile is left to first use.
* ``pip install .`` with build isolation, or no torch, or no compiler: a plain install; the
  extensions are JIT-compiled on first use (``hebm/sampler/backends/_build.py``) and cached.
  A failed compile here never fails the install.
* Switches: ``HEBM_SKIP_CPU_BUILD=1``, ``HEBM_SKIP_CUDA_BUILD=1``, ``HEBM_FORCE_BUILD=1``,
  ``HEBM_NATIVE=0`` (portable code instead of ``-march=native``: set it for wheels that travel).
"""
import importlib.util
import os
import shutil
import warnings
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _build_helpers():
    # hebm/sampler/backends/_build.py imports nothing from hebm: load it by path, without the package
    spec = importlib.util.spec_from_file_location("_hebm_build", ROOT / "hebm" / "sampler" / "backends" / "_build.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class BuildPyWithSources(build_py):
    """Ship csrc/ as hebm/_csrc so an installed (non-editable) hebm can still JIT-compile."""

    def run(self):
        super().run()
        if CSRC.is_dir() and not self.editable_mode:
            dst = Path(self.build_lib) / "hebm" / "_csrc"
            shutil.copytree(CSRC, dst, dirs_exist_ok=True)


ext_modules = []
cmdclass = {"build_py": BuildPyWithSources}

try:
    import torch  # noqa: F401
    from torch.utils import cpp_extension
except Exception:  # isolated build or no torch: JIT on first use
    cpp_extension = None

if cpp_extension is not None and CSRC.is_dir():
    helpers = _build_helpers()
    srcs = [os.path.relpath(s, ROOT) for s in helpers.cpu_sources()]
    if not _flag("HEBM_SKIP_CPU_BUILD") and shutil.which(os.environ.get("CXX", "c++")):
        h = helpers.source_hash(helpers.cpu_sources())
        ext_modules.append(cpp_extension.CppExtension(
            "hebm._C", srcs, include_dirs=[str(CSRC)],
            extra_compile_args={"cxx": [*helpers.cxx_flags(), f"-DHEBM_SOURCE_HASH_TOKEN=h{h}"]},
            extra_link_args=helpers.ld_flags(),
        ))
    cuda_dir = CSRC / "cuda"
    cu = sorted(cuda_dir.glob("*.cu")) + sorted(cuda_dir.glob("*.cpp")) if cuda_dir.is_dir() else []
    want_cuda = _flag("HEBM_FORCE_BUILD") or _flag("FORCE_CUDA") or torch.cuda.is_available()
    if cu and want_cuda and not _flag("HEBM_SKIP_CUDA_BUILD") and cpp_extension.CUDA_HOME is not None:
        h = helpers.source_hash([str(p) for p in cu])
        ext_modules.append(cpp_extension.CUDAExtension(
            "hebm._C_cuda", [os.path.relpath(p, ROOT) for p in cu], include_dirs=[str(CSRC)],
            extra_compile_args={"cxx": [*helpers.cxx_flags(), "-Wno-unknown-pragmas", *helpers.CUDA_DEFINES,
                                        f"-DHEBM_SOURCE_HASH_TOKEN=h{h}"],
                                "nvcc": [*helpers.cuda_cflags(), *helpers.CUDA_DEFINES, f"-DHEBM_SOURCE_HASH_TOKEN=h{h}"]},
        ))

    if ext_modules:
        class OptionalBuildExt(cpp_extension.BuildExtension):
            """A failed compile leaves that extension to the JIT path instead of failing pip."""

            def build_extension(self, ext):
                try:
                    super().build_extension(ext)
                except Exception as e:  # noqa: BLE001
                    if _flag("HEBM_FORCE_BUILD"):
                        raise
                    warnings.warn(f"hebm: building {ext.name} failed ({str(e).splitlines()[0] if str(e) else e}); "
                                  "it will be compiled on first use instead")

        cmdclass["build_ext"] = OptionalBuildExt.with_options(use_ninja=cpp_extension.is_ninja_available())

setup(ext_modules=ext_modules, cmdclass=cmdclass)
