"""Paper tables: c-index (Table-1 style) and efficiency (Table-2 style) as CSV, Markdown and LaTeX.

For the report builder and for authors pasting results into a manuscript.

c-index table (as in MCAT/MOTCat/MMM/HDMoE Table 1): models as rows, cohorts as columns, each
cell "mean ± std" of the validation c-index over the cross-validation folds (3 decimals), and an
"Overall" column = the mean over cohorts of the cohort means (no std, as MCAT). The std is the
POPULATION std (``ddof=0``), which is what MCAT's evaluation notebook computes
(``np.std(summary['val_cindex'])`` in ``Evaluation.ipynb`` of mahmoodlab/MCAT); pass ``ddof=1``
for the sample std. Per column, the best mean is bold and the second best underlined (Markdown:
``**…**`` and ``<u>…</u>``; LaTeX: ``\\textbf`` and ``\\underline``); ranks are taken on the
displayed (rounded) means, so tied displayed values get the same mark. The last-epoch and
best-epoch variants go to separate files whose caption line says which one it is.

Efficiency table: one row per model × cohort with parameters, FLOPs per patient at the reference
bag size and at the cohort's median bag size, training seconds per epoch (mean ± std over folds)
and peak memory (max over folds); see :mod:`mmsurv.report.efficiency` for how it is measured.

Every file is written atomically; the same inputs give byte-identical files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from mmsurv.io import atomic_path, atomic_write_text
from mmsurv.models.inputs import MODALITIES
from mmsurv.report.collect import ResultSet, display_cohort, display_model

DECIMALS = 3
DEFAULT_DDOF = 0  # MCAT: np.std over the 5 folds
VARIANT_TEXT = {
    "last": "last epoch (the model after the final training epoch; MCAT's 'latest' summary)",
    "best": "best epoch (the epoch with the best selection metric)",
}
OVERALL = "overall"


@dataclass(frozen=True)
class CindexSummary:
    """Mean and std of the c-index per model × cohort, plus the overall column."""

    variant: str
    cohorts: tuple[str, ...]
    models: tuple[str, ...]
    mean: pd.DataFrame  # models × (cohorts + overall)
    std: pd.DataFrame  # models × cohorts
    n_folds: pd.DataFrame  # models × cohorts (folds with a finite c-index)
    ddof: int
    selected_on: tuple[str, ...]  # best_selected_on values seen (best variant)
    modalities: Mapping[str, str]
    # (cohort, model) → 95% bootstrap interval of the fold mean (mmsurv.report.stats), when computed
    intervals: Mapping[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    n_boot: int | None = None


def summarise_cindex(results: ResultSet, variant: str, ddof: int = DEFAULT_DDOF) -> CindexSummary:
    """Mean ± std over folds of ``variant``'s c-index for every model × cohort, and the overall mean."""
    long = results.cindex_frame()
    long = long[long["variant"] == variant]
    cohorts, models = list(results.cohorts), list(results.models)
    mean = pd.DataFrame(np.nan, index=models, columns=[*cohorts, OVERALL])
    std = pd.DataFrame(np.nan, index=models, columns=cohorts)
    count = pd.DataFrame(0, index=models, columns=cohorts)
    for (cohort, model), group in long.groupby(["cohort", "model"], sort=False):
        values = group["cindex"].to_numpy(dtype="float64")
        values = values[np.isfinite(values)]
        count.loc[model, cohort] = values.size
        if values.size:
            mean.loc[model, cohort] = float(values.mean())
            std.loc[model, cohort] = float(values.std(ddof=ddof)) if values.size > ddof else float("nan")
    for model in models:
        cohort_means = mean.loc[model, cohorts].to_numpy(dtype="float64")
        finite = cohort_means[np.isfinite(cohort_means)]
        mean.loc[model, OVERALL] = float(finite.mean()) if finite.size == len(cohorts) else float("nan")
    selected = tuple(sorted({str(f.metrics.get("best_selected_on")) for f in results.folds
                             if f.metrics.get("best_selected_on") is not None}))
    return CindexSummary(variant=variant, cohorts=tuple(cohorts), models=tuple(models), mean=mean, std=std,
                         n_folds=count, ddof=ddof, selected_on=selected,
                         modalities={model: results.modality(model) for model in models})


def rank_marks(values: Mapping[str, float], decimals: int = DECIMALS) -> dict[str, str | None]:
    """``"best"`` for the highest displayed value, ``"second"`` for the next distinct one, else None."""
    rounded = {key: round(value, decimals) for key, value in values.items() if value is not None and np.isfinite(value)}
    distinct = sorted(set(rounded.values()), reverse=True)
    marks: dict[str, str | None] = {key: None for key in values}
    for key, value in rounded.items():
        if distinct and value == distinct[0]:
            marks[key] = "best"
        elif len(distinct) > 1 and value == distinct[1]:
            marks[key] = "second"
    return marks


def column_marks(summary: CindexSummary) -> dict[str, dict[str, str | None]]:
    """Per column (cohorts + overall): model → best/second/None."""
    return {column: rank_marks(summary.mean[column].to_dict()) for column in summary.mean.columns}


def cindex_caption(summary: CindexSummary) -> str:
    """One-line caption naming the variant, the fold count and the std convention."""
    folds = sorted(set(summary.n_folds.to_numpy().ravel().tolist()))
    fold_text = f"{folds[0]}" if len(folds) == 1 else f"{min(folds)}–{max(folds)}"
    std_text = "population std, ddof=0, as MCAT" if summary.ddof == 0 else f"sample std, ddof={summary.ddof}"
    text = (f"Validation c-index, {VARIANT_TEXT[summary.variant]}: mean ± std over {fold_text} cross-validation "
            f"folds ({std_text}); Overall = mean of the cohort means. Best in bold, second best underlined.")
    if summary.intervals:
        text += (f" [a, b]: 95% bootstrap interval of the fold mean ({summary.n_boot} resamples of the patients, "
                 f"pairs compared within folds; Overall has none).")
    if summary.variant == "best" and "val" in summary.selected_on:
        text += (" Note: in some folds the best epoch was selected on the validation fold itself, so these "
                 "values are optimistic.")
    return text


def format_cell(mean: float, std: float | None = None, decimals: int = DECIMALS) -> str:
    """``0.624 ± 0.034`` (or ``0.624`` without std, ``–`` when missing)."""
    if mean is None or not np.isfinite(mean):
        return "–"
    if std is None:
        return f"{mean:.{decimals}f}"
    std_text = f"{std:.{decimals}f}" if np.isfinite(std) else "n/a"
    return f"{mean:.{decimals}f} ± {std_text}"


def _cells(summary: CindexSummary, model: str) -> list[tuple[str, str | None]]:
    marks = column_marks(summary)
    cells = []
    for column in summary.mean.columns:
        std = None if column == OVERALL else summary.std.loc[model, column]
        text = format_cell(summary.mean.loc[model, column], std)
        low, high = summary.intervals.get((column, model), (float("nan"), float("nan")))
        if np.isfinite(low) and np.isfinite(high):
            text += f" [{low:.{DECIMALS}f}, {high:.{DECIMALS}f}]"
        cells.append((text, marks[column][model]))
    return cells


def _model_label(summary: CindexSummary, model: str) -> str:
    known = MODALITIES.get(summary.modalities.get(model, ""))
    modality = known.paper_label if known else ""
    return f"{display_model(model)} ({modality})" if modality else display_model(model)


def cindex_markdown(summary: CindexSummary) -> str:
    """Markdown table with a caption line above it."""
    header = ["Model", *(display_cohort(c) for c in summary.cohorts), "Overall"]
    lines = [f"**Table: c-index ({summary.variant} epoch).** {cindex_caption(summary)}", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---", *[":---:"] * (len(header) - 1)]) + "|"]
    for model in summary.models:
        cells = [_md_mark(text, mark) for text, mark in _cells(summary, model)]
        lines.append("| " + " | ".join([_model_label(summary, model), *cells]) + " |")
    return "\n".join(lines) + "\n"


def cindex_latex(summary: CindexSummary) -> str:
    """LaTeX ``table`` (booktabs) with ``\\caption`` and a label ``tab:cindex_{variant}``."""
    header = ["Model", *(display_cohort(c) for c in summary.cohorts), "Overall"]
    rows = []
    for model in summary.models:
        cells = [_tex_mark(text.replace("±", r"$\pm$").replace("–", "--"), mark) for text, mark in _cells(summary, model)]
        rows.append(" & ".join([latex_escape(_model_label(summary, model)), *cells]) + r" \\")
    return _latex_table(header, rows, caption=cindex_caption(summary), label=f"tab:cindex_{summary.variant}",
                        align="l" + "c" * (len(header) - 1))


def cindex_summary_frame(summary: CindexSummary) -> pd.DataFrame:
    """Long summary: cohort, model, n_folds, mean, std (cohort ``overall``: mean of cohort means)."""
    rows = []
    for model in summary.models:
        for cohort in summary.cohorts:
            low, high = summary.intervals.get((cohort, model), (float("nan"), float("nan")))
            rows.append({"variant": summary.variant, "cohort": cohort, "model": model,
                         "n_folds": int(summary.n_folds.loc[model, cohort]), "mean": summary.mean.loc[model, cohort],
                         "std": summary.std.loc[model, cohort], "ddof": summary.ddof, "ci_low": low, "ci_high": high})
        rows.append({"variant": summary.variant, "cohort": OVERALL, "model": model, "n_folds": None,
                     "mean": summary.mean.loc[model, OVERALL], "std": None, "ddof": summary.ddof,
                     "ci_low": float("nan"), "ci_high": float("nan")})
    return pd.DataFrame(rows)


def write_cindex_tables(results: ResultSet, out_dir: str | os.PathLike, variant: str,
                        ddof: int = DEFAULT_DDOF, intervals: Mapping[tuple[str, str], tuple[float, float]] | None = None,
                        n_boot: int | None = None) -> dict[str, Path]:
    """Write ``cindex_{variant}.csv`` (per fold, long), ``cindex_{variant}_summary.csv``, ``.md`` and ``.tex``;
    ``intervals`` ((cohort, model) → 95% interval of the fold mean, from ``n_boot`` resamples) join the cells."""
    out = Path(out_dir)
    summary = replace(summarise_cindex(results, variant, ddof), intervals=dict(intervals or {}), n_boot=n_boot)
    per_fold = results.cindex_frame()
    per_fold = per_fold[per_fold["variant"] == variant].reset_index(drop=True)
    paths = {
        f"cindex_{variant}_csv": out / f"cindex_{variant}.csv",
        f"cindex_{variant}_summary_csv": out / f"cindex_{variant}_summary.csv",
        f"cindex_{variant}_md": out / f"cindex_{variant}.md",
        f"cindex_{variant}_tex": out / f"cindex_{variant}.tex",
    }
    write_csv(paths[f"cindex_{variant}_csv"], per_fold)
    write_csv(paths[f"cindex_{variant}_summary_csv"], cindex_summary_frame(summary))
    atomic_write_text(paths[f"cindex_{variant}_md"], cindex_markdown(summary))
    atomic_write_text(paths[f"cindex_{variant}_tex"], cindex_latex(summary))
    return paths


# --- efficiency -------------------------------------------------------------------------------

def efficiency_caption(reference_bag_size: int) -> str:
    return (f"Model size and cost: trainable parameters; forward FLOPs per patient (torch.utils.flop_counter: "
            f"matrix products, 2 FLOPs per multiply-add; papers counting with thop/fvcore report multiply-adds, "
            f"the MACs column, = FLOPs / 2) at the reference bag size of {reference_bag_size:,} patches "
            f"and at the cohort's median bag size (patches per patient); training seconds per epoch (mean ± std over "
            f"folds); peak memory (max over folds; process RSS, CUDA when trained on a GPU). Genomic-only models do "
            f"not read the bag, so their FLOPs do not depend on it. No WSI: validation patients (over all folds) "
            f"without any WSI feature file, who were scored on an all-zero bag (– for genomic-only models).")


def format_count(value: float | None, unit: str = "") -> str:
    """Human-readable count: ``4.49 M``, ``2.15 G``, ``512 k``; ``–`` when missing."""
    if value is None or not np.isfinite(value):
        return "–"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {prefix}{unit}".rstrip()
    return f"{value:.3g} {unit}".rstrip()


def _number(value, decimals: int = 0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:,.{decimals}f}"


def _half(value):
    """Multiply-adds from FLOPs (flop_counter counts 2 per multiply-add); missing stays missing."""
    return None if value is None or not np.isfinite(value) else value / 2


def efficiency_display(frame: pd.DataFrame, reference_bag_size: int) -> tuple[list[str], list[list[str]]]:
    """Header and rows (strings) of the efficiency table."""
    header = ["Model", "Cohort", "Params", f"FLOPs @ {reference_bag_size:,}", f"MACs @ {reference_bag_size:,}",
              "Median bag", "FLOPs @ median", "s / epoch", "Peak RSS (MB)", "Peak CUDA (MB)", "No WSI"]
    rows = []
    for row in frame.itertuples(index=False):
        seconds = "–" if not np.isfinite(row.seconds_per_epoch_mean) else (
            f"{row.seconds_per_epoch_mean:.2f} ± {row.seconds_per_epoch_std:.2f}"
            if np.isfinite(row.seconds_per_epoch_std) else f"{row.seconds_per_epoch_mean:.2f}")
        rows.append([display_model(row.model), display_cohort(row.cohort), format_count(row.n_params),
                     format_count(row.flops_reference), format_count(_half(row.flops_reference)),
                     _number(row.median_bag_size), format_count(row.flops_median),
                     seconds, _number(row.peak_rss_mb), _number(row.peak_cuda_mb), _without_features(row)])
    return header, rows


def _without_features(row) -> str:
    """``k / n`` validation patients without WSI features; ``–`` for genomic-only models or no count."""
    count, total = row.val_without_features, row.val_patients
    if row.modality == "omic" or count is None or total is None or not np.isfinite(count) or not np.isfinite(total):
        return "–"
    return f"{int(count)} / {int(total)}"


def efficiency_markdown(frame: pd.DataFrame, reference_bag_size: int) -> str:
    header, rows = efficiency_display(frame, reference_bag_size)
    lines = [f"**Table: efficiency.** {efficiency_caption(reference_bag_size)}", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---", "---", *["---:"] * (len(header) - 2)]) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def efficiency_latex(frame: pd.DataFrame, reference_bag_size: int) -> str:
    header, rows = efficiency_display(frame, reference_bag_size)
    body = [" & ".join(latex_escape(cell).replace("±", r"$\pm$").replace("–", "--") for cell in row) + r" \\"
            for row in rows]
    return _latex_table([latex_escape(h) for h in header], body, caption=efficiency_caption(reference_bag_size),
                        label="tab:efficiency", align="ll" + "r" * (len(header) - 2))


def write_efficiency_tables(frame: pd.DataFrame, out_dir: str | os.PathLike, reference_bag_size: int) -> dict[str, Path]:
    """Write ``efficiency.csv`` (raw numbers), ``efficiency.md`` and ``efficiency.tex``."""
    out = Path(out_dir)
    paths = {"efficiency_csv": out / "efficiency.csv", "efficiency_md": out / "efficiency.md",
             "efficiency_tex": out / "efficiency.tex"}
    write_csv(paths["efficiency_csv"], frame)
    atomic_write_text(paths["efficiency_md"], efficiency_markdown(frame, reference_bag_size))
    atomic_write_text(paths["efficiency_tex"], efficiency_latex(frame, reference_bag_size))
    return paths


# --- helpers ----------------------------------------------------------------------------------

def write_csv(path: Path, frame: pd.DataFrame) -> None:
    """CSV with fixed float formatting (deterministic)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g", lineterminator="\n")


_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters in plain text."""
    return "".join(_LATEX_SPECIAL.get(char, char) for char in str(text))


def _md_mark(text: str, mark: str | None) -> str:
    if mark == "best":
        return f"**{text}**"
    if mark == "second":
        return f"<u>{text}</u>"
    return text


def _tex_mark(text: str, mark: str | None) -> str:
    if mark == "best":
        return rf"\textbf{{{text}}}"
    if mark == "second":
        return rf"\underline{{{text}}}"
    return text


def _latex_table(header: Sequence[str], rows: Sequence[str], *, caption: str, label: str, align: str) -> str:
    caption_tex = latex_escape(caption).replace("±", r"$\pm$").replace("–", "--")
    lines = [f"% {caption}", r"% requires \usepackage{booktabs,graphicx}", r"\begin{table}[t]", r"\centering",
             rf"\caption{{{caption_tex}}}", rf"\label{{{label}}}", r"\resizebox{\linewidth}{!}{%",
             rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule", *rows,
             r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def models_frame(results: ResultSet) -> pd.DataFrame:
    """One row per model of the report: table name, registry name, base model (variants), label,
    inputs and the paper it implements, as each model's metrics.json recorded them."""
    rows = []
    for model in results.models:
        metrics = next((f.metrics for f in results.folds if f.model == model), {})
        rows.append({"model": model, "display_name": metrics.get("display_name") or display_model(model),
                     "base_model": metrics.get("base_model", model), "label": metrics.get("label", ""),
                     "inputs": " ".join(metrics.get("inputs") or []), "citation": metrics.get("citation", "")})
    return pd.DataFrame(rows, columns=["model", "display_name", "base_model", "label", "inputs", "citation"])


def write_models_table(results: ResultSet, out_dir: str | os.PathLike) -> dict[str, Path]:
    """``models.csv`` and ``models.md``: which paper each row of the tables is."""
    out = Path(out_dir)
    frame = models_frame(results)
    paths = {"models_csv": out / "models.csv", "models_md": out / "models.md"}
    write_csv(paths["models_csv"], frame)
    lines = ["| Model | Name | Modality | Inputs | Reference |", "| --- | --- | --- | --- | --- |"]
    for row in frame.itertuples(index=False):
        name = row.model if row.base_model == row.model else f"{row.model} (variant of {row.base_model})"
        lines.append(f"| {row.display_name} | {name} | {row.label} | {row.inputs} | {row.citation} |")
    atomic_write_text(paths["models_md"], "\n".join(lines) + "\n")
    return paths
