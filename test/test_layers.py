"""The import direction of docs/architecture.md, held: no module imports from a layer
above it, imports inside functions included. A failure names the file, line and import."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "snn_control"

# What each part of the package may import (besides itself). Bottom to top: spiking and
# envs, then models, then the shared training tools, then the two trainers side by side,
# then the runtime, then the ROS nodes and the command line.
BASE = {"paths", "config"}
ALLOWED = {
    "paths": set(),
    "spiking": set(),
    "envs": {"paths"},
    "config": {"envs"},
    "classical": {"envs"},
    "models": {"spiking", "envs"} | BASE,
    "training": {"models", "spiking", "envs", "classical"} | BASE,
    "predictive": {"training", "models", "spiking", "envs", "classical"} | BASE,
    "rl": {"training", "models", "spiking", "envs", "classical"} | BASE,
    "runtime": {"models", "spiking", "envs"} | BASE,
    "nodes": {"runtime", "predictive", "training", "models", "envs"} | BASE,
    "demo": {"training", "models", "envs"} | BASE,
    "results": BASE,
    "cli": {"nodes", "runtime", "predictive", "rl", "training", "models", "envs", "demo", "results"} | BASE,
}


def _part(module: str) -> str:
    """``snn_control.models.networks`` -> ``models``; ``snn_control`` itself -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path):
    """(line, imported module, names) of every import of this package in ``path``."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "snn_control":  # ``from snn_control import config``
                for alias in node.names:
                    yield node.lineno, f"snn_control.{alias.name}"
            elif target.startswith("snn_control."):
                yield node.lineno, target
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("snn_control."):
                    yield node.lineno, alias.name


def test_every_part_is_placed():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts <= set(ALLOWED), f"not placed in a layer: {sorted(parts - set(ALLOWED))}"


def test_no_import_goes_up():
    offending = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        here = rel.parts[0].removesuffix(".py")
        if here == "__init__":
            continue
        for line, target in _imports(path):
            there = _part(target)
            if there and there != here and there not in ALLOWED[here]:
                offending.append(f"snn_control/{rel}:{line} imports {target} ({here} may use {sorted(ALLOWED[here])})")
    assert not offending, "imports against the layering of docs/architecture.md:\n" + "\n".join(offending)


def test_the_check_finds_an_upward_import(tmp_path, monkeypatch):
    """The checker itself can fail: a lazy import from runtime into a trainer is caught."""
    fake = tmp_path / "snn_control"
    (fake / "runtime").mkdir(parents=True)
    (fake / "runtime" / "x.py").write_text("def f():\n    from ..predictive.trainer import Trainer\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert list(_imports(fake / "runtime" / "x.py")) == [(2, "snn_control.predictive.trainer")]
    try:
        test_no_import_goes_up()
    except AssertionError as exc:
        assert "snn_control/runtime/x.py:2 imports snn_control.predictive.trainer" in str(exc)
    else:
        raise AssertionError("an upward import went unnoticed")
