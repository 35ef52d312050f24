"""The package's layers, read from its imports: tools -> ros | offline -> fusion -> models.

Every import of a gifnet_ros module is counted, the ones inside functions too (a lazy import
is still a dependency). A module may import its own layer and the layers below it; ros and
offline stand side by side and never import each other; nothing imports tools. The modules
at the top (the package's lazy public names and the deprecated old paths) are the public
face and stay outside the rule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gifnet_ros"

# What each layer may import besides itself.
ALLOWED = {
    "models": set(),
    "fusion": {"models"},
    "ros": {"fusion", "models"},
    "offline": {"fusion", "models"},
    "tools": {"ros", "offline", "fusion", "models"},
}


def imported_modules(source: str, module: str) -> set[str]:
    """Every gifnet_ros module ``source`` (the text of ``module``) imports, as dotted names."""
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("gifnet_ros.")}


def violations(package: Path) -> list[str]:
    """Each module that imports a layer the rule closes to it, as 'importer -> layer'."""
    broken = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if len(parts) < 3:  # gifnet_ros/__init__.py and the deprecated top-level paths
            continue
        layer = parts[1]
        module = ".".join(parts)
        targets = {name.split(".")[1] for name in imported_modules(path.read_text(), module)}
        for target in sorted(targets):
            if target in ALLOWED and target != layer and target not in ALLOWED[layer]:
                broken.append(f"{module} -> gifnet_ros.{target}")
    return broken


def test_every_module_belongs_to_a_layer() -> None:
    loose = [
        path.name
        for path in PACKAGE.glob("*.py")
        if path.stem not in {"__init__", "network", "engine", "tim"}
    ]
    assert not loose, f"modules outside the layers: {loose}"
    assert {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} == set(ALLOWED)


def test_imports_point_down_the_layers_only() -> None:
    assert violations(PACKAGE) == []


@pytest.mark.parametrize(
    ("layer", "statement"),
    [
        ("fusion", "from gifnet_ros.ros.stats import FusionStats"),
        ("models", "import gifnet_ros.fusion.engine"),
        ("offline", "from gifnet_ros.ros import head"),
        ("ros", "from ..tools.demo import main"),
        ("offline", "def late():\n    from gifnet_ros.tools import fuse_bag\n"),
    ],
)
def test_the_rule_catches_an_upward_import(tmp_path: Path, layer: str, statement: str) -> None:
    """The check itself can fail: a package of the same shape with one wrong import."""
    for name in ALLOWED:
        (tmp_path / "gifnet_ros" / name).mkdir(parents=True)
        (tmp_path / "gifnet_ros" / name / "__init__.py").write_text("")
    (tmp_path / "gifnet_ros" / layer / "wrong.py").write_text(statement + "\n")
    assert len(violations(tmp_path / "gifnet_ros")) == 1


@pytest.mark.parametrize(
    "module", ["gifnet_ros", "gifnet_ros.fusion.conversion", "gifnet_ros.fusion.pairing"]
)
def test_ros_free_light_modules_load_without_torch(module: str) -> None:
    """Image conversion and stamp pairing serve processes that never fuse (bag readers, the
    DDS client); the package's public names are lazy so that they stay light."""
    code = f"import sys, {module}; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"


def test_old_module_paths_warn_and_still_work() -> None:
    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    from gifnet_ros.network import GIFNet, load_model\n"
        "    from gifnet_ros.engine import FusionEngine\n"
        "    from gifnet_ros.tim import TIM, load_tim\n"
        "print(sorted(str(w.message).split(';')[0] for w in caught"
        " if w.category is DeprecationWarning))\n"
        "import gifnet_ros.models.gifnet as m; print(GIFNet is m.GIFNet)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    warned, same = done.stdout.split("\n")[:2]
    assert warned == str(
        [
            "gifnet_ros.engine is deprecated",
            "gifnet_ros.network is deprecated",
            "gifnet_ros.tim is deprecated",
        ]
    )
    assert same == "True"
