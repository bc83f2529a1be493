"""One list of modes: pipelines/modes.py names exactly the pipelines modules that define `run(cfg)`; modes
share steps through shared modules, never through each other."""

import ast
from pathlib import Path

from pipelines.modes import MODES, modes_help

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"


def mode_modules() -> set[str]:
    """The pipelines modules with a top-level `run` function: what `mode=<module>` dispatches to."""
    return {
        path.stem
        for path in PIPELINES.glob("*.py")
        if any(isinstance(node, ast.FunctionDef) and node.name == "run" for node in ast.parse(path.read_text()).body)
    }


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_the_list_of_modes_is_the_set_of_mode_modules():
    assert set(MODES) == mode_modules()


def test_no_mode_imports_another_mode():
    modes = {f"pipelines.{name}" for name in MODES}
    reached = {
        name: sorted(imported_modules(PIPELINES / f"{name}.py") & (modes - {f"pipelines.{name}"})) for name in MODES
    }
    assert {name: found for name, found in reached.items() if found} == {}


def test_the_help_lists_each_mode_with_its_description():
    lines = modes_help().splitlines()
    assert [line.split()[0] for line in lines] == [f"mode={name}" for name in MODES]
    assert all(line.endswith(description) for line, description in zip(lines, MODES.values()))
