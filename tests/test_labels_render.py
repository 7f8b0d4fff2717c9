"""Labels from files and metadata; overlays and saved files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onnxcam import ConfigError, OutputError
from onnxcam.labels import labels_from_metadata, load_labels, parse_labels
from onnxcam.render import ensure_dir, overlay, saliency_image


def test_parse_labels_formats():
    assert parse_labels("cat\ndog\n") == ["cat", "dog"]
    assert parse_labels('["cat", "dog"]') == ["cat", "dog"]
    assert parse_labels('{"1": "dog", "0": "cat"}') == ["cat", "dog"]
    assert parse_labels("{0: 'person', 2: 'car'}") == ["person", "", "car"]  # ultralytics style
    assert labels_from_metadata({"names": "{0: 'a', 1: 'b'}"}) == ["a", "b"]
    assert labels_from_metadata({"author": "x"}) is None


def test_load_labels_file(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps(["a", "b"]))
    assert load_labels(tmp_path / "l.json") == ["a", "b"]
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(ConfigError, match="no labels"):
        load_labels(tmp_path / "e.txt")
    with pytest.raises(ConfigError, match="cannot read"):
        load_labels(tmp_path / "missing.txt")


def test_overlay_puts_red_on_salient_and_blue_elsewhere():
    image = np.full((10, 10, 3), 128, np.uint8)
    sal = np.zeros((10, 10), np.float32)
    sal[:5] = 1.0
    out = overlay(image, sal, alpha=1.0)
    assert out[0, 0, 0] > 120 and out[0, 0, 2] < 10  # jet top = red
    assert out[9, 9, 2] > 120 and out[9, 9, 0] < 10  # jet bottom = blue
    np.testing.assert_array_equal(overlay(image, sal, alpha=0.0), image)
    assert saliency_image(sal).dtype == np.uint8 and saliency_image(sal).max() == 255


def test_ensure_dir_refuses_unwritable_places(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        ensure_dir(blocker)
    with pytest.raises(OutputError, match="cannot create"):
        ensure_dir(blocker / "sub")
    assert ensure_dir(tmp_path / "a" / "b").is_dir()


def test_writing_a_large_photos_files_costs_a_few_bytes_per_pixel(tmp_path):
    """Overlay, gray map and .npy of a 6-megapixel photo: the numpy/OpenCV arrays made along
    the way stay under 8 bytes per pixel at once (float copies of the image would be 12+)."""
    import tracemalloc

    from onnxcam.render import write_explanation

    height, width = 2000, 3000
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), np.uint8)
    saliency = np.random.default_rng(1).uniform(size=(height, width)).astype(np.float32)
    names = [{"overlay": "a_overlay.png", "saliency": "a_saliency.png", "npy": "a.npy"}]
    tracemalloc.start()
    write_explanation(tmp_path, image, [saliency], names, {"x": 1}, "a.json")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak / (height * width) < 8, peak / (height * width)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), saliency)
