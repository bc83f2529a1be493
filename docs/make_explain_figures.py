"""The figures of the README's "See what a network learned" section, from one small classifier (VGG-11 at a
quarter width) trained on `shapes` scenes of a main shape and at most one distractor, on the CPU (a few
minutes):

    python docs/make_explain_figures.py [--epochs 20] [--num-images 6000] [--out docs]

- the pointing game (the test split's boxes are known): how often the maximum of the true class's
  Grad-CAM map falls inside the main object's box, at the last two convolution stages, beside a map that
  always points at the centre;
- the randomisation check (Adebayo et al. 2018): Spearman rank correlation of the vanilla-gradient and
  Grad-CAM maps before and after the top 1, 2 and 3 weighted layers are re-initialised;
- pictures: explain_filters.png (the first layer's filters), explain_deconvnet.png (DeconvNet projections
  of each image's strongest block-4 activation), explain_gradcam.png (Grad-CAM overlays) and
  explain_top_patches.png (the test patches that excite block 3's first 16 filters most).

The figures are printed as they are measured; the pictures are what mode=explain draws.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from visionkit.data import load  # noqa: E402
from visionkit.explain import gradcam, pointing_game, randomisation_check, saliency  # noqa: E402
from visionkit.explain.pictures import save_png  # noqa: E402
from visionkit.explain.render import Options, render  # noqa: E402
from visionkit.models import MODELS  # noqa: E402

POINTING_LAYERS = ("block5_conv2", "block4_conv2")  # the last conv (4x4 on 64x64 inputs) and the one before (8x8)
SHOWN = 6  # images in the overlay pictures
MAX_OBJECTS = 2  # the main shape and at most one smaller distractor


def split_arrays(split) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, labels and the main object's box (x0, y0, x1, y1) of a split."""
    samples = [split.sample(i) for i in range(len(split))]
    return (
        np.stack([s["image"] for s in samples]),
        np.array([s["label"] for s in samples]),
        np.stack([s["boxes"][0] for s in samples]),
    )


def trained_model(bundle, epochs: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    mean, std = bundle.pixel_stats()
    model = MODELS.get("vgg11")(
        input_shape=bundle.image_shape,
        num_classes=len(bundle.class_names),
        width=0.25,
        dropout=0.0,
        pixel_mean=mean,
        pixel_std=std,
    )
    # VGG without batch normalisation stays at chance with Adam's default step on this data; 1e-4 learns.
    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy", metrics=["accuracy"])
    images, labels, _ = split_arrays(bundle.train)
    val_images, val_labels, _ = split_arrays(bundle.val)
    model.fit(images, labels, batch_size=32, epochs=epochs, validation_data=(val_images, val_labels), verbose=2)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--num-images", type=int, default=6000)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()

    start = time.perf_counter()
    bundle = load("shapes", task="classification", num_images=args.num_images, max_objects=MAX_OBJECTS)
    model = trained_model(bundle, args.epochs)
    images, labels, boxes = split_arrays(bundle.test)
    accuracy = float((model.predict(images, verbose=0).argmax(axis=1) == labels).mean())
    print(f"vgg11 (width 0.25) on shapes: test accuracy {accuracy:.3f} over {len(images)} images")

    for layer in POINTING_LAYERS:  # the true class's map, as in Zhang et al.'s protocol
        maps = np.concatenate(
            [
                gradcam(model, images[i : i + 64], layer=layer, class_index=labels[i : i + 64])
                for i in range(0, len(images), 64)
            ]
        )
        game = pointing_game(maps, boxes)
        print(
            f"pointing game, Grad-CAM at {layer}: {game['pointing_game']:.3f} "
            f"(centre baseline {game['pointing_game_centre']:.3f}) over {len(images)} test images"
        )

    sample = images[:32]
    for top in (1, 2, 3):
        rho_saliency = randomisation_check(model, sample, lambda m, x: saliency(m, x, class_index=0), top=top)
        rho_gradcam = randomisation_check(
            model, sample, lambda m, x: gradcam(m, x, layer=POINTING_LAYERS[0], class_index=0), top=top
        )
        print(
            f"randomisation of the top {top} weighted layers: Spearman rank correlation "
            f"saliency {rho_saliency:.3f}, Grad-CAM {rho_gradcam:.3f} (mean over {len(sample)} test images)"
        )

    shown = images[:SHOWN]
    pictures = {
        "filters": render(model, shown, "filters"),
        "deconvnet": render(model, shown, "deconvnet", Options(layer="block4_conv2")),
        "gradcam": render(model, shown, "gradcam", Options(layer=POINTING_LAYERS[0])),
        "top_patches": render(model, shown, "top_patches", Options(layer="block3_conv2", top_k=8), dataset=images),
    }
    for name, picture in pictures.items():
        print(f"wrote {save_png(picture, args.out / f'explain_{name}.png')}")
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
