"""The report's external-validation section from made-up external predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mmsurv.report.external import external_results, write_external


def _predictions(path, n=60, seed=0, survival=True):
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=n)
    frame = pd.DataFrame({"case_id": [f"C{i}" for i in range(n)], "risk_fold0": risk, "risk_fold1": risk,
                          "risk": risk, "cutoff": 0.1, "group": np.where(risk >= 0.1, "high", "low")})
    if survival:  # planted: higher risk, shorter time
        frame["survival_months"] = np.exp(-risk + rng.normal(scale=0.3, size=n)) * 20
        frame["censorship"] = (rng.random(n) < 0.2).astype(int)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, sep="\t", index=False)


def test_external_cindex_interval_groups_and_scored_only_cohorts(tmp_path):
    _predictions(tmp_path / "ext/abmil/predictions.tsv")
    _predictions(tmp_path / "new/abmil/predictions.tsv", survival=False)
    table, strata = external_results(tmp_path, {"ext": "blca", "new": "blca"}, ["abmil"], n_boot=200, seed=1)
    ext = table.set_index("cohort").loc["ext"]
    assert ext["cindex"] > 0.75 and ext["ci_low"] < ext["cindex"] < ext["ci_high"]
    assert ext["logrank_p"] < 0.01 and ext["cutoff"] == pytest.approx(0.1)
    again, _ = external_results(tmp_path, {"ext": "blca"}, ["abmil"], n_boot=200, seed=1)
    assert again["ci_low"].iloc[0] == ext["ci_low"]  # seeded
    new = table.set_index("cohort").loc["new"]
    assert np.isnan(new["cindex"]) and new["patients"] == 60  # scored only
    assert [(s.cohort, len(s.frame) > 0) for s in strata] == [("ext", True), ("new", False)]
    paths = write_external(tmp_path, tmp_path / "report", {"ext": "blca", "new": "blca"}, ["abmil"], n_boot=50)
    text = paths["external_md"].read_text()
    assert "scored only" in text and "BLCA" in text
    assert (tmp_path / "report/km/external_ext_abmil.png").stat().st_size > 10_000
    assert (tmp_path / "report/km/external_new_abmil.png").is_file()  # scored only: the figure says so
    with pytest.raises(FileNotFoundError, match="missing"):
        external_results(tmp_path, {"other": "blca"}, ["abmil"])
