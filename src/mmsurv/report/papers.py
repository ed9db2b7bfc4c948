"""Paper tables: each results table a founding paper prints, with this run's numbers beside them.

For whoever regenerates a paper (``results/report/papers/<paper>/table<N>.{md,csv,tex}``): every
row of the paper's table (:mod:`mmsurv.report.published`) with the published value, ours, the
difference and whether the published value lies inside our 95% interval. A row is matched to our
results by its model (a registered model, or for an ablation row the variant of the paper's preset
``config/papers/<paper>.yaml``) and cohort: c-index rows take our last-epoch mean ± std over folds
and the 95% bootstrap interval of that mean (the statistics' resamples); ``overall`` takes the mean
over the paper's cohorts when every one of them was run (else blank, as the paper's Overall is over
its own cohorts); parameter and FLOP rows take the efficiency table's count (FLOPs at the report's
reference bag size, which is not the paper's input: compare orders of magnitude only); peak-memory
rows (``vram_gb``) the folds' peak GPU memory, or on a CPU run the process's peak RSS, in GiB;
training-time rows (``train_hours``) the sum of the folds' training seconds per cohort; cohort rows
(CancerMoE Table 3) the patients validated over the folds (``cases``: every patient once; the paper
counts WSIs) and the genomic input width (``genomic_dim``). All of these average over the run's
cohorts where the paper's row is an average. A row whose
model or cohort was not run, or that names no model of the zoo, keeps our columns blank; nothing is
filled in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from mmsurv.io import atomic_write_text
from mmsurv.report.collect import display_model
from mmsurv.report.published import PUBLISHED_DIR, published_files, read_published
from mmsurv.report.tables import (
    CindexSummary,
    _latex_table,
    cindex_latex,
    cindex_markdown,
    cindex_summary_frame,
    latex_escape,
    write_csv,
)

# metric → (efficiency-frame column, scale) of our number; vram_gb is read from the peak memories
EFFICIENCY_METRICS = {"params": ("n_params", 1.0), "flops": ("flops_reference", 1.0), "vram_gb": (None, 1.0),
                      "train_hours": ("seconds_total_sum", 1 / 3600), "cases": ("val_patients", 1.0),
                      "genomic_dim": ("genomic_dim", 1.0)}
COMPARISON_COLUMNS = ["setting", "model", "cohort", "metric", "published", "published_std", "ours", "ours_std",
                      "ci_low", "ci_high", "difference", "inside_ci"]


# Papers whose texts print no results table (MMM's README, HDMoE's summary page): their folder holds
# this run's own tables of the preset, named for what they are, and nothing to compare with.
OURS_ONLY_PAPERS = {"mmm": "mmm", "hdmoe": "hdmoe"}  # paper → its model (the base of its ablations)
OURS_ONLY_TABLES = ("comparison", "ablation")


def shipped_papers() -> list[str]:
    """The papers whose published tables are shipped, e.g. ``["cancermoe", "survmamba"]``."""
    return sorted({path.stem.split("_table")[0] for path in published_files()})


def known_papers() -> list[str]:
    """Every paper ``report.papers`` accepts: the shipped ones and those with our tables only."""
    return sorted({*shipped_papers(), *OURS_ONLY_PAPERS})


def paper_table_files(papers: Iterable[str]) -> dict[str, list[str]]:
    """Paper → the names of its tables (``table1``, ...; ``comparison`` and ``ablation`` for a paper
    that prints none)."""
    wanted = set(papers)
    tables: dict[str, list[str]] = {}
    for path in sorted(published_files(), key=lambda p: (p.stem.split("_table")[0], int(p.stem.split("_table")[1]))):
        paper, number = path.stem.split("_table")
        if paper in wanted:
            tables.setdefault(paper, []).append(f"table{number}")
    for paper in sorted(wanted & set(OURS_ONLY_PAPERS)):
        tables[paper] = list(OURS_ONLY_TABLES)
    unknown = sorted(wanted - set(tables))
    if unknown:
        raise ValueError(f"report.papers: no tables of {', '.join(unknown)} (known: {', '.join(known_papers())})")
    return tables


def compare_table(published: pd.DataFrame, cindex: pd.DataFrame, intervals: Mapping[tuple[str, str], tuple[float, float]],
                  efficiency: pd.DataFrame) -> pd.DataFrame:
    """One published table beside ours. ``cindex``: our summary rows (cohort, model, mean, std);
    ``intervals``: (cohort, model) → 95% interval of the fold mean; ``efficiency``: the efficiency frame."""
    ours = {(row.cohort, row.model): (row.mean, row.std) for row in cindex.itertuples()}
    paper_cohorts = sorted(set(published["cohort"]) - {"overall", "average"})
    rows = []
    for row in published.itertuples():
        value, std, low, high = math.nan, math.nan, math.nan, math.nan
        if row.model and row.metric == "cindex":
            if row.cohort == "overall":
                means = [ours.get((cohort, row.model), (math.nan,))[0] for cohort in paper_cohorts]
                value = float(np.mean(means)) if means and all(np.isfinite(means)) else math.nan
            else:
                value, std = ours.get((row.cohort, row.model), (math.nan, math.nan))
                low, high = intervals.get((row.cohort, row.model), (math.nan, math.nan))
        elif row.model and row.metric in EFFICIENCY_METRICS and not efficiency.empty:
            value = efficiency_value(efficiency, row.model, row.cohort, row.metric)
        difference = value - row.value if np.isfinite(value) else math.nan
        inside = (bool(low <= row.value <= high) if np.isfinite(low) and np.isfinite(high) else None)
        rows.append({"setting": row.setting, "model": row.model, "cohort": row.cohort, "metric": row.metric,
                     "published": row.value, "published_std": row.std, "ours": value, "ours_std": std,
                     "ci_low": low, "ci_high": high, "difference": difference, "inside_ci": inside})
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


def efficiency_value(efficiency: pd.DataFrame, model: str, cohort: str, metric: str) -> float:
    """Our number of a cost or cohort row: the model's efficiency rows (one per cohort) of ``cohort``,
    or their mean over the cohorts for ``average``; NaN when the model was not run there."""
    rows = efficiency[efficiency["model"] == model]
    if cohort not in ("average", "overall"):
        rows = rows[rows["cohort"] == cohort]
    if rows.empty:
        return math.nan
    if metric == "vram_gb":  # the GPU's peak when the run had one, else the process's peak RSS
        peak = rows["peak_cuda_mb"].astype(float).where(rows["peak_cuda_mb"].notna(), rows["peak_rss_mb"].astype(float))
        values = peak / 1024.0
    else:
        column, scale = EFFICIENCY_METRICS[metric]
        values = rows[column].astype(float) * scale
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else math.nan


def _cell(value: float, std: float | None = None, metric: str = "cindex") -> str:
    if value is None or not np.isfinite(value):
        return ""
    if metric in ("params", "flops"):
        for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {prefix}"
        return f"{value:.3g}"
    if metric in ("cases", "genomic_dim"):
        return f"{value:,.0f}"
    text = f"{value:.3f}"
    return f"{text} ± {std:.3f}" if std is not None and np.isfinite(std) else text


def comparison_display(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["Setting", "Cohort", "Metric", "Published", "Ours", "95% CI", "Ours − published", "Published in CI"]
    rows = []
    for row in frame.itertuples():
        ci = f"[{row.ci_low:.3f}, {row.ci_high:.3f}]" if np.isfinite(row.ci_low) else ""
        inside = "" if row.inside_ci is None or (isinstance(row.inside_ci, float) and math.isnan(row.inside_ci)) \
            else ("yes" if row.inside_ci else "no")
        difference = _cell(row.difference, metric=row.metric) if np.isfinite(row.difference) else ""
        if difference and row.metric == "cindex" and not difference.startswith("-"):
            difference = f"+{difference}"
        rows.append([row.setting, row.cohort.upper() if row.cohort not in ("overall", "average") else row.cohort,
                     row.metric, _cell(row.published, row.published_std, row.metric),
                     _cell(row.ours, row.ours_std, row.metric), ci, difference, inside])
    return header, rows


def write_paper_tables(papers: Iterable[str], out_dir: str | os.PathLike, cindex: pd.DataFrame,
                       intervals: Mapping[tuple[str, str], tuple[float, float]], efficiency: pd.DataFrame,
                       summary: CindexSummary | None = None, base_models: Mapping[str, str] | None = None
                       ) -> dict[str, Path]:
    """``out_dir/papers/<paper>/<table>.{md,csv,tex}`` for each table of ``papers``: the shipped
    published tables beside ours, and for a paper without any (:data:`OURS_ONLY_PAPERS`) our
    ``comparison`` and ``ablation`` tables from ``summary`` (the c-index summary with its intervals)
    and ``base_models`` (model → registered model behind it)."""
    paths: dict[str, Path] = {}
    for paper, names in paper_table_files(papers).items():
        for name in names:
            base = Path(out_dir) / "papers" / paper / name
            key = f"paper_{paper}_{name}"
            paths[f"{key}_csv"], paths[f"{key}_md"], paths[f"{key}_tex"] = (base.with_suffix(ext) for ext in
                                                                               (".csv", ".md", ".tex"))
            if paper in OURS_ONLY_PAPERS:
                if summary is None:
                    raise ValueError(f"paper tables of {paper}: the c-index summary is needed")
                _write_ours_table(paper, name, summary, base_models or {}, paths, key)
                continue
            published = read_published(PUBLISHED_DIR / f"{paper}_{name}.csv")
            frame = compare_table(published, cindex, intervals, efficiency)
            number = name.removeprefix("table")
            caption = (f"{paper} Table {number}: published values beside this run's (last epoch; 95% bootstrap "
                       "interval of the fold mean). Blank: not run here.")
            header, rows = comparison_display(frame)
            md = [f"**{caption}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            md += ["| " + " | ".join(cells) + " |" for cells in rows]
            tex_rows = [" & ".join(latex_escape(cell).replace("±", r"$\pm$") for cell in cells) + r" \\" for cells in rows]
            write_csv(paths[f"{key}_csv"], frame)
            atomic_write_text(paths[f"{key}_md"], "\n".join(md) + "\n")
            atomic_write_text(paths[f"{key}_tex"], _latex_table(
                [latex_escape(h) for h in header], tex_rows, caption=caption, label=f"tab:{paper}-{name}",
                align="l" * len(header)))
    return paths


def ours_table_models(paper: str, table: str, models: Iterable[str], base_models: Mapping[str, str]) -> list[str]:
    """The rows of one of our tables of ``paper``, in the run's order: ``comparison`` the registered
    models of the run (no variants), the paper's model first; ``ablation`` the paper's model and every
    variant or sweep value of it."""
    own = OURS_ONLY_PAPERS[paper]
    models = list(models)
    if table == "comparison":
        rows = [model for model in models if base_models.get(model, model) == model]
    elif table == "ablation":
        rows = [model for model in models if base_models.get(model, model) == own]
    else:
        raise ValueError(f"{paper}: no table {table!r} (its tables: {', '.join(OURS_ONLY_TABLES)})")
    return sorted(rows, key=lambda model: model != own)


def _write_ours_table(paper: str, table: str, summary: CindexSummary, base_models: Mapping[str, str],
                      paths: dict[str, Path], key: str) -> None:
    rows = ours_table_models(paper, table, summary.models, base_models)
    part = replace(summary, models=tuple(rows), mean=summary.mean.loc[rows], std=summary.std.loc[rows],
                   n_folds=summary.n_folds.loc[rows])
    what = ("the preset's models" if table == "comparison" else
            f"{display_model(OURS_ONLY_PAPERS[paper])} and its ablation variants and sweep values")
    title = (f"{paper} {table}: {what}, this run's numbers only (the paper prints no results table, so "
             "nothing is set beside them).")
    write_csv(paths[f"{key}_csv"], cindex_summary_frame(part))
    atomic_write_text(paths[f"{key}_md"], f"**{title}**\n\n" + cindex_markdown(part))
    atomic_write_text(paths[f"{key}_tex"], cindex_latex(part).replace(
        f"tab:cindex_{part.variant}", f"tab:{paper}-{table}"))
