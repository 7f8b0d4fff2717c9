#!/usr/bin/env python3
"""Copy scikit-image's bundled example photos into ``examples/`` as PNG files.

This is a maintainer tool: it rebuilds the photos committed under
``examples/``. It downloads nothing: the images used here ship inside the
scikit-image wheel (``skimage/data/``); an image that scikit-image would have
to fetch from the network is skipped with a message instead.

Each photo is written as an 8-bit RGB PNG at its original resolution:

* ``chelsea.png``   -- Chelsea the cat (300x451)
* ``coffee.png``    -- a cup of espresso (400x600)
* ``rocket.png``    -- Falcon 9 / DSCOVR launch (427x640; bundled as JPEG,
  decoded and stored losslessly as PNG)
* ``astronaut.png`` -- astronaut Eileen Collins (512x512)

See ``examples/README.md`` for the origin and licence of each photo.

Usage::

    python tools/fetch_examples.py [--output-dir examples]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

# Output name -> name of the skimage.data loader function.
PHOTOS = {
    "chelsea": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "astronaut": "astronaut",
}


def bundled_path(loader_name: str) -> Path | None:
    """Path of the file a ``skimage.data`` loader reads, if it ships in the wheel."""
    import skimage.data

    data_dir = Path(skimage.data.__file__).parent
    for suffix in (".png", ".jpg"):
        candidate = data_dir / f"{loader_name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def load_rgb(loader_name: str) -> np.ndarray:
    """The photo as an (H, W, 3) uint8 RGB array, via the public skimage loader."""
    import skimage.data

    image = np.asarray(getattr(skimage.data, loader_name)())
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise RuntimeError(f"{loader_name}: unexpected image {image.shape} {image.dtype}")
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
        description="Copy scikit-image's bundled photos into examples/ as RGB PNG files.",
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
    for out_name, loader_name in PHOTOS.items():
        source = bundled_path(loader_name)
        if source is None:
            # Not in the wheel: skimage would download it, which we never do.
            skipped.append(out_name)
            print(f"skip {out_name}: not bundled with scikit-image (would need a download)")
            continue
        rgb = load_rgb(loader_name)
        target = out_dir / f"{out_name}.png"
        write_png(target, rgb)
        written.append(target)
        height, width = rgb.shape[:2]
        print(f"wrote {target} ({width}x{height} RGB, from skimage/data/{source.name})")

    print(f"{len(written)} written, {len(skipped)} skipped")
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
