"""Patient bags, training-fold-only scaling, sampling, splits and the hold-out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmsurv.data.cohort import CohortError, read_cohort_table
from mmsurv.data.dataset import BagOptions, balanced_weights, build_fold_data, epoch_order
from mmsurv.data.splits import Split, holdout_split, read_split, restrict_to_cohort, split_file
from mmsurv.data.survival import fit_bin_edges

CASES = [f"TCGA-XX-{i:04d}" for i in range(12)]


def write_table(path, genomics_override=None):
    rng = np.random.default_rng(0)
    rows = []
    for i, case in enumerate(CASES):
        slides = [f"{case}-01Z-00-DX1.AAA.svs"] + ([f"{case}-01Z-00-DX2.BBB.svs"] if i == 1 else [])
        for slide in slides:
            rows.append({"case_id": case, "slide_id": slide, "survival_months": 1.0 + i, "censorship": i % 3 == 2,
                         "G1_rnaseq": float(rng.normal()), "G2_rnaseq": float(rng.normal()), "G1_cnv": float(i % 3)})
    frame = pd.DataFrame(rows)
    frame["censorship"] = frame["censorship"].astype(int)
    for (case, column), value in (genomics_override or {}).items():
        frame.loc[frame["case_id"] == case, column] = value
    frame.to_csv(path, index=False)
    return path


def fold(tmp_path, table_path, modality="omic", features_dir=None, holdout=0.0, **bag):
    table = read_cohort_table(table_path)
    split = Split(train=CASES[:8], val=CASES[8:])
    edges = fit_bin_edges(table.patients())
    inputs = {"omic": ("omic", "omic_groups"), "path": ("path",), "multimodal": ("path", "omic", "omic_groups")}[modality]
    return build_fold_data(table, split, edges=edges, groups={"signatures": {"g": ["G1_rnaseq", "G1_cnv"]}},
                           inputs=inputs, bag_options=BagOptions(features_dir=features_dir, **bag), holdout_fraction=holdout, seed=3)


def test_scaler_uses_training_fold_only(tmp_path):
    base = fold(tmp_path, write_table(tmp_path / "a.csv"))
    changed = fold(tmp_path, write_table(tmp_path / "b.csv", {(CASES[9], "G1_rnaseq"): 1e6}))
    np.testing.assert_array_equal(base.scaler.mean_, changed.scaler.mean_)
    np.testing.assert_array_equal(base.scaler.scale_, changed.scaler.scale_)
    assert not torch.equal(base.val.omic, changed.val.omic)  # the validation patient itself did change
    train_omic = base.train.omic.numpy()
    assert np.allclose(train_omic.mean(axis=0), 0, atol=1e-5) and np.allclose(train_omic.std(axis=0), 1, atol=1e-4)
    moved = fold(tmp_path, write_table(tmp_path / "c.csv", {(CASES[0], "G1_rnaseq"): 1e6}))
    assert not np.array_equal(base.scaler.mean_, moved.scaler.mean_)  # a training patient moves it


@pytest.mark.parametrize("case", ["gaussian", "constant_and_tiny", "nan", "large_offset"])
def test_scaler_is_scikit_learns_standard_scaler_bit_for_bit(case):
    from sklearn.preprocessing import StandardScaler

    from mmsurv.data.dataset import GenomicScaler

    rng = np.random.default_rng(7)
    train, test = rng.standard_normal((83, 40)) * 3 + 1, rng.standard_normal((17, 40))
    if case == "constant_and_tiny":
        train[:, 0], train[:, 1] = 5.0, 5.0 + rng.standard_normal(83) * 1e-17
        train[:, 2] = rng.integers(0, 2, 83)
    elif case == "nan":
        train[rng.random(train.shape) < 0.1] = np.nan
        test[0, 3] = np.nan
    elif case == "large_offset":
        train += 1e8
    ours, reference = GenomicScaler().fit(train), StandardScaler().fit(train)
    np.testing.assert_array_equal(ours.mean_, reference.mean_)
    np.testing.assert_array_equal(ours.var_, reference.var_)
    np.testing.assert_array_equal(ours.scale_, reference.scale_)
    np.testing.assert_array_equal(ours.transform(test), reference.transform(test).astype("float32"))


def test_samples_carry_groups_and_labels(tmp_path):
    data = fold(tmp_path, write_table(tmp_path / "t.csv"))
    sample = data.train[0]
    assert sample.path is None and sample.omic.shape == (3,)
    assert [g.shape for g in sample.omic_groups] == [torch.Size([2])]
    columns = data.genomic_columns
    assert torch.equal(sample.omic_groups[0], sample.omic[[columns.index("G1_rnaseq"), columns.index("G1_cnv")]])
    assert data.group_sizes == [2]


def test_bags_concatenate_slides_and_empty_cases_get_a_zero_vector(tmp_path):
    features = tmp_path / "pt_files"
    features.mkdir()
    for i, case in enumerate(CASES):
        if i == 3:
            continue  # no feature file
        n = 0 if i == 4 else 5  # case 4: a slide with zero patches
        torch.save(torch.full((n, 8), float(i)), features / f"{case}-01Z-00-DX1.AAA.pt")
    torch.save(torch.full((2, 8), -1.0), features / f"{CASES[1]}-01Z-00-DX2.BBB.pt")
    data = fold(tmp_path, write_table(tmp_path / "t.csv"), modality="path", features_dir=features, feature_dim=8)
    by_case = {data.train.case_ids[i]: data.train[i] for i in range(len(data.train))}
    two = by_case[CASES[1]]
    assert two.path.shape == (7, 8) and two.n_patches == 7 and two.path[-1, 0] == -1.0
    for case in (CASES[3], CASES[4]):
        assert by_case[case].path.shape == (1, 8) and by_case[case].n_patches == 0
        assert float(by_case[case].path.abs().sum()) == 0.0
    assert by_case[CASES[0]].omic is None


def test_patch_cap_in_training_only(tmp_path):
    features = tmp_path / "pt_files"
    features.mkdir()
    for case in CASES:
        torch.save(torch.arange(40 * 4, dtype=torch.float32).reshape(40, 4), features / f"{case}-01Z-00-DX1.AAA.pt")
    data = fold(tmp_path, write_table(tmp_path / "t.csv"), modality="path", features_dir=features, feature_dim=4,
                max_patches=10)
    bag = data.train[0].path
    assert bag.shape == (10, 4) and data.train[0].n_patches == 40
    assert torch.all(bag[1:, 0] > bag[:-1, 0])  # subset kept in file order
    assert data.val[0].path.shape == (40, 4)


def test_wrong_features_dir_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CohortError, match="none of the"):
        fold(tmp_path, write_table(tmp_path / "t.csv"), modality="path", features_dir=tmp_path / "empty")


def test_balanced_weights_and_epoch_order():
    labels = [0, 0, 0, 1]
    assert balanced_weights(labels).tolist() == [4 / 3, 4 / 3, 4 / 3, 4.0]
    order_a = epoch_order(labels, weighted=True, generator=torch.Generator().manual_seed(1))
    order_b = epoch_order(labels, weighted=True, generator=torch.Generator().manual_seed(1))
    assert order_a == order_b and len(order_a) == 4
    many = epoch_order([0] * 90 + [1] * 10, weighted=True, generator=torch.Generator().manual_seed(0)) * 1
    assert 25 < sum(1 for i in many if i >= 90) < 75  # the rare class is drawn about half the time
    assert sorted(epoch_order(labels, weighted=False, generator=torch.Generator().manual_seed(0))) == [0, 1, 2, 3]


def test_split_files(tmp_path):
    pd.DataFrame({"train": ["A", "B", "C"], "val": ["D", None, None]}).to_csv(tmp_path / "splits_0.csv")
    split = read_split(split_file(tmp_path, 0))
    assert split.train == ["A", "B", "C"] and split.val == ["D"]
    assert restrict_to_cohort(split, ["A", "B", "D"]).train == ["A", "B"]
    with pytest.raises(FileNotFoundError, match="splits_1.csv"):
        split_file(tmp_path, 1)
    pd.DataFrame({"train": ["A"], "val": ["A"]}).to_csv(tmp_path / "splits_2.csv")
    with pytest.raises(CohortError, match="both"):
        read_split(tmp_path / "splits_2.csv")
    with pytest.raises(CohortError, match="'val'"):
        restrict_to_cohort(split, ["A"])


def test_holdout_is_stratified_and_seeded():
    cases = [f"c{i}" for i in range(40)]
    strata = [i % 4 for i in range(40)]
    fit_a, held_a = holdout_split(cases, strata, 0.2, seed=5)
    fit_b, held_b = holdout_split(cases, strata, 0.2, seed=5)
    assert held_a == held_b and len(held_a) == 8 and not set(fit_a) & set(held_a)
    assert sorted(int(c[1:]) % 4 for c in held_a) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert holdout_split(cases, strata, 0.2, seed=6)[1] != held_a


def test_holdout_of_singleton_strata_draws_without_strata():
    cases = ["a", "b", "c", "d"]
    fit, held = holdout_split(cases, [0, 1, 2, 3], 0.2, seed=1)
    assert len(held) == 1 and sorted(fit + held) == cases
    with pytest.raises(CohortError, match="cannot hold out"):
        holdout_split(["a"], [0], 0.2, seed=1)


@pytest.mark.parametrize("damage", ["truncated", "foreign_pickle", "text", "truncated_h5"])
def test_a_truncated_or_foreign_feature_file_fails_naming_the_file(tmp_path, damage):
    import pickle

    import h5py

    features = tmp_path / "pt_files"
    features.mkdir()
    (tmp_path / "h5_files").mkdir()
    for case in CASES:
        torch.save(torch.ones(5, 4), features / f"{case}-01Z-00-DX1.AAA.pt")
        with h5py.File(tmp_path / "h5_files" / f"{case}-01Z-00-DX1.AAA.h5", "w") as handle:
            handle["coords"] = np.zeros((5, 2), dtype="int64")
    name = f"{CASES[2]}-01Z-00-DX1.AAA"
    bad = features / f"{name}.pt"
    if damage == "truncated":  # a copy cut short
        bad.write_bytes(bad.read_bytes()[:200])
    elif damage == "foreign_pickle":  # a plain pickle of something else, not a torch file
        bad.write_bytes(pickle.dumps({"features": [1, 2, 3]}))
    elif damage == "text":
        bad.write_text("version https://git-lfs.github.com/spec/v1\n")  # an LFS pointer instead of the file
    else:
        bad = tmp_path / "h5_files" / f"{name}.h5"
        bad.write_bytes(bad.read_bytes()[:300])
    data = fold(tmp_path, write_table(tmp_path / "t.csv"), modality="path", features_dir=features, feature_dim=4)
    index = {case: i for i, case in enumerate(data.train.case_ids)}[CASES[2]]
    with pytest.raises(CohortError) as caught:
        if damage == "truncated_h5":
            data.train.coords(index)
        else:
            data.train[index]
    message = str(caught.value)
    assert message.startswith(str(bad)) and "\n" not in message, message
