"""Synthetic Aperio slides: OpenSlide compatibility, determinism, ground truth, atomic writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from mmsurv.demo.slides import SlideSpec, SyntheticSlide, make_slide, write_aperio_slide

SMALL = SlideSpec(width=2000, height=1500, seed=7, risk=0.3)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _saturation_mask(img: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    rgb = img.astype(np.float32)
    top = rgb.max(axis=2)
    return (top - rgb.min(axis=2)) / np.maximum(top, 1.0) > threshold


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticSlide]:
    path = tmp_path_factory.mktemp("slides") / "small.svs"
    return path, make_slide(path, SMALL)


def test_openslide_reads_aperio_pyramid(small_slide: tuple[Path, SyntheticSlide]) -> None:
    path, _ = small_slide
    with openslide.OpenSlide(path) as osr:
        props = osr.properties
        assert props["openslide.vendor"] == "aperio"
        assert osr.level_count == 3
        assert osr.level_downsamples == pytest.approx((1, 4, 16), rel=0.01)
        assert osr.level_dimensions == ((2000, 1500), (500, 375), (125, 94))
        assert props["openslide.mpp-x"] == "0.5"
        assert props["openslide.mpp-y"] == "0.5"
        assert props["openslide.objective-power"] == "20"


def test_tiff_layout_is_aperio_like(small_slide: tuple[Path, SyntheticSlide]) -> None:
    path, _ = small_slide
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 3                       # main IFD chain, no SubIFDs
        first = tif.pages[0]
        assert first.description.startswith("Aperio Image Library")
        assert "|AppMag = 20|MPP = 0.5" in first.description
        for page in tif.pages:
            assert page.is_tiled and (page.tilewidth, page.tilelength) == (256, 256)
            assert page.compression == tifffile.COMPRESSION.JPEG
            assert page.photometric == tifffile.PHOTOMETRIC.RGB
            assert "subifds" not in {t.name.lower() for t in page.tags}


def test_forty_x_spec(tmp_path: Path) -> None:
    spec = SlideSpec(width=1200, height=900, mpp=0.25, app_mag=40, seed=2)
    path = tmp_path / "forty.svs"
    make_slide(path, spec)
    with openslide.OpenSlide(path) as osr:
        assert osr.properties["openslide.objective-power"] == "40"
        assert osr.properties["openslide.mpp-x"] == "0.25"


def test_read_region_matches_render(small_slide: tuple[Path, SyntheticSlide]) -> None:
    path, slide = small_slide
    mask = slide.tissue_mask(16)
    ys, xs = np.nonzero(mask)
    k = len(ys) // 2
    cx, cy = int(xs[k]) * 16, int(ys[k]) * 16                 # a point in tissue
    with openslide.OpenSlide(path) as osr:
        for level, ds in enumerate((1, 4, 16)):
            w, h = (300, 200) if ds < 16 else (100, 80)
            x, y = max(cx - w * ds // 2, 0), max(cy - h * ds // 2, 0)
            x, y = x // ds * ds, y // ds * ds
            read = np.asarray(osr.read_region((x, y), level, (w, h)).convert("RGB"))
            ref = slide.render(x, y, w, h, ds)
            diff = np.abs(read.astype(int) - ref.astype(int))
            assert diff.mean() < 4.0, (level, diff.mean())
            assert _saturation_mask(ref).mean() > 0.2        # the window really shows tissue


def test_same_spec_gives_identical_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.svs", tmp_path / "b.svs"
    make_slide(a, SMALL)
    make_slide(b, SMALL, workers=1)                           # threading must not matter
    assert _md5(a) == _md5(b)
    make_slide(b, SlideSpec(width=2000, height=1500, seed=8, risk=0.3))
    assert _md5(a) != _md5(b)


@pytest.mark.parametrize("ds", [1, 4, 16])
def test_render_is_independent_of_tiling(ds: int) -> None:
    slide = SyntheticSlide(SMALL)
    x0, y0 = (512, 256) if ds == 1 else (0, 0)
    whole = slide.render(x0, y0, 256, 192, ds)
    rows = [np.hstack([slide.render(x0 + x * ds, y0 + y * ds, 128, 96, ds) for x in (0, 128)])
            for y in (0, 96)]
    np.testing.assert_array_equal(whole, np.vstack(rows))
    assert 0.05 < _saturation_mask(whole).mean() < 0.95      # window crosses a tissue edge
    fresh = SyntheticSlide(SMALL)       # nothing cached: same pixels
    np.testing.assert_array_equal(fresh.render(x0 + 128 * ds, y0, 128, 96, ds), rows[0][:, 128:])


def test_mask_matches_rendered_tissue() -> None:
    for seed in (0, 1, 2):
        slide = SyntheticSlide(SlideSpec(width=2000, height=1500, seed=seed))
        for ds in (16, 4):
            mask = slide.tissue_mask(ds)
            h, w = slide.level_shape(ds)
            assert mask.shape == (h, w) and mask.dtype == bool
            img = slide.render(0, 0, w, h, ds)
            assert _iou(_saturation_mask(img), mask) >= 0.97
        assert 0.15 < slide.tissue_mask(8).mean() < 0.45


def test_mask_from_file_matches_ground_truth(small_slide: tuple[Path, SyntheticSlide]) -> None:
    path, slide = small_slide
    with openslide.OpenSlide(path) as osr:
        w, h = osr.level_dimensions[2]
        img = np.asarray(osr.read_region((0, 0), 2, (w, h)).convert("RGB"))
    assert _iou(_saturation_mask(img), slide.tissue_mask(16)) >= 0.95


def test_mask_has_holes() -> None:
    slide = SyntheticSlide(SlideSpec(width=2000, height=1500, seed=3, n_regions=2))
    assert len(slide.regions) == 2
    assert all(1 <= len(holes) <= 3 for _, holes in slide.regions)
    mask = slide.tissue_mask(4)
    for _region, holes in slide.regions:
        hole = holes[0]
        assert not mask[int(hole.cy // 4), int(hole.cx // 4)]


def test_risk_changes_nuclei() -> None:
    def dark_fraction(risk: float) -> float:
        slide = SyntheticSlide(SlideSpec(width=2000, height=1500, seed=4, risk=risk))
        img = slide.render(0, 0, 2000, 1500, 1.0).astype(np.float32)
        mask = slide.tissue_mask(1)
        return float(((img.mean(axis=2) < 150) & mask).sum() / mask.sum())

    low, mid, high = dark_fraction(-1.5), dark_fraction(0.0), dark_fraction(1.5)
    assert low < mid < high
    assert high > 3 * low


def test_blank_slide(tmp_path: Path) -> None:
    spec = SlideSpec(width=1000, height=800, blank=True, seed=1)
    path = tmp_path / "blank.svs"
    slide = make_slide(path, spec)
    assert not slide.tissue_mask(4).any()
    img = slide.render(0, 0, 1000, 800, 1.0)
    assert img.min() >= 230 and not _saturation_mask(img, 0.05).any()
    with openslide.OpenSlide(path) as osr:
        read = np.asarray(osr.read_region((0, 0), 0, (1000, 800)).convert("RGB"))
    assert read.min() >= 225


def test_background_tiles_are_stored_once(small_slide: tuple[Path, SyntheticSlide]) -> None:
    path, _ = small_slide
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        offsets = list(page.dataoffsets)
        assert len(set(offsets)) < len(offsets)            # runs of background tiles share bytes
        assert all(count > 0 for count in page.databytecounts)
        level0 = page.asarray()
    assert level0.shape == (1500, 2000, 3)
    assert level0[:4, :4].min() > 230                         # corner is background


def test_atomic_write_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "out" / "slide.svs"
    make_slide(path, SlideSpec(width=800, height=600, seed=1))
    assert path.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["slide.svs"]


class _Broken(SyntheticSlide):
    def render(self, x: int, y: int, w: int, h: int, downsample: float = 1.0) -> np.ndarray:
        if downsample > 1:
            raise RuntimeError("boom")
        return super().render(x, y, w, h, downsample)


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_write_leaves_nothing(tmp_path: Path, workers: int) -> None:
    path = tmp_path / "broken.svs"
    with pytest.raises(RuntimeError, match="boom"):
        write_aperio_slide(path, _Broken(SlideSpec(width=1200, height=900, seed=2)),
                           workers=workers)
    assert list(tmp_path.iterdir()) == []
