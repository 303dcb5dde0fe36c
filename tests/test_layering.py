"""The import directions of DESIGN.md's "Package layout", read from the AST of every module under clf/.

`cli` -> anything; `train` -> `models` -> `data`; `export` -> `models`, `data`, `serve`; `serve` -> `data` only; every
package -> the ground modules (clf/*.py other than the CLI), which import only each other. So `export` and `serve`
(eval included) never import `train`. `serve` and `data/preprocess.py` never import torch, torchvision or timm: a
deployed inference host has onnxruntime, numpy and OpenCV only.

Every import counts: at module level, inside functions, under TYPE_CHECKING, relative (`from . import x`), and
`importlib.import_module("clf....")` with a literal name. tests/test_cli.py checks what is imported at run time; this
checks what could ever be.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path
from typing import NamedTuple

import pytest

CLF = Path(__file__).resolve().parents[1] / "clf"
PACKAGES = ("data", "models", "train", "export", "serve", "report", "distill", "tune")
GROUND = "ground"
GROUND_PACKAGES = ("config",)  # clf/config/: the stage configurations, one module per stage, on the ground floor
CLI = "cli"

# The layers each layer may import, itself included.
ALLOWED = {
    CLI: {CLI, GROUND, *PACKAGES},
    GROUND: {GROUND},
    "data": {"data", GROUND},
    "models": {"models", "data", GROUND},
    "train": {"train", "models", "data", GROUND},
    "export": {"export", "models", "data", "serve", GROUND},
    "serve": {"serve", "data", GROUND},
    # the HTML report reads runs (train), evaluates the deployed model (serve, export) and traces a checkpoint (models)
    "report": {"report", "train", "export", "serve", "models", "data", GROUND},
    # `clf distill` composes them: the teacher runs in serve (exported by export), the student trains in train
    "distill": {"distill", "train", "export", "serve", "models", "data", GROUND},
    # `clf tune` runs trials that are ordinary runs (train) on Ray; its Ray start-up is the ground's clf.ray_local
    "tune": {"tune", "train", "models", "data", GROUND},
}
TORCH_LIBRARIES = ("torch", "torchvision", "timm")
TORCH_FREE = ("clf.serve", "clf.data.preprocess")  # the modules (and packages) that never import them
# Imports against the directions that are known and accepted, as {(module, target): why}. Empty: keep it so.
EXCEPTIONS: dict[tuple[str, str], str] = {}


class Import(NamedTuple):
    line: int
    target: str  # a dotted module name (for `from a import b`: "a.b", which may name an attribute of module a)


def layer_of(module: str) -> str | None:
    """The layer of a dotted name inside clf; None outside clf.

    `clf.__main__` (`python -m clf`, what torchrun launches) is the CLI's entry point, so it is in the CLI's layer.
    """
    parts = module.split(".")
    if parts[0] != "clf":
        return None
    if len(parts) == 1:
        return GROUND  # the package itself (clf/__init__.py)
    if parts[1] in (CLI, "__main__"):
        return CLI
    return parts[1] if parts[1] in PACKAGES else GROUND  # clf/*.py and the GROUND_PACKAGES


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CLF.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import in `source` (the module named `module`), wherever it stands, with relative names resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node.level, package)
            found += [Import(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call) and _is_import_call(node.func) and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.append(Import(node.lineno, _resolve_string(name.value, package)))
    return sorted(found)


def _resolve(name: str, level: int, package: str) -> str:
    """`from ..x import y` inside `package` -> "<package minus level-1 parts>.x"."""
    if not level:
        return name
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_import_call(func: ast.expr) -> bool:
    """importlib.import_module(...), import_module(...) or __import__(...)."""
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


def _resolve_string(name: str, package: str) -> str:
    """import_module(".x", package=__name__) style names, relative to this module's package."""
    if not name.startswith("."):
        return name
    level = len(name) - len(name.lstrip("."))
    return _resolve(name.lstrip("."), level, package)


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """One line per import of `source` against the directions: "<module>:<line> imports <target> (<why>)"."""
    layer = layer_of(module)
    found = []
    for line, target in imports(source, module, is_package):
        target_layer = layer_of(target)
        if target_layer is not None and target_layer not in ALLOWED[layer]:
            if (module, target) not in EXCEPTIONS:
                found.append(f"{module}:{line} imports {target} ({layer} -> {target_layer} is against DESIGN.md's "
                             f"import directions: {layer} may import {', '.join(sorted(ALLOWED[layer]))})")
        top = target.split(".")[0]
        if top in TORCH_LIBRARIES and any(module == m or module.startswith(m + ".") for m in TORCH_FREE):
            found.append(f"{module}:{line} imports {target} ({module} must stay torch-free: a deployed host has "
                         "onnxruntime, numpy and OpenCV only)")
    return found


def all_modules() -> list[Path]:
    return sorted(CLF.rglob("*.py"))


def import_graph(modules: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """{module: the modules it imports}, from {module: (source, is_package)}; `from a import b` counts as an import
    of a.b when that is a module, else of a."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (source, is_package) in modules.items():
        for _, target in imports(source, name, is_package):
            parts = target.split(".")
            known = next((".".join(parts[:k]) for k in range(len(parts), 0, -1) if ".".join(parts[:k]) in modules),
                         None)
            if known is not None and known != name:
                graph[name].add(known)
    return graph


def first_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports ([a, b, a]: a imports b, which imports a), or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(reversed(exc.args[1]))
    return None


def clf_sources() -> dict[str, tuple[str, bool]]:
    return {module_name(path): (path.read_text(encoding="utf-8"), path.name == "__init__.py")
            for path in all_modules()}


def test_every_import_follows_the_design_s_directions():
    found = []
    for module, (source, is_package) in clf_sources().items():
        found += violations(source, module, is_package)
    assert not found, "imports against DESIGN.md's package layout:\n" + "\n".join(found)


def test_no_module_imports_itself_through_others():
    """Inside a package too (export/ensemble.py and onnx_export.py once imported each other): one module owns a
    helper and the other imports it, one way."""
    cycle = first_cycle(import_graph(clf_sources()))
    assert cycle is None, "a circle of imports: " + " -> ".join(cycle)


def test_every_module_has_a_layer():
    """A new top-level package must be placed in the design (and here) before it can be imported."""
    for path in all_modules():
        parts = path.relative_to(CLF).parts
        assert len(parts) == 1 or parts[0] in (*PACKAGES, CLI, *GROUND_PACKAGES), \
            f"{path}: a package the layering does not know"


def test_the_exceptions_are_still_needed():
    """An accepted exception that no longer happens is deleted, so that it cannot come back unnoticed."""
    happening = {(module, imp.target) for module, (source, is_package) in clf_sources().items()
                 for imp in imports(source, module, is_package)}
    assert not set(EXCEPTIONS) - happening


# ---------------------------------------------------------------- the checker itself, on planted violations


def test_an_import_inside_a_function_is_caught_with_its_line():
    source = "import json\n\n\ndef check():\n    from clf.export.graph import MAX_BATCH\n    return MAX_BATCH\n"
    assert violations(source, "clf.config") == [
        "clf.config:5 imports clf.export.graph.MAX_BATCH (ground -> export is against DESIGN.md's import directions: "
        "ground may import ground)"]


@pytest.mark.parametrize("module, source, target", [
    ("clf.serve.infer", "from ..train import fit\n", "clf.train.fit"),  # relative, up one package
    ("clf.serve.infer", "from ..export.graph import MAX_BATCH\n", "clf.export.graph.MAX_BATCH"),
    ("clf.data.files", "from clf import models\n", "clf.models"),  # a package named as an attribute of clf
    ("clf.models.cnn", "import clf.train.loop\n", "clf.train.loop"),
    ("clf.export.parity", "from clf.train import fit\n", "clf.train.fit"),  # export never imports train
    ("clf.errors", "from clf.cli import app\n", "clf.cli.app"),
    ("clf.config", "import importlib\nm = importlib.import_module('clf.serve.session')\n", "clf.serve.session"),
    ("clf.data.split", "__import__('clf.train.build')\n", "clf.train.build"),
])
def test_each_kind_of_import_against_the_directions_is_caught(module, source, target):
    (found,) = violations(source, module)
    assert found.startswith(f"{module}:") and f" imports {target} (" in found


def test_relative_imports_inside_a_package_s_init():
    assert violations("from . import predictor\n", "clf.serve", is_package=True) == []
    (found,) = violations("from ..train import fit\n", "clf.serve", is_package=True)
    assert found.startswith("clf.serve:1 imports clf.train.fit (serve -> train")


@pytest.mark.parametrize("module, source", [
    ("clf.serve.session", "def f():\n    import torch\n"),
    ("clf.serve.session", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from torch import nn\n"),
    ("clf.data.preprocess", "import timm.layers\n"),
    ("clf.serve", "import torchvision\n"),
])
def test_torch_in_a_torch_free_module_is_caught(module, source):
    (found,) = violations(source, module)
    assert "must stay torch-free" in found


def test_what_the_design_allows_passes():
    assert violations("import torch\nfrom clf.models.checkpoint import load_checkpoint\n", "clf.export.onnx") == []
    assert violations("from clf.data.preprocess import preprocess\nfrom clf import errors\n", "clf.serve.x") == []
    assert violations("from clf.train.fit import fit\nfrom clf.serve import Predictor\n", "clf.cli") == []
    assert violations("from clf.cli import app\n", "clf.__main__") == []
    assert violations("import torch\n", "clf.data.augment_torch") == []  # only preprocess is bound to be torch-free
    assert violations("from clf.choices import DEVICES\nfrom clf import __version__\n", "clf.config") == []


def test_a_circle_is_found_inside_a_package_and_through_a_function_level_import():
    modules = {
        "clf.export": ("", True),
        "clf.export.ensemble": ("def load():\n    from clf.export.onnx_export import model_info\n", False),
        "clf.export.onnx_export": ("from clf.export import ensemble, graph\n", False),
        "clf.export.graph": ("from clf.choices import MAX_BATCH\n", False),
    }
    cycle = first_cycle(import_graph(modules))
    assert cycle is not None and set(cycle) == {"clf.export.ensemble", "clf.export.onnx_export"}
    assert cycle[0] == cycle[-1] and len(cycle) == 3
    modules["clf.export.ensemble"] = ("from clf.export.graph import MAX_BATCH\n", False)
    assert first_cycle(import_graph(modules)) is None
