"""Albumentations pipelines declared as data: a list of {name: <transform class>, <its arguments>}.

Augmentation is seeded per batch, so a run is reproducible whatever the number of loader workers.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any, Iterable, Mapping

import albumentations as A
import numpy as np

from visionkit.errors import UserError
from visionkit.registry import unknown_name_message


def _transform(spec: Mapping[str, Any], position: int) -> A.BasicTransform:
    spec = dict(spec)
    name = spec.pop("name", None)
    where = f"augment.transforms[{position}]"
    if not isinstance(name, str) or not isinstance(getattr(A, name, None), type):
        choices = [n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)]
        raise UserError(f"{where}: " + unknown_name_message("Albumentations transform", name, choices))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            transform = getattr(A, name)(**spec)
    except Exception as error:  # pydantic and TypeError messages name the bad argument
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{where} ({name}): {first_line}") from None
    # Albumentations only warns about unknown arguments; a silently ignored typo is worse than an error.
    for warning in caught:
        if "not valid for transform" in str(warning.message):
            raise UserError(f"{where} ({name}): {warning.message}")
    return transform


class Augmenter:
    """Applies a Compose to samples. Each thread gets its own copy, reseeded for every batch."""

    def __init__(self, transforms: Iterable[Mapping[str, Any]], seed: int = 0):
        self.specs = [dict(t) for t in transforms]
        self.seed = seed
        self._compose()  # fail early on a bad spec
        self._local = threading.local()

    def _compose(self) -> A.Compose:
        return A.Compose([_transform(spec, i) for i, spec in enumerate(self.specs)])

    def __call__(self, samples: list[dict[str, Any]], *, epoch: int, batch: int) -> list[dict[str, Any]]:
        compose = getattr(self._local, "compose", None)
        if compose is None:
            compose = self._local.compose = self._compose()
        compose.set_random_seed(int(np.random.SeedSequence([self.seed, epoch, batch]).generate_state(1)[0]))
        return [{**sample, "image": compose(image=sample["image"])["image"]} for sample in samples]

    def __getstate__(self):  # worker processes build their own thread-local copies
        return {"specs": self.specs, "seed": self.seed}

    def __setstate__(self, state):
        self.__init__(state["specs"], state["seed"])


def build_augmenter(transforms: Iterable[Mapping[str, Any]] | None, seed: int = 0) -> Augmenter | None:
    transforms = list(transforms or [])
    return Augmenter(transforms, seed) if transforms else None
