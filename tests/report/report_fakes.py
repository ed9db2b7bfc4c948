"""A fake training-results tree (2 cohorts × 3 real models × 3 folds) for the report tests.

A uniquely named module (not ``conftest``): test folders have no ``__init__.py``, so
``from conftest import ...`` could pick another folder's conftest.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mmsurv.models import ModelInputs, build_model, n_params

COHORTS = ["blca", "demo"]
MODELS = ["snn", "abmil", "mcat"]
FOLDS = 3
FEATURE_DIM = 64
GROUP_SIZES = {"blca": [5, 7, 4], "demo": [3, 6]}
PATIENTS_PER_FOLD = 24
BIN_EDGES = [0.0, 8.0, 20.0, 40.0, 200.0]  # months, 4 bins
MODALITY = {"snn": "omic", "abmil": "path", "mcat": "multimodal"}


def fake_cindex(cohort: str, model: str, fold: int, variant: str) -> float:
    """Made-up but distinct c-indices (MCAT best, then ABMIL, then SNN, on average)."""
    base = {"snn": 0.55, "abmil": 0.60, "mcat": 0.65}[model] + {"blca": 0.0, "demo": 0.05}[cohort]
    return round(base + 0.013 * fold - 0.01 * (fold == 2) + (0.02 if variant == "best" else 0.0), 6)


def write_fake_results(root: Path) -> None:
    """metrics.json, predictions.tsv, predictions_best.tsv (+ a checkpoint) per fold; patching for blca."""
    rng = np.random.default_rng(7)
    for cohort in COHORTS:
        groups = GROUP_SIZES[cohort]
        inputs = ModelInputs(omic_dim=sum(groups), group_sizes=groups, path_dim=FEATURE_DIM, n_bins=4)
        for model in MODELS:
            params = n_params(build_model(model, inputs))
            for fold in range(FOLDS):
                out = root / cohort / model / f"fold{fold}"
                out.mkdir(parents=True)
                metrics = {
                    "model": model, "modality": MODALITY[model], "fold": fold, "seed": 1,
                    "cindex_last": fake_cindex(cohort, model, fold, "last"),
                    "cindex_best": fake_cindex(cohort, model, fold, "best"),
                    "best_epoch": 3, "best_selected_on": "val", "n_train": 48, "n_val": PATIENTS_PER_FOLD,
                    "n_val_events": 12, "n_params": params, "genomic_dim": sum(groups), "group_sizes": groups,
                    "seconds_per_epoch": 1.0 + fold + MODELS.index(model), "seconds_total": 20.0,
                    "peak_rss_mb": 500.0 + 10 * fold, "peak_cuda_mb": None, "device": "cpu",
                    "config": {"data": {"feature_dim": FEATURE_DIM, "n_bins": 4}, "training": {}, "model_params": {}},
                }
                (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
                for name in ("predictions.tsv", "predictions_best.tsv"):
                    fake_predictions(rng, cohort, fold).to_csv(out / name, sep="\t", index=False)
                (out / "checkpoint_last.pt").write_bytes(b"not a real checkpoint")
                (out / "bin_edges.json").write_text(json.dumps({"edges_months": BIN_EDGES, "n_bins": 4}))
    write_patching(root / "blca")


def fake_predictions(rng: np.random.Generator, cohort: str, fold: int) -> pd.DataFrame:
    n = PATIENTS_PER_FOLD
    outcomes = np.random.default_rng([COHORTS.index(cohort), fold])  # the same patients for every model
    time = outcomes.exponential(30.0, n).round(2) + 0.5
    event = (outcomes.random(n) < 0.6).astype(int)
    risk = -time / 30.0 + rng.normal(0, 0.4, n) + 0.3 * fold  # informative, with a fold shift
    frame = pd.DataFrame({"case_id": [f"TCGA-{cohort}-{fold}{i:03d}" for i in range(n)], "risk": risk})
    survival = np.exp(-np.outer(np.exp(risk), [0.2, 0.4, 0.6, 0.8]))
    for k in range(4):
        frame[f"S_{k + 1}"] = survival[:, k]
    frame["time"], frame["event"], frame["bin"] = time, event, rng.integers(0, 4, n)
    return frame


def write_patching(cohort_dir: Path) -> None:
    """Patients with 1–2 slides; summed patches per patient [100+150, 300, 400, 500+50] → median 350."""
    samples = pd.DataFrame({"slide": ["s1", "s2", "s3", "s4", "s5", "s6"],
                            "case_id": ["p1", "p1", "p2", "p3", "p4", "p4"]})
    patching = pd.DataFrame({"slide": ["s1", "s2", "s3", "s4", "s5", "s6"],
                             "n_patches": [100, 150, 300, 400, 500, 50]})
    (cohort_dir / "manifest").mkdir(parents=True)
    (cohort_dir / "wsi").mkdir(parents=True)
    samples.to_csv(cohort_dir / "manifest" / "samples.tsv", sep="\t", index=False)
    patching.to_csv(cohort_dir / "wsi" / "patching.tsv", sep="\t", index=False)


def snapshot(root: Path) -> dict[str, int]:
    """mtime (ns) of every file under root."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}
