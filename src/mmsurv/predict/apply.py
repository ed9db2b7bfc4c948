"""Fold checkpoints applied to a table of new patients: risks per fold, ensemble, risk groups.

Everything comes from the checkpoints (``checkpoint_last.pt`` by default) and the run's own
out-of-fold predictions; no config is read:

* **inputs** go through the training input pipeline (:class:`mmsurv.data.dataset.SurvivalDataset`,
  evaluation mode, the training's evaluation patch cap): WSI bags from ``features_dir`` (the fold's
  feature standardisation applied), genomic columns matched **by name** to the ones the fold was
  trained on and scaled with the training fold's statistics;
* **missing genomic columns** (absent from the new table) are filled with the training fold's
  mean (0 after scaling), listed in the log (count and names); beyond ``max_missing_genomic`` (a
  share of the model's columns, default 0.25 as ``data.max_missing_features``) it is an error
  naming them. Extra columns are ignored;
* the **risk** of a patient is the model's ``output.risk`` (higher = earlier event), per fold, and
  their mean over the folds (the ensemble);
* the **risk group** is high when the ensemble risk is at least the **training cohort's cut-off**:
  the median of the run's pooled out-of-fold risks (each fold's ``predictions.tsv``), so the
  cut-off never depends on the patients being scored.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmsurv.data.cohort import CohortTable
from mmsurv.data.dataset import BagLoader, BagOptions, GenomicScaler, SurvivalDataset
from mmsurv.data.inputs import collate
from mmsurv.models.base import SurvivalModel
from mmsurv.models.registry import ModelInputs, build_model

log = logging.getLogger(__name__)

CHECKPOINTS = {"last": "checkpoint_last.pt", "best": "checkpoint_best.pt"}
GENOMIC_INPUTS = ("omic", "omic_groups")
DEFAULT_MAX_MISSING_GENOMIC = 0.25


class PredictError(ValueError):
    """A run, fold, table or feature folder that cannot be scored; the message names it."""


def load_fold_model(fold_dir: str | os.PathLike, variant: str = "last") -> tuple[SurvivalModel, dict]:
    """The fold's model with its ``variant`` checkpoint loaded (evaluation mode) and the checkpoint's metadata."""
    if variant not in CHECKPOINTS:
        raise PredictError(f"checkpoint variant must be one of {', '.join(CHECKPOINTS)}, got {variant!r}")
    path = Path(fold_dir) / CHECKPOINTS[variant]
    if not path.is_file():
        raise PredictError(f"{path}: no checkpoint (a fold directory of a finished training run is needed)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    missing = [key for key in ("base_model", "model_params", "inputs", "inputs_read") if key not in checkpoint]
    if missing:
        raise PredictError(f"{path}: written by an older version (no {', '.join(missing)}); retrain the fold")
    model = build_model(checkpoint["base_model"], ModelInputs(**checkpoint["inputs"]), dict(checkpoint["model_params"]))
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def reads_genomics(checkpoint: dict) -> bool:
    return any(name.split(":")[0] in GENOMIC_INPUTS for name in checkpoint["inputs_read"])


def scaled_genomics(checkpoint: dict, table: CohortTable, cases: list[str],
                    max_missing: float | None = DEFAULT_MAX_MISSING_GENOMIC) -> np.ndarray:
    """The patients' genomic rows (cases × the fold's columns, by name), scaled with the fold's
    statistics; absent columns take the training mean (see the module docstring)."""
    columns = list(checkpoint.get("genomic_columns") or [])
    if not columns:
        return np.zeros((len(cases), 0), dtype="float32")
    patients = table.patients().set_index("case_id")
    mean = np.asarray(checkpoint["scaler_mean"], dtype="float64")
    absent = [column for column in columns if column not in patients.columns]
    if absent:
        share = len(absent) / len(columns)
        names = ", ".join(absent[:10]) + (", ..." if len(absent) > 10 else "")
        if max_missing is not None and share > max_missing:
            raise PredictError(f"{table.path}: {len(absent)} of the model's {len(columns)} genomic columns are missing "
                               f"({share:.0%} > max_missing_genomic {max_missing:.0%}): {names}")
        log.warning("%s: %d of %d genomic columns missing, filled with the training fold's mean: %s",
                    table.path, len(absent), len(columns), names)
    raw = np.empty((len(cases), len(columns)), dtype="float64")
    present = [index for index, column in enumerate(columns) if column in patients.columns]
    raw[:, present] = patients.loc[cases, [columns[i] for i in present]].to_numpy(dtype="float64")
    for index, column in enumerate(columns):
        if column not in patients.columns:
            raw[:, index] = mean[index]
    scaler = GenomicScaler()
    scaler.mean_, scaler.scale_ = mean, np.asarray(checkpoint["scaler_scale"], dtype="float64")
    return scaler.transform(raw)


def checkpoint_dataset(checkpoint: dict, cases: list[str], omic: np.ndarray, slides_of_case: dict[str, list[str]],
                       features_dir: str | os.PathLike | None, *, name: str = "predict",
                       cap: bool = True) -> SurvivalDataset:
    """A :class:`SurvivalDataset` of ``cases`` as the fold's training built its validation side
    (``cap=False``: every patch, whatever the training's evaluation cap; the heatmaps)."""
    reads = tuple(checkpoint["inputs_read"])
    data = checkpoint.get("data") or {}
    bags = None
    if "path" in reads:
        if features_dir is None:
            raise PredictError(f"model {checkpoint['model']} reads WSI features: give the features folder")
        bags = BagLoader(BagOptions(features_dir=Path(features_dir), feature_dim=int(checkpoint["inputs"]["path_dim"]),
                                    eval_max_patches=data.get("eval_max_patches") if cap else None,
                                    h5_dir=data.get("h5_dir")))
        if checkpoint.get("feature_standardization"):
            bags.use_standardization(*(torch.tensor(values) for values in checkpoint["feature_standardization"]))
    patients = pd.DataFrame({"case_id": cases, "bin": 0, "censorship": 1, "survival_months": 0.0, "class_label": 0})
    group_index = {key: [np.asarray(index, dtype="int64") for index in indices]
                   for key, indices in (checkpoint.get("group_index") or {}).items()}
    return SurvivalDataset(patients, omic, group_index, slides_of_case, inputs=reads, bags=bags, training=False,
                           seed=int(checkpoint.get("seed", 0)) + 1, name=name)


def fold_risks(fold_dir: str | os.PathLike, table: CohortTable, *, features_dir: str | os.PathLike | None = None,
               variant: str = "last", max_missing_genomic: float | None = DEFAULT_MAX_MISSING_GENOMIC) -> pd.Series:
    """Each patient's risk (index: case id, table order) under one fold's model."""
    model, checkpoint = load_fold_model(fold_dir, variant)
    cases = table.case_ids
    omic = scaled_genomics(checkpoint, table, cases, max_missing_genomic) if reads_genomics(checkpoint) \
        else np.zeros((len(cases), 0), dtype="float32")
    dataset = checkpoint_dataset(checkpoint, cases, omic, table.slides_of_case(), features_dir)
    risks = []
    with torch.no_grad():
        for index in range(len(dataset)):
            batch, _ = collate([dataset[index]])
            risks.append(float(model(batch).risk.reshape(-1)[0]))
    return pd.Series(risks, index=pd.Index(cases, name="case_id"), name=Path(fold_dir).name)


def fold_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """The ``fold<k>`` folders of a cohort × model run, in fold order; an error when there are none."""
    folds = sorted((path for path in Path(run_dir).iterdir() if re.fullmatch(r"fold\d+", path.name) and path.is_dir()),
                   key=lambda path: int(path.name[4:])) if Path(run_dir).is_dir() else []
    if not folds:
        raise PredictError(f"{run_dir}: no fold<k> folders (give results/<cohort>/<model>)")
    return folds


def training_cutoff(folds: list[Path]) -> float:
    """The median of the run's pooled out-of-fold risks (every fold's ``predictions.tsv``)."""
    frames = []
    for fold in folds:
        path = fold / "predictions.tsv"
        if not path.is_file():
            raise PredictError(f"{path}: missing (the training cohort's risks give the cut-off)")
        frames.append(pd.read_csv(path, sep="\t", usecols=["risk"]))
    return float(pd.concat(frames)["risk"].median())


def predict_run(run_dir: str | os.PathLike, table: CohortTable, *, features_dir: str | os.PathLike | None = None,
                variant: str = "last", max_missing_genomic: float | None = DEFAULT_MAX_MISSING_GENOMIC,
                folds: list[str | os.PathLike] | None = None) -> pd.DataFrame:
    """One row per patient of ``table``: risk per fold, their mean, the training cut-off, the group,
    and the survival columns when the table has them. ``folds``: these fold folders (default: every
    ``fold<k>`` of ``run_dir``)."""
    folds = [Path(fold) for fold in folds] if folds else fold_dirs(run_dir)
    risks = pd.concat([fold_risks(fold, table, features_dir=features_dir, variant=variant,
                                  max_missing_genomic=max_missing_genomic) for fold in folds], axis=1)
    risks.columns = [f"risk_{fold.name}" for fold in folds]
    cutoff = training_cutoff(folds)
    out = risks.reset_index()
    out["risk"] = risks.mean(axis=1).to_numpy()
    out["cutoff"] = cutoff
    out["group"] = np.where(out["risk"] >= cutoff, "high", "low")
    survival = table.patients().set_index("case_id")[["survival_months", "censorship"]]
    if survival.notna().all(axis=None):
        out = out.join(survival, on="case_id")
    log.info("predict: %d patient(s) × %d fold(s) of %s; cut-off %.4f (training median), %d high-risk",
             len(out), len(folds), run_dir, cutoff, int((out["group"] == "high").sum()))
    return out
