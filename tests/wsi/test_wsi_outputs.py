"""End to end: ``segment_and_patch`` and ``mmsurv wsi patch`` write CLAM-compatible outputs."""

from __future__ import annotations

import json
import os

import cv2
import h5py
import numpy as np
import pytest
import wsi_testdata

from mmsurv.cli import main
from mmsurv.wsi import segment_and_patch
from mmsurv.wsi.outputs import read_coords_h5

CLAM_ATTRS = {"patch_size", "patch_level", "downsample", "level_dim", "downsampled_level_dim", "name"}


def _outputs(root, name):
    return [root / "patches" / f"{name}.h5", root / "masks" / f"{name}.png",
            root / "stitches" / f"{name}.png", root / f"{name}.json"]


def test_outputs_of_a_40x_slide(tmp_path):
    path, _ = wsi_testdata.get("40x_pair")
    # 1 x 0.75 mm slide with ~0.13 mm² pieces: lower the tcga minimum piece area (0.26 mm²)
    summary = segment_and_patch(path, tmp_path, slide_name="TCGA-40X", patch={"patch_size": 128},
                                segment={"min_tissue_mm2": 0.05})
    h5, mask, stitch, js = _outputs(tmp_path, "TCGA-40X")
    assert all(p.is_file() for p in (h5, mask, stitch, js))
    assert js.stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in (h5, mask, stitch))
    assert json.loads(js.read_text()) == json.loads(json.dumps(summary))
    coords, attrs = read_coords_h5(h5)
    assert coords.dtype == np.int64 and coords.shape == (summary["patch_count"], 2) and len(coords) > 50
    assert CLAM_ATTRS <= set(attrs)
    assert (attrs["patch_size"], attrs["patch_level"], attrs["patch_size_level0"]) == (256, 0, 256)
    assert attrs["output_patch_size"] == 128 and attrs["magnification"] == 20
    assert attrs["mpp"] == pytest.approx(0.25) and attrs["name"] == "TCGA-40X"
    assert tuple(attrs["level_dim"]) == (4000, 3000) and tuple(attrs["downsample"]) == (1.0, 1.0)
    assert summary["status"] == "ok" and summary["tissue_area_mm2"] > 0.1
    assert set(summary["seconds"]) >= {"segment", "patch", "stitch", "total"}
    assert summary["parameters"]["preset"] == "tcga"
    assert summary["parameters"]["segment"]["min_hole_mm2"] == pytest.approx(0.065536)
    png = cv2.imread(str(mask))
    assert png is not None and (png[..., 1] == 255).any()           # green contours drawn
    stitched = cv2.imread(str(stitch))
    assert stitched.shape == png.shape and 0 < (stitched.sum(axis=2) > 0).mean() < 1
    assert not list(tmp_path.rglob(".*.tmp*"))                       # no temporary files left


def test_blank_slide_writes_zero_coords_and_all_files(tmp_path, caplog):
    path, _ = wsi_testdata.get("blank")
    summary = segment_and_patch(path, tmp_path, slide_name="blank")
    assert all(p.is_file() for p in _outputs(tmp_path, "blank"))
    with h5py.File(tmp_path / "patches/blank.h5") as handle:
        assert handle["coords"].shape == (0, 2) and handle["coords"].dtype == np.int64
        assert handle["coords"].attrs["patch_size"] == 512
    assert summary["status"] == "no_tissue" and summary["patch_count"] == 0
    assert any("no tissue" in w for w in summary["warnings"]) and "no tissue" in caplog.text


def test_parameter_overrides_and_unknown_keys(tmp_path):
    path, _ = wsi_testdata.get("20x")
    summary = segment_and_patch(path, tmp_path, preset="bwh_biopsy",
                                segment={"close": 0}, patch={"magnification": 10, "patch_size": 256})
    assert summary["parameters"]["segment"]["close"] == 0
    assert summary["parameters"]["segment"]["sthresh"] == 15
    assert summary["patches"]["patch_size_level0"] == 512 and summary["patches"]["patch_level"] == 0
    with pytest.raises(ValueError, match="sthres"):
        segment_and_patch(path, tmp_path, segment={"sthres": 3})


def test_cli_processes_good_slides_and_names_the_bad_one(tmp_path, capsys):
    good, _ = wsi_testdata.get("20x")
    bad = tmp_path / "TCGA-BAD.svs"
    bad.write_text("not a slide")
    out = tmp_path / "out"
    code = main(["wsi", "patch", str(good), str(bad), "--out-dir", str(out), "--patch-size", "256",
                 "--min-tissue-mm2", "0.05"])
    text = capsys.readouterr().out
    assert code == 1 and "TCGA-BAD" in text and "FAILED" in text
    assert (out / "20x.json").is_file() and not (out / "TCGA-BAD.json").exists()
    summary = json.loads((out / "20x.json").read_text())
    assert summary["parameters"]["segment"]["min_tissue_mm2"] == 0.05 and summary["patch_count"] > 10
    before = os.stat(out / "20x.json").st_mtime_ns
    assert main(["wsi", "patch", str(good), "--out-dir", str(out), "--skip-existing"]) == 0
    assert os.stat(out / "20x.json").st_mtime_ns == before


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["wsi", "patch", "--help"])
    assert info.value.code == 0 and "--preset" in capsys.readouterr().out
