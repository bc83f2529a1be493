"""Data sources, one module per dataset name. Each module registers its loader in DATASETS; importing
this package imports every module, so a new file is found without being listed here."""

from __future__ import annotations

from visionkit.registry import import_submodules

import_submodules(__name__)
