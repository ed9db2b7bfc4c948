"""One cross-validation fold end to end: config dict → trained model, predictions and metrics.

Called by the Snakemake rule and by ``mmsurv train``::

    train_fold(config, cohort_table=..., splits_dir=..., fold=k, model="mcat", out_dir=...,
               signatures=..., features_dir=..., pathways=None, seed=None) -> dict

``config`` (a dict, e.g. the ``train:`` section of the workflow config or a YAML file) has three
optional sections; every key is checked, unknown keys are errors:

* ``data``: ``n_bins`` (4), ``groups`` (``signatures`` | ``pathways``: which genomic groups a
  model's ``omic_groups`` input reads), ``pathway_suffixes`` ([``_rnaseq``]), ``pathway_min_size``
  (1), ``feature_dim`` (None: the features' own dimension), ``max_patches`` (None: all; e.g. 4096 as SurvPath),
  ``eval_max_patches`` (None), ``cache_bags`` (false), ``standardize_features`` (false),
  ``max_missing_features`` (0.25: error when a larger share of a fold side has no WSI features; null: off);
* ``training``: :class:`mmsurv.train.loop.TrainConfig` fields (optimizer, lr, weight_decay,
  epochs, grad_accum, batch_size, scheduler, loss, alpha, l1_reg, weighted_sampling,
  holdout_fraction, early_stopping_patience, device, num_threads, deterministic, …);
* ``models``: per model name, hyper-parameter overrides (see each model's docstring), optional
  ``data`` and ``training`` sub-dicts for that model only, and for a **variant** ``model: BASE``
  (and ``display``): ``models: {snn: {training: {l1_reg: 0}}, mcat: {dropout: 0.1},
  mcat_path: {model: mcat, data: {groups: pathways}}}``;

plus ``seed`` (default 1, MCAT's; the ``seed`` argument wins when given).

Settings resolve in this order, later winning: package defaults (MCAT's) < the model's paper
defaults (``SurvivalModel.defaults``) < the config's ``data``/``training`` < the model's own
``models.NAME.data``/``models.NAME.training``. The resolved values are written to ``metrics.json``.

Outputs in ``out_dir`` (all written atomically): ``bin_edges.json``, ``training_log.tsv`` (one row
per epoch), ``predictions.tsv`` (last epoch, validation fold: case_id, risk, S_1..S_K, time,
event, bin), ``predictions_best.tsv`` (same at the best epoch), ``checkpoint_last.pt``,
``checkpoint_best.pt`` and ``metrics.json``. The returned dict is the content of ``metrics.json``.
While it runs, ``resume/state.pt`` holds the state after the last finished epoch (see
:mod:`mmsurv.train.resume`): a rerun continues from it, and it is deleted once the outputs are written.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmsurv.data.cohort import read_cohort_table, read_signatures, signature_groups
from mmsurv.data.dataset import BagOptions, FoldData, bag_feature_dim, build_fold_data, features_dir_or_none
from mmsurv.data.missing import check_missing_features
from mmsurv.data.pathways import pathway_groups, read_gene_sets
from mmsurv.data.splits import read_split, restrict_to_cohort, split_file
from mmsurv.data.survival import fit_bin_edges, write_bin_edges
from mmsurv.io import atomic_path, write_json, write_tsv
from mmsurv.models.base import SurvivalModel, n_params
from mmsurv.models.inputs import group_kind
from mmsurv.models.registry import ModelInputs, ResolvedModel, build_model
from mmsurv.train.loop import EvalResult, FitResult, fit
from mmsurv.train.resume import ResumeCheckpoint, resume_path, run_identity, stop_on_signals
from mmsurv.train.seed import default_threads, reproducible, resolve_device, seed_everything
from mmsurv.train.settings import FLOPS_REFERENCE_BAG_SIZE, TrainConfig, resolve_settings

log = logging.getLogger(__name__)

def train_fold(config: Mapping | None, *, cohort_table: str | os.PathLike, splits_dir: str | os.PathLike, fold: int,
               model: str, out_dir: str | os.PathLike, signatures: str | os.PathLike | None = None,
               features_dir: str | os.PathLike | None = None, pathways: str | os.PathLike | None = None,
               seed: int | None = None, resume: bool = True, keep_resume: bool = False) -> dict:
    """Train and validate ``model`` on fold ``fold``; write the outputs to ``out_dir``; return the metrics.

    Deterministic mode and the thread count apply inside this call only (the caller's are restored);
    without ``training.num_threads`` the count is :func:`mmsurv.train.seed.default_threads` of the
    model's modality (1 for genomic-only models).

    With ``resume`` (default) the run saves its state at an epoch's end (every
    ``training.resume_every_s`` seconds, after the last epoch and on a stop signal) in
    ``out_dir/resume/state.pt`` and continues from a state of the same run found there
    (:mod:`mmsurv.train.resume`); the file is deleted once the outputs are written, unless
    ``keep_resume`` (a workflow train job of several folds keeps every fold's until all are done,
    so a job that fails at fold k rebuilds folds < k from their final states without retraining).
    SIGTERM and SIGUSR1 stop the run with ``TrainingInterrupted`` (the checkpoint stays).
    """
    data_cfg, train_cfg, resolved, config_seed = resolve_settings(config, model)
    seed = config_seed if seed is None else int(seed)
    num_threads = train_cfg.num_threads or default_threads(resolved.spec.modality)
    with reproducible(train_cfg.deterministic, num_threads) as threads, stop_on_signals() as stop:
        return _train_fold(data_cfg, train_cfg, resolved, seed=seed, threads=threads, cohort_table=cohort_table,
                           splits_dir=splits_dir, fold=fold, model=model, out_dir=Path(out_dir), signatures=signatures,
                           features_dir=features_dir, pathways=pathways, resume=resume, keep_resume=keep_resume,
                           stop=stop)


def _train_fold(data_cfg: dict, train_cfg: TrainConfig, resolved: ResolvedModel, *, seed: int, threads: int, cohort_table,
                splits_dir, fold: int, model: str, out_dir: Path, signatures, features_dir, pathways, resume: bool,
                keep_resume: bool, stop) -> dict:
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(train_cfg.device)
    spec, model_params = resolved.spec, resolved.params

    table = cohort_table_once(cohort_table)
    patients = table.patients()
    edges = fit_bin_edges(patients, n_bins=int(data_cfg["n_bins"]))
    write_bin_edges(out_dir / "bin_edges.json", edges, n_patients=len(patients),
                    n_uncensored=int((patients["censorship"] == 0).sum()))
    split = restrict_to_cohort(read_split(split_file(splits_dir, fold)), table.case_ids)
    groups = genomic_groups(table, data_cfg, signatures=signatures, pathways=pathways, inputs=spec.inputs)
    features_dir = features_dir_or_none(features_dir)
    path_dim = bag_feature_dim(features_dir, data_cfg["feature_dim"], reads_features="path" in spec.inputs)
    bag_options = BagOptions(features_dir=features_dir, feature_dim=data_cfg["feature_dim"],  # None: the same probe
                             max_patches=data_cfg["max_patches"], eval_max_patches=data_cfg["eval_max_patches"],
                             cache=bool(data_cfg["cache_bags"]),
                             standardize=bool(data_cfg["standardize_features"]))
    fold_data = build_fold_data(table, split, edges=edges, groups=groups, inputs=spec.inputs,
                                bag_options=bag_options, holdout_fraction=train_cfg.holdout_fraction, seed=seed,
                                default_groups=data_cfg["groups"])
    check_missing_features(fold_data, data_cfg["max_missing_features"], fold=fold, model=model)

    seed_everything(seed)
    inputs = ModelInputs(omic_dim=len(fold_data.genomic_columns), group_sizes=fold_data.group_sizes,
                         path_dim=path_dim, n_bins=int(data_cfg["n_bins"]),
                         group_names=fold_data.group_names)
    network = build_model(spec.name, inputs, model_params).to(device)
    log.info("resolved settings of %s: data %s; training %s; model %s", model, data_cfg, train_cfg.as_dict(),
             model_params)
    log.info("fold %d, model %s (%s): %d parameters, %d train / %d val%s patients, device %s, %d thread(s)",
             fold, model, spec.modality, n_params(network), len(fold_data.train), len(fold_data.val),
             f" / {len(fold_data.holdout)} hold-out" if fold_data.holdout else "", device, threads)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    log_path = out_dir / "training_log.tsv"
    rows: list[dict] = []

    def on_epoch(record: dict) -> None:
        rows.append(record)
        write_tsv(pd.DataFrame(rows), log_path, float_format="%.8g")

    checkpoint = None
    if resume:
        checkpoint = ResumeCheckpoint(resume_path(out_dir), run_identity(
            settings={"model": model, "base_model": spec.name, "params": model_params, "data": data_cfg,
                      "training": train_cfg.numeric_settings(), "seed": seed, "fold": fold, "device": device.type,
                      "threads": threads},
            data_files={"table": cohort_table, "split": split_file(splits_dir, fold), "signatures": signatures,
                        "pathways": pathways},
            features_dir=bag_options.features_dir, model_sources=model_source_files(network)))
    result = fit(network, fold_data.train, fold_data.val, train_cfg, holdout=fold_data.holdout, seed=seed,
                 on_epoch=on_epoch, resume=checkpoint, stop=stop)
    checkpoint_meta = {"model": model, "base_model": spec.name, "model_params": model_params, "inputs": inputs.__dict__, "fold": fold,
                       "seed": seed, "bin_edges": edges.tolist(), "genomic_columns": fold_data.genomic_columns,
                       "group_names": fold_data.group_names, "scaler_mean": fold_data.scaler.mean_.tolist(),
                       "scaler_scale": fold_data.scaler.scale_.tolist(),
                       # what applying the model to a new bag needs (heatmaps): its groups' columns and
                       # the fold's feature standardisation
                       "inputs_read": list(spec.inputs), "data": dict(data_cfg),
                       "group_index": {name: [index.tolist() for index in indices]
                                       for name, indices in fold_data.group_index.items()},
                       "feature_standardization": (None if fold_data.bags is None or fold_data.bags.standardization
                                                   is None else [t.tolist() for t in fold_data.bags.standardization])}
    save_checkpoint(out_dir / "checkpoint_last.pt", network.state_dict(), epoch=len(result.history), **checkpoint_meta)
    save_checkpoint(out_dir / "checkpoint_best.pt", result.best_state, epoch=result.best_epoch, **checkpoint_meta)
    # float64 with every digit: the c-index recomputed from the file equals metrics.json's
    write_tsv(predictions_frame(result.last_eval), out_dir / "predictions.tsv", float_format="%.17g")
    write_tsv(predictions_frame(result.best_eval), out_dir / "predictions_best.tsv", float_format="%.17g")
    metrics = fold_metrics(result, fold_data, network, model=model, fold=fold, seed=seed, device=device,
                           threads=threads, seconds=time.perf_counter() - started,
                           config={"data": data_cfg, "training": train_cfg.as_dict(), "model_params": model_params})
    metrics.update(base_model=spec.name, display_name=resolved.display_name, citation=spec.citation,
                   label=spec.label, inputs=list(spec.inputs), path_dim=inputs.path_dim,
                   n_without_features={"train": fold_data.train.n_without_features,
                                       "val": fold_data.val.n_without_features})
    metrics["flops_per_patient"] = reference_flops(network, spec.name, model_params, inputs)
    if result.last_eval.measures:  # the model's own measurements (ModelOutput.measures), validation means
        metrics["measures"] = {"val_last": result.last_eval.measures,
                               "val_best": result.best_eval.measures if result.best_eval is not None else {}}
    if checkpoint is not None and checkpoint.seconds_saving:
        metrics["resume_checkpoint"] = {"seconds_per_save": float(np.mean(checkpoint.seconds_saving)),
                                        "mb": checkpoint.path.stat().st_size / 2**20}
    write_json(out_dir / "metrics.json", metrics)
    if checkpoint is not None and not keep_resume:
        checkpoint.remove()
    log.info("fold %d %s: c-index last %.4f, best %.4f (epoch %d, selected on %s)", fold, model,
             metrics["cindex_last"], metrics["cindex_best"], metrics["best_epoch"], metrics["best_selected_on"])
    return metrics


def genomic_groups(table, data_cfg: dict, *, signatures, pathways, inputs) -> dict[str, dict[str, list[str]]]:
    """The groupings the model's inputs read: ``{"signatures": {...}, "pathways": {...}}`` (only those needed)."""
    kinds = {kind for kind in (group_kind(name, data_cfg["groups"]) for name in inputs) if kind is not None}
    result: dict[str, dict[str, list[str]]] = {}
    if "pathways" in kinds:
        if pathways is None:
            raise ValueError("the model reads pathway groups (omic_groups with data.groups 'pathways', or "
                             "omic_groups:pathways) but no pathways gene-set file was given")
        result["pathways"] = pathway_groups(table.genomics.columns, read_gene_sets(pathways),
                                            suffixes=tuple(data_cfg["pathway_suffixes"]),
                                            min_size=int(data_cfg["pathway_min_size"]))
    if "signatures" in kinds:
        if signatures is None:
            raise ValueError("the model reads the signature groups (omic_groups) but no signatures file was given")
        result["signatures"] = signature_groups(table.genomics.columns, read_signatures(signatures))
    return result


def predictions_frame(result: EvalResult) -> pd.DataFrame:
    """Out-of-fold predictions: case_id, risk, S_1..S_K, time, event, bin."""
    frame = pd.DataFrame({"case_id": result.case_ids, "risk": result.risk})
    for k in range(result.survival.shape[1]):
        frame[f"S_{k + 1}"] = result.survival[:, k]
    frame["time"] = result.time
    frame["event"] = 1 - result.censorship
    frame["bin"] = result.label
    return frame


def fold_metrics(result: FitResult, fold_data: FoldData, network: SurvivalModel, *, model: str, fold: int, seed: int,
                 device: torch.device, threads: int, seconds: float, config: dict) -> dict:
    """The metrics.json document."""
    epoch_seconds = result.epoch_seconds
    return {
        "model": model,
        "modality": network.modality,
        "fold": fold,
        "seed": seed,
        "cindex_last": result.last_eval.cindex,
        "cindex_best": result.best_eval.cindex,
        "best_epoch": result.best_epoch,
        "best_selected_on": result.selected_on,
        "best_selection_metric": result.selection_metric,
        "best_note": ("optimistic: the best epoch was chosen on the validation fold itself (MCAT's monitor)"
                      if result.selected_on == "val" else "best epoch chosen on a hold-out of the training fold"),
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        "val_loss_last": result.last_eval.loss,
        "n_train": len(fold_data.train),
        "n_val": len(fold_data.val),
        "n_holdout": len(fold_data.holdout) if fold_data.holdout else 0,
        "n_val_events": int((result.last_eval.censorship == 0).sum()),
        "n_params": n_params(network),
        "genomic_dim": len(fold_data.genomic_columns),
        "group_sizes": fold_data.group_sizes,
        "group_names": fold_data.group_names,
        "seconds_per_epoch": float(np.mean(epoch_seconds)) if epoch_seconds else float("nan"),
        "seconds_total": seconds,
        "peak_rss_mb": peak_rss_mb(),  # of the whole process so far (one fold per process in the workflow)
        "peak_cuda_mb": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "device": str(device),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "config": config,
    }


_FLOPS: dict[str, dict[str, int]] = {}


def reference_flops(network: SurvivalModel, name: str, params: Mapping, inputs: ModelInputs) -> dict[str, int]:
    """Forward FLOPs of one patient at the report's reference bag size (``{"4096": n}``; genomic-only
    models ``{"1": n}``, they never read a bag), counted once per process and architecture.

    Counted here, after training, so that the report need not rebuild and run every model at 4,096
    patches (most of the aggregate job's time): the report uses this figure when its reference bag
    size is the same and its rebuilt model has the recorded parameter count."""
    from mmsurv.models.flops import count_flops

    bag = 1 if network.modality == "omic" else FLOPS_REFERENCE_BAG_SIZE
    key = json.dumps([name, params, inputs.sizes(), bag], sort_keys=True, default=str)
    if key not in _FLOPS:
        _FLOPS[key] = {str(bag): count_flops(network, bag_size=bag)}
    return dict(_FLOPS[key])


_TABLES: dict[tuple, object] = {}


def cohort_table_once(path: str | os.PathLike):
    """``read_cohort_table``, read once per process while the file is unchanged (same size and
    modification time): a job that trains every fold of a model reads its table once, not per fold.
    The table is only read, never changed, by the training code."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _TABLES:
        _TABLES.clear()
        _TABLES[key] = read_cohort_table(path)
    return _TABLES[key]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def model_source_files(network: SurvivalModel) -> list[Path]:
    """The model's module and the model modules it imports (what its numbers depend on besides shared code)."""
    import inspect

    from mmsurv.models.catalog import MODELS_DIR, model_sources

    sources: list[Path] = []  # the model's class and every submodule class of a model file (backbones)
    for module in network.modules():
        source = inspect.getsourcefile(type(module))
        if source and (module is network or Path(source).resolve().parent == MODELS_DIR):
            if Path(source).resolve() not in sources:
                sources.append(Path(source).resolve())
    files: list[Path] = []
    for source in sources:  # each file parsed once (a model has hundreds of submodules)
        files += [path for path in model_sources(source) if path not in files]
    return files


def save_checkpoint(path: Path, state: dict, **meta) -> None:
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, **meta}, tmp)
