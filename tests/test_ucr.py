"""data=ucr: the .ts and CSV readers and their verification findings, the archive's splits, the series through
the loader, series augmentation, and the 1-NN baselines against the UCR archive's published figures."""

from __future__ import annotations

import numpy as np
import pytest

from visionkit import data
from visionkit.data.augment.series import SeriesAugmenter, build_series_augmenter
from visionkit.data.loader import BatchLoader
from visionkit.data.series import nearest_neighbour_accuracy, nearest_neighbour_baselines, read_predict_file
from visionkit.errors import UserError

TS_HEADER = """# a comment
@problemName Toy
@timeStamps false
@missing true
@univariate false
@dimensions 2
@equalLength false
@classLabel true up down
@data
"""
TS_CASES = [
    "1,2,3,4:5,6,7,8:up",  # line 10
    "1,?,3,4:5,6,7,8:down",  # line 11: a missing value
    "1,2,3:4,5,6:up",  # line 12: shorter (ragged)
    "1,2,3,4:5,6,7,8:sideways",  # line 13: a label the header does not declare
    "1,2,3,4:down",  # line 14: one channel of two
    "1,2,x,4:5,6,7,8:up",  # line 15: not a number
    "4,3,2,1:8,7,6,5:down",  # line 16
]


@pytest.fixture
def toy_ts(tmp_path):
    train = tmp_path / "Toy_TRAIN.ts"
    train.write_text(TS_HEADER + "\n".join(TS_CASES + [TS_CASES[0], TS_CASES[6]] * 2) + "\n")
    (tmp_path / "Toy_TEST.ts").write_text(TS_HEADER + "\n".join([TS_CASES[0], TS_CASES[6]]) + "\n")
    return train


def test_a_ts_file_is_read_with_its_problems_reported_by_line(toy_ts, tmp_path):
    before = sorted(tmp_path.iterdir())
    bundle = data.load("ucr", task="classification", path=str(toy_ts), val_fraction=0.25)
    report = bundle.verification
    assert bundle.name == "Toy" and bundle.class_names == ["up", "down"]
    assert report.kept == 8 + 2 and dict(report.skipped) == {"bad_label": 1, "bad_channels": 1, "bad_value": 1}
    assert report.findings["missing_values"] == 1 and report.findings["ragged_lengths"] == 1
    issues = "\n".join(report.issues)
    assert "Toy_TRAIN.ts line 11: 1 missing values (NaN), masked out" in issues
    assert "skipped Toy_TRAIN.ts line 13: label 'sideways' is not one of @classLabel up down" in issues
    assert "skipped Toy_TRAIN.ts line 14: 1 channels, the header says 2" in issues
    assert "skipped Toy_TRAIN.ts line 15: 'x' is not a number" in issues
    assert len(bundle.train) + len(bundle.val) == 8 and len(bundle.test) == 2  # the TEST sibling is the test split
    everything = np.concatenate([bundle.train.images, bundle.val.images])
    assert everything.dtype == np.float32 and everything.shape == (8, 4, 2)
    short = everything[np.isnan(everything[:, 3]).all(axis=1)]
    np.testing.assert_array_equal(short[0, :3], [[1, 4], [2, 5], [3, 6]])  # padded at the end with NaN
    assert sorted(tmp_path.iterdir()) == before  # nothing written beside the data


def test_a_csv_of_series_is_read_and_its_test_split_carved(tmp_path):
    rows = [f"{label}," + ",".join(str(v) for v in np.arange(6) * (1 + label)) for label in (0, 1) * 10]
    path = tmp_path / "toy.csv"
    path.write_text("label,t0,t1,t2,t3,t4,t5\n" + "\n".join(rows) + "\n1,1,2,,\n")
    bundle = data.load("ucr", task="classification", path=str(path), test_fraction=0.2, val_fraction=0.2)
    assert bundle.class_names == ["0", "1"] and bundle.train.images.shape[1:] == (6, 1)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 21
    assert bundle.verification.findings["ragged_lengths"] == 1


def test_bad_names_and_files_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"^data.dataset: unknown UCR/UEA dataset 'GunPont' \(did you mean 'GunPoint'"):
        data.load("ucr", task="classification", dataset="GunPont")
    text = tmp_path / "notes.json"
    text.write_text("{}")
    with pytest.raises(UserError, match=r"is neither a .ts nor a .csv file of series"):
        data.load("ucr", task="classification", path=str(text))


def test_gunpoint_keeps_the_archives_split_and_flows_through_the_loader():
    bundle = data.load("ucr", task="classification", dataset="GunPoint")
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (40, 10, 150)  # 50 train, 150 test
    assert bundle.image_shape == (150, 1) and bundle.train.input_key == "series"
    assert np.bincount(bundle.val.targets["label"]).tolist() == [5, 5]  # stratified
    sample = bundle.train.sample(0)
    assert sample["series"].dtype == np.float32 and sample["series"].shape == (150, 1)
    series, labels = BatchLoader(bundle.train, lambda s: np.stack([x["label"] for x in s]), batch_size=16)[0]
    assert series.dtype == np.float32 and series.shape == (16, 150, 1) and labels.shape == (16,)
    mean, std = bundle.pixel_stats()
    flat = bundle.train.images.reshape(-1)
    assert mean == pytest.approx([flat.mean()], abs=1e-6) and std == pytest.approx([flat.std()], rel=1e-5)


def test_japanese_vowels_is_padded_to_its_longest_series():
    bundle = data.load("ucr", task="classification", dataset="JapaneseVowels")
    assert bundle.image_shape == (29, 12) and len(bundle.class_names) == 9
    lengths = (~np.isnan(bundle.test.images).all(axis=2)).sum(axis=1)
    assert lengths.min() == 7 and lengths.max() == 29  # the archive's lengths: 7 to 29
    assert bundle.verification.findings["ragged_lengths"] > 0


def test_the_1nn_baselines_reproduce_the_ucr_archive_on_gunpoint():
    # The UCR archive (Dau et al. 2019), GunPoint: 1-NN Euclidean error 0.0867 (137 of 150 correct),
    # 1-NN DTW with an unconstrained window 0.0933 (136 of 150).
    bundle = data.load("ucr", task="classification", dataset="GunPoint")
    found = nearest_neighbour_baselines(bundle, len(bundle.test))
    assert round(found["1nn_euclidean_accuracy"] * 150) == 137
    assert round(found["1nn_dtw_accuracy"] * 150) == 136
    assert nearest_neighbour_baselines(bundle, len(bundle.val)) == {}  # another split: no baseline


def test_1nn_euclidean_against_a_direct_computation():
    rng = np.random.default_rng(0)
    reference, queries = rng.normal(size=(12, 9, 2)).astype("float32"), rng.normal(size=(7, 9, 2)).astype("float32")
    reference_labels, labels = rng.integers(0, 3, 12), rng.integers(0, 3, 7)
    distances = ((queries[:, None] - reference[None]) ** 2).sum(axis=(2, 3))
    expected = np.mean(reference_labels[distances.argmin(axis=1)] == labels)
    assert nearest_neighbour_accuracy(reference, reference_labels, queries, labels, "euclidean") == expected


def augmenter(**options) -> SeriesAugmenter:
    spec = {"jitter": {"sigma": 0.1}, "scaling": {"sigma": 0.2}, "magnitude_warp": {}, "time_warp": {}}
    spec["window_slice"] = {"ratio": 0.5}
    return SeriesAugmenter([{"name": n, **spec[n], **options} for n in spec], seed=3)


def test_series_augmentation_is_seeded_by_place_and_keeps_the_padding():
    rng = np.random.default_rng(1)
    samples = [{"series": rng.normal(size=(20, 2)).astype("float32"), "label": i} for i in range(4)]
    samples[1]["series"][15:] = np.nan
    whole = augmenter()(samples, epoch=2, batch=5)
    again = augmenter()(samples[2:], epoch=2, batch=5, positions=[2, 3], batch_length=4)
    np.testing.assert_array_equal(whole[2]["series"], again[0]["series"])  # a row as in its whole batch
    assert not np.allclose(whole[0]["series"], samples[0]["series"])
    assert np.isnan(whole[1]["series"][15:]).all() and not np.isnan(whole[1]["series"][:15]).any()
    other_epoch = augmenter()(samples, epoch=3, batch=5)
    assert not np.allclose(other_epoch[0]["series"], whole[0]["series"])
    assert [s["label"] for s in whole] == [0, 1, 2, 3]


def test_each_series_transform_does_what_it_says():
    from visionkit.data.augment import series as transforms

    rng, x = np.random.default_rng(0), np.linspace(0, 1, 50)[:, None].repeat(2, axis=1) + 1.0
    scaled = transforms.scaling(x, rng, sigma=0.3)
    ratios = scaled / x
    assert np.allclose(ratios, ratios[0]) and not np.allclose(ratios[0, 0], ratios[0, 1])
    noisy = transforms.jitter(np.zeros((20000, 1)), rng, sigma=0.5)
    assert noisy.std() == pytest.approx(0.5, rel=0.03)
    warped = transforms.time_warp(x, rng, sigma=0.3)
    np.testing.assert_allclose(warped[[0, -1]], x[[0, -1]], atol=1e-9)  # the same start and end
    assert np.all(np.diff(warped[:, 0]) >= -1e-12)  # time still runs forward
    sliced = transforms.window_slice(x, rng, ratio=0.5)
    assert sliced.shape == x.shape and sliced[-1, 0] - sliced[0, 0] == pytest.approx(0.5 * (x[-1, 0] - x[0, 0]), 0.05)


def test_bad_series_transforms_are_one_line_errors():
    assert build_series_augmenter([], seed=0) is None
    with pytest.raises(UserError, match=r"augment.series\[0\]: unknown series transform 'jiter' \(did you mean"):
        build_series_augmenter([{"name": "jiter"}], seed=0)
    with pytest.raises(UserError, match=r"augment.series\[0\] \(jitter\): unknown argument sgima; it takes sigma"):
        build_series_augmenter([{"name": "jitter", "sgima": 1}], seed=0)
    with pytest.raises(UserError, match=r"window_slice: ratio must be in \(0, 1\], received 2"):
        build_series_augmenter([{"name": "window_slice", "ratio": 2}], seed=0)


def test_predict_reads_series_from_ts_csv_and_npz(toy_ts, tmp_path):
    np.savez(tmp_path / "x.npz", series=np.ones((3, 5, 2), "float32"))
    assert read_predict_file(tmp_path / "x.npz", 4, 2).shape == (3, 4, 2)  # cut to the model's length
    from_ts = read_predict_file(toy_ts, 6, 2)
    assert from_ts.shape == (8, 6, 2) and np.isnan(from_ts[:, 4:]).all()  # padded to it
    with pytest.raises(UserError, match=r"holds series of 2 channels, the model takes 3"):
        read_predict_file(toy_ts, 6, 3)


def test_preview_of_series_is_a_one_line_error():
    from hydra import compose, initialize_config_dir

    from pipelines import preview
    from pipelines.run import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["mode=preview", "data=ucr", "tracking=none"])
    with pytest.raises(UserError, match=r"^mode=preview draws images; data=ucr holds series$"):
        preview.run(cfg)
