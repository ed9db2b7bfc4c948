"""build_report end to end: every file written, figures non-empty, training outputs untouched, CLI."""

from __future__ import annotations

import json

import pytest
from matplotlib.image import imread
from report_fakes import COHORTS, FOLDS, MODELS, snapshot

from mmsurv.cli import main


def test_every_output_written(built_report):
    _, out, paths, _ = built_report
    expected = {f"cindex_{v}_{kind}" for v in ("last", "best") for kind in ("csv", "summary_csv", "md", "tex")}
    expected |= {"efficiency_csv", "efficiency_md", "efficiency_tex", "models_csv", "models_md", "km_logrank_csv", "bubble", "report_json"}
    expected |= {f"km_{c}_{m}" for c in COHORTS for m in MODELS} | {f"km_grid_{m}" for m in MODELS}
    expected |= {f"{name}_{kind}" for name in ("statistics", "comparisons") for kind in ("csv", "md", "tex")}
    expected |= {"statistics_folds_csv", "calibration_csv"}
    expected |= {f"significance_{c}" for c in COHORTS} | {f"calibration_{m}" for m in MODELS}
    assert set(paths) == expected
    assert all(path.is_file() and path.stat().st_size > 0 for path in paths.values())
    assert not list(out.rglob(".*.tmp*"))  # no temporary file left behind
    document = json.loads(paths["report_json"].read_text())
    assert document["settings"]["median_split"] == "pooled" and document["settings"]["folds"] == list(range(FOLDS))


def test_figures_are_real_images(built_report):
    _, _, paths, _ = built_report
    for key in ["bubble", "km_blca_mcat", "km_grid_snn"]:
        path = paths[key]
        assert path.stat().st_size > 20_000, key
        image = imread(path)
        height, width = image.shape[:2]
        assert 500 < width < 3000 and 400 < height < 3000, (key, image.shape)
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_report_touches_no_training_output(built_report):
    results_dir, out, _, before = built_report
    assert snapshot(results_dir) == before
    assert not out.is_relative_to(results_dir)


def test_rebuild_is_deterministic(built_report, tmp_path):
    from mmsurv.report import build_report

    results_dir, out, paths, _ = built_report
    again = build_report(results_dir, COHORTS, ["snn"], tmp_path, folds=FOLDS, reference_bag_size=512,
                         median_split="pooled")
    first_snn = paths["km_blca_snn"].read_bytes()
    assert again["km_blca_snn"].read_bytes() == first_snn
    lines = [line for line in paths["cindex_last_csv"].read_text().splitlines() if ",snn," in line]
    assert again["cindex_last_csv"].read_text().splitlines()[1:] == lines


def test_cli_help_and_run(fake_results, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    assert exit_info.value.code == 0
    assert "--median-split" in capsys.readouterr().out
    code = main(["report", "--results", str(fake_results), "--cohorts", "demo", "--models", "snn",
                 "--out-dir", str(tmp_path / "rep"), "--median-split", "fold_train", "--reference-bag-size", "64",
                 "--bootstrap", "20", "--bootstrap-seed", "5"])
    assert code == 0
    settings = json.loads((tmp_path / "rep" / "report.json").read_text())["settings"]
    assert (settings["bootstrap"], settings["bootstrap_seed"]) == (20, 5)
    assert "20 resamples, seed 5" in (tmp_path / "rep" / "statistics.md").read_text()
    assert (tmp_path / "rep" / "stats" / "significance_demo.png").is_file()
    assert "p_bootstrap_holm" in (tmp_path / "rep" / "comparisons.csv").read_text()  # one model: no pair, same columns
    assert (tmp_path / "rep" / "km" / "km_demo_snn.png").is_file()
    assert "per-fold median" in (tmp_path / "rep" / "km_logrank.csv").read_text()
    assert main(["report", "--results", str(fake_results), "--cohorts", "luad", "--out-dir", str(tmp_path)]) == 1
    assert "cohort luad" in capsys.readouterr().err


def test_one_cohort_has_no_grid_figure(fake_results, tmp_path):
    """With one cohort the per-model grid would repeat the cohort's own Kaplan-Meier figure."""
    from mmsurv.report import build_report

    paths = build_report(fake_results, COHORTS[:1], ["snn"], tmp_path, folds=FOLDS, reference_bag_size=64,
                         median_split="pooled")
    assert f"km_{COHORTS[0]}_snn" in paths and not any(key.startswith("km_grid") for key in paths)
    assert not list((tmp_path / "km").glob("km_grid_*"))
