"""Heatmaps of one cohort × model for chosen patients (the workflow's ``heatmaps`` rule).

Which patients: ``patients`` (case ids) when given, else the ``n`` validation patients of extreme
predicted risk over the folds — the highest and the lowest alternately (n = 2: the highest-risk and
the lowest-risk patient of the cross-validation). Each patient is drawn by the fold that validated
it (its out-of-fold model), on each of its slides that has features, into one folder with an
``index.json`` listing what was drawn.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from mmsurv.io import atomic_write_text

log = logging.getLogger(__name__)

DEFAULTS = {"patients": None, "n": 2, "top_k": 8, "max_side": 2048, "alpha": 0.4, "cmap": "jet",
            "normalize": "percentile", "blur": 0.0, "checkpoint": "last"}


def choose_patients(fold_dirs: Sequence[str | os.PathLike], n: int = 2,
                    patients: Sequence[str] | None = None) -> list[tuple[str, Path, float]]:
    """(case id, fold dir that validated it, its out-of-fold risk) of the patients to draw."""
    frames = []
    for fold_dir in fold_dirs:
        path = Path(fold_dir) / "predictions.tsv"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the fold's validation predictions are missing")
        frame = pd.read_csv(path, sep="\t", dtype={"case_id": str}, usecols=["case_id", "risk"])
        frames.append(frame.assign(fold_dir=str(fold_dir)))
    pooled = pd.concat(frames, ignore_index=True)
    if patients:
        unknown = sorted(set(patients) - set(pooled["case_id"]))
        if unknown:
            raise ValueError(f"report.heatmaps.patients: {', '.join(unknown)} validated by no fold")
        chosen = pooled.set_index("case_id").loc[list(patients)].reset_index()
    else:
        ranked = pooled.sort_values(["risk", "case_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
        order, low, high = [], len(ranked) - 1, 0
        while len(order) < min(n, len(ranked)):
            if len(order) % 2 == 0:
                order.append(high)
                high += 1
            else:
                order.append(low)
                low -= 1
        chosen = ranked.loc[order]
    return [(row.case_id, Path(row.fold_dir), float(row.risk)) for row in chosen.itertuples()]


def draw_model_heatmaps(fold_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, *,
                        features_dir: str | os.PathLike, slides_dir: str | os.PathLike,
                        cohort_table: str | os.PathLike, settings: Mapping | None = None) -> dict:
    """Draw the chosen patients' slides into ``out_dir`` (see the module docstring); returns the index."""
    from mmsurv.data.cohort import read_cohort_table
    from mmsurv.heatmap.outputs import find_slide_file, write_outputs
    from mmsurv.heatmap.scores import load_fold_model, slide_name, slide_scores

    options = {**DEFAULTS, **(settings or {})}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    slides_of_case = read_cohort_table(cohort_table).slides_of_case()
    entries, loaded = [], {}
    for case_id, fold_dir, risk in choose_patients(fold_dirs, int(options["n"]), options["patients"]):
        if fold_dir not in loaded:
            loaded[fold_dir] = load_fold_model(fold_dir, options["checkpoint"])
        model, checkpoint = loaded[fold_dir]
        slides = [slide_name(s) for s in slides_of_case.get(case_id, [])
                  if (Path(features_dir) / f"{slide_name(s)}.pt").is_file()]
        if not slides:
            log.warning("heatmaps: case %s has no slide with features; skipped", case_id)
            continue
        for slide in slides:
            scores = slide_scores(fold_dir, slide, features_dir=features_dir, cohort_table=cohort_table,
                                  model=model, checkpoint=checkpoint)
            paths = write_outputs(scores, find_slide_file(slides_dir, slide), out, top_k=int(options["top_k"]),
                                  max_side=int(options["max_side"]), alpha=float(options["alpha"]),
                                  cmap=str(options["cmap"]), normalize=str(options["normalize"]),
                                  blur=float(options["blur"]))
            entries.append({"case_id": case_id, "slide": slide, "fold_dir": str(fold_dir), "risk_oof": risk,
                            "risk_slide": scores.risk, "patches": int(len(scores.coords)),
                            "rows": scores.scores.rows, "kind": scores.scores.kind,
                            "files": {kind: path.name for kind, path in paths.items()}})
    index = {"model": str(loaded[next(iter(loaded))][1]["model"]) if loaded else None, "slides": entries,
             "settings": options}
    atomic_write_text(out / "index.json", json.dumps(index, indent=2) + "\n")
    return index
