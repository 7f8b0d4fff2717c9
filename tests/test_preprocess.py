"""Reading images and turning them into model inputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from onnxcam import ImageError, preprocess
from onnxcam.preprocess import PRESETS, InputSpec


def spec(layout="NCHW", channels=3, dtype=np.float32, h=4, w=6):
    return InputSpec("input", layout, h, w, channels, np.dtype(dtype))


def flat(value):
    return np.full((4, 6, 3), value, np.uint8)


@pytest.mark.parametrize(
    ("preset", "pixel", "expected"),
    [
        (
            "imagenet",
            (255, 0, 128),
            ((1 - 0.485) / 0.229, -0.456 / 0.224, (128 / 255 - 0.406) / 0.225),
        ),
        ("caffe", (10, 20, 30), (30 - 103.939, 20 - 116.779, 10 - 123.68)),  # BGR order
        ("tf", (0, 255, 127.5), (-1.0, 1.0, 0.0)),
        ("unit", (0, 255, 51), (0.0, 1.0, 0.2)),
        ("raw", (0, 255, 51), (0.0, 255.0, 51.0)),
    ],
)
def test_presets_normalise_each_channel(preset, pixel, expected):
    img = np.zeros((4, 6, 3), np.float32) + np.asarray(pixel, np.float32)
    x = preprocess._normalize(img, spec(), PRESETS[preset])
    assert x.shape == (1, 3, 4, 6)
    np.testing.assert_allclose(x[0, :, 0, 0], expected, rtol=1e-5, atol=1e-5)


def test_layout_channels_and_dtype():
    rgb = np.random.default_rng(0).integers(0, 255, (8, 12, 3), np.uint8)
    nchw = preprocess.to_tensor(rgb, spec(h=8, w=12), PRESETS["unit"])
    nhwc = preprocess.to_tensor(rgb, spec("NHWC", h=8, w=12), PRESETS["unit"])
    np.testing.assert_allclose(nchw[0].transpose(1, 2, 0), nhwc[0])
    gray = preprocess.to_tensor(rgb, spec(channels=1, h=8, w=12), PRESETS["raw"])
    assert gray.shape == (1, 1, 8, 12)
    u8 = preprocess.to_tensor(rgb, spec(dtype=np.uint8, h=8, w=12), PRESETS["raw"])
    assert u8.dtype == np.uint8 and np.array_equal(u8[0].transpose(1, 2, 0), rgb)
    half = preprocess.to_tensor(rgb, spec(dtype=np.float16, h=4, w=6), PRESETS["unit"])
    assert half.dtype == np.float16 and half.shape == (1, 3, 4, 6)


def test_as_rgb_converts_gray_rgba_16bit_and_float():
    gray = np.arange(100, dtype=np.uint8).reshape(10, 10)
    assert preprocess.as_rgb(gray).shape == (10, 10, 3)
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 7
    assert (preprocess.as_rgb(rgba)[..., 0] == 200).all()
    deep = np.full((10, 10, 3), 65535, np.uint16)
    assert (preprocess.as_rgb(deep) == 255).all()
    assert (preprocess.as_rgb(np.full((10, 10, 3), 0.5, np.float32)) == 128).all()
    with pytest.raises(ImageError, match="at least"):
        preprocess.as_rgb(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match="not an image"):
        preprocess.as_rgb(np.zeros((10, 10, 5), np.uint8))


def test_read_image_formats_are_rgb(tmp_path):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(tmp_path / "a.png"), bgr)
    cv2.imwrite(str(tmp_path / "b.jpg"), bgr)
    cv2.imwrite(str(tmp_path / "g.png"), np.full((20, 30), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "d.png"), np.full((20, 30, 3), 65535, np.uint16))
    cv2.imwrite(str(tmp_path / "t.png"), np.dstack([bgr, np.full((20, 30), 9, np.uint8)]))
    for name in ("a.png", "b.jpg", "t.png"):
        img = preprocess.read_image(tmp_path / name)
        assert img.shape == (20, 30, 3) and img[..., 0].mean() > 240 and img[..., 2].mean() < 15
    assert (preprocess.read_image(tmp_path / "g.png") == 90).all()
    assert (preprocess.read_image(tmp_path / "d.png") == 255).all()


def test_header_sizes_for_common_formats(tmp_path):
    img = np.zeros((21, 34, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        ok, buf = cv2.imencode(ext, img)
        assert ok
        assert preprocess.image_size_from_header(buf.tobytes()) == (34, 21), ext


def test_huge_image_refused_from_header_without_decoding(tmp_path):
    header = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + (100_000).to_bytes(4, "big") * 2
    path = tmp_path / "huge.png"
    path.write_bytes(header + b"\x08\x02\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(ImageError, match="10,000,000,000 pixels"):
        preprocess.read_image(path)


def test_truncated_and_bad_images(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    for ext in (".jpg", ".png"):
        _ok, buf = cv2.imencode(ext, img)
        data = buf.tobytes()
        cut = tmp_path / f"cut{ext}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ImageError, match="truncated"):
            preprocess.read_image(cut)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        preprocess.read_image(tmp_path / "empty.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        preprocess.read_image(tmp_path / "text.png")
    with pytest.raises(ImageError, match="not found"):
        preprocess.read_image(tmp_path / "missing.png")


def test_baselines(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (8, 12, 3), np.uint8)
    s, norm = spec(h=8, w=12), PRESETS["imagenet"]
    x = preprocess.to_tensor(rgb, s, norm)
    assert preprocess.baseline_tensor("none", x, s, norm) is None
    assert not preprocess.baseline_tensor("zero", x, s, norm).any()
    black = preprocess.baseline_tensor("black", x, s, norm)
    np.testing.assert_allclose(
        black[0, :, 0, 0], -np.array(norm.mean) / np.array(norm.std), rtol=1e-5
    )
    blur = preprocess.baseline_tensor("blur", x, s, norm)
    assert blur.shape == x.shape and blur.std() < x.std()
    # Blurring the normalised input equals normalising the blurred image (sigma 1 here).
    blurred = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), 1.0)
    np.testing.assert_allclose(blur, preprocess.to_tensor(blurred, s, norm), atol=1e-5)
