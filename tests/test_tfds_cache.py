"""data=tfds caches a streamed split's verified index: a second load of unchanged prepared files reads no example and
gives the same samples and the same report, skips and findings included; a changed file or option verifies anew, and
a damaged or unwritable cache is a warning, never a failure. The set is a small TFDS builder prepared offline."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from visionkit.data import load
from visionkit.data.sources import tfds as tfds_source
from visionkit.errors import UserError

tfds = pytest.importorskip("tensorflow_datasets")

from test_tfds_stream import (  # noqa: E402
    VisionkitStreamShapes,
    assert_a_forked_worker_reads_what_the_parent_reads,
    assert_same_samples,
    example,
)

NAME = "visionkit_cache_shapes"  # the builder below
BROKEN = 3  # the example whose image is a PNG cut short: a skip
EXAMPLES = 12  # 8 in train, 4 in test
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


class VisionkitCacheShapes(VisionkitStreamShapes):
    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(range(8)), "test": self._generate_examples(range(8, EXAMPLES))}

    def _generate_examples(self, numbers):
        for i in numbers:
            yield i, {**example(i), "image": b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"} if i == BROKEN else example(i)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    tfds.disable_progress_bar()
    root = tmp_path_factory.mktemp("tfds_cache")
    VisionkitCacheShapes(data_dir=str(root)).download_and_prepare(file_format="array_record")
    return root


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "verify" / "tfds"


# The cases' reports hold a skipped broken image, and detection's bad targets (odd examples' class 1 is no class
# of one), segmentation's mask values out of range (7).
CASES = {
    "classification": {},
    "detection": {"class_names": ["square"]},
    "segmentation": {"class_names": ["a", "b"]},
}


def loaded(data_dir, task: str = "segmentation", **options):
    options = {**CASES[task], **options}
    return load(
        "tfds", task=task, name_in_tfds=NAME, targets=task, data_dir=str(data_dir), image_size=[16, 24], **options
    )


def fail(*_, **__):
    pytest.fail("a warm load read or decoded an example")


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "visionkit.data" and r.levelno == logging.WARNING]


@pytest.mark.parametrize("task", list(CASES))
def test_a_second_load_reads_no_example_and_gives_the_same_bundle(prepared, cache_dir, monkeypatch, caplog, task):
    with caplog.at_level(logging.WARNING, logger="visionkit.data"):
        cold = loaded(prepared, task, cache="none")
        cold_warnings = warnings_of(caplog)
        caplog.clear()
        with monkeypatch.context() as patch:
            for owner, name in ((tfds_source, "_inspect"), (tfds_source, "decode_image")):
                patch.setattr(owner, name, fail)
            patch.setattr(tfds_source.Examples, "examples", fail)
            warm = loaded(prepared, task, cache="none")
        warm_warnings = warnings_of(caplog)
    report, again = cold.verification, warm.verification
    assert sum(report.skipped.values()) == 1 + report.skipped["bad_target"] and report.skipped["corrupt"] == 1
    assert report.skipped["bad_target"] == (5 if task == "detection" else 0)  # the odd ones but the broken one
    assert (report.findings["mask_pixels_out_of_range"] > 0) == (task == "segmentation")
    assert (report.cached, again.cached) == (0, EXAMPLES)
    assert {**report.counts(), "verify_cached": EXAMPLES} == again.counts()
    assert report.format_table().splitlines()[1:] == again.format_table().splitlines()[1:]
    assert f"{EXAMPLES} verdicts from the cache" in again.format_table().splitlines()[0]
    assert report.issues == again.issues and cold_warnings == warm_warnings and len(report.issues) > 0
    assert_same_samples(warm, cold)


def test_changed_files_or_options_are_verified_anew(prepared, cache_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)  # modification times kept: the copy's files stamp as the originals do
    assert loaded(copy).verification.cached == 0
    assert loaded(copy).verification.cached == EXAMPLES
    gray = loaded(copy, channels=1).verification
    assert gray.cached == 0 and gray.converted["to_grayscale"] == gray.kept
    assert loaded(copy, channels=1).verification.cached == EXAMPLES
    assert loaded(copy, "detection", class_names=["square", "disc"]).verification.cached == 0
    shard = next((copy / NAME / "1.0.0").glob("*train.array_record*"))
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    assert loaded(copy).verification.cached == 0


@pytest.mark.parametrize("damage", ["garbage", "wrong_arrays"])
def test_a_damaged_cache_file_is_a_warning_and_a_cold_verification(prepared, cache_dir, caplog, damage):
    cold = loaded(prepared)
    files = sorted(cache_dir.glob("*.npz"))
    assert len(files) == 2  # one per split
    for file in files:
        if damage == "garbage":
            file.write_bytes(file.read_bytes()[:100])
        else:
            np.savez(file, report=np.array("{}"), number=np.arange(3))
    with caplog.at_level(logging.WARNING, logger="visionkit.data"):
        again = loaded(prepared)
    assert again.verification.cached == 0 and again.verification.counts() == cold.verification.counts()
    assert sum("index cache" in message and "unreadable" in message for message in warnings_of(caplog)) == 2
    assert_same_samples(again, cold)
    assert loaded(prepared).verification.cached == EXAMPLES  # written anew


def test_an_unwritable_cache_is_a_warning(prepared, tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(blocker))  # no folder can be made under a file, even by root
    with caplog.at_level(logging.WARNING, logger="visionkit.data"):
        assert loaded(prepared).verification.cached == 0
        assert loaded(prepared).verification.kept == EXAMPLES - 1
    assert sum("index cache not written" in message for message in warnings_of(caplog)) == 4


def test_a_cache_folder_inside_the_data_directory_is_refused(prepared, monkeypatch):
    inside = prepared / "cache"
    monkeypatch.setenv("VISIONKIT_CACHE_DIR", str(inside))
    with pytest.raises(UserError, match=r"^the verification cache .* must lie outside the dataset .*: nothing is"):
        loaded(prepared)
    assert not inside.exists()


@pytest.mark.skipif(AS_ROOT, reason="root writes into a read-only folder")
def test_a_read_only_cache_directory_is_a_warning(prepared, cache_dir, caplog):
    cache_dir.mkdir(parents=True)
    cache_dir.chmod(0o500)
    try:
        with caplog.at_level(logging.WARNING, logger="visionkit.data"):
            assert loaded(prepared).verification.cached == 0
    finally:
        cache_dir.chmod(0o700)
    assert sum("index cache not written" in message for message in warnings_of(caplog)) == 2


def test_a_forked_worker_reads_what_the_parent_reads_after_a_warm_load(prepared, cache_dir, monkeypatch):
    loaded(prepared)
    tfds_source._opened.cache_clear()  # as in a new process, which has opened no file yet
    monkeypatch.setattr(tfds_source.Examples, "examples", fail)
    warm = loaded(prepared, cache="none")
    assert warm.verification.cached == EXAMPLES
    split = warm.train
    # The readers a worker inherits exist before the fork: one built in a forked worker crashed it.
    source = tfds_source._opened(split.images.source)[0].data_source
    assert all(reader is not None for reader in source._readers)
    assert_a_forked_worker_reads_what_the_parent_reads(split)
