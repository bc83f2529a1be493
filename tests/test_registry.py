import sys
from pathlib import Path

import pytest

from visionkit.data import DATASETS
from visionkit.errors import UserError
from visionkit.models import MODELS
from visionkit.registry import Registry, import_submodules, unknown_name_message
from visionkit.tasks import TASKS

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_register_get_and_metadata():
    registry = Registry("widget")

    @registry.register(tasks=("a",))
    def gear():
        return 1

    assert registry.get("gear") is gear
    assert registry.meta("gear") == {"tasks": ("a",)}
    assert "gear" in registry and len(registry) == 1 and registry.names() == ["gear"]


def test_duplicate_name_is_an_error():
    registry = Registry("widget")
    registry.register("gear")(lambda: 1)
    with pytest.raises(ValueError, match="widget 'gear' is already registered"):
        registry.register("gear")(lambda: 2)


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UserError, match=r"unknown model 'lenet' \(did you mean 'lenet5'\?\); available: .*resnet18"):
        MODELS.get("lenet")
    assert unknown_name_message("task", "zzz", ["a", "b"]) == "unknown task 'zzz'; available: a, b"


@pytest.mark.parametrize("group, registry", [("model", MODELS), ("data", DATASETS), ("task", TASKS)])
def test_every_config_file_names_a_registered_entry(group, registry):
    for path in (CONF / group).glob("*.yaml"):
        assert path.stem in registry, f"conf/{group}/{path.name} has no registered {registry.kind}"
        text = path.read_text()
        assert f"name: {path.stem}\n" in text, f"conf/{group}/{path.name} must say name: {path.stem}"


def test_every_tuning_file_names_a_registered_task_dataset_and_model():
    # conf/tuning/<task>_<data>_<model>.yaml applies only to that combination; a renamed model or
    # dataset would silently orphan it.
    combinations = {f"{t}_{d}_{m}" for t in TASKS.names() for d in DATASETS.names() for m in MODELS.names()}
    tuning = list((CONF / "tuning").glob("*.yaml"))
    assert tuning
    for path in tuning:
        assert path.stem in combinations, f"conf/tuning/{path.name} is not <task>_<data>_<model>"
        assert path.read_text().startswith("# "), f"conf/tuning/{path.name} must say why in a first comment"


def test_import_submodules_imports_every_module_but_the_skipped_and_private(tmp_path, monkeypatch):
    package = tmp_path / "zoo_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("alpha", "beta", "shared", "_private"):
        (package / f"{name}.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import_submodules("zoo_pkg", skip={"shared"})
    imported = {name for name in sys.modules if name.startswith("zoo_pkg.")}
    assert imported == {"zoo_pkg.alpha", "zoo_pkg.beta"}
