"""Patching a batch of slides in one process: a bad slide is named, the others are written, and
complete slides are skipped on a rerun unless their parameters changed."""

from __future__ import annotations

import json

import pytest
from wsi_testdata import get

from mmsurv.batch import BatchError
from mmsurv.wsi.batch import segment_and_patch_batch
from mmsurv.wsi.outputs import output_paths

SETTINGS = {"preset": "tcga", "segment": {"min_tissue_mm2": 0.02}}


def test_bad_slide_is_named_others_written_and_complete_ones_skipped(tmp_path):
    good, _ = get("20x_pair")
    broken = tmp_path / "broken.svs"
    broken.write_text("not a slide")
    slides = [(good, "one"), (broken, "bad"), (good, "two")]
    with pytest.raises(BatchError, match=r"1 of 3 slide\(s\) failed \(bad: SlideOpenError: slide bad") as failure:
        segment_and_patch_batch(slides, tmp_path / "wsi", SETTINGS)
    assert set(failure.value.failures) == {"bad"}
    for name in ("one", "two"):
        assert json.loads(output_paths(tmp_path / "wsi", name).summary.read_text())["patch_count"] > 0
    assert not output_paths(tmp_path / "wsi", "bad").summary.exists()

    summary = output_paths(tmp_path / "wsi", "one").summary
    before = summary.stat().st_mtime_ns
    outcomes = segment_and_patch_batch([(good, "one")], tmp_path / "wsi", SETTINGS)
    assert [o.result for o in outcomes] == ["skipped"] and summary.stat().st_mtime_ns == before
    outcomes = segment_and_patch_batch([(good, "one")], tmp_path / "wsi", {**SETTINGS, "patch_size": 256})
    assert [o.result for o in outcomes] == ["done"]
    assert json.loads(summary.read_text())["parameters"]["patch"]["patch_size"] == 256


def test_a_changed_setting_or_a_replaced_slide_redoes_the_slide_and_names_why(tmp_path, caplog):
    import logging
    import shutil

    good, _ = get("20x_pair")
    copy = tmp_path / "slide.svs"
    shutil.copy(good, copy)
    segment_and_patch_batch([(copy, "one")], tmp_path / "wsi", SETTINGS)
    changed = {**SETTINGS, "segment": {"min_tissue_mm2": 0.05}, "magnification": 10}
    with caplog.at_level(logging.WARNING, logger="mmsurv.wsi"):
        assert [o.result for o in segment_and_patch_batch([(copy, "one")], tmp_path / "wsi", changed)] == ["done"]
    assert "segment.min_tissue_mm2: made with 0.02, now 0.05" in caplog.text
    assert "patch.magnification: made with 20" in caplog.text and "now 10" in caplog.text
    caplog.clear()
    with open(copy, "ab") as handle:  # another scan under the same name
        handle.write(b"\0" * 16)
    with caplog.at_level(logging.WARNING, logger="mmsurv.wsi"):
        assert [o.result for o in segment_and_patch_batch([(copy, "one")], tmp_path / "wsi", changed)] == ["done"]
    assert "slide file size: made with" in caplog.text
    assert [o.result for o in segment_and_patch_batch([(copy, "one")], tmp_path / "wsi", changed)] == ["skipped"]
