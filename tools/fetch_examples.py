#!/usr/bin/env python3
"""Copy example photos bundled in PyPI wheels into ``examples/`` as PNG files.

This is a maintainer tool: it rebuilds the photos committed under
``examples/``. It downloads nothing: every image used here ships inside a
wheel (scikit-image's ``skimage/data/`` or scikit-learn's
``sklearn/datasets/images/``); an image that its package would have to fetch
from the network is skipped with a message instead.

Each photo is written as an 8-bit RGB PNG at its original resolution (none is
larger than 1024 px, so none is resized); grayscale photos are stored as RGB
with three equal channels:

* ``chelsea.png``   -- Chelsea the cat (300x451; scikit-image)
* ``coffee.png``    -- a cup of espresso (400x600; scikit-image)
* ``rocket.png``    -- Falcon 9 / DSCOVR launch (427x640; scikit-image, bundled
  as JPEG, decoded and stored losslessly as PNG)
* ``astronaut.png`` -- astronaut Eileen Collins (512x512; scikit-image)
* ``camera.png``    -- a photographer with a camera on a tripod (512x512,
  grayscale; scikit-image)
* ``clock.png``     -- a motion-blurred wall clock (300x400, grayscale;
  scikit-image)
* ``china.png``     -- a Chinese pagoda by a lake (427x640; scikit-learn,
  bundled as JPEG)
* ``flower.png``    -- a dahlia (427x640; scikit-learn, bundled as JPEG)

See ``examples/README.md`` for the origin and licence of each photo.

Packages (versions that reproduced the committed files byte for byte):
scikit-image 0.26.0, scikit-learn 1.9.1, Pillow 13.0.0 (decodes the JPEGs for
both loaders), opencv-python-headless 5.0.0.93 (writes the PNGs), numpy 2.4.6.
Other versions should give the same pixels for the PNG sources; a different
JPEG decoder may change a few pixel values of ``rocket``, ``china`` and
``flower``.

Usage::

    python tools/fetch_examples.py [--output-dir examples]
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

# Output name -> (package, bundled file inside the package, loader argument).
# The loader argument is the name of the ``skimage.data`` function for scikit-image
# and the image name passed to ``sklearn.datasets.load_sample_image`` for scikit-learn.
PHOTOS = {
    "chelsea": ("skimage", "data/chelsea.png", "chelsea"),
    "coffee": ("skimage", "data/coffee.png", "coffee"),
    "rocket": ("skimage", "data/rocket.jpg", "rocket"),
    "astronaut": ("skimage", "data/astronaut.png", "astronaut"),
    "camera": ("skimage", "data/camera.png", "camera"),
    "clock": ("skimage", "data/clock_motion.png", "clock"),
    "china": ("sklearn", "datasets/images/china.jpg", "china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg", "flower.jpg"),
}


def bundled_path(package: str, relative: str) -> Path | None:
    """Path of ``relative`` inside the installed ``package``, if the wheel ships it."""
    module = importlib.import_module(package)
    candidate = Path(module.__file__).parent / relative
    return candidate if candidate.is_file() else None


def load_image(package: str, loader_arg: str) -> np.ndarray:
    """The photo as returned by the package's public loader."""
    if package == "skimage":
        import skimage.data

        return np.asarray(getattr(skimage.data, loader_arg)())
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(loader_arg))
    raise ValueError(f"unknown package {package!r}")


def load_rgb(package: str, loader_arg: str) -> np.ndarray:
    """The photo as an (H, W, 3) uint8 RGB array (gray is replicated to 3 channels)."""
    image = load_image(package, loader_arg)
    if image.dtype != np.uint8:
        raise RuntimeError(f"{loader_arg}: unexpected dtype {image.dtype}")
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise RuntimeError(f"{loader_arg}: unexpected image shape {image.shape}")
    return np.ascontiguousarray(image[:, :, :3])


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write RGB uint8 as PNG with OpenCV (which expects BGR)."""
    import cv2

    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise RuntimeError(f"could not write {path}")
    # Round-trip check: the PNG must decode to exactly the same pixels.
    back = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if back is None or not np.array_equal(cv2.cvtColor(back, cv2.COLOR_BGR2RGB), rgb):
        raise RuntimeError(f"{path}: PNG round trip changed the pixels")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Copy the photos bundled with scikit-image and scikit-learn into examples/ "
            "as RGB PNG files."
        ),
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("examples"),
        help="directory to write the PNG files to (default: %(default)s)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir: Path = args.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    written, skipped = [], []
    for out_name, (package, relative, loader_arg) in PHOTOS.items():
        source = bundled_path(package, relative)
        if source is None:
            # Not in the wheel: the package would download it, which we never do.
            skipped.append(out_name)
            print(f"skip {out_name}: {package}/{relative} is not bundled (would need a download)")
            continue
        rgb = load_rgb(package, loader_arg)
        target = out_dir / f"{out_name}.png"
        write_png(target, rgb)
        written.append(target)
        height, width = rgb.shape[:2]
        print(f"wrote {target} ({width}x{height} RGB, from {package}/{relative})")

    print(f"{len(written)} written, {len(skipped)} skipped")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
