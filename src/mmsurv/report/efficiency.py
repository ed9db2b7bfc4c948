"""Model size and cost for the efficiency table: parameters, FLOPs, time per epoch, peak memory.

For the report builder (and for anyone sizing a GPU job).

How a model is rebuilt (no checkpoint is loaded): the fold's ``metrics.json`` records everything
the builder needs, so the report calls ``build_model(name, ModelInputs(...), params)`` with

* ``omic_dim`` = ``genomic_dim`` (number of genomic columns; ``sum(group_sizes)`` if absent),
* ``group_sizes`` = ``group_sizes`` (genomic groups of grouped models such as MCAT),
* ``path_dim`` = the fold's ``path_dim`` (the features' dimension; older runs: ``config.data.feature_dim``, default 1024), ``n_bins`` = ``config.data.n_bins`` (4),
* hyper-parameters = ``config.model_params`` (what the fold was trained with); only when a
  metrics.json lacks them does the ``model_params`` argument (``{model: {...}}``, e.g. the
  workflow config's ``train.models`` section; a ``training`` sub-dict is ignored) fill in.

The rebuilt model's parameter count is checked against the recorded ``n_params``
(``params_match`` column). The lowest fold of each cohort × model is rebuilt (all folds of a cohort
share the genomic columns and groups); identical builds are counted once.

FLOPs at the reference bag size are taken from the fold's ``metrics.json`` (``flops_per_patient``,
counted by the training job after training) when its parameter count equals the rebuilt model's;
otherwise, and at the median bag size, they are counted here. Both are counted by
:func:`mmsurv.models.flops.count_flops` (``torch.utils.flop_counter``:
matrix products and attention kernels, 2 FLOPs per multiply-add; element-wise operations not
counted) on one forward pass of one patient with a random bag of N patches, at the reference bag
size (default 4,096) and at the cohort's median bag size. The median bag size is the median over
PATIENTS of the summed ``n_patches`` of their slides, from ``{results}/{cohort}/wsi/patching.tsv``
and the sample sheet ``{results}/{cohort}/manifest/samples.tsv``; it is the raw bag (a
``max_patches``/``eval_max_patches`` cap in the training config is not applied). When those
files are missing (e.g. features made elsewhere) the median columns are empty.

Time per epoch is the mean ± std (over folds) of each fold's ``seconds_per_epoch``; peak memory is
the maximum over folds of ``peak_rss_mb`` (process RSS) and ``peak_cuda_mb`` (GPU runs only).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from mmsurv.models.base import SurvivalModel, n_params
from mmsurv.models.flops import count_flops
from mmsurv.models.registry import ModelInputs, build_model
from mmsurv.report.collect import FoldResult, ResultsError, ResultSet, finite_or_nan
from mmsurv.report.settings import DEFAULT_REFERENCE_BAG_SIZE

log = logging.getLogger(__name__)

DEFAULT_FEATURE_DIM = 1024
DEFAULT_N_BINS = 4
EFFICIENCY_COLUMNS = ["cohort", "model", "modality", "n_folds", "n_params", "params_match", "genomic_dim",
                      "n_groups", "path_dim", "reference_bag_size", "flops_reference", "median_bag_size",
                      "n_patients_bag", "flops_median", "seconds_per_epoch_mean", "seconds_per_epoch_std",
                      "peak_rss_mb", "peak_cuda_mb", "seconds_total_sum", "devices", "val_without_features",
                      "val_patients"]


def model_inputs(metrics: Mapping) -> ModelInputs:
    """The :class:`ModelInputs` a fold was built for, from its metrics.json."""
    data = (metrics.get("config") or {}).get("data") or {}
    group_sizes = [int(size) for size in (metrics.get("group_sizes") or [])]
    omic_dim = metrics.get("genomic_dim")
    return ModelInputs(omic_dim=int(omic_dim) if omic_dim is not None else int(sum(group_sizes)),
                       group_sizes=group_sizes, group_names=[str(n) for n in (metrics.get("group_names") or [])],
                       path_dim=int(metrics.get("path_dim") or data.get("feature_dim") or DEFAULT_FEATURE_DIM),
                       n_bins=int(data.get("n_bins") or DEFAULT_N_BINS))


def model_hyperparameters(metrics: Mapping, model: str, fallback: Mapping | None = None) -> dict:
    """Hyper-parameters the fold was trained with (metrics' ``config.model_params``, else ``fallback[model]``)."""
    config = metrics.get("config") or {}
    if "model_params" in config and config["model_params"] is not None:
        params = dict(config["model_params"])
    else:
        params = dict((fallback or {}).get(model) or {})
    params.pop("training", None)
    return params


def rebuild_model(fold: FoldResult, model_params: Mapping | None = None) -> SurvivalModel:
    """The fold's network, freshly initialised with the recorded input sizes and hyper-parameters."""
    try:
        return build_model(fold.metrics.get("base_model") or fold.model, model_inputs(fold.metrics),
                           model_hyperparameters(fold.metrics, fold.model, model_params)).eval()
    except (ValueError, TypeError) as error:
        raise ResultsError(f"cohort {fold.cohort}, model {fold.model}, fold {fold.fold}: cannot rebuild the model "
                           f"from {fold.path / 'metrics.json'} ({error})") from error


def flops_per_patient(model: SurvivalModel, bag_size: int) -> int:
    """Forward FLOPs of ``model`` for one patient with ``bag_size`` patches (random inputs)."""
    if bag_size < 1:
        raise ValueError(f"bag size must be at least 1, got {bag_size}")
    return count_flops(model, bag_size=int(bag_size))


def cohort_bag_sizes(results_dir: str | os.PathLike, cohort: str) -> pd.Series | None:
    """Patches per patient (sum over the patient's slides), indexed by case_id; None if the files are missing."""
    root = Path(results_dir) / cohort
    patching, samples = root / "wsi" / "patching.tsv", root / "manifest" / "samples.tsv"
    if not patching.is_file() or not samples.is_file():
        missing = [str(p) for p in (patching, samples) if not p.is_file()]
        log.info("cohort %s: no median bag size (missing %s)", cohort, ", ".join(missing))
        return None
    patches = pd.read_csv(patching, sep="\t", usecols=["slide", "n_patches"], dtype={"slide": str})
    sheet = pd.read_csv(samples, sep="\t", usecols=["slide", "case_id"], dtype=str)
    merged = sheet.merge(patches, on="slide", how="inner").dropna(subset=["n_patches"])
    if merged.empty:
        log.warning("cohort %s: no slide of %s has a patch count in %s", cohort, samples, patching)
        return None
    return merged.groupby("case_id")["n_patches"].sum().astype("int64").sort_index()


def cohort_median_bag_size(results_dir: str | os.PathLike, cohort: str) -> tuple[float | None, int]:
    """(median patches per patient, number of patients) of a cohort; (None, 0) when unknown."""
    sizes = cohort_bag_sizes(results_dir, cohort)
    if sizes is None or sizes.empty:
        return None, 0
    return float(np.median(sizes.to_numpy())), int(sizes.size)


class FlopsCache:
    """FLOPs per (model, inputs, hyper-parameters, bag size), so identical builds are counted once."""

    def __init__(self) -> None:
        self._counts: dict[tuple, int] = {}
        self._models: dict[tuple, SurvivalModel] = {}

    def count(self, fold: FoldResult, bag_size: int, model_params: Mapping | None = None) -> int:
        """FLOPs per patient of the fold's model with ``bag_size`` patches."""
        key = self._model_key(fold, model_params)
        model = self.model(fold, model_params)
        bag = int(bag_size) if model.modality != "omic" else 1  # omic models never read the bag
        if (key, bag) not in self._counts:
            recorded = (fold.metrics.get("flops_per_patient") or {}).get(str(bag))
            same_model = fold.metrics.get("n_params") in (None, n_params(model))
            self._counts[(key, bag)] = (int(recorded) if recorded is not None and same_model
                                        else flops_per_patient(model, bag))
        return self._counts[(key, bag)]

    def model(self, fold: FoldResult, model_params: Mapping | None = None) -> SurvivalModel:
        """The fold's rebuilt model (built once per distinct model/inputs/hyper-parameters)."""
        key = self._model_key(fold, model_params)
        if key not in self._models:
            self._models[key] = rebuild_model(fold, model_params)
        return self._models[key]

    @staticmethod
    def _model_key(fold: FoldResult, model_params: Mapping | None) -> tuple:
        inputs = model_inputs(fold.metrics)
        params = model_hyperparameters(fold.metrics, fold.model, model_params)
        return (fold.model, inputs.omic_dim, tuple(inputs.group_sizes), inputs.path_dim, inputs.n_bins,
                json.dumps(params, sort_keys=True, default=str))


def efficiency_frame(results: ResultSet, reference_bag_size: int = DEFAULT_REFERENCE_BAG_SIZE,
                     model_params: Mapping | None = None, cache: FlopsCache | None = None) -> pd.DataFrame:
    """One row per model × cohort (model order, then cohort order) with the columns of :data:`EFFICIENCY_COLUMNS`."""
    cache = cache or FlopsCache()
    medians = {cohort: cohort_median_bag_size(results.results_dir, cohort) for cohort in results.cohorts}
    rows = []
    for model in results.models:
        for cohort in results.cohorts:
            folds = results.get(cohort, model)
            if folds:
                rows.append(_efficiency_row(folds, medians[cohort], reference_bag_size, model_params, cache))
    return pd.DataFrame(rows, columns=EFFICIENCY_COLUMNS)


def _efficiency_row(folds: list[FoldResult], median: tuple[float | None, int], reference_bag_size: int,
                    model_params: Mapping | None, cache: FlopsCache) -> dict:
    first = folds[0]
    network = cache.model(first, model_params)
    rebuilt = n_params(network)
    recorded = first.metrics.get("n_params")
    if recorded is not None and int(recorded) != rebuilt:
        log.warning("cohort %s, model %s: rebuilt model has %d parameters, metrics.json says %s",
                    first.cohort, first.model, rebuilt, recorded)
    median_bag, n_patients = median
    seconds = np.array([finite_or_nan(f.metrics.get("seconds_per_epoch")) for f in folds])
    seconds = seconds[np.isfinite(seconds)]
    rss = [finite_or_nan(f.metrics.get("peak_rss_mb")) for f in folds]
    cuda = [finite_or_nan(f.metrics.get("peak_cuda_mb")) for f in folds]
    inputs = model_inputs(first.metrics)
    return {
        "cohort": first.cohort,
        "model": first.model,
        "modality": first.metrics.get("modality") or network.modality,
        "n_folds": len(folds),
        "n_params": int(recorded) if recorded is not None else rebuilt,
        "params_match": recorded is None or int(recorded) == rebuilt,
        "genomic_dim": inputs.omic_dim,
        "n_groups": len(inputs.group_sizes),
        "path_dim": inputs.path_dim,
        "reference_bag_size": int(reference_bag_size),
        "flops_reference": cache.count(first, reference_bag_size, model_params),
        "median_bag_size": median_bag,
        "n_patients_bag": n_patients,
        "flops_median": (cache.count(first, max(1, int(round(median_bag))), model_params)
                         if median_bag is not None else None),
        "seconds_per_epoch_mean": float(seconds.mean()) if seconds.size else float("nan"),
        "seconds_per_epoch_std": float(seconds.std(ddof=0)) if seconds.size else float("nan"),
        "peak_rss_mb": _nanmax(rss),
        "peak_cuda_mb": _nanmax(cuda),
        "seconds_total_sum": float(np.nansum([finite_or_nan(f.metrics.get("seconds_total")) for f in folds])),
        "devices": ",".join(sorted({str(f.metrics.get("device", "")) for f in folds} - {""})),
        **without_features(folds),
    }


def without_features(folds: list[FoldResult]) -> dict:
    """Validation patients without WSI features summed over folds (each patient is validated once),
    and all validation patients; NaN/None when the folds predate the count (metrics.json
    ``n_without_features``)."""
    counts = [(f.metrics.get("n_without_features") or {}).get("val") for f in folds]
    totals = [f.metrics.get("n_val") for f in folds]
    return {"val_without_features": None if any(c is None for c in counts) else int(sum(counts)),
            "val_patients": None if any(t is None for t in totals) else int(sum(totals))}


def _nanmax(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(max(finite)) if finite else float("nan")
