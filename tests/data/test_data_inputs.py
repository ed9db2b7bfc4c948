"""Declared inputs: only those are loaded; coordinates follow the features row for row."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from test_data_dataset import CASES, write_table

from mmsurv.data.cohort import CohortError, read_cohort_table
from mmsurv.data.dataset import BagOptions, build_fold_data, recorded_magnification
from mmsurv.data.inputs import collate, input_loader, known_inputs, loader_for
from mmsurv.data.splits import Split
from mmsurv.data.survival import fit_bin_edges
from mmsurv.naming import slide_stem

DIM = 8


def write_bags(root, *, with_h5=True, skew_slide=None, attrs=None):
    """Per slide: features whose first column encodes (slide, row) and coords encoding the same;
    ``attrs(slide)`` → attributes written on that slide's ``coords``."""
    pt, h5 = root / "pt_files", root / "h5_files"
    pt.mkdir(parents=True)
    h5.mkdir()
    for index, case in enumerate(CASES):
        slides = [f"{case}-01Z-00-DX1.AAA.svs"] + ([f"{case}-01Z-00-DX2.BBB.svs"] if index == 1 else [])
        for number, slide in enumerate(slides):
            rows = 4 + index + 3 * number
            codes = np.array([1000 * index + 100 * number + row for row in range(rows)], dtype="float32")
            features = np.zeros((rows, DIM), "float32")
            features[:, 0] = codes
            torch.save(torch.from_numpy(features), pt / f"{slide_stem(slide)}.pt")
            if with_h5:
                coords = np.stack([codes, -codes], axis=1).astype("int64")
                if slide == skew_slide:
                    coords = coords[:-1]
                with h5py.File(h5 / f"{slide_stem(slide)}.h5", "w") as handle:
                    handle["coords"] = coords
                    for key, value in (attrs(slide) if attrs else {}).items():
                        handle["coords"].attrs[key] = value
    return pt


def fold(table_path, features_dir, inputs, **bag):
    table = read_cohort_table(table_path)
    return build_fold_data(table, Split(train=CASES[:8], val=CASES[8:]), edges=fit_bin_edges(table.patients()),
                           groups={"signatures": {"g": ["G1_rnaseq", "G1_cnv"]}}, inputs=inputs,
                           bag_options=BagOptions(features_dir=features_dir, feature_dim=DIM, **bag), seed=0)


def test_only_declared_inputs_are_loaded(tmp_path):
    data = fold(write_table(tmp_path / "t.csv"), write_bags(tmp_path), ("omic",))
    assert set(data.train[0].inputs) == {"omic"} and data.train.bags is None  # no feature file opened


def test_coords_match_features_row_for_row_across_a_patients_slides(tmp_path):
    data = fold(write_table(tmp_path / "t.csv"), write_bags(tmp_path), ("path", "coords", "slide_index"))
    index = data.train.case_ids.index(CASES[1])  # the case with two slides
    sample = data.train[index]
    codes = sample.inputs["path"][:, 0].long()
    assert len(codes) == (4 + 1) + (4 + 1 + 3)
    assert torch.equal(sample.inputs["coords"][:, 0], codes) and torch.equal(sample.inputs["coords"][:, 1], -codes)
    assert sample.inputs["slide_index"].tolist() == [0] * 5 + [1] * 8
    assert torch.equal(codes // 100 % 10, sample.inputs["slide_index"])


def test_capped_bags_keep_coords_aligned(tmp_path):
    data = fold(write_table(tmp_path / "t.csv"), write_bags(tmp_path), ("path", "coords"), max_patches=3)
    for index in range(len(data.train)):
        sample = data.train[index]
        assert sample.inputs["path"].shape[0] == 3
        assert torch.equal(sample.inputs["coords"][:, 0], sample.inputs["path"][:, 0].long())


def test_a_cohort_with_pt_files_only_gets_a_clear_error_for_coords(tmp_path):
    data = fold(write_table(tmp_path / "t.csv"), write_bags(tmp_path, with_h5=False), ("path", "coords"))
    with pytest.raises(CohortError, match="no coordinates for slide .*h5_files"):
        data.train[0]


def test_coords_of_another_extraction_are_refused(tmp_path):
    slide = f"{CASES[0]}-01Z-00-DX1.AAA.svs"
    data = fold(write_table(tmp_path / "t.csv"), write_bags(tmp_path, skew_slide=slide), ("path", "coords"))
    with pytest.raises(CohortError, match="3 coordinates but .* has 4 feature rows"):
        data.train[data.train.case_ids.index(CASES[0])]


def test_adding_a_loader_is_one_function(tmp_path):
    @input_loader("n_slides")
    def _n_slides(dataset, index, name):
        return torch.tensor([float(len(dataset.slides_of_case.get(dataset.case_ids[index], [])))])

    try:
        assert "n_slides" in known_inputs()
        data = fold(write_table(tmp_path / "t.csv"), None, ("omic", "n_slides"))
        assert float(data.train[data.train.case_ids.index(CASES[1])].inputs["n_slides"]) == 2.0
    finally:
        from mmsurv.data import inputs

        inputs._LOADERS.pop("n_slides")
    with pytest.raises(ValueError, match="no loader for model input 'nope'"):
        loader_for("nope")


def test_slide_magnification_follows_the_rows_from_each_slides_patch_attributes(tmp_path):
    def attrs(slide):  # case 0: mmsurv's attributes (40x); case 1: a 20x and a CLAM-style slide; others: derived
        if slide.startswith(CASES[1]):
            return ({"slide_magnification": 20.0, "patch_size_level0": 512, "output_patch_size": 512}
                    if "DX1" in slide else {"patch_size": 256, "patch_level": 0, "downsample": [1.0, 1.0]})
        if slide.startswith(CASES[0]):
            return {"slide_magnification": 40.0, "magnification": 20, "patch_size_level0": 1024,
                    "output_patch_size": 512}
        return {"magnification": 20, "patch_size_level0": 1024, "output_patch_size": 512, "slide_magnification": ""}

    inputs = ("path", "coords", "slide_index", "slide_magnification")
    data = fold(write_table(tmp_path / "t.csv"), write_bags(tmp_path, attrs=attrs), inputs)
    two = data.train[data.train.case_ids.index(CASES[1])]
    magnification = two.inputs["slide_magnification"]
    assert magnification.dtype == torch.float32 and magnification.shape == (13,)
    assert magnification[:5].tolist() == [20.0] * 5 and torch.isnan(magnification[5:]).all()  # CLAM: unknown
    assert data.train[data.train.case_ids.index(CASES[0])].inputs["slide_magnification"].tolist() == [40.0] * 4
    assert data.train[data.train.case_ids.index(CASES[2])].inputs["slide_magnification"].tolist() == [40.0] * 6
    capped = fold(write_table(tmp_path / "t.csv"), tmp_path / "pt_files", inputs, max_patches=6)
    sample = capped.train[capped.train.case_ids.index(CASES[1])]
    known = ~torch.isnan(sample.inputs["slide_magnification"])
    assert torch.equal(known, sample.inputs["slide_index"] == 0)  # still row for row after the cap
    batch, _ = collate([capped.train[0], sample])  # padded with the other row inputs
    assert batch["slide_magnification"].shape == batch.mask.shape == batch.coords.shape[:2]


def test_recorded_magnification_reads_the_level0_value_or_derives_it():
    assert recorded_magnification({"slide_magnification": 40.0}) == 40.0
    assert recorded_magnification({"magnification": 20, "patch_size_level0": 1042, "output_patch_size": 512}) \
        == pytest.approx(40.703125)
    assert np.isnan(recorded_magnification({"patch_size": 256, "patch_level": 0}))
    assert np.isnan(recorded_magnification({"slide_magnification": "", "magnification": 20}))
