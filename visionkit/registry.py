"""Name -> object registries for models, tasks and datasets.

A name is registered where it is defined, and is the contract with the user: the YAML file stem,
the registry key and the builder's name are the same string.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Any

from visionkit.errors import UserError


def unknown_name_message(kind: str, name: str, choices: Iterable[str]) -> str:
    """One line: what was asked for, the closest existing name, and everything that exists."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=1, cutoff=0.7)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"unknown {kind} '{name}'{hint}; available: {', '.join(choices)}"


def import_submodules(package: str, skip: set[str] = frozenset()) -> None:
    """Import every module of `package` except those named in `skip` or starting with "_", so that a
    new file registers its entries without being listed anywhere."""
    path = importlib.import_module(package).__path__
    for module in pkgutil.iter_modules(path):
        if module.name not in skip and not module.name.startswith("_"):
            importlib.import_module(f"{package}.{module.name}")


class Registry:
    """A small name -> object map with metadata; registering a name twice is an error."""

    def __init__(self, kind: str):
        self.kind = kind
        self._objects: dict[str, Any] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def register(self, name: str | None = None, **meta: Any) -> Callable[[Any], Any]:
        def add(obj: Any) -> Any:
            key = name or obj.__name__
            if key in self._objects:
                raise ValueError(f"{self.kind} '{key}' is already registered")
            self._objects[key] = obj
            self._meta[key] = meta
            return obj

        return add

    def get(self, name: str) -> Any:
        if name not in self._objects:
            raise UserError(unknown_name_message(self.kind, name, self._objects))
        return self._objects[name]

    def meta(self, name: str) -> dict[str, Any]:
        self.get(name)
        return self._meta[name]

    def names(self) -> list[str]:
        return sorted(self._objects)

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def __len__(self) -> int:
        return len(self._objects)


MODELS = Registry("model")
TASKS = Registry("task")
DATASETS = Registry("dataset")
