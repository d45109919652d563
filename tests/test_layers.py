"""Dependencies point one way: each subpackage imports only from layers below it (docs/ARCHITECTURE.md).

Every ``codepeft`` import counts, at module level or inside a function: a function-level import that
points upward is a hidden cycle just the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "codepeft"

#: lowest first; a module may import from its own unit and from any unit in an earlier layer
LAYERS: list[set[str]] = [
    {"codepeft", "studies"},  # the package's version; the packaged study files
    {"errors", "home", "provenance"},
    {"rundir", "sandbox"},
    {"data"},
    {"models", "retrieval", "mining"},
    {"methods"},
    {"training", "generation"},
    {"metrics"},
    {"study"},
    {"report"},
    {"cli"},
    {"__main__"},
]
LAYER_OF = {unit: index for index, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    """``codepeft.models.loading`` -> ``models``; ``codepeft`` -> ``codepeft``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "codepeft"


def _imports(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, module) for line, module in found if module == "codepeft" or module.startswith("codepeft.")]


def _own_unit(path: Path) -> str:
    relative = path.relative_to(SRC)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def test_every_unit_has_a_layer():
    units = {_own_unit(p) for p in SRC.rglob("*.py")} - {"__init__"}
    assert units - set(LAYER_OF) == set()


def test_imports_point_down_the_layers():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        unit = _own_unit(path)
        own = LAYER_OF["codepeft" if unit == "__init__" else unit]
        for line, module in _imports(path):
            target = _unit(module)
            if target != unit and LAYER_OF[target] >= own:
                upward.append(f"{path.relative_to(SRC)}:{line} imports {module}")
    assert upward == []


def test_the_check_sees_function_level_imports(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from codepeft.training import train\n    return train\n")
    assert _imports(source) == [(2, "codepeft.training")]
