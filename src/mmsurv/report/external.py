"""The external cohorts' section of the report: each model's ensemble risk on patients it never saw.

For whoever validates a model outside its training cohort (``role: external`` cohorts, scored by
the workflow's ``predict_external`` rule, or ``mmsurv predict``): per external cohort × model, from
``results/<external>/<model>/predictions.tsv``, Harrell's c-index of the ensemble risk (the mean
over the fold models) with a 95% percentile bootstrap interval over the patients (seeded), and the
Kaplan-Meier curves of the predefined groups (high risk: ensemble risk ≥ the training cohort's
median out-of-fold risk, a cut-off fixed before the external patients are seen) with the log-rank
p. A cohort without survival columns is listed as scored only (its figure says so).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mmsurv.io import atomic_write_text
from mmsurv.report.km import RiskStratification, logrank
from mmsurv.report.stats import percentile_interval
from mmsurv.report.tables import write_csv
from mmsurv.train.metrics import concordance

COLUMNS = ["cohort", "trained_on", "model", "patients", "events", "cindex", "ci_low", "ci_high", "cutoff",
           "high_risk", "logrank_chisq", "logrank_p"]


def bootstrap_cindex(time: np.ndarray, censorship: np.ndarray, risk: np.ndarray, n_boot: int,
                     seed: int) -> tuple[float, float]:
    """95% percentile interval of Harrell's C over ``n_boot`` resamples of the patients (seeded)."""
    rng = np.random.default_rng(seed)
    values = np.array([concordance(time[index], censorship[index], risk[index])
                       for index in (rng.integers(0, len(time), len(time)) for _ in range(n_boot))])
    return percentile_interval(values)


def external_results(results_dir: str | os.PathLike, external: Mapping[str, str], models: Sequence[str], *,
                     n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, list[RiskStratification]]:
    """The section's table (one row per external cohort × model) and the stratifications to draw."""
    rows, strata = [], []
    for cohort, trained_on in external.items():
        for model in models:
            path = Path(results_dir) / cohort / model / "predictions.tsv"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the external cohort's predictions are missing")
            frame = pd.read_csv(path, sep="\t", dtype={"case_id": str})
            row = {"cohort": cohort, "trained_on": trained_on, "model": model, "patients": len(frame),
                   "cutoff": float(frame["cutoff"].iloc[0]) if len(frame) else float("nan"),
                   "high_risk": int((frame["group"] == "high").sum())}
            if {"survival_months", "censorship"} <= set(frame.columns):
                time = frame["survival_months"].to_numpy(dtype="float64")
                censorship = frame["censorship"].to_numpy(dtype="float64")
                risk = frame["risk"].to_numpy(dtype="float64")
                event = (censorship == 0).astype(int)
                low, high = bootstrap_cindex(time, censorship, risk, n_boot, seed)
                chisq, pvalue = logrank(event, time, frame["group"].to_numpy())
                row.update(events=int(event.sum()), cindex=concordance(time, censorship, risk), ci_low=low,
                           ci_high=high, logrank_chisq=chisq, logrank_p=pvalue)
                strata.append(RiskStratification(
                    cohort=cohort, model=model, variant="ensemble", median_split="training",
                    split_label=f"high risk ≥ {trained_on}'s median out-of-fold risk ({row['cutoff']:.3g})",
                    frame=pd.DataFrame({"case_id": frame["case_id"], "fold": "ensemble", "risk": risk, "time": time,
                                        "event": event, "group": frame["group"]}),
                    thresholds={"training": row["cutoff"]}, chisq=chisq, pvalue=pvalue))
            else:  # scored only: the figure says so (the workflow declares one per cohort × model)
                strata.append(RiskStratification(
                    cohort=cohort, model=model, variant="ensemble", median_split="training", split_label="scored only",
                    frame=pd.DataFrame(columns=["case_id", "fold", "risk", "time", "event", "group"]),
                    thresholds={"training": row["cutoff"]}, chisq=float("nan"), pvalue=float("nan")))
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS), strata


def external_markdown(table: pd.DataFrame, n_boot: int) -> str:
    """The section as a Markdown table with its caption."""
    from mmsurv.report.collect import display_cohort, display_model
    from mmsurv.report.km import format_pvalue

    lines = [f"**External validation.** Harrell's c-index of the ensemble risk (mean over the fold models of the "
             f"training cohort) with its 95% bootstrap interval ({n_boot} resamples of the patients); the "
             "high-risk group is fixed by the training cohort's median out-of-fold risk; log-rank p between "
             "the groups. Scored only: no survival in the table.", "",
             "| Cohort | Trained on | Model | Patients (events) | c-index [95% CI] | High risk | Log-rank |",
             "|---|---|---|---|---|---|---|"]
    for row in table.itertuples():
        if pd.notna(row.cindex):
            cindex = f"{row.cindex:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"
            events, pvalue = f"{row.patients} ({row.events})", format_pvalue(row.logrank_p)
        else:
            cindex, events, pvalue = "scored only", f"{row.patients}", ""
        lines.append(f"| {display_cohort(row.cohort)} | {display_cohort(row.trained_on)} | {display_model(row.model)} "
                     f"| {events} | {cindex} | {row.high_risk} | {pvalue} |")
    return "\n".join(lines) + "\n"


def _scored_only_figure(strat: RiskStratification, table: pd.DataFrame):
    """The figure of a cohort without survival: its patients per predefined risk group."""
    from mmsurv.report.collect import display_cohort, display_model
    from mmsurv.report.figures import BASE_FONT, new_figure

    row = table[(table["cohort"] == strat.cohort) & (table["model"] == strat.model)].iloc[0]
    figure = new_figure(6.4, 3.0)
    ax = figure.add_subplot(1, 1, 1)
    ax.axis("off")
    ax.text(0.5, 0.5, f"{display_model(strat.model)} on {display_cohort(strat.cohort)}: {row['patients']} patients "
            f"scored, {row['high_risk']} high risk\n(no survival in the table: no Kaplan-Meier curve)",
            ha="center", va="center", fontsize=BASE_FONT)
    return figure


def write_external(results_dir: str | os.PathLike, out_dir: str | os.PathLike, external: Mapping[str, str],
                   models: Sequence[str], *, n_boot: int = 1000, seed: int = 0, pdf: bool = False) -> dict[str, Path]:
    """``external.csv``, ``external.md`` and ``km/external_<cohort>_<model>.png`` into ``out_dir``."""
    from mmsurv.report.figures import km_figure, save_figure

    out = Path(out_dir)
    table, strata = external_results(results_dir, external, models, n_boot=n_boot, seed=seed)
    paths = {"external_csv": out / "external.csv", "external_md": out / "external.md"}
    write_csv(paths["external_csv"], table)
    atomic_write_text(paths["external_md"], external_markdown(table, n_boot))
    for strat in strata:
        figure = km_figure(strat) if len(strat.frame) else _scored_only_figure(strat, table)
        for path in save_figure(figure, out / "km" / f"external_{strat.cohort}_{strat.model}.png", pdf=pdf):
            paths[f"km_external_{strat.cohort}_{strat.model}_{path.suffix[1:]}"] = path
    return paths
