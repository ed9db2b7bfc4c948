"""Find and load the per-fold training outputs the report summarises.

For the report builder (and anyone comparing runs by hand): the training stage writes one folder
per cohort × model × fold, ``{results}/{cohort}/{model}/fold{k}/``, holding ``metrics.json``,
``predictions.tsv`` (validation fold, last epoch) and ``predictions_best.tsv`` (best epoch).
:func:`collect_results` checks that every requested fold is there (an error names the missing
cohort/model/fold and file) and returns a :class:`ResultSet`; nothing here writes or touches the
training outputs, and checkpoints are never opened.

Discovery (when cohorts, models or folds are not given): a cohort is a sub-folder of ``results``
with at least one ``{model}/fold{k}/metrics.json``; models and folds are found the same way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmsurv.models.inputs import modality_rank

VARIANTS = ("last", "best")
PREDICTION_FILES = {"last": "predictions.tsv", "best": "predictions_best.tsv"}
PREDICTION_COLUMNS = ("case_id", "risk", "time", "event")
_FOLD_DIR = re.compile(r"^fold(\d+)$")


class ResultsError(FileNotFoundError):
    """A requested cohort, model, fold or file is missing or unreadable."""


@dataclass(frozen=True)
class FoldResult:
    """One trained fold: where it lives and its ``metrics.json`` content."""

    cohort: str
    model: str
    fold: int
    path: Path
    metrics: dict = field(repr=False, compare=False)

    def cindex(self, variant: str) -> float:
        """The fold's validation c-index at the last (``"last"``) or best (``"best"``) epoch."""
        value = self.metrics.get(f"cindex_{_check_variant(variant)}")
        return float("nan") if value is None else float(value)

    def predictions(self, variant: str = "last") -> pd.DataFrame:
        """The fold's validation predictions (case_id, risk, time, event, …) plus a ``fold`` column."""
        path = self.path / PREDICTION_FILES[_check_variant(variant)]
        if not path.is_file():
            raise ResultsError(f"cohort {self.cohort}, model {self.model}, fold {self.fold}: missing {path}")
        frame = pd.read_csv(path, sep="\t", dtype={"case_id": str})
        missing = [column for column in PREDICTION_COLUMNS if column not in frame.columns]
        if missing:
            raise ResultsError(f"{path}: missing column(s) {', '.join(missing)}")
        frame.insert(0, "fold", self.fold)
        return frame


@dataclass(frozen=True)
class ResultSet:
    """Every loaded fold, with the cohort and model order the tables and figures use."""

    results_dir: Path
    cohorts: tuple[str, ...]
    models: tuple[str, ...]
    folds: tuple[FoldResult, ...]

    def get(self, cohort: str, model: str) -> list[FoldResult]:
        """The folds of one cohort × model, by fold number."""
        return sorted((f for f in self.folds if f.cohort == cohort and f.model == model), key=lambda f: f.fold)

    def modality(self, model: str) -> str:
        """The model's modality as recorded in its metrics.json (``omic`` | ``path`` | ``multimodal``)."""
        for fold in self.folds:
            if fold.model == model and fold.metrics.get("modality"):
                return str(fold.metrics["modality"])
        return "unknown"

    def cindex_frame(self) -> pd.DataFrame:
        """Per-fold c-indices in long format: cohort, model, fold, variant, cindex."""
        rows = [{"cohort": f.cohort, "model": f.model, "fold": f.fold, "variant": variant, "cindex": f.cindex(variant)}
                for variant in VARIANTS for f in self.folds]
        frame = pd.DataFrame(rows, columns=["cohort", "model", "fold", "variant", "cindex"])
        return frame.sort_values(
            ["variant", "cohort", "model", "fold"], key=_sort_key(self.cohorts, self.models)).reset_index(drop=True)

    def out_of_fold(self, cohort: str, model: str, variant: str = "last") -> pd.DataFrame:
        """All folds' validation predictions of one cohort × model, concatenated (one row per patient)."""
        frames = [fold.predictions(variant) for fold in self.get(cohort, model)]
        if not frames:
            raise ResultsError(f"no folds loaded for cohort {cohort}, model {model}")
        frame = pd.concat(frames, ignore_index=True)
        duplicated = frame.loc[frame["case_id"].duplicated(keep=False)]
        if not duplicated.empty:
            cases = ", ".join(sorted(duplicated["case_id"].unique())[:5])
            raise ResultsError(f"cohort {cohort}, model {model}: case(s) {cases} are in more than one validation "
                               f"fold; out-of-fold predictions need disjoint folds")
        return frame


def collect_results(results_dir: str | os.PathLike, cohorts: Sequence[str] | None = None,
                    models: Sequence[str] | None = None, *, folds: int | None = None) -> ResultSet:
    """Load every ``{results_dir}/{cohort}/{model}/fold{k}/metrics.json`` the report needs.

    ``folds=K`` requires folds 0..K-1 for every cohort × model; ``folds=None`` takes the folds
    found (at least one). Missing cohorts, models, folds or files raise :class:`ResultsError`
    naming them.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise ResultsError(f"results folder {root} does not exist")
    cohorts = list(cohorts) if cohorts else discover_cohorts(root)
    if not cohorts:
        raise ResultsError(f"{root}: no cohort folder with {{model}}/fold{{k}}/metrics.json found")
    for cohort in cohorts:
        if not (root / cohort).is_dir():
            raise ResultsError(f"cohort {cohort}: no folder {root / cohort}")
    models = list(models) if models else discover_models(root, cohorts)
    if not models:
        raise ResultsError(f"{root}: no {{model}}/fold{{k}}/metrics.json in cohort(s) {', '.join(cohorts)}")
    loaded: list[FoldResult] = []
    for cohort in cohorts:
        for model in models:
            loaded += _load_model_folds(root, cohort, model, folds)
    return ResultSet(results_dir=root, cohorts=tuple(cohorts), models=tuple(models), folds=tuple(loaded))


def discover_cohorts(results_dir: Path) -> list[str]:
    """Sub-folders of ``results_dir`` holding at least one ``{model}/fold{k}/metrics.json`` (sorted)."""
    return sorted(path.name for path in _subdirs(results_dir) if _fold_metrics(path))


def discover_models(results_dir: Path, cohorts: Iterable[str]) -> list[str]:
    """Model folders with ``fold{k}/metrics.json`` in any of ``cohorts``, omic → WSI → multimodal, then by name."""
    found: dict[str, str] = {}
    for cohort in cohorts:
        for model_dir in _subdirs(Path(results_dir) / cohort):
            folds = _fold_dirs(model_dir)
            if folds:
                found.setdefault(model_dir.name, _read_metrics(folds[min(folds)] / "metrics.json").get("modality", ""))
    return sorted(found, key=lambda name: (modality_rank(found[name]), name))


def _load_model_folds(root: Path, cohort: str, model: str, folds: int | None) -> list[FoldResult]:
    model_dir = root / cohort / model
    present = _fold_dirs(model_dir)
    wanted = range(folds) if folds is not None else sorted(present)
    if not wanted:
        raise ResultsError(f"cohort {cohort}, model {model}: no fold{{k}}/metrics.json under {model_dir}")
    loaded = []
    for k in wanted:
        path = model_dir / f"fold{k}" / "metrics.json"
        if not path.is_file():
            raise ResultsError(f"cohort {cohort}, model {model}, fold {k}: missing {path}")
        metrics = _read_metrics(path)
        if metrics.get("model", model) != model:
            raise ResultsError(f"{path}: metrics say model {metrics.get('model')!r}, expected {model!r}")
        if metrics.get("display_name"):
            _DISPLAY_NAMES[model] = str(metrics["display_name"])
        loaded.append(FoldResult(cohort=cohort, model=model, fold=k, path=path.parent, metrics=metrics))
    return loaded


def _read_metrics(path: Path) -> dict:
    try:
        document = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ResultsError(f"{path}: unreadable metrics.json ({error})") from error
    if not isinstance(document, dict):
        raise ResultsError(f"{path}: metrics.json is not a JSON object")
    return document


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")) if path.is_dir() else []


def _fold_dirs(model_dir: Path) -> dict[int, Path]:
    found = {}
    for path in _subdirs(model_dir):
        match = _FOLD_DIR.match(path.name)
        if match and (path / "metrics.json").is_file():
            found[int(match.group(1))] = path
    return found


def _fold_metrics(cohort_dir: Path) -> bool:
    return any(_fold_dirs(model_dir) for model_dir in _subdirs(cohort_dir))


def _sort_key(cohorts: Sequence[str], models: Sequence[str]):
    rank = {"cohort": {c: i for i, c in enumerate(cohorts)}, "model": {m: i for i, m in enumerate(models)},
            "variant": {v: i for i, v in enumerate(VARIANTS)}}

    def key(column: pd.Series) -> pd.Series:
        if column.name in rank:
            return column.map(rank[column.name])
        return column

    return key


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    return variant


def display_cohort(cohort: str) -> str:
    """Cohort label in tables and figures (TCGA project codes upper-case: ``blca`` → ``BLCA``)."""
    return cohort.upper()


_DISPLAY_NAMES: dict[str, str] = {}  # model → the display name its metrics.json recorded


def display_model(model: str) -> str:
    """Model label in tables and figures: the registry's display name recorded in the fold's
    metrics.json (``clam_mb`` → ``CLAM-MB``), else the name upper-cased (``mcat`` → ``MCAT``)."""
    return _DISPLAY_NAMES.get(model) or model.upper()




def finite_or_nan(value) -> float:
    """``value`` as a float, NaN for None/missing."""
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")

