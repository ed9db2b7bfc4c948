"""Statistics tables and figures of the report: metrics with intervals, model comparisons, significance, calibration.

Writes, from :func:`mmsurv.report.stats.compute_statistics`:

* ``statistics.csv|.md|.tex``: one row per cohort × model — fold mean ± std and pooled out-of-fold
  value with its 95 % bootstrap interval of Harrell's C, Uno's C (truncated at ``tau``), the IBS and
  the AUC at 12/36/60 months; blank cells have their reason in the note column;
* ``statistics_folds.csv``: the same metrics per fold;
* ``comparisons.csv|.md|.tex``: every model pair of a cohort — Δ c-index (A − B, pooled), its paired
  bootstrap interval and p, the corrected resampled t-test p over folds, both Holm-adjusted;
* ``calibration.csv``: predicted vs Kaplan–Meier observed survival at the horizon per risk group;
* ``stats/significance_{cohort}.png``: the significance matrix of a cohort;
* ``stats/calibration_{model}.png``: the calibration figure of a model (one panel per cohort).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm

from mmsurv.io import atomic_write_text
from mmsurv.report.collect import display_cohort, display_model
from mmsurv.report.figures import BASE_FONT, GRID_COLUMNS, new_figure, save_figure
from mmsurv.report.stats import AUC_HORIZONS, METRIC_LABELS, Statistics
from mmsurv.report.tables import _latex_table, latex_escape, write_csv

ALPHA = 0.05
TABLE_METRICS = ("cindex", "uno", "ibs", *(f"auc_{int(h)}" for h in AUC_HORIZONS))


def _interval(row, name: str) -> str:
    value = row[f"{name}_pooled"]
    if not np.isfinite(value):
        return ""
    low, high = row[f"{name}_low"], row[f"{name}_high"]
    interval = f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{value:.3f}{interval}"


def _fold(row, name: str) -> str:
    mean, std = row[f"{name}_fold_mean"], row[f"{name}_fold_std"]
    return f"{mean:.3f} ± {std:.3f}" if np.isfinite(mean) else ""


def statistics_display(stats: Statistics) -> tuple[list[str], list[list[str]]]:
    header = ["Cohort", "Model", "N (events)", "C-index folds", "C-index pooled [95% CI]",
              "Uno's C pooled [95% CI]", "Uno τ (mo)", "IBS folds", "IBS pooled [95% CI]",
              *(f"{METRIC_LABELS[f'auc_{int(h)}']} pooled [95% CI]" for h in AUC_HORIZONS), "Note"]
    rows = []
    for _, row in stats.table.iterrows():
        rows.append([display_cohort(row["cohort"]), display_model(row["model"]), f"{row['n']} ({row['events']})",
                     _fold(row, "cindex"), _interval(row, "cindex"), _interval(row, "uno"), f"{row['tau_months']:.1f}",
                     _fold(row, "ibs"), _interval(row, "ibs"),
                     *(_interval(row, f"auc_{int(h)}") for h in AUC_HORIZONS), row["note"]])
    return header, rows


def statistics_caption(stats: Statistics) -> str:
    return (f"Survival statistics of the out-of-fold predictions (last epoch): fold mean ± std (population std over folds) and "
            f"pooled value with a 95% bootstrap interval over patients ({stats.n_boot} resamples, seed {stats.seed}). "
            "IBS on a grid of the 10-80% quantiles of observed times; S(t) constant within a model's time bin; "
            "censoring distribution from the training fold (pooled: the whole cohort). Blank: not computable (see note).")


def comparisons_display(stats: Statistics) -> tuple[list[str], list[list[str]]]:
    header = ["Cohort", "Model A", "Model B", "Δ C-index (A−B) [95% CI]", "p bootstrap (Holm)",
              "Δ fold mean", "p corrected t-test (Holm)", "Note"]
    rows = []
    for _, row in stats.comparisons.iterrows():
        delta = "" if not np.isfinite(row["delta_cindex"]) else (
            f"{row['delta_cindex']:+.3f} [{row['delta_low']:+.3f}, {row['delta_high']:+.3f}]")
        rows.append([display_cohort(row["cohort"]), display_model(row["model_a"]), display_model(row["model_b"]), delta,
                     _p(row["p_bootstrap"], row["p_bootstrap_holm"]), _signed(row["fold_delta_mean"]),
                     _p(row["p_nadeau_bengio"], row["p_nadeau_bengio_holm"]), row["note"]])
    return header, rows


def _signed(value: float) -> str:
    return f"{value:+.3f}" if np.isfinite(value) else ""


def _p(p: float, adjusted: float) -> str:
    if not np.isfinite(p):
        return ""
    return f"{format_p(p)} ({format_p(adjusted)}){' *' if adjusted < ALPHA else ''}"


def format_p(p: float) -> str:
    """A p-value in 2 significant digits; below 0.001 as "<0.001" (a bootstrap p of 0 means below 1/resamples)."""
    return "<0.001" if p < 0.001 else f"{p:.2g}"


def comparisons_caption(stats: Statistics) -> str:
    return ("Paired comparisons of the models of each cohort: pooled Harrell c-index difference with its paired "
            f"bootstrap interval and two-sided p ({stats.n_boot} resamples of the same patients), and the corrected "
            "resampled t-test over folds (Nadeau & Bengio); Holm-adjusted p in parentheses over the pairs of a cohort, "
            f"* adjusted p < {ALPHA}.")


def _markdown(header, rows, caption: str) -> str:
    lines = [f"{caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _latex(header, rows, caption: str, label: str) -> str:
    body = [" & ".join(latex_escape(cell).replace("±", r"$\pm$").replace("Δ", r"$\Delta$").replace("−", "-")
                       .replace("τ", r"$\tau$") for cell in row) + r" \\" for row in rows]
    head = [latex_escape(cell).replace("Δ", r"$\Delta$").replace("−", "-").replace("τ", r"$\tau$") for cell in header]
    return _latex_table(head, body, caption=caption, label=label, align="l" * len(header))


def write_statistics(stats: Statistics, out: Path, *, pdf: bool = False) -> dict[str, Path]:
    """Every statistics table and figure; returns ``{key: path}``."""
    paths: dict[str, Path] = {}
    for key, frame in (("statistics_csv", stats.table), ("statistics_folds_csv", stats.folds),
                       ("comparisons_csv", stats.comparisons), ("calibration_csv", stats.calibration)):
        paths[key] = out / f"{key[:-4]}.csv"
        write_csv(paths[key], frame)
    for name, display, caption, label in (
            ("statistics", statistics_display, statistics_caption, "tab:statistics"),
            ("comparisons", comparisons_display, comparisons_caption, "tab:comparisons")):
        header, rows = display(stats)
        paths[f"{name}_md"] = out / f"{name}.md"
        atomic_write_text(paths[f"{name}_md"], _markdown(header, rows, caption(stats)))
        paths[f"{name}_tex"] = out / f"{name}.tex"
        atomic_write_text(paths[f"{name}_tex"], _latex(header, rows, caption(stats), label))
    for cohort in stats.table["cohort"].unique():
        written = save_figure(significance_figure(stats, cohort), out / "stats" / f"significance_{cohort}.png", pdf=pdf)
        paths.update(_keyed(f"significance_{cohort}", written))
    for model in stats.table["model"].unique():
        frame = stats.calibration[stats.calibration["model"] == model]
        written = save_figure(calibration_figure(frame, model), out / "stats" / f"calibration_{model}.png", pdf=pdf)
        paths.update(_keyed(f"calibration_{model}", written))
    return paths


def _keyed(key: str, written: list[Path]) -> dict[str, Path]:
    return {(key if path.suffix == ".png" else f"{key}_{path.suffix.lstrip('.')}"): path for path in written}


def significance_figure(stats: Statistics, cohort: str):
    """Models × models: colour = pooled Δ c-index (row − column); text = Holm-adjusted paired-bootstrap p."""
    models = list(stats.table.loc[stats.table["cohort"] == cohort, "model"])
    n = len(models)
    delta = np.full((n, n), np.nan)
    pvalue = np.full((n, n), np.nan)
    index = {m: i for i, m in enumerate(models)}
    np.fill_diagonal(delta, 0.0)
    for _, row in stats.comparisons[stats.comparisons["cohort"] == cohort].iterrows():
        i, j = index[row["model_a"]], index[row["model_b"]]
        delta[i, j], delta[j, i] = row["delta_cindex"], -row["delta_cindex"]
        pvalue[i, j] = pvalue[j, i] = row["p_bootstrap_holm"]
    size = max(3.5, 0.42 * n + 2.0)
    figure = new_figure(size + 1.0, size)
    ax = figure.add_subplot(1, 1, 1)
    limit = max(0.01, float(np.nanmax(np.abs(delta))) if n > 1 else 0.01)
    image = ax.imshow(delta, cmap=colormaps["RdBu_r"], norm=TwoSlopeNorm(0.0, -limit, limit))
    font = BASE_FONT if n <= 10 else max(4.0, BASE_FONT - 0.25 * (n - 10))
    for i in range(n):
        for j in range(n):
            if i != j and np.isfinite(pvalue[i, j]):
                text = format_p(pvalue[i, j]) + ("*" if pvalue[i, j] < ALPHA else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=font * 0.8,
                        fontweight="bold" if pvalue[i, j] < ALPHA else "normal")
    labels = [display_model(m) for m in models]
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=font)
    ax.set_yticks(range(n), labels, fontsize=font)
    ax.set_xlabel("model B", fontsize=BASE_FONT)
    ax.set_ylabel("model A", fontsize=BASE_FONT)
    colorbar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label("Δ c-index (A − B), pooled out-of-fold", fontsize=BASE_FONT)
    ax.set_title(f"{display_cohort(cohort)}: paired bootstrap, Holm-adjusted p (* < {ALPHA})", fontsize=BASE_FONT + 1)
    figure.tight_layout()
    return figure


def calibration_figure(frame: pd.DataFrame, model: str):
    """One panel per cohort: mean predicted S(horizon) vs Kaplan–Meier S(horizon) (95% band) per risk group."""
    cohorts = list(dict.fromkeys(frame["cohort"]))
    columns = min(GRID_COLUMNS, max(1, len(cohorts)))
    rows = max(1, math.ceil(len(cohorts) / columns))
    figure = new_figure(max(4.2, 3.5 * columns), 3.6 * rows)
    for k, cohort in enumerate(cohorts or [None]):
        ax = figure.add_subplot(rows, columns, k + 1)
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_aspect("equal")
        ax.set_xlabel("predicted survival (mean of risk quartile)", fontsize=BASE_FONT)
        ax.set_ylabel("observed survival (Kaplan-Meier)", fontsize=BASE_FONT)
        if cohort is None:
            ax.set_title(f"{display_model(model)}: no survival function", fontsize=BASE_FONT)
            continue
        part = frame[frame["cohort"] == cohort]
        errors = np.vstack([part["observed"] - part["observed_low"], part["observed_high"] - part["observed"]])
        ax.errorbar(part["predicted"], part["observed"], yerr=np.clip(errors, 0, None), marker="o", linestyle="-",
                    capsize=3)
        for _, row in part.iterrows():
            ax.annotate(f"Q{int(row['group'])}", (row["predicted"], row["observed"]), fontsize=BASE_FONT - 2,
                        xytext=(3, 3), textcoords="offset points")
        horizon = part["horizon_months"].iloc[0]
        ax.set_title(f"{display_cohort(cohort)}: S({horizon:.0f} mo)", fontsize=BASE_FONT)
    figure.suptitle(f"{display_model(model)}: calibration", fontsize=BASE_FONT + 1)
    figure.tight_layout()
    return figure
