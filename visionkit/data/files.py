"""Where the files of a user's dataset are: its root, its split folders and its images."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from visionkit.data.core import SPLIT_NAMES
from visionkit.errors import UserError

logger = logging.getLogger("visionkit.data")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif"})
# Folder names a split goes by (Roboflow and others export "valid").
SPLIT_ALIASES = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}


def existing_path(path: str | None, what: str, key: str = "data.path") -> Path:
    """The user's path, which must exist; `what` says what it should point at."""
    if not path:
        raise UserError(f"{key} is not set: pass {key}=<{what}>")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise UserError(f"{key}: {resolved} does not exist (expected {what})")
    if not os.access(resolved, os.R_OK | (os.X_OK if resolved.is_dir() else 0)):
        raise UserError(f"{key}: {resolved} cannot be read (permission denied)")
    return resolved


def read_text(path: Path) -> str:
    """A text file that describes a dataset (a class list, a YAML); a one-line UserError naming it when it cannot be
    read as UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: Windows editors begin with a byte-order mark
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path} cannot be read as UTF-8 text ({str(error).splitlines()[0]})") from None


def split_name(name: str) -> str | None:
    """'train', 'val' or 'test' for a folder or CSV value naming a split, else None."""
    return next((split for split, aliases in SPLIT_ALIASES.items() if name.lower() in aliases), None)


def split_folders(root: Path) -> dict[str, Path]:
    """The train/ val/ test/ sub-folders of root when it has a train/ folder, else {"train": root}:
    the splits the data does not define are carved from train later."""
    found = {split_name(p.name): p for p in sorted(root.iterdir()) if p.is_dir() and split_name(p.name)}
    if "train" not in found:
        if found:
            raise UserError(f"{root} has {', '.join(p.name for p in found.values())} but no train/ folder")
        return {"train": root}
    return {split: found[split] for split in SPLIT_NAMES if split in found}


def list_images(folder: Path) -> list[Path]:
    """Image files under folder (recursively, hidden files and folders left out), sorted for reproducibility.
    Whatever is not a folder is listed, a link to nothing, a link loop or a pipe included, so that verification
    reports it rather than leaving it out unsaid; a sub-folder that cannot be read is a warning naming it."""
    found = []
    for directory, folders, files in os.walk(folder, onerror=_unreadable_folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        found += [
            Path(directory, name)
            for name in files
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS
        ]
    return sorted(found)


def _unreadable_folder(error: OSError) -> None:
    logger.warning(f"{error.filename} cannot be read ({error.strerror}): the images in it are left out")
