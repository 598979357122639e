"""The package is laid out by layer and its imports keep it so (docs/design.md §4).

Every module of ``hebm/`` belongs to one layer (:data:`LAYERS`, by its dotted name), and a module
may import only from its own layer and the layers :data:`MAY_IMPORT` lists for it — none above
it.  The imports are read from the source (``ast``), lazy ones inside functions included, so a
circle or an upward import fails here whether or not a test happens to execute it.  This file is
the one statement of the layering; docs/design.md §4 and the README describe it.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: layer -> the modules and packages in it (dotted names; a package stands for everything under it)
LAYERS = {
    "foundation": ("hebm.config", "hebm.checkpoint", "hebm.data", "hebm.errors", "hebm.files"),
    "kernels": ("hebm.kernels",),
    "prior": ("hebm.prior",),
    "sampler": ("hebm.sampler",),
    "models": ("hebm.models",),
    "evaluation": ("hebm.evaluation",),
    "training": ("hebm.training",),
    "commands": ("hebm.cli", "hebm.train", "hebm.sample", "hebm.evaluate"),
    "package": ("hebm",),  # hebm/__init__.py: the public names
}
#: layer -> the other layers its modules may import (everything not listed is above it, or beside it)
MAY_IMPORT = {
    "foundation": (),  # settings, checkpoint files, data sets, the user's-mistake error: stand alone
    "kernels": (),  # the Triton kernels import nothing from hebm (they install as hebm.kernels)
    "prior": (),
    "sampler": ("prior", "kernels"),
    "models": ("sampler", "prior", "foundation"),
    "evaluation": ("models", "sampler", "prior", "foundation"),
    "training": ("evaluation", "models", "sampler", "prior", "foundation"),
    "commands": ("training", "evaluation", "models", "sampler", "prior", "foundation"),
    "package": ("sampler", "prior"),  # `import hebm` stays light: the sampler and what it operates on
}
#: the command lines: none imports another (each is a thin CLI over the library; hebm.cli is shared)
ENTRY_POINTS = ("hebm.train", "hebm.sample", "hebm.evaluate")


def modules(root: Path, package: str = "hebm") -> dict:
    """Dotted module name -> file, for every ``.py`` under ``root/<package>`` (``hebm.kernels`` is
    the ``kernels/`` folder, installed under that name; its generated golden files are data)."""
    out = {}
    for base, name in ((root / package, package), (root / "kernels", f"{package}.kernels")):
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if "generated" in rel.parts or (base.name == package and rel.parts[0] == "kernels"):
                continue  # (a local hebm/kernels link to kernels/ is the same modules)
            out[".".join([name, *parts])] = path
    return out


def imports(mod: str, path: Path, known: dict) -> set:
    """The hebm modules ``mod`` imports, anywhere in its file: ``from X import a`` names the
    module ``X.a`` when that is one, else ``X``."""
    is_pkg = path.name == "__init__.py"
    here = mod if is_pkg else mod.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        else:
            continue
        for n in names:
            while n and n not in known:  # `import hebm.sampler.backends.cpu as x`, attributes of a module
                n = n.rpartition(".")[0]
            if n and n != mod:
                found.add(n)
    return found


def layer_of(mod: str) -> str:
    best, layer = "", None
    for name, members in LAYERS.items():
        for m in members:
            if (mod == m or mod.startswith(m + ".")) and len(m) > len(best):
                best, layer = m, name
    if layer is None:
        raise AssertionError(f"{mod} belongs to no layer: add it to LAYERS in {__file__}")
    return layer


def problems(graph: dict) -> list:
    """Every upward or sideways import, every import between entry points, and every circle."""
    out = []
    for mod, deps in sorted(graph.items()):
        la = layer_of(mod)
        for dep in sorted(deps):
            lb = layer_of(dep)
            if lb != la and lb not in MAY_IMPORT[la]:
                out.append(f"{mod} ({la}) imports {dep} ({lb}): not a layer below it")
            if mod in ENTRY_POINTS and dep in ENTRY_POINTS:
                out.append(f"{mod} imports {dep}: the command lines are independent")
    # circles: a depth-first walk, reporting each back edge's cycle
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                out.append("import circle: " + " -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return out


def graph_of(root: Path) -> dict:
    known = modules(root)
    return {m: imports(m, p, known) for m, p in known.items()}


def test_the_layers_are_a_layering():
    """MAY_IMPORT is itself acyclic (a layer never reaches back to itself) and names real layers."""
    assert set(MAY_IMPORT) == set(LAYERS)
    for la, below in MAY_IMPORT.items():
        assert set(below) <= set(LAYERS) and la not in below

    def reach(la, path):
        for lb in MAY_IMPORT[la]:
            assert lb not in path, f"layers import each other: {' -> '.join(path + (lb,))}"
            reach(lb, path + (lb,))

    for la in LAYERS:
        reach(la, (la,))


def test_imports_go_down_the_layers_without_circles():
    graph = graph_of(ROOT)
    assert len(graph) > 40 and "hebm.sampler.dispatch" in graph and "hebm.kernels.codegen" in graph
    assert "hebm.prior.hierarchical" in graph["hebm.sampler.checks"]  # (the walk sees relative imports)
    bad = problems(graph)
    assert not bad, "\n".join(bad)


def _write(root: Path, files: dict) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_the_check_finds_an_upward_import_and_a_circle(tmp_path):
    """The checker itself, on a small tree: a sampler module importing a model (upward), two
    modules of one layer importing each other (a circle, lazily inside a function), and an entry
    point importing another."""
    _write(tmp_path, {
        "hebm/__init__.py": "",
        "hebm/sampler/__init__.py": "",
        "hebm/sampler/a.py": "from ..models import base\n",
        "hebm/models/__init__.py": "",
        "hebm/models/base.py": "from . import build\n",
        "hebm/models/build.py": "def f():\n    from .base import x\n",
        "hebm/train.py": "from . import cli\n",
        "hebm/sample.py": "import hebm.train\n",
        "hebm/cli.py": "",
    })
    bad = problems(graph_of(tmp_path))
    assert any("hebm.sampler.a (sampler) imports hebm.models.base (models)" in b for b in bad), bad
    circle = "import circle: hebm.models.base -> hebm.models.build -> hebm.models.base"
    assert any(b.startswith(circle) for b in bad), bad
    assert any("hebm.sample imports hebm.train" in b for b in bad), bad
    assert len(bad) == 3, bad


def test_every_package_is_installed():
    """pyproject's package list names every package of the tree (a new layer folder is installed)."""
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"([\w.]+)"', re.search(r"^packages = \[(.*?)\]", text, re.M | re.S).group(1)))
    on_disk = {m for m, p in modules(ROOT).items() if p.name == "__init__.py"}
    assert listed == on_disk


def test_import_hebm_stays_light():
    """``import hebm`` loads the sampler and the prior only — no models, training or evaluation,
    no matplotlib or scikit-learn."""
    code = ("import sys, hebm; print(' '.join(sorted(m for m in sys.modules if m.startswith(('hebm.', 'matplotlib', "
            "'sklearn')))))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                            cwd=ROOT).stdout.split()
    heavy = [m for m in loaded if not m.startswith(("hebm.prior", "hebm.sampler"))]
    assert "hebm.sampler.dispatch" in loaded and not heavy, heavy


if __name__ == "__main__":  # python tests/test_layers.py: the module graph, layer by layer
    g = graph_of(ROOT)
    for la in LAYERS:
        print(f"{la}: may import {', '.join(MAY_IMPORT[la]) or 'nothing from hebm'}")
        for m in sorted(x for x in g if layer_of(x) == la):
            print(f"    {m}")
    sys.exit(pytest.main([__file__, "-q"]))
