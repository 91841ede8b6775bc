"""The house shows its layers: plugins (models, shifts) and readers of results (reports) import
only the core at the top of ``harness``, never the engine that imports every plugin. Checked
in a fresh interpreter, so modules other tests loaded cannot hide an import."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _modules(package: str) -> list[str]:
    pkg = __import__(package)
    return [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, f"{package}.")]


@pytest.mark.parametrize("package", ["reports", "shifts", "models"])
def test_package_never_imports_the_engine(package):
    names = _modules(package)
    code = (
        "import importlib, json, sys\n"
        f"for n in {names!r}:\n"
        "    importlib.import_module(n)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('harness.engine'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], f"{package} imports the engine"


def test_the_check_sees_an_engine_import():
    """The probe itself can fail: importing the engine shows up in it."""
    code = "import sys, harness.engine.run; print([m for m in sys.modules if m.startswith('harness.engine')])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "harness.engine.run" in out.stdout


@pytest.mark.parametrize("package", ["reports", "shifts", "models"])
def test_no_deferred_engine_import_either(package):
    """Imports inside functions do not show at import time: read every module's source."""
    import ast

    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in getattr(node, "names", [])] if isinstance(node, ast.Import) else []
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.startswith(("harness.engine", "harness.cli"))]
    assert offenders == []
