"""Cross-validation folds: MCAT's ``splits_{k}.csv`` files and a seeded, stratified hold-out.

A split file has columns ``train`` and ``val`` of case ids, the shorter one NaN-padded, plus
usually an unnamed index column. Cases listed in a split but absent from the cohort table are
dropped with a warning (MCAT's ``isin`` silently does the same); a case in both columns, or a fold
left empty, is an error naming the file.

The hold-out (:func:`holdout_split`) carves an early-stopping / model-selection set out of the
TRAINING fold only, so the validation fold stays untouched by model selection.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mmsurv.data.cohort import CohortError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Case ids of one fold (in file order)."""

    train: list[str]
    val: list[str]
    path: Path | None = None


def split_file(splits_dir: str | os.PathLike, fold: int) -> Path:
    """``splits_dir/splits_{fold}.csv``, which must exist."""
    path = Path(splits_dir) / f"splits_{fold}.csv"
    if not path.is_file():
        available = sorted(p.name for p in Path(splits_dir).glob("splits_*.csv")) if Path(splits_dir).is_dir() else []
        raise FileNotFoundError(f"{path}: no split file for fold {fold} (found: {', '.join(available) or 'none'})")
    return path


def read_split(path: str | os.PathLike) -> Split:
    """Read one MCAT split file."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError) as error:
        raise CohortError(f"{path}: cannot be read as a split CSV ({error})") from error
    missing = [column for column in ("train", "val") if column not in frame.columns]
    if missing:
        raise CohortError(f"{path}: missing column(s) {', '.join(missing)} (a split file has 'train' and 'val')")
    train = frame["train"].dropna().str.strip().tolist()
    val = frame["val"].dropna().str.strip().tolist()
    both = sorted(set(train) & set(val))
    if both:
        raise CohortError(f"{path}: case {both[0]} is in both 'train' and 'val' ({len(both)} such case(s))")
    return Split(train=list(dict.fromkeys(train)), val=list(dict.fromkeys(val)), path=path)


def restrict_to_cohort(split: Split, case_ids) -> Split:
    """Drop split cases absent from the cohort; error if a side becomes empty."""
    known = set(case_ids)
    result = {}
    for side in ("train", "val"):
        cases = getattr(split, side)
        kept = [case for case in cases if case in known]
        if len(kept) < len(cases):
            log.warning("%s: %d %s case(s) not in the cohort table are ignored (e.g. %s)",
                        split.path, len(cases) - len(kept), side, next(c for c in cases if c not in known))
        if not kept:
            raise CohortError(f"{split.path}: no '{side}' case of this split is in the cohort table")
        result[side] = kept
    return Split(train=result["train"], val=result["val"], path=split.path)


def holdout_split(cases: list[str], strata, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split ``cases`` into (fit, holdout), stratified on ``strata`` where possible, seeded.

    Each stratum contributes ``round(fraction * size)`` cases (at least one when the stratum has
    two or more, none from singletons); the draw uses ``numpy.random.default_rng(seed)``. When every
    stratum is a singleton (a handful of cases, e.g. a smoke run), ``round(fraction * n)`` cases (at
    least one) are drawn without strata instead.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout fraction must be in (0, 1), got {fraction}")
    strata = np.asarray(strata)
    if len(strata) != len(cases):
        raise ValueError("holdout_split: cases and strata differ in length")
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for stratum in sorted(set(strata.tolist())):
        members = np.flatnonzero(strata == stratum)
        if len(members) < 2:
            continue
        count = min(len(members) - 1, max(1, int(round(fraction * len(members)))))
        held.update(rng.choice(members, size=count, replace=False).tolist())
    if not held and len(cases) >= 2:
        count = min(len(cases) - 1, max(1, int(round(fraction * len(cases)))))
        held.update(rng.choice(len(cases), size=count, replace=False).tolist())
    if not held or len(held) == len(cases):
        raise CohortError(f"holdout_split: cannot hold out {fraction:g} of {len(cases)} training case(s)")
    fit = [case for index, case in enumerate(cases) if index not in held]
    holdout = [case for index, case in enumerate(cases) if index in held]
    return fit, holdout
