"""PNG writing with OpenCV and with PIL: the same pixels and modes whichever wrote the file."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from models.imageio import encode_many, encode_png
from models.phantom import make_phantom


def decoded(png: bytes) -> tuple[str, np.ndarray]:
    img = Image.open(io.BytesIO(png))
    img.load()
    return img.mode, np.asarray(img)


def rgb_images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (17, 23, 3), dtype=np.uint8)
    fundus = make_phantom(1, size=64).image
    return [noise, fundus, noise[:, ::-1], np.ascontiguousarray(noise.transpose(1, 0, 2))]


def masks() -> list[np.ndarray]:
    stripes = (np.arange(21 * 30).reshape(21, 30) % 3 == 0).astype(np.uint8)
    vessels = make_phantom(1, size=64).mask
    return [stripes, vessels, vessels * np.uint8(255), np.zeros((5, 7), np.uint8)]


class TestOpenCVMatchesPIL:
    @pytest.mark.parametrize("index", range(4))
    @pytest.mark.parametrize("level", [0, 1, 9])
    def test_rgb(self, index: int, level: int) -> None:
        img = rgb_images()[index]
        cv_mode, cv_pixels = decoded(encode_png(img, level=level, backend="opencv"))
        pil_mode, pil_pixels = decoded(encode_png(img, level=level, backend="pil"))
        assert cv_mode == pil_mode == "RGB"
        np.testing.assert_array_equal(cv_pixels, pil_pixels)
        np.testing.assert_array_equal(cv_pixels, img)

    @pytest.mark.parametrize("index", range(4))
    def test_mask_is_0_255_greyscale(self, index: int) -> None:
        mask = masks()[index]
        cv_mode, cv_pixels = decoded(encode_png(mask, backend="opencv"))
        pil_mode, pil_pixels = decoded(encode_png(mask, backend="pil"))
        assert cv_mode == pil_mode == "L"
        np.testing.assert_array_equal(cv_pixels, pil_pixels)
        np.testing.assert_array_equal(cv_pixels, np.where(mask > 0, 255, 0).astype(np.uint8))

    def test_default_is_opencv(self) -> None:
        img = rgb_images()[1]
        assert encode_png(img) == encode_png(img, backend="opencv")
        assert list(encode_many([img, img], workers=2)) == [encode_png(img)] * 2


def test_bad_backend_and_level() -> None:
    img = rgb_images()[0]
    with pytest.raises(ValueError, match="backend"):
        encode_png(img, backend="libpng")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level"):
        encode_png(img, level=10)
