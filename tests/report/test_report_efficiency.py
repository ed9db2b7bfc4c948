"""Efficiency: FLOPs equal hand counts, models rebuilt from metrics.json, median bag size, table values."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from report_fakes import COHORTS, FEATURE_DIM, FOLDS, GROUP_SIZES, MODELS
from torch import nn

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel
from mmsurv.models.registry import ModelInputs, build_model
from mmsurv.report.collect import collect_results
from mmsurv.report.efficiency import cohort_median_bag_size, flops_per_patient, model_hyperparameters, model_inputs


class TinyMLP(SurvivalModel):
    """Genomic MLP: Linear(in → hidden) → ReLU → Linear(hidden → n_bins); 2·in·out FLOPs per Linear."""

    inputs = ("omic",)

    def __init__(self, omic_dim: int, hidden: int, n_bins: int = 4):
        super().__init__(n_bins=n_bins, omic_dim=omic_dim)
        self.net = nn.Sequential(nn.Linear(omic_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_bins))

    def forward(self, batch: Batch) -> ModelOutput:
        return ModelOutput(logits=self.net(batch.omic))


class TinyBagMean(SurvivalModel):
    """WSI model: Linear(D → H) per patch, mean over patches, Linear(H → n_bins)."""

    inputs = ("path",)

    def __init__(self, path_dim: int, hidden: int, n_bins: int = 4):
        super().__init__(n_bins=n_bins, path_dim=path_dim)
        self.fc = nn.Linear(path_dim, hidden)
        self.head = nn.Linear(hidden, n_bins)

    def forward(self, batch: Batch) -> ModelOutput:
        return ModelOutput(logits=self.head(self.fc(batch.path).mean(dim=1)))


def test_flops_of_hand_countable_models():
    assert flops_per_patient(TinyMLP(omic_dim=10, hidden=7, n_bins=4), bag_size=999) == 2 * (10 * 7 + 7 * 4)
    for bag in (1, 50, 4096):
        assert flops_per_patient(TinyBagMean(path_dim=16, hidden=8), bag) == 2 * bag * 16 * 8 + 2 * 8 * 4
    with pytest.raises(ValueError, match="at least 1"):
        flops_per_patient(TinyMLP(3, 2), 0)


def test_flops_of_registered_snn_and_abmil_by_hand():
    torch.manual_seed(0)
    snn = build_model("snn", ModelInputs(omic_dim=20))
    assert flops_per_patient(snn, 4096) == 2 * (20 * 256 + 3 * 256 * 256 + 256 * 4)
    abmil = build_model("abmil", ModelInputs(path_dim=32))
    n = 100
    per_patch = 32 * 512 + 2 * 512 * 256 + 256 * 1  # fc, gated attention (2 branches), score
    pooling = 512  # softmax weights (1×N) @ h (N×512)
    head = 512 * 256 + 256 * 4
    assert flops_per_patient(abmil, n) == 2 * (n * per_patch + n * pooling + head)


def test_models_rebuilt_from_metrics(fake_results):
    results = collect_results(fake_results, COHORTS, MODELS, folds=FOLDS)
    fold = results.get("demo", "mcat")[0]
    inputs = model_inputs(fold.metrics)
    assert inputs == ModelInputs(omic_dim=sum(GROUP_SIZES["demo"]), group_sizes=GROUP_SIZES["demo"],
                                 path_dim=FEATURE_DIM, n_bins=4)
    fallback = {"mcat": {"dropout": 0.1, "training": {"lr": 1e-3}}}
    assert model_hyperparameters(fold.metrics, "mcat", fallback) == {}  # the recorded (empty) params win
    assert model_hyperparameters({"config": {}}, "mcat", fallback) == {"dropout": 0.1}


def test_median_bag_size_is_over_patients(fake_results):
    assert cohort_median_bag_size(fake_results, "blca") == (350.0, 4)  # patients: 250, 300, 400, 550
    assert cohort_median_bag_size(fake_results, "demo") == (None, 0)  # no patching.tsv


def test_efficiency_table_values(built_report):
    results_dir, _, paths, _ = built_report
    table = pd.read_csv(paths["efficiency_csv"])
    assert list(zip(table["model"], table["cohort"])) == [(m, c) for m in MODELS for c in COHORTS]
    assert table["params_match"].all()
    for row in table.itertuples():
        metrics = [json.loads((results_dir / row.cohort / row.model / f"fold{k}" / "metrics.json").read_text())
                   for k in range(FOLDS)]
        assert row.n_params == metrics[0]["n_params"]
        seconds = [m["seconds_per_epoch"] for m in metrics]
        assert row.seconds_per_epoch_mean == pytest.approx(sum(seconds) / FOLDS)
        assert row.peak_rss_mb == max(m["peak_rss_mb"] for m in metrics)
        assert pd.isna(row.peak_cuda_mb)
        assert row.reference_bag_size == 512
    snn = table[(table["model"] == "snn") & (table["cohort"] == "blca")].iloc[0]
    assert snn.flops_reference == snn.flops_median == 2 * (16 * 256 + 3 * 256 * 256 + 256 * 4)
    abmil = table[(table["model"] == "abmil") & (table["cohort"] == "blca")].iloc[0]
    assert abmil.median_bag_size == 350 and abmil.flops_median < abmil.flops_reference
    assert table[table["cohort"] == "demo"]["flops_median"].isna().all()
    markdown = paths["efficiency_md"].read_text()
    assert "FLOPs @ 512" in markdown and "Median bag" in markdown


def test_recorded_reference_flops_are_used_only_for_the_same_model(fake_results, monkeypatch):
    """The training job's count (metrics.json ``flops_per_patient``) spares the report a 4,096-patch
    forward per model; a count recorded for another parameter count is not trusted."""
    import mmsurv.report.efficiency as efficiency

    results = collect_results(fake_results, COHORTS, MODELS, folds=FOLDS)
    fold = results.get("demo", "abmil")[0]
    fold.metrics["flops_per_patient"] = {"4096": 123}
    counted = []
    monkeypatch.setattr(efficiency, "flops_per_patient", lambda model, bag: counted.append(bag) or 7)
    assert efficiency.FlopsCache().count(fold, 4096) == 123 and counted == []
    assert efficiency.FlopsCache().count(fold, 100) == 7 and counted == [100]  # not recorded: counted
    fold.metrics["n_params"] += 1
    assert efficiency.FlopsCache().count(fold, 4096) == 7 and counted == [100, 4096]
