"""Patch scores through the model contract, and one slide's scores from a trained fold."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mmsurv.models import ModelInputs, available_models, build_model
from mmsurv.models.base import NoPatchScores, Target
from mmsurv.models.registry import model_spec

INPUTS = ModelInputs(omic_dim=12, group_sizes=[3, 5, 4], path_dim=16, group_names=["g1", "g2", "g3"])
SOFTMAX_OVER_THE_BAG = {"abmil", "abmil_cat", "abmil_kp", "clam_sb", "clam_mb", "porpoise_amil", "porpoise_mmf",
                        "patch_gcn", "deepattnmisl", "mcat"}


@pytest.mark.parametrize("name", available_models())
def test_every_model_gives_rows_by_patches_or_says_it_has_none(name):
    torch.manual_seed(0)
    model = build_model(name, INPUTS, {"n_tokens": 20} if name == "cancermoe" else {}).eval()
    model.score_patches(True)
    with torch.no_grad():
        output = model(model.example_batch(bag_size=30))
    if model_spec(name).patch_score_kind is None:
        with pytest.raises(NoPatchScores, match=type(model).__name__):
            model.patch_scores(output)
        return
    scores = model.patch_scores(output)
    assert scores.scores.shape[1] == 30 and len(scores.rows) == scores.scores.shape[0]
    declared = model_spec(name).patch_score_kind  # a late fusion passes its backbone's scores on
    assert scores.kind == declared or declared == "the WSI backbone's patch scores"
    if name in SOFTMAX_OVER_THE_BAG:
        torch.testing.assert_close(scores.scores.sum(1), torch.ones(len(scores.rows)))
    if name in ("mcat", "motcat", "cmta", "survpath"):
        assert scores.rows == ["g1", "g2", "g3"]
    if name.startswith("clam_mb"):
        assert scores.rows == ["bin 1", "bin 2", "bin 3", "bin 4"]
    if name == "cancermoe":  # 20 of 30 patches selected: the others have no score
        assert int(torch.isfinite(scores.scores).sum()) == 20


def test_transmil_scores_cost_nothing_unless_asked_and_leave_the_prediction_unchanged():
    torch.manual_seed(0)
    model = build_model("transmil", INPUTS, {"adaptive_landmarks": True}).eval()
    batch = model.example_batch(bag_size=40)
    plain = model(batch)
    assert plain.attention is None
    model.score_patches(True)
    scored = model(batch)
    assert torch.equal(plain.logits, scored.logits)
    assert model.patch_scores(scored).scores.shape == (1, 40)


def test_a_planted_patch_gets_abmils_top_score_after_a_few_training_steps():
    """High-risk patients' bags hold one patch with a planted signal; after training, ABMIL's
    attention picks that patch out of the bag."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    model = build_model("abmil", ModelInputs(path_dim=16), {"dropout": 0.0})
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)

    def bag(high_risk: bool) -> tuple[torch.Tensor, int]:
        patches = torch.randn(20, 16, generator=generator)
        planted = int(torch.randint(20, (1,), generator=generator))
        if high_risk:
            patches[planted, :4] += 4.0
        return patches, planted

    from mmsurv.models.base import Batch

    for step in range(150):
        high = step % 2 == 0
        patches, _ = bag(high)
        output = model(Batch(values={"path": patches[None]}, mask=None, size=1))
        target = Target(torch.tensor([0 if high else 3]), torch.tensor([0.0 if high else 1.0]), torch.tensor([1.0]))
        optimizer.zero_grad()
        sum(model.loss(output, target).values()).backward()
        optimizer.step()
    model.eval()
    hits = 0
    for _ in range(10):
        patches, planted = bag(True)
        with torch.no_grad():
            scores = model.patch_scores(model(Batch(values={"path": patches[None]}, mask=None, size=1)))
        hits += int(scores.scores[0].argmax()) == planted
    assert hits >= 9


def test_a_slides_scores_come_from_the_training_input_pipeline(small_cohort, tmp_path):
    """A fold applied to one slide of a single-slide validation patient predicts the risk that the
    fold's predictions.tsv holds for the patient: same scaler, groups and feature standardisation."""
    from mmsurv.data.cohort import read_cohort_table
    from mmsurv.heatmap.scores import slide_scores
    from mmsurv.train.run import train_fold

    cohort = small_cohort["cohort"]
    features = small_cohort["root"] / "features/pt_files"
    fold_dir = tmp_path / "mcat/fold0"
    train_fold({"data": {"feature_dim": 16, "standardize_features": True},
                "training": {"epochs": 1, "num_threads": 1}}, cohort_table=cohort.table,
               splits_dir=cohort.splits_dir, fold=0, model="mcat", out_dir=fold_dir, signatures=cohort.signatures,
               features_dir=features, seed=1)
    predictions = pd.read_csv(fold_dir / "predictions.tsv", sep="\t", dtype={"case_id": str})
    slides = read_cohort_table(cohort.table).slides_of_case()
    case = next(c for c in predictions["case_id"] if len(slides[c]) == 1)
    scores = slide_scores(fold_dir, slides[case][0], features_dir=features, cohort_table=cohort.table)
    expected = float(predictions.loc[predictions["case_id"] == case, "risk"].iloc[0])
    assert scores.case_id == case and scores.risk == pytest.approx(expected, abs=1e-5)
    assert len(scores.scores.rows) == len(scores.scores.scores) > 1  # one co-attention row per genomic group
    assert len(scores.frame()) == len(scores.coords) == scores.scores.scores.shape[1]
    assert np.isfinite(scores.frame()[scores.scores.rows[0]]).all()
    with pytest.raises(ValueError, match="reads genomics"):
        slide_scores(fold_dir, slides[case][0], features_dir=features)
    with pytest.raises(ValueError, match="not in the cohort table"):
        slide_scores(fold_dir, "NOSUCH-SLIDE.svs", features_dir=features, cohort_table=cohort.table)
