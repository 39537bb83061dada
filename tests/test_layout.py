"""The package's shape holds: pytest is imported only by plugin/, and no layer imports a
layer above it (core < stats/client < runs < monitor < plugin, cli)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_llmeval"
NAME = "pytest_llmeval"

# Each layer may import only from the layers listed (and itself).
# The core: the top-level modules a user's test calls (datasets, metrics, the judge...).
CORE = frozenset({"core", "client", "stats"})
ALLOWED = {
    "stats": frozenset({"stats", "core"}),
    "client": CORE,
    "core": CORE,
    "runs": CORE | {"runs"},
    "monitor": CORE | {"runs", "monitor"},
    "plugin": CORE | {"runs", "plugin"},
    "cli": CORE | {"runs", "monitor", "cli"},
    "testing": frozenset({"testing"}),
    "api": frozenset({"core", "client", "stats", "plugin"}),  # `batched` is the plugin's
}
# Dataset.params() is pytest's parametrization, kept as a method for the API's sake: it
# only reaches the plugin's function, inside the method.
EXCEPTIONS = {("pytest_llmeval.dataset", "pytest_llmeval.plugin.collection")}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "api"  # the package's __init__: the public API, re-exported lazily
    if parts[1] in ("client", "stats", "runs", "monitor", "plugin", "cli", "testing"):
        return parts[1]
    return "core"


def imports(module: str, path: Path) -> set[str]:
    """Every module imported anywhere in the file: at the top, in functions, for types."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # `from . import x` may import the submodule x
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return found


def test_no_layer_imports_a_layer_above_it() -> None:
    known = modules()
    wrong = []
    for module, path in known.items():
        for target in imports(module, path):
            if target not in known or target == NAME or (module, target) in EXCEPTIONS:
                continue
            if layer(target) not in ALLOWED[layer(module)]:
                wrong.append(f"{module} ({layer(module)}) imports {target} ({layer(target)})")
    assert wrong == []


def test_only_the_plugin_imports_pytest_in_its_source() -> None:
    wrong = sorted(
        module
        for module, path in modules().items()
        if layer(module) != "plugin"
        and any(t.split(".")[0] in ("pytest", "_pytest") for t in imports(module, path))
    )
    assert wrong == []


# Modules imported in a clean interpreter (which has not imported pytest), all in one
# process, then, if pytest arrived, each alone to name the culprits.
PROBE = """
import importlib, json, subprocess, sys
names = json.loads(sys.argv[1])
for name in names:
    importlib.import_module(name)
if "pytest" not in sys.modules and "_pytest" not in sys.modules:
    print(json.dumps([]))
else:
    alone = ("import importlib, sys; importlib.import_module(sys.argv[1]); "
             "print('pytest' in sys.modules)")
    run = [subprocess.run([sys.executable, "-c", alone, n], capture_output=True, text=True)
           for n in names]
    print(json.dumps([n for n, r in zip(names, run) if r.stdout.strip() != "False"]))
"""


def test_no_module_outside_the_plugin_imports_pytest_when_imported() -> None:
    names = [m for m in modules() if layer(m) != "plugin"]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(names)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr  # a module that failed to import
    assert json.loads(out.stdout) == []
