"""Heatmap drawing, the GeoJSON for QuPath, and ``mmsurv heatmap`` end to end on a made-up slide."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from mmsurv.heatmap.draw import extreme_patches, normalized, overlay, score_canvas
from mmsurv.heatmap.qupath import patch_features, read_scores, write_geojson


def checkerboard(columns: int = 6, rows: int = 4, size: int = 100) -> tuple[np.ndarray, np.ndarray]:
    coords = np.array([(x * size, y * size) for y in range(rows) for x in range(columns)])
    values = np.array([(x + y) % 2 for y in range(rows) for x in range(columns)], dtype="float64")
    return coords, values


def test_a_checkerboard_bag_paints_a_checkerboard_at_the_patch_coordinates():
    coords, values = checkerboard()
    canvas = score_canvas(coords, 100, values, (60, 90), scale=0.1)  # 10 px per patch; a 3 px margin
    for y in range(4):
        for x in range(6):
            cell = canvas[y * 10:(y + 1) * 10, x * 10:(x + 1) * 10]
            assert np.all(cell == (x + y) % 2), (x, y)
    assert np.isnan(canvas[40:, :]).all() and np.isnan(canvas[:, 60:]).all()  # no patch there


def test_overlapping_patches_average_and_nan_scores_stay_unpainted():
    canvas = score_canvas(np.array([[0, 0], [50, 0], [200, 0]]), 100, np.array([0.0, 1.0, np.nan]), (10, 30), 0.1)
    assert canvas[0, 2] == 0.0 and canvas[0, 7] == 0.5 and canvas[0, 12] == 1.0
    assert np.isnan(canvas[0, 25])


def test_percentiles_ranks_ties_and_minmax():
    np.testing.assert_allclose(normalized(np.array([10.0, 30.0, 20.0, np.nan])), [1 / 3, 1.0, 2 / 3, np.nan])
    np.testing.assert_allclose(normalized(np.array([1.0, 1.0, 3.0])), [0.5, 0.5, 1.0])
    np.testing.assert_allclose(normalized(np.array([2.0, 4.0, 3.0]), "minmax"), [0.0, 1.0, 0.5])
    with pytest.raises(ValueError, match="normalize"):
        normalized(np.ones(3), "zscore")


def test_overlay_blends_only_painted_pixels():
    thumbnail = np.full((2, 2, 3), 200, dtype="uint8")
    out = overlay(thumbnail, np.array([[1.0, np.nan], [0.0, np.nan]]), alpha=0.5, cmap="gray")
    assert out[0, 0].tolist() == [228, 228, 228] and out[1, 0].tolist() == [100, 100, 100]
    assert out[0, 1].tolist() == [200, 200, 200]


def test_extreme_patches_skip_nan():
    top, bottom = extreme_patches(np.array([0.2, np.nan, 0.9, 0.1, 0.5]), 2)
    assert top.tolist() == [2, 4] and bottom.tolist() == [3, 0]


def test_geojson_is_valid_and_round_trips(tmp_path):
    import geojson

    coords, values = checkerboard(3, 2)
    values[1] = np.nan
    collection = patch_features(coords, 100, {"score": values, "g1": values * 2}, name="abmil slide")
    assert collection.is_valid
    path = write_geojson(tmp_path / "slide.geojson", collection)
    loaded = geojson.loads(path.read_text())
    assert loaded["type"] == "FeatureCollection" and len(loaded["features"]) == 6
    first = loaded["features"][0]
    assert first["properties"]["objectType"] == "tile"
    assert first["geometry"]["coordinates"][0][0] == first["geometry"]["coordinates"][0][-1]  # closed ring
    assert "score" not in loaded["features"][1]["properties"]["measurements"]  # NaN: no measurement
    corners, scores = read_scores(path)
    np.testing.assert_array_equal(corners, coords)
    np.testing.assert_allclose(scores["score"], values)
    np.testing.assert_allclose(scores["g1"], values * 2)


def _made_up_slide(root, spec_size=(1200, 800), patch=200):
    """A synthetic Aperio slide with a grid of patches, their 16-d features and CLAM-style coordinates."""
    from mmsurv.demo.slides import SlideSpec, make_slide

    width, height = spec_size
    slide = root / "slides" / "SLIDE-1.svs"
    slide.parent.mkdir(parents=True)
    make_slide(slide, SlideSpec(width=width, height=height, seed=3, n_regions=2))
    coords = np.array([(x, y) for y in range(0, height - patch + 1, patch) for x in range(0, width - patch + 1, patch)])
    (root / "features/pt_files").mkdir(parents=True)
    (root / "features/h5_files").mkdir(parents=True)
    torch.save(torch.randn(len(coords), 16, generator=torch.Generator().manual_seed(0)),
               root / "features/pt_files/SLIDE-1.pt")
    with h5py.File(root / "features/h5_files/SLIDE-1.h5", "w") as handle:
        handle["coords"] = coords.astype("int64")
        handle["coords"].attrs.update(patch_size=patch, patch_level=0, patch_size_level0=patch,
                                      level0_dim=np.array([width, height]))
    return slide, coords


def test_the_command_writes_overlay_montage_table_and_geojson(small_cohort, tmp_path):
    from PIL import Image

    from mmsurv.cli import main
    from mmsurv.train.run import train_fold

    cohort = small_cohort["cohort"]
    fold_dir = tmp_path / "abmil/fold0"
    train_fold({"data": {"feature_dim": 16}, "training": {"epochs": 1, "num_threads": 1}}, cohort_table=cohort.table,
               splits_dir=cohort.splits_dir, fold=0, model="abmil", out_dir=fold_dir,
               features_dir=small_cohort["root"] / "features/pt_files", seed=1)
    slide, coords = _made_up_slide(tmp_path / "new")
    out = tmp_path / "out"
    assert main(["heatmap", "--fold-dir", str(fold_dir), "--slide", "SLIDE-1.svs", "--features-dir",
                 str(tmp_path / "new/features/pt_files"), "--slides-dir", str(slide.parent), "--out-dir", str(out),
                 "--max-side", "300", "--top-k", "3"]) == 0
    table = pd.read_csv(out / "SLIDE-1.scores.tsv", sep="\t").to_dict("list")
    assert len(table["score"]) == len(coords) and table["x"] == coords[:, 0].tolist()
    assert sum(table["score"]) == pytest.approx(1.0, abs=1e-5)  # ABMIL's attention: softmax over the bag
    image = np.asarray(Image.open(out / "SLIDE-1.heatmap.png"))
    assert image.shape == (200, 300, 3)  # the thumbnail of a 1200 × 800 slide, longest side 300
    top = int(np.argmax(table["score"]))
    x, y = (coords[top] * 0.25 + 25).astype(int)  # the top patch's centre on the overlay
    assert tuple(image[y, x]) != (255, 255, 255)
    corners, scores = read_scores(out / "SLIDE-1.geojson")
    np.testing.assert_array_equal(corners, coords)
    np.testing.assert_allclose(scores["score"], table["score"], rtol=1e-6)
    assert Image.open(out / "SLIDE-1.patches.png").size[0] > 300


def test_a_real_slide_is_drawn_from_its_own_patching(small_cohort, tmp_path):
    """CMU-1-Small-Region (../shared): patched here, made-up 16-d features for its patches, scored by
    a fold trained on the small demo cohort: the scores mean nothing, the drawing is real."""
    from mmsurv.cli import main
    from mmsurv.heatmap.draw import draw_heatmap
    from mmsurv.heatmap.scores import slide_scores
    from mmsurv.train.run import train_fold
    from mmsurv_testdata import shared_path

    slide = shared_path("data", "wsi", "CMU-1-Small-Region.svs")
    assert main(["wsi", "patch", "--out-dir", str(tmp_path / "wsi"), "--patch-size", "256", str(slide)]) == 0
    features = tmp_path / "features"
    (features / "pt_files").mkdir(parents=True)
    (features / "h5_files").mkdir()
    with h5py.File(tmp_path / "wsi/patches/CMU-1-Small-Region.h5", "r") as source:
        coords = source["coords"][()]
        with h5py.File(features / "h5_files/CMU-1-Small-Region.h5", "w") as target:
            source.copy("coords", target)
    torch.save(torch.randn(len(coords), 16, generator=torch.Generator().manual_seed(0)),
               features / "pt_files/CMU-1-Small-Region.pt")
    cohort = small_cohort["cohort"]
    fold_dir = tmp_path / "clam_sb/fold0"
    train_fold({"data": {"feature_dim": 16}, "training": {"epochs": 1, "num_threads": 1}}, cohort_table=cohort.table,
               splits_dir=cohort.splits_dir, fold=0, model="clam_sb", out_dir=fold_dir,
               features_dir=small_cohort["root"] / "features/pt_files", seed=1)
    scores = slide_scores(fold_dir, slide.name, features_dir=features / "pt_files")
    assert len(scores.coords) == len(coords) > 10 and scores.level0_dims == (2220, 2967)
    image = draw_heatmap(slide, scores.coords, scores.patch_size, scores.scores.row().numpy(), max_side=512)
    assert image.shape == (512, 383, 3)
    scale = 383 / 2220
    x, y = (coords[0] * scale + scores.patch_size * scale / 2).astype(int)
    plain = draw_heatmap(slide, scores.coords[:0], scores.patch_size, np.zeros(0), max_side=512)
    assert np.abs(image[y, x].astype(int) - plain[y, x].astype(int)).sum() > 0  # painted over the tissue
