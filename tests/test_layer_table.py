"""The layer table (visionkit.analysis) and mode=summary, against numbers worked out by hand or published.

Receptive-field sources: Araujo, Norris & Sim, "Computing Receptive Fields of Convolutional Neural
Networks", Distill 2019, and the table of its library (github.com/google-research/receptive_field,
README and RECEPTIVE_FIELD_TABLE.md): resnet_v1_50 483 (effective stride 32); vgg_16 conv5_2 164,
pool5 212 (effective stride 32).
"""

import csv
import math

import keras
import pytest
from keras import layers

from visionkit.analysis import format_table, layer_table, totals
from visionkit.models import MODELS
from visionkit.models.common import inference_model
from visionkit.tasks import build


def shapes_only(name, **kwargs):
    """Build without drawing the weights (as mode=summary does): shapes and counts are all there."""
    with keras.StatelessScope(initialize_variables=False):
        return build(name, **kwargs)


def by_name(rows):
    return {row["name"]: row for row in rows}


def test_lenet5_by_hand():
    rows = by_name(layer_table(build("lenet5", input_shape=(32, 32, 1), num_classes=10)))
    # C1: 5x5 valid on 32x32x1 -> 28x28x6; params 5*5*1*6 + 6 = 156; MACs 5*5*1*6*28*28 = 117,600.
    c1 = rows["c1_conv"]
    assert (c1["output_shape"], c1["params"], c1["macs"]) == ((28, 28, 6), 156, 117_600)
    assert (c1["kernel"], c1["stride"], c1["padding"], c1["dilation"]) == ((5, 5), (1, 1), "valid", (1, 1))
    # C3: 5x5 valid on 14x14x6 -> 10x10x16; params 5*5*6*16 + 16 = 2,416; MACs 5*5*6*16*10*10 = 240,000.
    c3 = rows["c3_conv"]
    assert (c3["output_shape"], c3["params"], c3["macs"]) == ((10, 10, 16), 2_416, 240_000)
    # Receptive field r and jump j: input r=1 j=1; C1 (k5 s1) r=1+4*1=5 j=1; S2 (k2 s2) r=5+1*1=6 j=2;
    # C3 (k5 s1) r=6+4*2=14 j=2; S4 (k2 s2) r=14+1*2=16 j=4; flatten and the dense layers keep it.
    assert [
        (rows[n]["receptive_field"], rows[n]["jump"])
        for n in ("image", "c1_conv", "s2_pool", "c3_conv", "s4_pool", "predictions")
    ] == [(1, 1), (5, 1), (6, 2), (14, 2), (16, 4), (16, 4)]
    assert rows["s2_pool"]["macs"] == 0 and rows["s2_pool"]["dilation"] is None and rows["flatten"]["kernel"] is None
    total = totals(list(rows.values()))
    # 61,706 parameters (LeCun et al. 1998 as taught, see test_models); MACs 117,600 + 240,000 + 400*120
    # + 120*84 + 84*10 = 416,520.
    assert (total["params"], total["trainable_params"], total["macs"]) == (61_706, 61_706, 416_520)
    assert total["flops"] == 833_040
    assert (total["last_conv"], total["receptive_field"], total["jump"]) == ("c3_conv", 14, 2)


def test_rows_follow_the_graph_and_name_their_inputs():
    model = build("lenet5", input_shape=(32, 32, 1), num_classes=10)
    rows = layer_table(model)
    assert [row["name"] for row in rows] == [layer.name for layer in model.layers]
    assert [row["kind"] for row in rows][:3] == ["InputLayer", "Normalization", "Conv2D"]
    assert by_name(rows)["c3_conv"]["inputs"] == ("stride2",)


def test_resnet50_macs_and_receptive_field():
    model = shapes_only("resnet50", input_shape=(224, 224, 3), num_classes=1000)
    rows = layer_table(model)
    total = totals(rows)
    # 25,636,712 parameters: keras.applications.ResNet50(weights=None).
    assert total["params"] == model.count_params() == 25_636_712
    # MACs from He et al. 2016, Table 1, counted independently of the graph: conv1 7x7x3x64 at 112x112, then
    # per bottleneck block 1x1 (C_in->f), 3x3 (f->f), 1x1 (f->4f) at the stage's size (stride in the first
    # 1x1 as in the paper and keras.applications), a 1x1 projection in each stage's first block, FC 2048x1000.
    macs, c_in = 7 * 7 * 3 * 64 * 112 * 112, 64
    for filters, blocks, size in ((64, 3, 56), (128, 4, 28), (256, 6, 14), (512, 3, 7)):
        for block in range(blocks):
            macs += (c_in * filters + 9 * filters * filters + filters * 4 * filters) * size * size
            macs += c_in * 4 * filters * size * size if block == 0 else 0
            c_in = 4 * filters
    macs += 2048 * 1000
    assert total["macs"] == macs == 3_857_973_248
    # The paper: "3.8 x 10^9 FLOPs" (multiply-adds). Counters quoting ~4.1 G measure torchvision's
    # "v1.5" (stride in the 3x3 convolution, so its first 1x1 runs at the larger size).
    assert 3.8e9 <= total["macs"] <= 3.9e9
    # Receptive field 483, effective stride 32 (Distill 2019 table, resnet_v1_50). By hand: conv1 7/2 r=7 j=2;
    # pool 3/2 r=11 j=4; conv2: 3 blocks of one 3x3, r=11+3*2*4=35; conv3: stride-2 1x1 (r kept, j=8), 4 x 3x3,
    # r=35+4*2*8=99; conv4: j=16, r=99+6*2*16=291; conv5: j=32, r=291+3*2*32=483.
    assert (total["last_conv"], total["receptive_field"], total["jump"]) == ("conv5_block3_3_conv", 483, 32)
    rows = by_name(rows)
    assert (
        rows["pool1_pool"]["receptive_field"],
        rows["conv2_block3_out"]["receptive_field"],
        rows["conv3_block4_out"]["receptive_field"],
        rows["conv4_block6_out"]["receptive_field"],
    ) == (11, 35, 99, 291)
    # The shortcut (r=11 at the block input, then a 1x1) meets the 3x3 branch (r=19): the merge takes the max.
    assert (
        rows["conv2_block1_0_bn"]["receptive_field"],
        rows["conv2_block1_3_bn"]["receptive_field"],
        rows["conv2_block1_add"]["receptive_field"],
    ) == (11, 19, 19)
    # Global pooling is a window over the whole 7x7 map: 483 + 6*32 = 675 >= 224, every output sees it all.
    assert rows["avg_pool"]["receptive_field"] == 675
    assert rows["conv1_bn"]["params"] == 4 * 64 and rows["conv1_bn"]["trainable_params"] == 2 * 64
    assert rows["conv1_bn"]["macs"] == 0


@pytest.mark.skipif("vgg16" not in MODELS, reason="VGG is not in the zoo")
def test_vgg16_published_figures():
    rows = layer_table(shapes_only("vgg16", input_shape=(224, 224, 3), num_classes=1000))
    total = totals(rows)
    # 138,357,544 parameters (Simonyan & Zisserman 2015, Table 2 "138M"; exact: keras.applications.VGG16).
    # 15.47 G MACs = 15,346,630,656 (13 convolutions) + 123,633,664 (FC 25088x4096, 4096x4096, 4096x1000),
    # the "~30.9 GFLOPs" quoted for VGG-16; receptive_field's table gives 30.71 TF-profiler FLOPs to pool5.
    assert total["params"] == 138_357_544
    assert total["macs"] == 15_470_264_320
    assert sum(r["macs"] for r in rows if r["category"] == "conv") == 15_346_630_656
    rows = by_name(rows)
    # Distill 2019 table: vgg_16 conv5_2 164, pool5 212 (stride 32); conv5_3 = 164 + 2*16 = 196.
    assert [(rows[n]["receptive_field"], rows[n]["jump"]) for n in ("block5_conv2", "block5_conv3", "block5_pool")] == [
        (164, 16),
        (196, 16),
        (212, 32),
    ]
    assert total["receptive_field"] == 196


def tiny_model():
    inputs = keras.Input((16, 16, 4), name="image")
    dilated = layers.Conv2D(8, 3, dilation_rate=2, padding="same", name="dilated")(inputs)
    grouped = layers.Conv2D(8, 3, strides=2, groups=2, padding="same", name="grouped")(dilated)
    separable = layers.SeparableConv2D(8, 3, padding="same", name="separable")(grouped)
    pooled = layers.MaxPooling2D(2, name="pool")(dilated)
    depthwise = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(pooled)
    concat = layers.Concatenate(name="concat")([depthwise, separable])
    normed = layers.BatchNormalization(name="bn")(concat)
    projected = layers.Conv2D(24, 1, name="project")(pooled)
    added = layers.Add(name="add")([projected, normed])
    upsampled = layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="transposed")(added)
    pooled_all = layers.GlobalAveragePooling2D(name="gap")(upsampled)
    outputs = layers.Dense(3, name="dense")(pooled_all)
    return keras.Model(inputs, outputs, name="tiny")


def test_every_kind_of_layer_by_hand():
    model = tiny_model()
    rows = by_name(layer_table(model))
    got = {
        name: (row["output_shape"], row["params"], row["macs"], row["receptive_field"], row["jump"])
        for name, row in rows.items()
    }
    assert got == {
        "image": ((16, 16, 4), 0, 0, 1, 1),
        # 3x3 dilation 2: effective kernel 2*(3-1)+1 = 5, r = 1 + 4*1 = 5. Params 9*4*8+8; MACs 9*4*8*16*16.
        "dilated": ((16, 16, 8), 296, 73_728, 5, 1),
        # 2 groups: each output channel sees 8/2 inputs. Params 9*4*8+8; MACs 9*(8/2)*8*8*8; r = 5+2*1, j = 2.
        "grouped": ((8, 8, 8), 296, 18_432, 7, 2),
        # depthwise 9*8 + pointwise 8*8 + bias 8; MACs 9*8*8*8 + 8*8*8*8 = 4,608 + 4,096; r = 7+2*2.
        "separable": ((8, 8, 8), 144, 8_704, 11, 2),
        # 2x2/2 max pooling: comparisons, 0 MACs; r = 5+1*1, j = 2.
        "pool": ((8, 8, 8), 0, 0, 6, 2),
        # multiplier 2: params 9*8*2 + 16; MACs 9*8*2*8*8; r = 6+2*2.
        "depthwise": ((8, 8, 16), 160, 9_216, 10, 2),
        # branches with r 10 and 11: the merge takes the larger.
        "concat": ((8, 8, 24), 0, 0, 11, 2),
        # 4*24 parameters (2*24 trainable), folded into the convolution: 0 MACs.
        "bn": ((8, 8, 24), 96, 0, 11, 2),
        # 1x1 keeps r = 6. Params 8*24+24; MACs 8*24*8*8.
        "project": ((8, 8, 24), 216, 12_288, 6, 2),
        "add": ((8, 8, 24), 0, 0, 11, 2),
        # transposed 3x3/2: j = 2/2 = 1, r = 11 + 2*1 = 13; MACs 9*24*4 per input pixel, 8*8 of them.
        "transposed": ((16, 16, 4), 868, 55_296, 13, 1),
        # a window over the whole 16x16 map: r = 13 + 15*1 = 28.
        "gap": ((4,), 0, 0, 28, 1),
        "dense": ((3,), 15, 12, 28, 1),
    }
    assert rows["bn"]["trainable_params"] == 48 and rows["bn"]["kernel"] is None
    assert (rows["dilated"]["dilation"], rows["grouped"]["stride"]) == ((2, 2), (2, 2))
    assert rows["add"]["inputs"] == ("project", "bn")
    total = totals(list(rows.values()))
    assert total["params"] == model.count_params()
    assert total["macs"] == 73_728 + 18_432 + 8_704 + 9_216 + 12_288 + 55_296 + 12
    assert (total["last_conv"], total["receptive_field"]) == ("transposed", 13)


@pytest.mark.parametrize("name, input_shape", [("lenet5", (32, 32, 1)), ("resnet18", (64, 64, 3))])
def test_parameter_formula_agrees_with_keras(name, input_shape):
    # The lectures' formulas: conv K*K*C_in*C_out (+ C_out with bias), dense in*out (+ out).
    model = shapes_only(name, input_shape=input_shape, num_classes=10)
    rows = by_name(layer_table(model))
    checked = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            c_in, c_out = layer.input.shape[-1], layer.filters
            formula = math.prod(layer.kernel_size) * c_in * c_out + (c_out if layer.use_bias else 0)
        elif isinstance(layer, layers.Dense):
            formula = layer.input.shape[-1] * layer.units + layer.units
        else:
            continue
        assert rows[layer.name]["params"] == formula == layer.count_params(), layer.name
        checked += 1
    assert checked >= 5


def test_nested_models_are_expanded_and_shared_layers_counted_once():
    backbone = keras.Sequential(
        [keras.Input((8, 8, 3)), layers.Conv2D(4, 3, name="conv"), layers.MaxPooling2D(2, name="pool")], name="backbone"
    )
    shared = layers.Dense(5, name="shared")
    inputs = keras.Input((8, 8, 3), name="image")
    features = layers.Flatten(name="flatten")(backbone(inputs))
    outputs = layers.Add(name="add")([shared(features), shared(features)])
    model = keras.Model(inputs, outputs)
    rows = layer_table(model)
    assert [row["name"] for row in rows] == [
        "image",
        "backbone/conv",
        "backbone/pool",
        "flatten",
        "shared",
        "shared",
        "add",
    ]
    assert [row["receptive_field"] for row in rows] == [1, 3, 4, 4, 4, 4, 4]
    # 8x8 -> conv 3x3 -> 6x6x4 -> pool -> 3x3x4 = 36 features; the shared dense layer's 36*5+5 weights once.
    assert [row["params"] for row in rows if row["name"] == "shared"] == [36 * 5 + 5, 0]
    assert [row["macs"] for row in rows if row["name"] == "shared"] == [180, 180]
    assert totals(rows)["params"] == model.count_params()


def test_a_subclassed_model_is_refused():
    class Plain(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="layer_table needs a functional or sequential model, received Plain"):
        layer_table(Plain())


def test_format_table_lists_every_layer_and_the_totals():
    text = format_table(layer_table(build("lenet5", input_shape=(32, 32, 1), num_classes=10)))
    lines = text.splitlines()
    assert lines[0].split() == [
        "Layer",
        "Type",
        "Kernel",
        "Stride",
        "Pad",
        "Dil",
        "Output",
        "shape",
        "Params",
        "MACs",
        "RF",
        "Jump",
    ]
    assert lines[4].split() == ["c1_conv", "Conv2D", "5x5", "1", "valid", "1", "28x28x6", "156", "117,600", "5", "1"]
    assert "Parameters: 61,706 (trainable 61,706, non-trainable 0)" in text
    assert "MACs: 416,520 (417 K); FLOPs ≈ 2 × MACs = 0.000833 GFLOPs" in text
    assert "Receptive field of the last convolution (c3_conv): 14 pixels, jump 2" in text


def test_summary_mode_prints_and_writes_the_table(pipeline):
    done = pipeline("mode=summary", "model=lenet5", "tracking=none")
    assert "Parameters: 61,706 (trainable 61,706, non-trainable 0)" in done.stdout
    assert "c3_conv" in done.stdout and "10x10x16" in done.stdout
    table = (pipeline.run_dir / "layer_table.txt").read_text()
    assert "Receptive field of the last convolution (c3_conv): 14 pixels, jump 2" in table
    rows = {row["name"]: row for row in csv.DictReader((pipeline.run_dir / "layer_table.csv").open())}
    assert rows["c1_conv"]["macs"] == "117600" and rows["c1_conv"]["output_shape"] == "28x28x6"
    assert not pipeline.store.exists(), "mode=summary makes no MLflow run"


def test_summary_mode_takes_input_shape_classes_and_task(pipeline):
    done = pipeline(
        "mode=summary", "model=lenet5", "summary.input_shape=[64,64,3]", "summary.num_classes=4", "task=regression"
    )
    assert "lenet5 (LeCun et al. 1998) for regression, 64x64x3 input, 4 outputs" in done.stdout
    rows = {row["name"]: row for row in csv.DictReader((pipeline.run_dir / "layer_table.csv").open())}
    # 64 -> 60 (C1) -> 30 -> 26 (C3) -> 13; C1 params 5*5*3*6+6; C5 sees 13*13*16 inputs; the top 84*4+4.
    assert (rows["c1_conv"]["output_shape"], rows["c1_conv"]["params"]) == ("60x60x6", "456")
    assert rows["c5_fc"]["params"] == str(13 * 13 * 16 * 120 + 120) and rows["predictions"]["params"] == "340"


def test_summary_mode_unknown_model_is_one_line(pipeline):
    done = pipeline("mode=summary", "model=lenet", "tracking=none", check=False)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("error: unknown model option 'lenet' (did you mean 'lenet5'?); available: ")
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["summary.input_shape=[8,8,1]"],
            "model 'lenet5': lenet5: input height and width must be at least 16, received (8, 8, 1)",
        ),
        (["summary.num_classes=0"], "summary.num_classes must be at least 1, received 0"),
        (["summary.input_shape=5"], "summary.input_shape: Invalid value assigned: AnyNode is not a ListConfig"),
        (["model.width=wide"], "model.width: expected float, received 'wide'"),
    ],
)
def test_summary_settings_errors_name_the_key(overrides, message):
    # In process (run.py turns a UserError into one line on stderr and status 2, see test_pipeline).
    from hydra import compose, initialize_config_dir

    from pipelines import summary
    from pipelines.run import CONF_DIR
    from visionkit.errors import UserError

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["mode=summary", "tracking=none", *overrides])
    with pytest.raises(UserError) as error:
        summary.run(cfg)
    assert str(error.value).startswith(message)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_has_a_complete_report_at_its_paper_size(name):
    meta = MODELS.meta(name)
    model = inference_model(
        shapes_only(name, input_shape=meta["paper_input"], num_classes=meta["paper_classes"], task=meta["tasks"][0])
    )
    rows = layer_table(model)
    total = totals(rows)
    # A row per call: a layer shared across pyramid levels (RetinaNet's heads) has a row per level.
    assert {row["name"] for row in rows if row["kind"] != "InputLayer"} == {
        layer.name for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)
    }
    assert total["params"] == model.count_params()
    assert total["macs"] > 0 and total["receptive_field"] is not None
    assert rows[-1]["output_shape"] == tuple(model.output_shape[1:])
