"""Paper figures from the folds' measurements (mmsurv.report.paper_figures): made-up results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmsurv.report.collect import FoldResult, ResultSet
from mmsurv.report.paper_figures import paper_figure_files, route_shares, write_paper_figures


def fold(cohort: str, index: int, measures: dict | None) -> FoldResult:
    metrics = {"cindex_last": 0.6, "cindex_best": 0.6}
    if measures is not None:
        metrics["measures"] = {"val_last": measures, "val_best": measures}
    return FoldResult(cohort=cohort, model="cancermoe", fold=index, path=Path("."), metrics=metrics)


def routes(wsi: list[float], genomic: list[float]) -> dict:
    return {"route/wsi/layer0": [0.25] * 4, "route/wsi/layer1": wsi, "route/genomic/layer1": genomic}


def test_route_shares_take_the_last_layer_and_average_over_folds():
    results = ResultSet(Path("."), ("blca",), ("cancermoe",), (
        fold("blca", 0, routes([1.0, 0.0, 0.0, 0.0], [0.0, 0.5, 0.5, 0.0])),
        fold("blca", 1, routes([0.0, 1.0, 0.0, 0.0], [0.0, 0.5, 0.0, 0.5])),
        fold("blca", 2, None),  # a fold of an older version: no measures
    ))
    shares, layer, folds = route_shares(results, "blca", "cancermoe")
    assert layer == 1 and folds == 2
    np.testing.assert_allclose(shares["wsi"], [0.5, 0.5, 0.0, 0.0])
    np.testing.assert_allclose(shares["genomic"], [0.0, 0.5, 0.25, 0.25])


def test_route_shares_skip_layers_that_mix_the_modalities():
    """HDMoE's fusion MoE (layer 1, tokens of both modalities) is not a per-modality routing."""
    measures = {"route/wsi/layer0": [0.0, 1.0], "route/genomic/layer0": [1.0, 0.0], "route/fusion/layer1": [0.5, 0.5]}
    results = ResultSet(Path("."), ("blca",), ("hdmoe",), (
        FoldResult(cohort="blca", model="hdmoe", fold=0, path=Path("."),
                   metrics={"cindex_last": 0.6, "measures": {"val_last": measures}}),))
    shares, layer, folds = route_shares(results, "blca", "hdmoe")
    assert layer == 0 and folds == 1 and set(shares) == {"wsi", "genomic"}


def test_mmm_and_hdmoe_papers_draw_their_expert_figure(tmp_path):
    measures = routes([0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4])
    results = ResultSet(tmp_path, ("blca",), ("mmm",), tuple(
        FoldResult(cohort="blca", model="mmm", fold=k, path=Path("."),
                   metrics={"cindex_last": 0.6, "measures": {"val_last": measures}}) for k in range(2)))
    assert paper_figure_files(["mmm", "hdmoe"], ["mmm"]) == {"mmm": ["experts"], "hdmoe": []}
    written = write_paper_figures(["mmm"], tmp_path / "report", results)
    assert [p.name for p in written.values()] == ["experts.png"]
    assert (tmp_path / "report/papers/mmm/experts.png").stat().st_size > 10_000


@pytest.mark.parametrize("with_measures", [True, False])
def test_figure4a_is_written_when_cancermoe_runs_even_without_measures(tmp_path, with_measures):
    measures = routes([0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]) if with_measures else None
    results = ResultSet(tmp_path, ("blca", "luad"), ("snn", "cancermoe"),
                        tuple(fold(c, k, measures) for c in ("blca", "luad") for k in range(2)))
    assert paper_figure_files(["cancermoe", "survmamba"], ["snn"]) == {"cancermoe": [], "survmamba": []}
    assert paper_figure_files(["cancermoe"], results.models) == {"cancermoe": ["figure3", "figure4a"]}
    written = write_paper_figures(["cancermoe"], tmp_path / "report", results, pdf=True)
    assert sorted(p.name for p in written.values()) == ["figure3.pdf", "figure3.png", "figure4a.pdf", "figure4a.png"]
    assert (tmp_path / "report/papers/cancermoe/figure4a.png").stat().st_size > 10_000


def test_a_trained_cancermoe_fold_records_its_routing_shares(small_cohort, tmp_path):
    from mmsurv.train.run import train_fold

    cohort = small_cohort["cohort"]
    train_fold({"data": {"feature_dim": 16}, "training": {"epochs": 1, "batch_size": 2, "num_threads": 1}},
               cohort_table=cohort.table, splits_dir=cohort.splits_dir, fold=0, model="cancermoe", out_dir=tmp_path,
               signatures=cohort.signatures, pathways=cohort.pathways,
               features_dir=small_cohort["root"] / "features/pt_files", seed=1)
    measures = json.loads((tmp_path / "metrics.json").read_text())["measures"]["val_last"]
    for modality in ("wsi", "genomic"):
        shares = measures[f"route/{modality}/layer1"]
        assert len(shares) == 4 and sum(shares) == pytest.approx(1.0)


def test_survmamba_figures_3_and_4_from_fake_results(fake_results, tmp_path):
    """Figure 3 (bidirectional vs unidirectional bars) and Figure 4 (KM per cohort) need their models:
    the fake results' ABMIL and MCAT folds stand in for SurvMamba and its unidirectional variant."""
    from dataclasses import replace

    from report_fakes import COHORTS, MODELS

    from mmsurv.report.collect import collect_results

    loaded = collect_results(fake_results, COHORTS, MODELS)
    names = {"abmil": "survmamba", "mcat": "survmamba_uni"}
    folds = tuple(replace(f, model=names[f.model]) for f in loaded.folds if f.model in names)
    results = ResultSet(loaded.results_dir, loaded.cohorts, ("survmamba", "survmamba_uni"), folds)
    assert paper_figure_files(["survmamba"], ["survmamba"]) == {"survmamba": ["figure4"]}
    written = write_paper_figures(["survmamba"], tmp_path, results)
    assert sorted(p.name for p in written.values()) == ["figure3.png", "figure4.png"]
    assert all(p.stat().st_size > 10_000 for p in written.values())


def test_figure4b_reads_the_gradient_conflict_of_both_models_from_the_training_logs(tmp_path):
    from mmsurv.report.paper_figures import CONFLICT_COLUMN, conflict_curves

    folds = []
    for model, level in (("cancermoe", 0.4), ("cancermoe_wo_smoe", -0.1)):
        for k in range(2):
            path = tmp_path / model / f"fold{k}"
            path.mkdir(parents=True)
            values = [level + 0.1 * k, "", level] if model == "cancermoe" else [level, level]
            rows = ["epoch\ttrain_loss\t" + CONFLICT_COLUMN] + [f"{e + 1}\t1.0\t{v}" for e, v in enumerate(values)]
            (path / "training_log.tsv").write_text("\n".join(rows) + "\n")
            folds.append(FoldResult(cohort="blca", model=model, fold=k, path=path, metrics={"cindex_last": 0.6}))
    results = ResultSet(tmp_path, ("blca",), ("cancermoe", "cancermoe_wo_smoe"), tuple(folds))
    curves = conflict_curves(results, "blca", "cancermoe")
    np.testing.assert_allclose(curves, [[0.4, np.nan, 0.4], [0.5, np.nan, 0.4]])
    assert conflict_curves(results, "blca", "cancermoe_wo_smoe").shape == (2, 2)
    assert paper_figure_files(["cancermoe"], ["cancermoe"]) == {"cancermoe": ["figure3", "figure4a"]}
    assert paper_figure_files(["cancermoe"], results.models) == {"cancermoe": ["figure3", "figure4a", "figure4b"]}
    written = write_paper_figures(["cancermoe"], tmp_path / "report", results)
    assert sorted(p.name for p in written.values()) == ["figure3.png", "figure4a.png", "figure4b.png"]
    assert (tmp_path / "report/papers/cancermoe/figure4b.png").stat().st_size > 10_000


def test_figure3_shows_the_kept_shares_per_modality_block(tmp_path):
    from mmsurv.report.paper_figures import sparsity_blocks

    def measures(shift: float) -> dict:
        kept = [0.0, 0.0, 0.1, 0.0, 0.1, 0.2 + shift, 0.1, 0.2, 0.3 - shift]
        return {"sparsity/kept_fraction": [0.01], "sparsity/kept_blocks": kept, "sparsity/block_area": [1 / 9] * 9}
    results = ResultSet(tmp_path, ("blca",), ("cancermoe",), tuple(
        FoldResult(cohort="blca", model="cancermoe", fold=k, path=tmp_path,
                   metrics={"cindex_last": 0.6, "measures": {"val_last": measures(0.1 * k)}}) for k in range(2)))
    kept, area, fraction, folds = sparsity_blocks(results, "blca", "cancermoe")
    assert folds == 2 and fraction == pytest.approx(0.01)
    assert kept[1, 2] == pytest.approx(0.25) and kept[2, 2] == pytest.approx(0.25) and kept.sum() == pytest.approx(1)
    written = write_paper_figures(["cancermoe"], tmp_path / "report", results)
    assert (tmp_path / "report/papers/cancermoe/figure3.png").stat().st_size > 10_000 and len(written) == 2
