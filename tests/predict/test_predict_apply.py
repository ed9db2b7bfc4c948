"""Fold checkpoints applied to new patients: the training pipeline reproduced, genomic columns by
name, the cut-off from the training cohort, the command line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmsurv.data.cohort import read_cohort_table


@pytest.fixture(scope="module")
def trained_run(small_cohort, tmp_path_factory):
    """SNN and MCAT trained on both folds of the small cohort (standardised features)."""
    from mmsurv.train.run import train_fold

    cohort = small_cohort["cohort"]
    root = tmp_path_factory.mktemp("runs")
    for model in ("snn", "mcat"):
        for fold in (0, 1):
            train_fold({"data": {"feature_dim": 16, "standardize_features": True},
                        "training": {"epochs": 2, "num_threads": 1}}, cohort_table=cohort.table,
                       splits_dir=cohort.splits_dir, fold=fold, model=model, out_dir=root / model / f"fold{fold}",
                       signatures=cohort.signatures, features_dir=small_cohort["root"] / "features/pt_files", seed=1)
    return root


def test_each_fold_scores_its_own_validation_patients_as_training_did(trained_run, small_cohort):
    from mmsurv.predict.apply import predict_run

    table = read_cohort_table(small_cohort["cohort"].table)
    frame = predict_run(trained_run / "mcat", table, features_dir=small_cohort["root"] / "features/pt_files")
    assert list(frame["case_id"]) == table.case_ids
    for fold in (0, 1):
        predictions = pd.read_csv(trained_run / f"mcat/fold{fold}/predictions.tsv", sep="\t", dtype={"case_id": str})
        ours = frame.set_index("case_id").loc[predictions["case_id"], f"risk_fold{fold}"]
        np.testing.assert_allclose(ours.to_numpy(), predictions["risk"].to_numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(frame["risk"], frame[["risk_fold0", "risk_fold1"]].mean(axis=1))
    assert {"survival_months", "censorship"} <= set(frame.columns)


def test_the_cutoff_comes_from_the_training_cohort_not_from_the_scored_patients(trained_run, small_cohort):
    from mmsurv.predict.apply import predict_run

    table = read_cohort_table(small_cohort["cohort"].table)
    pooled = pd.concat(pd.read_csv(trained_run / f"snn/fold{k}/predictions.tsv", sep="\t") for k in (0, 1))
    everyone = predict_run(trained_run / "snn", table)
    some = predict_run(trained_run / "snn", type(table)(path=table.path, metadata=table.metadata.iloc[:4],
                                                         genomics=table.genomics.iloc[:4]))
    assert everyone["cutoff"].iloc[0] == some["cutoff"].iloc[0] == pytest.approx(pooled["risk"].median())
    assert (everyone["group"] == np.where(everyone["risk"] >= everyone["cutoff"], "high", "low")).all()


def test_genomic_columns_match_by_name_and_missing_ones_take_the_training_mean(trained_run, small_cohort, tmp_path,
                                                                              caplog):
    from mmsurv.predict.apply import PredictError, predict_run

    path = small_cohort["cohort"].table
    raw = pd.read_csv(path)
    genomic = [c for c in raw.columns if c.endswith(("_rnaseq", "_cnv", "_mut"))]
    shuffled = raw[[c for c in raw.columns if c not in genomic] + genomic[::-1]]  # same columns, other order
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    base = predict_run(trained_run / "snn", read_cohort_table(path))
    again = predict_run(trained_run / "snn", read_cohort_table(tmp_path / "shuffled.csv"))
    np.testing.assert_array_equal(base["risk"], again["risk"])
    raw.drop(columns=genomic[:2]).drop(columns=["survival_months", "censorship"]).to_csv(tmp_path / "few.csv",
                                                                                          index=False)
    with caplog.at_level("WARNING"):
        scored = predict_run(trained_run / "snn", read_cohort_table(tmp_path / "few.csv", require_survival=False),
                             max_missing_genomic=0.5)
    assert f"2 of {len(genomic)} genomic columns missing" in caplog.text and genomic[0] in caplog.text
    assert "survival_months" not in scored.columns and scored["risk"].notna().all()
    with pytest.raises(PredictError, match=genomic[0]):
        predict_run(trained_run / "snn", read_cohort_table(tmp_path / "few.csv", require_survival=False),
                    max_missing_genomic=0.01)


def test_the_command_writes_the_table(trained_run, small_cohort, tmp_path):
    from mmsurv.cli import main
    from mmsurv.predict.apply import predict_run

    out = tmp_path / "risks.tsv"
    assert main(["predict", "--run-dir", str(trained_run / "mcat"), "--table", str(small_cohort["cohort"].table),
                 "--features-dir", str(small_cohort["root"] / "features/pt_files"), "--out", str(out)]) == 0
    written = pd.read_csv(out, sep="\t", dtype={"case_id": str})
    direct = predict_run(trained_run / "mcat", read_cohort_table(small_cohort["cohort"].table),
                         features_dir=small_cohort["root"] / "features/pt_files")
    np.testing.assert_array_equal(written["risk"], direct["risk"])
    assert list(written.columns[:4]) == ["case_id", "risk_fold0", "risk_fold1", "risk"]
    with pytest.raises(ValueError, match="no fold<k> folders"):
        predict_run(tmp_path, read_cohort_table(small_cohort["cohort"].table))


def test_a_model_trained_on_one_cohort_ranks_another_whose_risk_is_planted(tmp_path):
    """Two made-up cohorts (other seeds, other patients) whose genomics carry the same planted risk:
    an SNN trained on the first ranks the second well above chance."""
    from mmsurv.demo.cohort import DemoSpec, generate_demo_cohort
    from mmsurv.predict.apply import predict_run
    from mmsurv.train.metrics import concordance
    from mmsurv.train.run import train_fold

    spec = dict(width=512, height=512, genes=30, informative_genes=10, second_slide_fraction=0.0, folds=2)
    train = generate_demo_cohort(tmp_path / "train", DemoSpec(patients=60, seed=3, **spec))
    other = generate_demo_cohort(tmp_path / "other", DemoSpec(patients=40, seed=4, **spec))
    for fold in (0, 1):
        # (MCAT's SNN settings, lr 2e-4 and 32-patient accumulation, do not learn 30 patients in 30 epochs)
        train_fold({"training": {"epochs": 30, "lr": 1e-3, "grad_accum": 1, "num_threads": 1}}, cohort_table=train.table,
                   splits_dir=train.splits_dir, fold=fold, model="snn", out_dir=tmp_path / f"snn/fold{fold}",
                   signatures=train.signatures, seed=1)
    table = read_cohort_table(other.table)
    frame = predict_run(tmp_path / "snn", table)
    cindex = concordance(frame["survival_months"], frame["censorship"], frame["risk"])
    assert cindex > 0.65, cindex
