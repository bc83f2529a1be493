"""The one-way import order: the import-linter contracts of pyproject.toml, and what a light import
pulls in at run time (which a static check cannot see through package __init__ files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after running `statement` in the project root."""
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_the_import_contracts_hold():
    # In its own process, run where lint-imports finds the contracts: ./pyproject.toml.
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tracking_imports_no_model_no_task_and_no_pycocotools():
    loaded = modules_after("import visionkit.tracking")
    heavy = {
        name
        for name in loaded
        if name.split(".")[0] == "pycocotools" or name.startswith(("visionkit.models", "visionkit.tasks"))
    }
    assert not heavy
