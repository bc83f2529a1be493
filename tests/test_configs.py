"""The config files say what the code does: every model option equals its builder's default (or is
listed here as a deliberate difference), shared blocks are stated once, and which models have
ImageNet weights is the models' registry metadata, shown in --help and in the configs."""

from __future__ import annotations

import inspect

import keras
import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipelines.run import CONF_DIR, print_models
from pipelines.settings import check_option_types
from visionkit.errors import UserError
from visionkit.models import MODELS, transfer

MODEL_FILES = sorted(CONF_DIR.glob("model/*.yaml"))
AUGMENT_FILES = sorted(CONF_DIR.glob("augment/*.yaml"))

# Builder keywords the pipeline sets from the data and the task, so no model config holds them.
PIPELINE_KEYWORDS = {"input_shape", "num_classes", "include_top", "classifier_activation", "pixel_mean", "pixel_std"}

# Config values that differ from the builder's defaults (the paper's) on purpose. The detection models'
# configs suit the built-in 64x64 `shapes` scenes (objects of 4 to 40 pixels) on a CPU, and each of these
# keys' comments gives the paper's value. retinanet's scales are the paper's 2^(k/3), written to 4 decimals.
DELIBERATE = {
    "faster_rcnn": {
        "backbone",
        "width",
        "feature_stride",
        "anchor_sizes",
        "pre_nms_proposals",
        "proposals",
        "pooled_size",
        "pooling",
        "fc_units",
        "dropout",
    },
    "retinanet": {"backbone", "width", "strides", "anchor_size", "scales", "aspect_ratios", "head_depth"},
}


def composed(group: str, option: str) -> dict:
    """conf/<group>/<option>.yaml as the pipeline sees it, its defaults list applied."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[f"{group}={option}"])[group])


def comments(path) -> dict[str, str]:
    """{top-level key: the comment on its line} of a YAML file."""
    found = {}
    for line in path.read_text().splitlines():
        if line[:1].isalpha() and ":" in line:
            key, _, rest = line.partition(":")
            found[key] = rest.partition("#")[2].strip()
    return found


def as_lists(value):
    return [as_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_every_model_option_is_a_builder_keyword_with_its_default(path):
    name = path.stem
    options = composed("model", name)
    assert options.pop("name") == name and options.pop("weights") is None and options.pop("freeze") is None
    builder = MODELS.get(name)
    check_option_types(builder, options, "model")
    defaults = {key: as_lists(parameter.default) for key, parameter in inspect.signature(builder).parameters.items()}
    deliberate = DELIBERATE.get(name, set())
    assert {key for key in options if options[key] != defaults[key]} == deliberate
    assert set(defaults) - set(options) <= PIPELINE_KEYWORDS, "every other builder option is in the config file"
    notes = comments(path)
    assert all(notes[key] for key in options), f"conf/model/{path.name}: every option says what it does"
    assert all("paper:" in notes[key] for key in deliberate), "a deliberate difference gives the paper's value"


def test_shared_blocks_are_stated_once():
    file_sources = [CONF_DIR / "data" / f"{name}.yaml" for name in ("folder", "csv", "coco", "masks", "yolo", "voc")]
    for paths, shared in (
        (MODEL_FILES, "model_common"),
        (AUGMENT_FILES, "augment_common"),
        (file_sources, "files_common"),
    ):
        shared_values = yaml.safe_load((CONF_DIR / f"{shared}.yaml").read_text())
        keys = set(shared_values)
        for path in paths:
            text = yaml.safe_load(path.read_text())
            # A preset that also sets data keys (augment=imagenet) is a _global_ file: its own keys sit under
            # `augment:`, and the shared block goes there too.
            in_global = path.read_text().startswith("# @package _global_")
            assert text["defaults"] == [f"/{shared}@{path.parent.name if in_global else '_here_'}", "_self_"], path
            own = text[path.parent.name] if in_global else text
            # A shared key may be set to another value (augment=none keeps every box: it has no transforms that
            # could move one; augment=imagenet reads the photo at full resolution), never copied.
            copied = {key for key in keys & set(own) if own[key] == shared_values[key]}
            assert not copied, (path, copied)


@pytest.mark.parametrize("path", AUGMENT_FILES, ids=lambda p: p.stem)
def test_every_augment_option_gets_the_shared_keys(path):
    assert {"min_visibility", "min_area", "batched"} <= set(composed("augment", path.stem))


def test_imagenet_metadata_is_what_load_imagenet_weights_serves():
    with_weights = transfer.imagenet_models()
    assert with_weights == [
        "densenet121",
        "densenet169",
        "densenet201",
        "resnet101",
        "resnet152",
        "resnet50",
        "vgg16",
        "vgg19",
    ]
    for name in with_weights:
        application, mode = transfer.imagenet_source(name)
        assert callable(getattr(keras.applications, application)) and mode in ("caffe", "torch")
    for name in set(MODELS.names()) - set(with_weights):
        with pytest.raises(
            UserError,
            match=rf"^model.weights=imagenet is available for {', '.join(with_weights)}, "
            rf"not '{name}'; use model.weights=<path>",
        ):
            transfer.imagenet_pixel_stats(name)  # what model.weights=imagenet asks first


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_a_model_config_mentions_imagenet_only_when_the_model_has_its_weights(path):
    assert ("imagenet" in path.read_text().lower()) == (path.stem in transfer.imagenet_models())


def test_the_models_section_of_help_marks_the_models_with_imagenet_weights(capsys):
    print_models()
    rows = {
        line.split()[0]: line.split(None, 1)[1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("  ")
    }
    assert sorted(rows) == MODELS.names()
    assert rows["vgg16"] == "classification, regression  imagenet" and rows["unet"] == "segmentation"
    assert sorted(name for name, row in rows.items() if row.endswith("imagenet")) == transfer.imagenet_models()


def test_the_readme_model_table_marks_the_models_with_imagenet_weights():
    readme = (CONF_DIR.parent / "README.md").read_text()
    table = readme[readme.index("| model | paper | input | parameters | MACs | receptive field (last conv) |") :]
    rows = [row.split("|") for row in table[: table.index("\n\n")].splitlines()[2:]]
    assert sorted(row[1].strip(" `") for row in rows if row[-2].strip() == "yes") == transfer.imagenet_models()


def test_help_shows_the_models_and_no_shared_block_as_a_choice(pipeline):
    done = pipeline("--help")
    assert "== Models ==" in done.stdout and "== Configuration groups ==" in done.stdout
    assert "common" not in done.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
