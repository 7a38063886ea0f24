"""DESIGN.md section 1: imports point downward only, and ``import ssmkit`` needs no optional package."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "ssmkit"
ORDER = ["core", "ops", "layers", "models", "tasks", "training", "runs", "benchmarks", "cli"]
# benchmarks sit below cli and may use runs, training and tasks; tasks may not import training, etc.
RANK = {name: i + 1 for i, name in enumerate(ORDER)}
# the foundation modules (typed configs, the generic registry, atomic writes, the allocator, the
# log-once helper) import no layer; the correctness checker (testing) builds mixers and sits just above layers
RANK.update({"config": 0, "registry": 0, "io": 0, "runtime": 0, "log": 0, "testing": RANK["layers"] + 0.5})


def _imports(path: pathlib.Path) -> list[str]:
    tree = ast.parse(path.read_text())
    package = path.relative_to(SRC.parent).with_suffix("").parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                mod = ".".join(base + ([node.module] if node.module else []))
                found.append(mod)
                if node.module is None:
                    found += [".".join(base + [a.name]) for a in node.names]
            elif node.module:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names]
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "ssmkit" and parts[1] in RANK else None


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_downward(path):
    own = _layer("ssmkit." + ".".join(path.relative_to(SRC).parts))
    if own is None:
        return
    for mod in _imports(path):
        other = _layer(mod)
        if other is not None:
            assert RANK[other] <= RANK[own], f"{path.relative_to(SRC)} ({own}) imports {mod} ({other})"


def test_import_without_optional_packages():
    """Block every optional package and check that ``import ssmkit`` and building mixers work."""
    blocked = [
        "triton", "transformers", "sktime", "matplotlib", "tqdm", "mambapy", "scipy", "safetensors",
        "statsmodels", "sklearn", "rich", "tensorboard", "pmdarima", "networkx",
    ]
    code = (
        "import sys\n"
        # None in sys.modules is how Python spells 'not installed' for both import and find_spec
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None\n"
        "import torch, ssmkit\n"
        "for n in ssmkit.list_mixers():\n"
        "    ssmkit.create_mixer(n, 8)(torch.zeros(1, 3, 8))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
