"""Build the whole results report (tables, efficiency, Kaplan–Meier, bubble chart) from the training outputs.

Called by the Snakemake rule ``aggregate`` and by ``mmsurv report``::

    build_report(results_dir, cohorts, models, out_dir, *, folds=None, reference_bag_size=4096,
                 median_split="fold_train", model_params=None, pdf=False, km_variant="last",
                 std_ddof=0, bootstrap=1000, bootstrap_seed=0) -> dict[str, Path]

Reads ``{results_dir}/{cohort}/{model}/fold{k}/{metrics.json,predictions.tsv,predictions_best.tsv}``
(and, for the median bag size, ``{results_dir}/{cohort}/wsi/patching.tsv`` and
``{results_dir}/{cohort}/manifest/samples.tsv``); never writes there. Writes into ``out_dir``:

* ``cindex_last.csv`` / ``cindex_best.csv``: per-fold c-index (cohort, model, fold, variant, cindex);
* ``cindex_last_summary.csv`` / ``cindex_best_summary.csv``: mean, std, n_folds per cohort × model;
* ``cindex_last.md|.tex`` / ``cindex_best.md|.tex``: the Table-1 style tables;
* ``efficiency.csv|.md|.tex``: params, FLOPs, s/epoch, peak memory per model × cohort;
* ``km/km_{cohort}_{model}.png`` (+ ``.pdf``): KM curves per cohort × model;
* ``km/km_grid_{model}.png`` (+ ``.pdf``): KM panels of one model across cohorts (runs of two or more
  cohorts only: with one, it would be ``km_{cohort}_{model}`` again);
* ``km_logrank.csv``: group sizes, events, χ² and log-rank p per cohort × model;
* ``bubble_cindex_flops.png`` (+ ``.pdf``): c-index vs FLOPs, area ∝ parameters;
* ``statistics.csv|.md|.tex``, ``statistics_folds.csv``, ``comparisons.csv|.md|.tex``, ``calibration.csv``,
  ``stats/significance_{cohort}.png``, ``stats/calibration_{model}.png``: Harrell's and Uno's C, IBS,
  time-dependent AUC with bootstrap intervals, paired model comparisons, calibration
  (:mod:`mmsurv.report.stats`, :mod:`mmsurv.report.stats_report`);
* ``report.json``: the settings used and every file written (no timestamps: reruns are identical).

The returned dict maps a key (``cindex_last_md``, ``km_{cohort}_{model}``, ``km_grid_{model}``,
``bubble``, … ; PDFs as ``…_pdf``) to the path written.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd

from mmsurv.io import atomic_write_text
from mmsurv.report.collect import VARIANTS, collect_results
from mmsurv.report.efficiency import efficiency_frame
from mmsurv.report.figures import bubble_figure, bubble_points, km_figure, km_grid_figure, save_figure
from mmsurv.report.km import stratification_frame, stratify
from mmsurv.report.paper_figures import write_paper_figures
from mmsurv.report.papers import write_paper_tables
from mmsurv.report.settings import DEFAULT_REFERENCE_BAG_SIZE, MEDIAN_SPLITS
from mmsurv.report.stats import DEFAULT_N_BOOT, DEFAULT_SEED, compute_statistics
from mmsurv.report.stats_report import write_statistics
from mmsurv.report.tables import (
    DEFAULT_DDOF,
    OVERALL,
    models_frame,
    summarise_cindex,
    write_cindex_tables,
    write_csv,
    write_efficiency_tables,
    write_models_table,
)

log = logging.getLogger(__name__)


def build_report(results_dir: str | os.PathLike, cohorts: Sequence[str] | None, models: Sequence[str] | None,
                 out_dir: str | os.PathLike, *, folds: int | None = None,
                 reference_bag_size: int = DEFAULT_REFERENCE_BAG_SIZE, median_split: str = "fold_train",
                 model_params: Mapping | None = None, pdf: bool = False, km_variant: str = "last",
                 std_ddof: int = DEFAULT_DDOF, bootstrap: int = DEFAULT_N_BOOT,
                 bootstrap_seed: int = DEFAULT_SEED, papers: Sequence[str] = (),
                 external: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Write every table and figure of the report into ``out_dir``; return ``{key: path}``.

    ``cohorts``/``models`` None (or empty) means every one found under ``results_dir``;
    ``folds=K`` requires folds 0..K-1 everywhere. ``model_params`` (``{model: {hyper-parameter: value}}``)
    is used only for folds whose metrics.json lacks ``config.model_params``. ``bootstrap`` resamples
    (seeded by ``bootstrap_seed``) give the statistics' intervals and paired comparisons. ``papers``:
    the founding papers whose results tables are written beside ours (``papers/<paper>/table<N>.*``).
    ``external`` (external cohort → its training cohort): the external-validation section
    (:mod:`mmsurv.report.external`) from ``results_dir/<external>/<model>/predictions.tsv``.
    """
    if median_split not in MEDIAN_SPLITS:
        raise ValueError(f"median_split must be one of {', '.join(MEDIAN_SPLITS)}, got {median_split!r}")
    if km_variant not in VARIANTS:
        raise ValueError(f"km_variant must be one of {', '.join(VARIANTS)}, got {km_variant!r}")
    if reference_bag_size < 1:
        raise ValueError(f"reference_bag_size must be at least 1, got {reference_bag_size}")
    out = Path(out_dir)
    results = collect_results(results_dir, cohorts, models, folds=folds)
    log.info("report: %d cohort(s) × %d model(s), %d fold result(s) from %s", len(results.cohorts),
             len(results.models), len(results.folds), results.results_dir)

    paths: dict[str, Path] = {}
    statistics = compute_statistics(results, n_boot=bootstrap, seed=bootstrap_seed, variant="last")
    intervals = {(row.cohort, row.model): (row.cindex_fold_mean_low, row.cindex_fold_mean_high)
                 for row in statistics.table.itertuples()}
    for variant in VARIANTS:  # the statistics are of the last epoch's predictions: its table shows the intervals
        paths.update(write_cindex_tables(results, out, variant, std_ddof, intervals if variant == "last" else None,
                                         bootstrap))
    efficiency = efficiency_frame(results, reference_bag_size, model_params)
    paths.update(write_efficiency_tables(efficiency, out, reference_bag_size))
    paths.update(write_models_table(results, out))
    paths.update(_km_outputs(results, out, median_split=median_split, variant=km_variant, pdf=pdf))
    paths.update(write_statistics(statistics, out, pdf=pdf))

    last = summarise_cindex(results, "last", std_ddof)
    if papers:
        ours = pd.DataFrame([{"cohort": cohort, "model": model, "mean": last.mean.loc[model, cohort],
                              "std": last.std.loc[model, cohort]} for model in last.models for cohort in last.cohorts])
        base_models = dict(zip(*(models_frame(results)[column] for column in ("model", "base_model"))))
        paths.update(write_paper_tables(papers, out, ours, intervals, efficiency,
                                        summary=replace(last, intervals=intervals, n_boot=bootstrap),
                                        base_models=base_models))
        paths.update(write_paper_figures(papers, out, results, pdf=pdf, median_split=median_split,
                                         km_variant=km_variant))
    if external:
        from mmsurv.report.external import write_external

        paths.update(write_external(results.results_dir, out, external, results.models, n_boot=bootstrap,
                                    seed=bootstrap_seed, pdf=pdf))
    means = last.mean[OVERALL]
    figure = bubble_figure(bubble_points(means, efficiency), reference_bag_size=reference_bag_size, variant="last")
    paths.update(_named("bubble", save_figure(figure, out / "bubble_cindex_flops.png", pdf=pdf)))

    paths["report_json"] = out / "report.json"
    settings = {"results_dir": str(results_dir), "cohorts": list(results.cohorts), "models": list(results.models),
                "folds": sorted({f.fold for f in results.folds}), "reference_bag_size": int(reference_bag_size),
                "median_split": median_split, "km_variant": km_variant, "std_ddof": std_ddof, "pdf": pdf,
                "bootstrap": int(bootstrap), "bootstrap_seed": int(bootstrap_seed), "papers": list(papers),
                "external": dict(external or {})}
    document = {"settings": settings,
                "files": {key: os.path.relpath(path, out) for key, path in sorted(paths.items())}}
    atomic_write_text(paths["report_json"], json.dumps(document, indent=2) + "\n")
    log.info("report: wrote %d files into %s", len(paths), out)
    return paths


def _km_outputs(results, out: Path, *, median_split: str, variant: str, pdf: bool) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    all_strata = []
    for model in results.models:
        strata = [stratify(results, cohort, model, variant=variant, median_split=median_split)
                  for cohort in results.cohorts if results.get(cohort, model)]
        for strat in strata:
            written = save_figure(km_figure(strat), out / "km" / f"km_{strat.cohort}_{model}.png", pdf=pdf)
            paths.update(_named(f"km_{strat.cohort}_{model}", written))
        if strata and len(results.cohorts) > 1:  # with one cohort the grid would repeat km_{cohort}_{model}
            written = save_figure(km_grid_figure(strata), out / "km" / f"km_grid_{model}.png", pdf=pdf)
            paths.update(_named(f"km_grid_{model}", written))
        all_strata += strata
    paths["km_logrank_csv"] = out / "km_logrank.csv"
    write_csv(paths["km_logrank_csv"], stratification_frame(all_strata))
    return paths


def _named(key: str, written: list[Path]) -> dict[str, Path]:
    return {(key if path.suffix == ".png" else f"{key}_{path.suffix.lstrip('.')}"): path for path in written}
