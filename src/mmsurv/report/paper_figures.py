"""The founding papers' analysis figures, drawn from what each fold recorded while it trained.

For the report builder (``results/report/papers/<paper>/figure<N>.png``): a model reports its
measurements through ``ModelOutput.measures`` (see :mod:`mmsurv.models.base`), the training loop
writes their validation means into each fold's ``metrics.json`` (``measures.val_last``), and the
figures here read them back; nothing is retrained.

* **SurvMamba Figure 3** (bidirectional against unidirectional Mamba): per cohort, the c-index
  (last epoch, mean ± std over folds) of ``survmamba`` and its unidirectional variant
  ``survmamba_uni`` (config/papers/survmamba.yaml).
* **SurvMamba Figure 4** (Kaplan-Meier per cohort, log-rank p): SurvMamba's low/high-risk curves,
  one panel per cohort, split as the report's Kaplan-Meier figures (``report.median_split``,
  ``report.km_variant``).
* **CancerMoE Figure 3** (attention sparsity; the paper shows one patient's kept elements and its
  attention on the slide): per cohort, where the elements that the first layer's sparsified
  attention keeps lie, as the share of kept elements per (query, key) modality block — cls, genomic,
  WSI — beside each block's share of the map (what a random choice would keep) and the kept share of
  all elements (``sparsity/*`` measures, validation of the last epoch, mean over folds). The
  per-patient attention on the slide is the heatmap work's, not a table of numbers.
* **CancerMoE Figure 4a** ("the expert selection across different modalities"): for each cohort,
  the share of each modality's top-k expert choices that went to each expert in the last SMoE
  layer (the measure ``route/<modality>/layer<l>``), on the validation patients of the last
  epoch, mean over folds; one bar per expert and modality (WSI, genomic; the class token too).
  The paper's figure is of BRCA; ours has one panel per cohort of the run.
* **CancerMoE Figure 4b** (gradient conflict between modalities, CancerMoE against its dense
  counterpart): per cohort and epoch, the cosine between the WSI-only and the genomic-only gradients
  on the last layer's MLP (``train_grad_conflict/last`` of each fold's ``training_log.tsv``, written
  when the model trains with ``conflict_every`` > 0; how the unimodal gradients are made is in
  :mod:`mmsurv.models.cancermoe`), for ``cancermoe`` and ``cancermoe_wo_smoe``; mean over folds,
  band = min-max. The paper's panel is of BRCA and does not say over which steps it collects.
* **HDMoE and MMM ``experts``** (their texts print no results figure): the same panels for HDMoE's
  first-level MoEs (top-1 choices of the genomic and WSI class tokens) and for MMM's second GME
  (its soft expert weights per modality, which sum to 1 like a share).

A figure whose model is in the run but whose folds recorded no such measure (results of an older
version) is still written, saying so, so the workflow's declared output exists.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmsurv.models.inputs import MODALITIES

if TYPE_CHECKING:
    from mmsurv.report.collect import ResultSet

# The figure builders import the report's plotting modules when they run: the workflow reads
# paper_figure_files() while parsing, which must import neither torch nor matplotlib.

ROUTE = re.compile(r"^route/(?P<modality>[a-z]+)/layer(?P<layer>\d+)$")
ROUTE_MODALITIES = {"wsi": ("WSI tokens", MODALITIES["path"].colour),
                    "genomic": ("genomic tokens", MODALITIES["omic"].colour),
                    "cls": ("class token", "0.6")}


def route_shares(results: ResultSet, cohort: str, model: str) -> tuple[dict[str, np.ndarray], int | None, int]:
    """(modality → mean share per expert over the folds, the layer shown, folds with the measure): the
    last routed layer that reports a modality of :data:`ROUTE_MODALITIES` (HDMoE's fusion MoE, whose
    tokens mix the modalities, is not shown)."""
    per_modality: dict[str, list[np.ndarray]] = {}
    layer_shown = None
    folds = 0
    for fold in results.get(cohort, model):
        measures = (fold.metrics.get("measures") or {}).get("val_last") or {}
        routes = {(m["modality"], int(m["layer"])): value for name, value in measures.items()
                  if (m := ROUTE.match(name)) and m["modality"] in ROUTE_MODALITIES}
        if not routes:
            continue
        last = max(layer for _, layer in routes)
        layer_shown = last if layer_shown is None else layer_shown
        folds += 1
        for (modality, layer), value in routes.items():
            if layer == last:
                per_modality.setdefault(modality, []).append(np.asarray(value, dtype="float64"))
    return {m: np.mean(np.vstack(v), axis=0) for m, v in per_modality.items()}, layer_shown, folds


def survmamba_figure3(results: ResultSet, models: tuple[str, ...], **_):
    """Bars per cohort: the c-index of SurvMamba and of its unidirectional variant (mean ± std over folds)."""
    from mmsurv.report.collect import display_cohort
    from mmsurv.report.figures import BASE_FONT, new_figure

    cohorts = [c for c in results.cohorts if all(results.get(c, m) for m in models)]
    figure = new_figure(max(6.0, 1.4 * len(cohorts) + 2.5), 3.8)
    ax = figure.add_subplot(1, 1, 1)
    labels = {"survmamba": ("bidirectional (SurvMamba)", MODALITIES["multimodal"].colour),
              "survmamba_uni": ("unidirectional", "0.55")}
    width = 0.8 / len(models)
    x = np.arange(len(cohorts))
    for position, model in enumerate(models):
        values = [[f.cindex("last") for f in results.get(c, model)] for c in cohorts]
        means = [float(np.nanmean(v)) for v in values]
        stds = [float(np.nanstd(v)) for v in values]
        label, color = labels.get(model, (model, None))
        ax.bar(x + (position - (len(models) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=label,
               color=color)
    ax.set_xticks(x, [display_cohort(c) for c in cohorts], fontsize=BASE_FONT)
    ax.set_ylabel("c-index (last epoch, mean ± std over folds)", fontsize=BASE_FONT - 1)
    ax.set_ylim(0.3, 1.0)
    ax.axhline(0.5, color="0.7", lw=0.8, ls="--")
    ax.legend(fontsize=BASE_FONT - 1, frameon=False, loc="upper left")
    ax.set_title("SurvMamba Figure 3: bidirectional against unidirectional", fontsize=BASE_FONT + 1)
    figure.tight_layout()
    return figure


def survmamba_figure4(results: ResultSet, models: tuple[str, ...], *, median_split: str = "pooled",
                      km_variant: str = "last", **_):
    """SurvMamba's Kaplan-Meier panels across the run's cohorts, with log-rank p."""
    from mmsurv.report.figures import km_grid_figure
    from mmsurv.report.km import stratify

    model = models[0]
    strata = [stratify(results, cohort, model, variant=km_variant, median_split=median_split)
              for cohort in results.cohorts if results.get(cohort, model)]
    return km_grid_figure(strata)


def cancermoe_figure4a(results: ResultSet, models: tuple[str, ...], **_):
    """One panel per cohort: each expert's share of each modality's selections (see the module docstring)."""
    return expert_selection_figure(results, models, title="CancerMoE: expert selection per modality (Figure 4a)")


SPARSITY_BLOCKS = ("cls", "genomic", "WSI")


def sparsity_blocks(results: ResultSet, cohort: str, model: str) -> tuple[np.ndarray, np.ndarray, float, int] | None:
    """(kept shares 3×3, area shares 3×3, kept fraction, folds) of the first layer's sparsified
    attention, validation of the last epoch, mean over folds; None when no fold recorded them."""
    kept, area, fraction = [], [], []
    for fold in results.get(cohort, model):
        measures = (fold.metrics.get("measures") or {}).get("val_last") or {}
        if "sparsity/kept_blocks" in measures:
            kept.append(np.asarray(measures["sparsity/kept_blocks"], dtype="float64").reshape(3, 3))
            area.append(np.asarray(measures["sparsity/block_area"], dtype="float64").reshape(3, 3))
            fraction.append(float(np.ravel(measures["sparsity/kept_fraction"])[0]))
    if not kept:
        return None
    return np.mean(kept, axis=0), np.mean(area, axis=0), float(np.mean(fraction)), len(kept)


def cancermoe_figure3(results: ResultSet, models: tuple[str, ...], **_):
    """One panel per cohort: where the first layer's kept attention elements lie, per query × key
    modality block, against each block's share of the map (see the module docstring)."""
    from mmsurv.report.collect import display_cohort
    from mmsurv.report.figures import BASE_FONT, new_figure

    model = models[0]
    cohorts = [c for c in results.cohorts if results.get(c, model)]
    columns = max(1, min(3, len(cohorts)))
    rows = max(1, math.ceil(len(cohorts) / columns))
    figure = new_figure(max(5.6, 4.4 * columns), 4.0 * rows + 0.9)
    figure.suptitle("CancerMoE: attention sparsity of the first layer (Figure 3)", fontsize=BASE_FONT + 2)
    for index, cohort in enumerate(cohorts or [""]):
        ax = figure.add_subplot(rows, columns, index + 1)
        found = sparsity_blocks(results, cohort, model) if cohort else None
        if found is None:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{display_cohort(cohort) if cohort else 'no cohort'}:\nno sparsity measurements\n"
                    "in these results (retrain to record them)", ha="center", va="center", fontsize=BASE_FONT)
            continue
        kept, area, fraction, folds = found
        image = ax.imshow(kept, cmap="Purples", vmin=0, vmax=1)
        for (i, j), value in np.ndenumerate(kept):
            ax.text(j, i, f"{100 * value:.1f}%\n({100 * area[i, j]:.1f}%)", ha="center", va="center",
                    fontsize=BASE_FONT - 2, color="white" if value > 0.55 else "black")
        ax.set_xticks(range(3), SPARSITY_BLOCKS, fontsize=BASE_FONT - 1)
        ax.set_yticks(range(3), SPARSITY_BLOCKS, fontsize=BASE_FONT - 1)
        ax.set_xlabel("key (attended) tokens", fontsize=BASE_FONT - 1)
        ax.set_ylabel("query tokens", fontsize=BASE_FONT - 1)
        ax.set_title(f"{display_cohort(cohort)}: {100 * fraction:.2f}% of elements kept ({folds} fold"
                     f"{'s' if folds != 1 else ''})", fontsize=BASE_FONT)
        figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    figure.text(0.5, 0.01, "share of the kept elements per block; in brackets the block's share of the map\n"
                "(validation patients of the last epoch, mean over folds)", ha="center", fontsize=BASE_FONT - 1,
                color="0.3")
    figure.tight_layout(rect=(0, 0.08, 1, 0.94))
    return figure


CONFLICT_COLUMN = "train_grad_conflict/last"


def conflict_curves(results: ResultSet, cohort: str, model: str) -> np.ndarray:
    """Folds × epochs of the per-epoch mean gradient-conflict cosine (``training_log.tsv``'s
    ``train_grad_conflict/last``; NaN where an epoch measured none); 0 rows when no fold recorded it."""
    import pandas as pd

    curves = []
    for fold in results.get(cohort, model):
        path = fold.path / "training_log.tsv"
        if not path.is_file():
            continue
        log = pd.read_csv(path, sep="\t")
        if CONFLICT_COLUMN in log.columns:
            curves.append(log[CONFLICT_COLUMN].to_numpy(dtype="float64"))
    if not curves:
        return np.empty((0, 0))
    width = max(len(curve) for curve in curves)
    return np.vstack([np.pad(curve, (0, width - len(curve)), constant_values=np.nan) for curve in curves])


def cancermoe_figure4b(results: ResultSet, models: tuple[str, ...], **_):
    """One panel per cohort: the gradient-conflict cosine per epoch of CancerMoE and its dense
    counterpart (mean over folds, band = min-max over folds)."""
    import warnings

    from matplotlib.ticker import MaxNLocator

    from mmsurv.report.collect import display_cohort
    from mmsurv.report.figures import BASE_FONT, new_figure

    cohorts = [c for c in results.cohorts if all(results.get(c, m) for m in models)]
    columns = max(1, min(3, len(cohorts)))
    rows = max(1, math.ceil(len(cohorts) / columns))
    figure = new_figure(max(6.4, 4.2 * columns), 3.2 * rows + 0.8)
    figure.suptitle("CancerMoE: gradient conflict between modalities (Figure 4b)", fontsize=BASE_FONT + 2)
    styles = {models[0]: ("CancerMoE (SMoE experts)", MODALITIES["multimodal"].colour),
              models[1]: ("dense counterpart (w/o SMoE)", "0.45")}
    for index, cohort in enumerate(cohorts or [""]):
        ax = figure.add_subplot(rows, columns, index + 1)
        drawn = False
        for model in models:
            curves = conflict_curves(results, cohort, model) if cohort else np.empty((0, 0))
            if not curves.size:
                continue
            epochs = np.arange(1, curves.shape[1] + 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an epoch no fold measured: NaN
                mean, low, high = np.nanmean(curves, 0), np.nanmin(curves, 0), np.nanmax(curves, 0)
            label, color = styles[model]
            ax.plot(epochs, mean, marker="o", ms=3, color=color, label=f"{label}, {curves.shape[0]} folds")
            ax.fill_between(epochs, low, high, color=color, alpha=0.15, lw=0)
            drawn = True
        if not drawn:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{display_cohort(cohort) if cohort else 'no cohort'}:\nno gradient-conflict "
                    "measurements\n(train with conflict_every > 0)", ha="center", va="center", fontsize=BASE_FONT)
            continue
        ax.axhline(0.0, color="0.7", lw=0.8, ls="--")
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("epoch", fontsize=BASE_FONT - 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("cosine(∇ WSI-only, ∇ genomic-only)", fontsize=BASE_FONT - 1)
        ax.set_title(display_cohort(cohort), fontsize=BASE_FONT)
        ax.grid(color="0.92")
        if index == 0:
            ax.legend(fontsize=BASE_FONT - 2, frameon=False, loc="lower right")
    figure.text(0.5, 0.01, "last layer's MLP; higher = less conflict; mean over folds, band = min-max",
                ha="center", fontsize=BASE_FONT - 1, color="0.3")
    figure.tight_layout(rect=(0, 0.05, 1, 0.95))
    return figure


def expert_selection_figure(results: ResultSet, models: tuple[str, ...], *, title: str, **_):
    """One panel per cohort: each expert's share of each modality's routing in the last routed layer of
    ``models[0]`` (its ``route/<modality>/layer<l>`` measures)."""
    from mmsurv.report.collect import display_cohort
    from mmsurv.report.figures import BASE_FONT, new_figure

    model = models[0]
    cohorts = [c for c in results.cohorts if results.get(c, model)]
    columns = max(1, min(3, len(cohorts)))
    rows = max(1, math.ceil(len(cohorts) / columns))
    figure = new_figure(max(6.4, 4.2 * columns), 3.2 * rows + 0.8)
    figure.suptitle(title, fontsize=BASE_FONT + 2)
    for index, cohort in enumerate(cohorts or [""]):
        ax = figure.add_subplot(rows, columns, index + 1)
        shares, layer, folds = route_shares(results, cohort, model) if cohort else ({}, None, 0)
        if not shares:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{display_cohort(cohort) if cohort else 'no cohort'}:\nno routing measurements\n"
                    "in these results (retrain to record them)", ha="center", va="center", fontsize=BASE_FONT)
            continue
        order = [m for m in ROUTE_MODALITIES if m in shares]
        experts = len(next(iter(shares.values())))
        width = 0.8 / len(order)
        x = np.arange(experts)
        for position, modality in enumerate(order):
            label, color = ROUTE_MODALITIES[modality]
            ax.bar(x + (position - (len(order) - 1) / 2) * width, shares[modality], width, label=label, color=color)
        ax.set_xticks(x, [f"expert {e + 1}" for e in range(experts)], fontsize=BASE_FONT - 1)
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of the modality's routing", fontsize=BASE_FONT - 1)
        ax.set_title(f"{display_cohort(cohort)} (layer {layer + 1}, {folds} fold{'s' if folds != 1 else ''})",
                     fontsize=BASE_FONT)
        ax.grid(axis="y", color="0.9")
        ax.set_axisbelow(True)
        if index == 0:
            ax.legend(fontsize=BASE_FONT - 1, frameon=False)
    figure.text(0.5, 0.01, "validation patients of the last epoch, mean over folds;\neach modality's bars sum to 1",
                ha="center", fontsize=BASE_FONT - 1, color="0.3")
    figure.tight_layout(rect=(0, 0.07, 1, 0.95))
    return figure


# paper → figure name → (the models it needs in the run, its builder)
PAPER_FIGURES: dict[str, dict[str, tuple[tuple[str, ...], Callable]]] = {
    "survmamba": {"figure3": (("survmamba", "survmamba_uni"), survmamba_figure3),
                  "figure4": (("survmamba",), survmamba_figure4)},
    "cancermoe": {"figure3": (("cancermoe",), cancermoe_figure3),
                  "figure4a": (("cancermoe",), cancermoe_figure4a),
                  "figure4b": (("cancermoe", "cancermoe_wo_smoe"), cancermoe_figure4b)},
    # the papers without results figures: the expert routing their MoE layers recorded, named for what it is
    "hdmoe": {"experts": (("hdmoe",), partial(expert_selection_figure,
                                              title="HDMoE: first-level expert selection per modality"))},
    "mmm": {"experts": (("mmm",), partial(expert_selection_figure,
                                          title="MMM: GME expert weights per modality (second GME)"))},
}


def paper_figure_files(papers: Iterable[str], models: Iterable[str]) -> dict[str, list[str]]:
    """Paper → the figures this run can draw (those whose models it trains)."""
    models = set(models)
    return {paper: [name for name, (needed, _) in PAPER_FIGURES.get(paper, {}).items() if set(needed) <= models]
            for paper in papers}


def write_paper_figures(papers: Iterable[str], out_dir: str | os.PathLike, results: ResultSet, *,
                        pdf: bool = False, median_split: str = "pooled", km_variant: str = "last") -> dict[str, Path]:
    """Draw every figure of :func:`paper_figure_files` into ``out_dir/papers/<paper>/``."""
    from mmsurv.report.figures import save_figure

    written: dict[str, Path] = {}
    for paper, names in paper_figure_files(papers, results.models).items():
        for name in names:
            needed, builder = PAPER_FIGURES[paper][name]
            folder = Path(out_dir) / "papers" / paper
            folder.mkdir(parents=True, exist_ok=True)
            figure = builder(results, needed, median_split=median_split, km_variant=km_variant)
            for path in save_figure(figure, folder / f"{name}.png", pdf=pdf):
                written[f"paper_{paper}_{name}_{path.suffix[1:]}"] = path
    return written
