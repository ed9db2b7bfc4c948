"""Patch readers: the JPEG tile reader must give OpenSlide's pixels exactly, or not be used at all."""

from __future__ import annotations

import numpy as np
import pytest

from mmsurv.features.regions import (
    OpenSlideRegions,
    TiffTileRegions,
    UnsupportedSlide,
    choose_reader,
    open_reader,
)
from mmsurv_testdata import shared_path


def read_both(path, size, points):
    fast, reference = TiffTileRegions(path, 0, size), OpenSlideRegions(path, 0, size)
    try:
        for x, y in points:
            got, expected = np.zeros((size, size, 3), np.uint8), np.zeros((size, size, 3), np.uint8)
            fast.read_rgb_into(x, y, got)
            reference.read_rgb_into(x, y, expected)
            yield (x, y), got, expected
    finally:
        fast.close()
        reference.close()


def random_points(width, height, size, n, seed=0):
    """Inside, straddling an edge, and entirely outside the image."""
    rng = np.random.default_rng(seed)
    points = [(int(rng.integers(-size, width)), int(rng.integers(-size, height))) for _ in range(n)]
    return points + [(width - size // 3, height - size // 3), (-size // 2, 0), (width + 5, height + 5)]


def test_tile_reader_equals_openslide_on_generated_slide(slide):
    path, synthetic = slide
    points = random_points(synthetic.spec.width, synthetic.spec.height, 512, 25)
    for point, got, expected in read_both(path, 512, points):
        assert np.array_equal(got, expected), f"pixels differ at {point}"


@pytest.mark.shared
def test_tile_reader_equals_openslide_on_real_aperio_slide():
    """CMU-1-Small-Region.svs: 240 px JPEG tiles with shared tables, YCbCr 2x2, 2220x2967."""
    path = shared_path("data", "wsi", "CMU-1-Small-Region.svs")
    for point, got, expected in read_both(path, 512, random_points(2220, 2967, 512, 20, seed=1)):
        assert np.array_equal(got, expected), f"pixels differ at {point}"
    assert choose_reader("auto", path, 0, 512, (240, 480))[0] == "tiff"


def test_tiles_are_decoded_once_in_row_order(slide, monkeypatch):
    path, _ = slide
    reader = TiffTileRegions(path, 0, 384)
    decoded = []
    original = TiffTileRegions._decode
    monkeypatch.setattr(TiffTileRegions, "_decode", lambda self, index: decoded.append(index) or original(self, index))
    out = np.empty((384, 384, 3), np.uint8)
    for y in (0, 384):
        for x in (0, 384, 768):
            reader.read_rgb_into(x, y, out)
    reader.close()
    assert len(decoded) == len(set(decoded))      # 384 px patches share 256 px tiles: each decoded once


@pytest.mark.shared
def test_unsupported_pages_fall_back_to_openslide():
    boxes = shared_path("data", "wsi", "boxes.tiff")          # deflate-compressed tiles
    kind, reason = choose_reader("auto", boxes, 0, 64, (0, 0))
    assert kind == "openslide" and "not JPEG" in reason
    with pytest.raises(UnsupportedSlide, match="boxes.tiff: tile reader unusable"):
        choose_reader("tiff", boxes, 0, 64, (0, 0))


def test_levels_above_zero_use_openslide(slide):
    with pytest.raises(UnsupportedSlide, match="level 1"):
        open_reader("tiff", slide[0], 1, 256)
    assert choose_reader("auto", slide[0], 1, 256, (0, 0)) == ("openslide", "tile reader unusable: level 1 (only "
                                                                            "level 0 is read from the tiles)")


def test_any_pixel_difference_means_openslide(slide, monkeypatch):
    original = TiffTileRegions._decode

    def off_by_one(self, index):
        tile = original(self, index)
        return None if tile is None else tile ^ np.uint8(1)

    monkeypatch.setattr(TiffTileRegions, "_decode", off_by_one)
    kind, reason = choose_reader("auto", slide[0], 0, 512, (512, 512))
    assert kind == "openslide" and "differ from OpenSlide" in reason


def test_openslide_reader_is_taken_as_requested(slide):
    assert choose_reader("openslide", slide[0], 0, 512, (0, 0)) == ("openslide", "requested")
    with pytest.raises(ValueError, match="unknown reader 'pil'"):
        choose_reader("pil", slide[0], 0, 512, (0, 0))
