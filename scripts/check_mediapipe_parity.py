"""Does a cbr-lite model answer on the device as it does in the notebook? cbr-lite vs MediaPipe Tasks, measured.

    python scripts/check_mediapipe_parity.py                       # the CLI's default embedder
    python scripts/check_mediapipe_parity.py --embedder glyph-cnn

Two measurements:

1. **Pixels.** An "echo" classifier whose scores are its own input tensor, flattened (``(1, h*w*3)``,
   normalisation mean 0, std 1 in its metadata), run by MediaPipe's ``ImageClassifier`` with every
   category returned, gives back exactly the tensor MediaPipe fed the model. It is compared pixel by pixel
   with :func:`cbr_lite.images.resize` (and with Pillow's bilinear resize, what cbr-lite used before).
2. **Answers.** A classifier built with the embedder from 10 classes x 5 small thumbnails is run on
   queries of three kinds (small 28x28 thumbnails, large photos of 1000+ pixels, non-square images) by
   ``cbr-lite classify`` (:class:`cbr_lite.classifier.Classifier`, LiteRT) and by MediaPipe: top-1
   agreement and the top score's difference, with today's resize and with Pillow's.

The query images are rendered offline from the photos scikit-image, scikit-learn and matplotlib ship
(``cbr_lite.glyphs.render_photos``: regions of 8 photos, re-photographed with crop, zoom, rotation and
colour changes). ``tests/test_mediapipe_parity.py`` runs the same checks on fewer images.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from cbr_lite.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # before anything imports TensorFlow: no start-up lines

#: The query kinds and their sizes (height, width) before resizing.
KINDS = {
    "small (28x28)": [(28, 28)],
    "large (1000+ px)": [(1024, 1024), (1200, 1600), (1536, 1152)],
    "non-square": [(64, 200), (300, 90), (1000, 450), (37, 61)],
}


def echo_model(height: int, width: int) -> bytes:
    """A .tflite image "classifier" whose ``h*w*3`` scores are its input tensor, with metadata (mean 0, std 1)."""
    import keras

    from cbr_lite.export import to_tflite
    from cbr_lite.metadata import add_metadata

    image = keras.Input((height, width, 3), batch_size=1, name="image")
    scores = keras.layers.Reshape((height * width * 3,), name="scores")(image)
    return add_metadata(to_tflite(keras.Model(image, scores)), labels=[str(i) for i in range(height * width * 3)],
                        mean=[0.0], std=[1.0], name="echo", description="scores = the input tensor")


@contextlib.contextmanager
def mediapipe_classifier(model: bytes):
    """MediaPipe's ImageClassifier for ``model``, every category returned, closed on exit.

    (Closing explicitly matters: mediapipe 1.2.3 prints a TypeError traceback from ``__del__`` otherwise.)
    """
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_buffer=model), max_results=-1)
    with vision.ImageClassifier.create_from_options(options) as classifier:
        yield classifier


def mediapipe_scores(classifier, image: np.ndarray, num_classes: int) -> np.ndarray:
    """MediaPipe's scores for one ``uint8`` RGB image, in class order (float32 ``(num_classes,)``)."""
    import mediapipe as mp

    result = classifier.classify(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image)))
    scores = np.full(num_classes, np.nan, np.float32)
    for category in result.classifications[0].categories:
        scores[category.index] = category.score
    return scores


def pillow_resize(image: np.ndarray, size) -> np.ndarray:
    """cbr-lite's resize before it matched MediaPipe: Pillow's bilinear filter (antialiased when shrinking)."""
    from PIL import Image

    height, width = size
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def photo_images(sizes, per_class: int, seed: int, classes: int = 10):
    """``(images, labels)``: ``per_class`` renderings of each of ``classes`` photo regions, cycling through ``sizes``.

    Each image is rendered square at the larger side of its size, then centre-cropped to it (so a
    non-square image is still a natural crop of the scene, not a squashed one).
    """
    from cbr_lite import glyphs

    regions = glyphs.photo_classes("novel")[:: max(1, len(glyphs.photo_classes("novel")) // classes)][:classes]
    images, labels = [], []
    for k in range(per_class):
        height, width = sizes[k % len(sizes)]
        side = max(height, width)
        rendered, ids = glyphs.render_photos(regions, 1, seed * 1000 + k, size=side)
        top, left = (side - height) // 2, (side - width) // 2
        images += [np.ascontiguousarray(r[top:top + height, left:left + width]) for r in rendered]
        labels += list(ids)
    return images, np.array(labels)


def pixel_differences(images, height: int, width: int) -> dict:
    """Largest |MediaPipe's input tensor - ours| over ``images``, for cbr-lite's resize and for Pillow's."""
    from cbr_lite.images import resize

    largest = {"cbr-lite": 0, "pillow": 0}
    with mediapipe_classifier(echo_model(height, width)) as classifier:
        for image in images:
            fed = mediapipe_scores(classifier, image, height * width * 3).reshape(height, width, 3)
            for name, method in (("cbr-lite", resize), ("pillow", pillow_resize)):
                difference = np.abs(method(image, (height, width)).astype(np.float32) - fed).max()
                largest[name] = max(largest[name], float(difference))
    return largest


def compare_answers(model: bytes, images, resize_method=None) -> dict:
    """Top-1 agreement and top-score differences between ``cbr-lite classify`` and MediaPipe on ``images``.

    ``resize_method`` replaces cbr-lite's resize (to measure the old Pillow one); None keeps it.
    """
    from cbr_lite.classifier import Classifier

    ours = Classifier(model)
    if resize_method is not None:
        def preprocess(image):
            pixels = resize_method(image, ours.input_size)
            return pixels if ours.uint8_input else (pixels.astype(np.float32) - ours.mean) / ours.std

        ours.preprocess = preprocess
    theirs_all, ours_all = [], []
    with mediapipe_classifier(model) as classifier:
        for image in images:
            theirs_all.append(mediapipe_scores(classifier, image, len(ours.labels)))
            ours_all.append(ours.scores([image])[0])
    theirs, mine = np.stack(theirs_all), np.stack(ours_all)
    rows = np.arange(len(mine))
    top = mine.argmax(axis=1)
    difference = np.abs(theirs[rows, top] - mine[rows, top])
    return {"n": len(mine), "agreement": float(np.mean(theirs.argmax(axis=1) == top)),
            "median": float(np.median(difference)), "max": float(difference.max()),
            "max_any": float(np.abs(theirs - mine).max())}


def build_model(embedder_name: str, quantize: str = "none", seed: int = 0, index: str = "exact") -> bytes:
    """The classifier the issue describes: 10 classes of 28x28 thumbnails, 5 index images each (``index``: as
    ``cbr-lite build --index``)."""
    from cbr_lite.builder import classifier_file_from_index
    from cbr_lite.embedders import load_embedder

    embedder = load_embedder(embedder_name)
    images, labels = photo_images(KINDS["small (28x28)"], per_class=5, seed=seed + 100)
    names = [f"class_{c}" for c in range(int(labels.max()) + 1)]
    return classifier_file_from_index(embedder, embedder.embed(images), labels, names, quantize=quantize,
                                      representative=images if quantize == "int8-full" else None, index=index)


def main(argv=None) -> int:
    """Print both measurements; exit 1 if an agreement target (>= 99.5% top-1, median <= 0.002) is missed."""
    from cbr_lite.cli import CLI_DEFAULT_EMBEDDER

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default=CLI_DEFAULT_EMBEDDER)
    parser.add_argument("--quantize", default="none")
    parser.add_argument("--queries", type=int, default=20, help="queries per class and kind (10 classes)")
    args = parser.parse_args(argv)

    import mediapipe

    print(f"mediapipe {mediapipe.__version__}")
    print("--- 1. pixels: largest |MediaPipe's input tensor - resize| (0 = identical)")
    for height, width in [(224, 224), (64, 64), (48, 80)]:
        for kind, sizes in KINDS.items():
            images, _ = photo_images(sizes, per_class=1, seed=7, classes=4)
            largest = pixel_differences(images, height, width)
            print(f"to {height}x{width}, {kind:17s}: cbr-lite {largest['cbr-lite']:.0f}, Pillow {largest['pillow']:.0f}")

    print(f"--- 2. answers: {args.embedder} ({args.quantize}), 10 classes x 5 thumbnails; "
          f"{args.queries} queries per class and kind")
    model = build_model(args.embedder, args.quantize)
    ok = True
    for kind, sizes in KINDS.items():
        images, _ = photo_images(sizes, per_class=args.queries, seed=1)
        for method, resize_method in (("cbr-lite", None), ("Pillow (before)", pillow_resize)):
            r = compare_answers(model, images, resize_method)
            print(f"{kind:17s} {method:16s}: top-1 agreement {r['agreement']:.3f} ({r['n']} images), top-score "
                  f"difference median {r['median']:.1e}, max {r['max']:.1e}; any score max {r['max_any']:.1e}")
            if resize_method is None:
                ok &= r["agreement"] >= 0.995 and r["median"] <= 0.002
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
