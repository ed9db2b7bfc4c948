"""Missing modality as a first-class fact: how many patients of a fold train without WSI features.

A case whose slides have no feature file keeps its genomics and trains on a single all-zero bag
(:mod:`mmsurv.data.dataset`). A few such cases are normal (a slide failed QC); many mean the run
is not the study it claims to be (wrong ``features_dir``, a manifest that misses most slides), so
the share per fold side is capped by ``data.max_missing_features`` (default 0.25 = 25 % of the
training or the validation side; ``null`` switches the check off). The counts go to metrics.json
(``n_without_features``), the report (``efficiency`` table) and the cleaning summary (table cases
without a slide).
"""

from __future__ import annotations

from mmsurv.data.cohort import CohortError

DEFAULT_MAX_MISSING_FEATURES = 0.25


class MissingFeaturesError(CohortError):
    """Too many patients of a fold have no WSI features; the message names the fold, side and counts."""


def check_missing_features(fold_data, max_fraction: float | None, *, fold: int, model: str) -> None:
    """Raise when more than ``max_fraction`` of the train or val patients of ``fold_data`` lack features."""
    if max_fraction is None:
        return
    max_fraction = float(max_fraction)
    if not 0.0 <= max_fraction <= 1.0:
        raise ValueError(f"train config: data.max_missing_features must be between 0 and 1 (or null), got {max_fraction}")
    for side in ("train", "val"):
        dataset = getattr(fold_data, side)
        missing, total = int(getattr(dataset, "n_without_features", 0)), len(dataset)
        if total and missing / total > max_fraction:
            example = ""
            bags = getattr(dataset, "bags", None)
            if bags is not None:
                without = [case for case in dataset.case_ids
                           if not bags.available(dataset.slides_of_case.get(case, []))][:3]
                example = f" (e.g. {', '.join(without)})"
            raise MissingFeaturesError(
                f"fold {fold}, model {model}: {missing} of {total} {side} patients ({missing / total:.0%}) have no WSI "
                f"feature file in {getattr(bags, 'features_dir', '?')}{example}; more than data.max_missing_features "
                f"= {max_fraction:.0%} would train on all-zero bags. Check the features folder and the cleaning "
                "summary (table cases without a slide), or raise data.max_missing_features (null: no limit)"
            )
