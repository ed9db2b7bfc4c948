"""Opening slides and resolving their scale: metadata, fallbacks, and errors that name the slide."""

from __future__ import annotations

import logging

import pytest
from wsi_testdata import shared_path

from mmsurv.wsi import SlideError, SlideOpenError, SlideReadError, segment_and_patch
from mmsurv.wsi.slide import DEFAULT_MPP, open_slide, resolve_scale

MPP_X, MPP_Y, POWER = "openslide.mpp-x", "openslide.mpp-y", "openslide.objective-power"


def test_scale_from_metadata():
    scale = resolve_scale({MPP_X: "0.2527", MPP_Y: "0.2527", POWER: "40"}, slide_name="s")
    assert (scale.mpp, scale.magnification, scale.source, scale.warnings) == (0.2527, 40.0, "metadata", ())


def test_mpp_derived_from_magnification_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        scale = resolve_scale({POWER: "40"}, slide_name="TCGA-XX")
    assert scale.mpp == pytest.approx(0.25) and scale.source == "mpp_from_magnification"
    assert "TCGA-XX" in caplog.text and "no MPP" in caplog.text


def test_magnification_derived_from_mpp_with_warning(caplog):
    with caplog.at_level(logging.WARNING):
        scale = resolve_scale({MPP_X: "0.5", MPP_Y: "0.5"}, slide_name="s")
    assert scale.magnification == pytest.approx(20.0) and scale.source == "magnification_from_mpp"
    assert "objective power" in caplog.text


def test_default_when_nothing_known_and_implausible_mpp_ignored(caplog):
    with caplog.at_level(logging.WARNING):
        scale = resolve_scale({MPP_X: "352.7777", MPP_Y: "352.7777"}, slide_name="s", default_mpp=0.25)
    assert (scale.mpp, scale.magnification, scale.source) == (0.25, 40.0, "default")
    assert "implausible MPP" in caplog.text and "default" in caplog.text


def test_cmu_small_region_metadata():
    with open_slide(shared_path("data", "wsi", "CMU-1-Small-Region.svs")) as slide:
        assert slide.name == "CMU-1-Small-Region"
        assert slide.dimensions == (2220, 2967) and slide.level_count == 1
        assert (slide.scale.mpp, slide.scale.magnification, slide.scale.source) == (0.499, 20.0, "metadata")


def test_boxes_tiff_has_no_mpp_so_default_with_warning(tmp_path, caplog):
    path = shared_path("data", "wsi", "boxes.tiff")
    with caplog.at_level(logging.WARNING):
        summary = segment_and_patch(path, tmp_path)
    assert summary["slide_info"]["scale_source"] == "default"
    assert summary["slide_info"]["mpp"] == DEFAULT_MPP
    assert any("default" in w for w in summary["warnings"])
    assert "boxes" in caplog.text
    # 300x250 px at the assumed 0.5 µm/px is 0.02 mm²: below the tcga minimum tissue area
    assert summary["patch_count"] == 0 and summary["status"] == "no_tissue"


def test_small_svs_is_too_small_for_tissue(tmp_path):
    summary = segment_and_patch(shared_path("data", "wsi", "small.svs"), tmp_path)
    assert summary["patch_count"] == 0
    assert (tmp_path / "small.json").is_file() and (tmp_path / "patches/small.h5").is_file()


@pytest.mark.parametrize("filename, error", [
    ("broken.svs", SlideOpenError),        # a text file
    ("unopenable.tiff", SlideOpenError),   # OpenSlide detects it but cannot open it
    ("unreadable.svs", SlideReadError),    # opens, read_region fails
])
def test_bad_slides_raise_an_error_naming_the_slide(tmp_path, filename, error):
    path = shared_path("data", "wsi", filename)
    with pytest.raises(error) as info:
        segment_and_patch(path, tmp_path, slide_name="SLIDE-42")
    assert isinstance(info.value, SlideError) and isinstance(info.value, RuntimeError)
    assert "SLIDE-42" in str(info.value) and info.value.slide == "SLIDE-42"
    assert not (tmp_path / "SLIDE-42.json").exists()
    assert not list(tmp_path.rglob("*.tmp*"))


def test_missing_file_is_an_open_error(tmp_path):
    with pytest.raises(SlideOpenError, match="nope"):
        open_slide(tmp_path / "nope.svs")
