"""Issue 19, findings 5 and 6 (training side).

5. Missing modality: a fold where more than ``data.max_missing_features`` (default 25 %) of the
   patients of a side have no WSI feature file stops with the counts; below it (or with the limit
   off) metrics.json records the counts and the report shows them per cohort × model.
6. ``predictions.tsv`` carries the exact float64 score the c-index ranked: recomputing the c-index
   from the file gives metrics.json's value exactly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmsurv.data.cohort import CohortError, read_cohort_table
from mmsurv.demo.cohort import DemoSpec, generate_demo_cohort
from mmsurv.naming import slide_stem
from mmsurv.train.metrics import concordance
from mmsurv.train.run import train_fold

CONFIG = {"training": {"num_threads": 1, "grad_accum": 1, "epochs": 2, "weighted_sampling": False}}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("missing")
    spec = DemoSpec(patients=20, seed=7, width=256, height=256, genes=24, informative_genes=4,
                    extra_slide_size=(256, 256), folds=2)
    return generate_demo_cohort(root / "cohort", spec)


def write_features(cohort, out_dir, keep_fraction: float):
    """Random bags for the first ``keep_fraction`` of the cases (the others get no file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = read_cohort_table(cohort.table).slides_of_case()
    rng = np.random.default_rng(0)
    kept = list(cases)[: round(keep_fraction * len(cases))]
    for case in kept:
        for slide in cases[case]:
            torch.save(torch.from_numpy(rng.standard_normal((5, 32)).astype("float32")),
                       out_dir / f"{slide_stem(slide)}.pt")
    return out_dir


def run(cohort, tmp_path, model, *, features=None, data=None, name="out"):
    config = {**CONFIG, "data": {"feature_dim": 32, **(data or {})}}
    return train_fold(config, cohort_table=cohort.table, splits_dir=cohort.splits_dir, fold=0, model=model,
                      out_dir=tmp_path / name, signatures=cohort.signatures, features_dir=features)


def test_too_many_patients_without_features_is_an_error(cohort, tmp_path):
    features = write_features(cohort, tmp_path / "pt_files", keep_fraction=0.5)
    with pytest.raises(CohortError, match=r"fold 0, model abmil: \d+ of \d+ (train|val) patients \(\d+%\) "
                                                   r"have no WSI feature file .*data.max_missing_features = 25%"):
        run(cohort, tmp_path, "abmil", features=features)
    assert not (tmp_path / "out/metrics.json").exists()
    metrics = run(cohort, tmp_path, "abmil", features=features, data={"max_missing_features": None}, name="off")
    missing = metrics["n_without_features"]
    assert missing["train"] + missing["val"] == 10 and metrics["config"]["data"]["max_missing_features"] is None


def test_few_patients_without_features_are_counted_not_fatal(cohort, tmp_path):
    features = write_features(cohort, tmp_path / "pt_files", keep_fraction=0.9)
    metrics = run(cohort, tmp_path, "abmil", features=features)
    assert metrics["config"]["data"]["max_missing_features"] == 0.25
    assert metrics["n_without_features"]["train"] + metrics["n_without_features"]["val"] == 2


def test_report_shows_patients_without_features_per_cohort_and_model(cohort, tmp_path):
    from mmsurv.report.build import build_report

    features = write_features(cohort, tmp_path / "pt_files", keep_fraction=0.9)
    results = tmp_path / "results"
    for model in ("snn", "abmil"):
        for fold in (0, 1):
            config = {**CONFIG, "data": {"feature_dim": 32}}
            train_fold(config, cohort_table=cohort.table, splits_dir=cohort.splits_dir, fold=fold, model=model,
                       out_dir=results / "demo" / model / f"fold{fold}", signatures=cohort.signatures,
                       features_dir=features)
    build_report(results, ["demo"], ["snn", "abmil"], tmp_path / "report", folds=2, reference_bag_size=16)
    frame = pd.read_csv(tmp_path / "report/efficiency.csv").set_index("model")
    assert frame.loc["abmil", "val_without_features"] == 2 and frame.loc["abmil", "val_patients"] == 20
    table = (tmp_path / "report/efficiency.md").read_text()
    assert "| No WSI |" in table
    abmil_row = next(line for line in table.splitlines() if line.startswith("| ABMIL"))
    snn_row = next(line for line in table.splitlines() if line.startswith("| SNN"))
    assert abmil_row.rstrip().endswith("| 2 / 20 |") and snn_row.rstrip().endswith("| – |")


@pytest.mark.parametrize("model", ["snn", "abmil"])
def test_cindex_recomputed_from_predictions_equals_metrics(cohort, tmp_path, model):
    features = write_features(cohort, tmp_path / "pt_files", keep_fraction=1.0)
    metrics = run(cohort, tmp_path, model, features=features)
    for variant, name in (("last", "predictions.tsv"), ("best", "predictions_best.tsv")):
        predictions = pd.read_csv(tmp_path / "out" / name, sep="\t")
        risk = predictions["risk"].to_numpy("float64")
        recomputed = concordance(predictions["time"], 1 - predictions["event"], risk)
        assert recomputed == metrics[f"cindex_{variant}"]  # exactly, not approximately
        # every digit of the float64 score: not rounded to 8 digits (which merges close scores into
        # ties, e.g. saturated risks near -4), not a float32 value printed long
        assert any(float(f"{value:.8g}") != value for value in risk)
        assert np.any(risk.astype("float32").astype("float64") != risk)
