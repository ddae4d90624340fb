"""Check the offline EfficientNet-Lite ports: top-5 ImageNet classes of photos that installed packages ship.

    python scripts/check_efficientnet_lite.py            # Lite0, Keras only (about 30 s)
    python scripts/check_efficientnet_lite.py --variant efficientnet-lite2
    python scripts/check_efficientnet_lite.py --tflite   # also the TFLite conversion, run with LiteRT
    python scripts/check_efficientnet_lite.py --timing   # also embedding speed, sizes, conversion time

Photos: scikit-image's chelsea (a tabby cat), coffee (an espresso cup), astronaut, rocket, and
matplotlib's grace_hopper.jpg, each resized whole to the input size (224, 240 or 260) as ``Embedder.preprocess`` (and MediaPipe) does.
Exit status 0 when every checked photo has an expected class in its top 5 and (with ``--tflite``) the
TFLite model agrees with Keras.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from cbr_lite.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # before anything imports TensorFlow: no start-up lines

from cbr_lite import efficientnet_lite as lite  # noqa: E402
from cbr_lite.embedders import DATA_DIR, Embedder  # noqa: E402

#: photo -> ImageNet classes of which at least one must be in the top 5.
EXPECTED = {
    "chelsea": {"tabby", "tiger_cat", "Egyptian_cat"},
    "coffee": {"espresso", "cup", "coffee_mug"},
    "rocket": {"missile", "projectile", "space_shuttle"},
    "grace_hopper": {"military_uniform", "suit", "bow_tie", "Windsor_tie", "mortarboard"},
    "astronaut": None,  # ImageNet has no astronaut class: printed, not checked
}
#: Largest |Keras - TFLite| allowed on probabilities and on (raw) features; float32 kernels differ
#: only in summation order, so anything larger means the conversion changed the network.
TFLITE_TOLERANCE = {"probabilities": 1e-3, "features": 1e-2}


def sample_photos() -> dict[str, np.ndarray]:
    """The photos as uint8 RGB arrays, by name (in :data:`EXPECTED`'s order)."""
    import matplotlib
    import skimage.data
    from PIL import Image

    photos = {name: getattr(skimage.data, name)() for name in ("chelsea", "coffee", "astronaut", "rocket")}
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photos["grace_hopper"] = np.asarray(Image.open(hopper).convert("RGB"))
    return {name: photos[name] for name in EXPECTED}


def check(probabilities: np.ndarray, names: list[str], labels: list[str], title: str) -> bool:
    """Print each photo's top 5 and whether an expected class is among them; True if all are."""
    ok = True
    print(f"--- {title}")
    for name, row in zip(names, probabilities):
        best = lite.top_k(row, labels)
        expected = EXPECTED[name]
        hit = expected is None or bool(expected & {label for label, _ in best})
        ok &= hit
        verdict = "" if expected is None else ("  OK" if hit else "  MISSING " + "/".join(sorted(expected)))
        print(f"{name:13s}" + ", ".join(f"{label} {p:.3f}" for label, p in best) + verdict)
    return ok


def images_per_second(run, batch: np.ndarray, repeats: int) -> float:
    """Images per second of ``run(batch)``, best of ``repeats`` timed calls after one warm-up."""
    run(batch)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        best = min(best, time.perf_counter() - start)
    return len(batch) / best


def main(argv=None) -> int:
    """Run the checks; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tflite", action="store_true", help="also convert to TFLite and run it with LiteRT")
    parser.add_argument("--timing", action="store_true", help="also measure speed, sizes and conversion time")
    parser.add_argument("--variant", default=lite.LITE0, choices=sorted(lite.VARIANTS))
    args = parser.parse_args(argv)
    name = args.variant
    size = (lite.variant(name).input_size,) * 2

    labels = lite.imagenet_labels(DATA_DIR / "imagenet_labels.txt")
    photos = sample_photos()
    names = list(photos)

    start = time.perf_counter()
    arrays = lite.load_keras_arrays(name, rebuild=args.timing)
    convert_s = time.perf_counter() - start
    classifier = lite.build_efficientnet_lite(name, include_top=True)
    lite.set_keras_arrays(classifier, arrays)
    # The classifier takes what the embedder takes: same resize, same (pixels - 127) / 128.
    batch = Embedder(name, classifier, size, lite.MEAN, lite.STD).preprocess(photos.values())
    keras_probabilities = np.asarray(classifier.predict_on_batch(batch))
    ok = check(keras_probabilities, names, labels, f"{name}, Keras")

    if args.tflite or args.timing:
        from cbr_lite.export import LiteRTModel, to_tflite

        start = time.perf_counter()
        classifier_tflite = LiteRTModel(to_tflite(classifier))
        tflite_s = time.perf_counter() - start
        tflite_probabilities = classifier_tflite(batch)
        ok &= check(tflite_probabilities, names, labels, "TFLite (LiteRT)")

        features = lite.build_efficientnet_lite(name, include_top=False)
        lite.set_keras_arrays(features, arrays)
        features_bytes = to_tflite(features)
        features_tflite = LiteRTModel(features_bytes)
        keras_features = np.asarray(features.predict_on_batch(batch))
        tflite_features = features_tflite(batch)
        differences = {
            "probabilities": float(np.abs(keras_probabilities - tflite_probabilities).max()),
            "features": float(np.abs(keras_features - tflite_features).max()),
        }
        print(f"--- Keras vs TFLite: max |difference| of probabilities {differences['probabilities']:.2e}, "
              f"of features {differences['features']:.2e} (features up to {np.abs(keras_features).max():.2f}); "
              f"same top-1: {bool((keras_probabilities.argmax(1) == tflite_probabilities.argmax(1)).all())}")
        for kind, difference in differences.items():
            if difference > TFLITE_TOLERANCE[kind]:
                print(f"TFLITE DISAGREES: {kind} differ by {difference:.2e} > {TFLITE_TOLERANCE[kind]:g}")
                ok = False

    if args.timing:
        rng = np.random.default_rng(0)
        big = np.repeat(batch, 7, axis=0)[:32] + rng.normal(0, 0.01, (32, *batch.shape[1:])).astype(np.float32)
        print(f"--- on this machine ({os.cpu_count()} CPUs)")
        print(f"checkpoint -> Keras arrays (read + convert + write cache): {convert_s:.2f} s")
        print(f"Keras -> TFLite conversion (classifier): {tflite_s:.2f} s")
        print(f"Keras   batch 1 : {images_per_second(features.predict_on_batch, batch[:1], 10):7.1f} images/s")
        print(f"Keras   batch 32: {images_per_second(features.predict_on_batch, big, 3):7.1f} images/s")
        print(f"TFLite  batch 1 : {images_per_second(features_tflite, batch[:1], 10):7.1f} images/s")
        print(f"TFLite  batch 32: {images_per_second(features_tflite, big, 3):7.1f} images/s")
        print(f"feature .tflite (float32): {len(features_bytes) / 2**20:.1f} MiB; "
              f"cached weights {lite.cache_path(name)}: {lite.cache_path(name).stat().st_size / 2**20:.1f} MiB; "
              f"checkpoint: {lite.checkpoint_path(name).stat().st_size / 2**20:.1f} MiB")
        start = time.perf_counter()
        model = lite.load_efficientnet_lite(name)
        print(f"load_efficientnet_lite({name!r}) from the cache: {time.perf_counter() - start:.2f} s "
              f"({model.count_params():,} parameters without the classifier)")
    print("all checks passed" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
