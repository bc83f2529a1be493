"""The real command on the UCR data aeon ships: every sequence model trains, is evaluated beside the 1-NN
baselines, exported with a float32 series signature and verified; JapaneseVowels trains with its padding
masked; predict reads the archive's .ts file back; regression on a series dataset."""

from __future__ import annotations

import csv

import pytest

from visionkit.data.sources.ucr import archive_folder

pytestmark = pytest.mark.slow

SMALL = {
    "tdnn": [],
    "wavenet": ["model.filters=4", "model.skip_filters=4", "model.layers_per_block=3", "model.blocks=1"],
    "fcn1d": ["model.width=0.125"],
    "resnet1d": ["model.width=0.125"],
    "inception_time": ["model.width=0.25", "model.depth=3"],
}
QUICK = ["trainer.epochs=1", "trainer.batch_size=16", "export.num_images=8"]


def test_fcn1d_trains_on_gunpoint_beside_the_baselines_and_predicts_from_its_export(pipeline):
    done = pipeline("data=ucr", "model=fcn1d", "augment=series", *SMALL["fcn1d"], *QUICK)
    assert "baselines: 1nn_euclidean_accuracy=0.9133  1nn_dtw_accuracy=0.9067" in done.stdout
    assert "export verified" in done.stdout
    client, runs = pipeline.mlflow_runs("classification")
    metrics = runs[0].data.metrics
    assert metrics["test_1nn_euclidean_accuracy"] == pytest.approx(137 / 150)
    assert metrics["test_1nn_dtw_accuracy"] == pytest.approx(136 / 150) and "test_accuracy" in metrics
    export = next((pipeline.run_dir / "export" / "fcn1d").iterdir())
    compared = pipeline("mode=compare", "compare.columns=4").stdout  # the network beside its baselines
    assert "test_1nn_dtw_accuracy" in compared and "test_1nn_euclidean_accuracy" in compared
    output = pipeline.tmp / "predictions.csv"
    test_file = archive_folder() / "GunPoint" / "GunPoint_TEST.ts"
    pipeline("mode=predict", f"checkpoint={export}", f"predict.input={test_file}", f"predict.output={output}")
    rows = list(csv.DictReader(output.open()))
    assert len(rows) == 150 and rows[0]["file"].endswith("GunPoint_TEST.ts#0") and rows[0]["class_name"] in "12"


@pytest.mark.parametrize("name", ["tdnn", "wavenet", "resnet1d", "inception_time"])
def test_every_sequence_model_trains_and_exports(pipeline, name):
    done = pipeline("data=ucr", "data.dataset=ItalyPowerDemand", f"model={name}", *SMALL[name], *QUICK)
    assert "export verified" in done.stdout and "test_accuracy=" in done.stdout


def test_japanese_vowels_trains_with_its_padding_masked(pipeline):
    done = pipeline("data=ucr", "data.dataset=JapaneseVowels", "model=wavenet", *SMALL["wavenet"], *QUICK)
    assert "ragged lengths" in done.stdout and "export verified" in done.stdout
    assert "1nn_dtw_accuracy=" in done.stdout and "1nn_euclidean_accuracy" not in done.stdout  # unequal lengths


def test_regression_on_a_series_dataset(pipeline):
    done = pipeline("task=regression", "data=ucr", "data.dataset=Covid3Month", "model=fcn1d", *SMALL["fcn1d"], *QUICK)
    assert "test_mae=" in done.stdout and "export verified" in done.stdout


def test_summary_gives_the_receptive_field_in_time_steps(pipeline):
    done = pipeline("mode=summary", "model=wavenet")
    assert "Receptive field of the last convolution (post_conv): 127 time steps" in done.stdout


def test_fcn1d_on_gunpoint_needs_its_batch_norm_statistics_re_estimated(pipeline):
    """30 epochs of 3 batches: Keras's moving averages still hold their start, so inference is near chance
    (0.59 when measured); re-estimated before each validation (trainer.precise_bn=auto): 0.79 (0.99 after the
    default 100 epochs)."""
    quick = ["data=ucr", "model=fcn1d", "trainer.epochs=30", "export.enabled=false"]
    stale = pipeline(*quick, "trainer.precise_bn=false").stdout
    precise = pipeline(*quick, "trainer.precise_bn=auto").stdout
    accuracy = {
        name: float(out.split("test_accuracy=")[1].split()[0]) for name, out in [("stale", stale), ("precise", precise)]
    }
    assert "batch norm statistics re-estimated" in precise and "re-estimated" not in stale
    assert accuracy["precise"] > accuracy["stale"] + 0.1, accuracy
