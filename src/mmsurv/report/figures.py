"""Paper figures: Kaplan–Meier curves (per cohort × model, and a grid per model) and a c-index vs FLOPs bubble chart.

For the report builder. Figures are drawn on :class:`matplotlib.figure.Figure` objects with the
Agg canvas (no pyplot, no global backend switch, nothing opens a window) and saved atomically as
PNG (150 dpi) and, optionally, PDF (without creation dates, so reruns give identical files).

* KM figure: low/high-risk curves with 95 % log-log bands and censoring ticks, the log-rank
  p-value, a subtitle stating the median rule and the epoch variant, and a numbers-at-risk table
  under the plot at the x-axis ticks (months).
* KM grid: the same panels for one model across all cohorts (≤ 3 per row).
* Bubble chart: x = forward FLOPs per patient at the reference bag size (log scale), y = mean
  c-index over cohorts, marker AREA proportional to the parameter count (legend with reference
  sizes), one labelled marker per model.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from mmsurv.io import atomic_path
from mmsurv.models.inputs import MODALITIES
from mmsurv.report.collect import display_cohort, display_model
from mmsurv.report.km import RiskStratification, format_pvalue, km_curve, numbers_at_risk

DPI = 150
COLORS = {"low": "#1f77b4", "high": "#d62728"}
LABELS = {"low": "Low risk", "high": "High risk"}
BASE_FONT = 9
GRID_COLUMNS = 3
MAX_BUBBLE_AREA = 1800.0  # points², the largest model
KEY_NAME_CHARS = 22  # a model's name in the bubble chart's key (the key's width)
VARIANT_WORDS = {"last": "last epoch", "best": "best epoch"}


def new_figure(width: float, height: float) -> Figure:
    """A figure bound to the Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, png_path: str | os.PathLike, *, pdf: bool = False) -> list[Path]:
    """Save ``figure`` as PNG (and PDF next to it) atomically; return the paths written."""
    png_path = Path(png_path)
    written = []
    targets = [(png_path, "png")] + ([(png_path.with_suffix(".pdf"), "pdf")] if pdf else [])
    for path, fmt in targets:
        metadata = {"CreationDate": None, "ModDate": None} if fmt == "pdf" else {"Software": None}
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format=fmt, dpi=DPI, metadata=metadata)
        written.append(path)
    return written


def time_ticks(max_time: float, n: int = 8) -> np.ndarray:
    """Regular 'nice' ticks from 0 to ``max_time`` (months)."""
    if not np.isfinite(max_time) or max_time <= 0:
        return np.array([0.0])
    ticks = MaxNLocator(nbins=n, steps=[1, 2, 2.5, 5, 10], integer=max_time > 10).tick_values(0, max_time)
    return ticks[(ticks >= 0) & (ticks <= max_time * 1.0001)]


def draw_km(ax, risk_ax, strat: RiskStratification, *, ticks: np.ndarray, font: float = BASE_FONT,
            show_ylabel: bool = True) -> None:
    """KM curves, bands, censoring ticks and p-value on ``ax``; numbers at risk on ``risk_ax``."""
    x_max = max(float(ticks[-1]), float(strat.frame["time"].max())) * 1.02
    for name in ("low", "high"):
        group = strat.group(name)
        curve = km_curve(group["event"], group["time"])
        color = COLORS[name]
        ax.step(curve.time, curve.survival, where="post", color=color, lw=1.6,
                label=f"{LABELS[name]} (n={len(group)}, events={int(group['event'].sum())})")
        ax.fill_between(curve.time, curve.lower, curve.upper, step="post", color=color, alpha=0.15, lw=0)
        censored = group[group["event"] == 0]["time"].to_numpy(dtype="float64")
        if censored.size:
            at = np.searchsorted(curve.time, censored, side="right") - 1
            ax.plot(censored, curve.survival[np.clip(at, 0, None)], ls="none", marker="|", ms=5, mew=1,
                    color=color)
    ax.set_xlim(0, x_max)
    ax.set_ylim(0, 1.02)
    ax.set_xticks(ticks)
    ax.tick_params(labelsize=font - 1, labelbottom=False)
    if show_ylabel:
        ax.set_ylabel("Survival probability", fontsize=font)
    ax.grid(True, lw=0.4, alpha=0.4)
    ax.legend(loc="upper right", fontsize=font - 1.5, frameon=True, framealpha=0.85)
    ax.text(0.03, 0.04, f"log-rank {format_pvalue(strat.pvalue)}", transform=ax.transAxes, fontsize=font,
            ha="left", va="bottom", bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="0.7", alpha=0.9))
    _draw_at_risk(risk_ax, strat, ticks, x_max, font)


def _draw_at_risk(ax, strat: RiskStratification, ticks: np.ndarray, x_max: float, font: float) -> None:
    ax.set_xlim(0, x_max)
    ax.set_ylim(-0.6, 1.6)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks], fontsize=font - 1)
    ax.set_xlabel("Time (months)", fontsize=font)
    ax.set_yticks([1, 0])
    ax.set_yticklabels([LABELS["low"], LABELS["high"]], fontsize=font - 1.5)
    for label, name in zip(ax.get_yticklabels(), ("low", "high")):
        label.set_color(COLORS[name])
    ax.tick_params(axis="y", length=0, pad=12)
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)
    for y, name in ((1, "low"), (0, "high")):
        counts = numbers_at_risk(strat.group(name)["time"], ticks)
        for tick, count in zip(ticks, counts):
            ax.text(tick, y, str(count), ha="center", va="center", fontsize=font - 1.5, color=COLORS[name])
    ax.set_title("Number at risk", fontsize=font - 1, loc="left", pad=2)


def km_subtitle(strat: RiskStratification) -> str:
    if strat.variant == "ensemble":  # an external cohort: the fold models' mean risk
        return f"{strat.split_label}; ensemble risk (mean over the fold models)"
    return f"{strat.split_label}; {VARIANT_WORDS.get(strat.variant, strat.variant)} out-of-fold risks"


def km_figure(strat: RiskStratification) -> Figure:
    """One cohort × model Kaplan–Meier figure with the numbers-at-risk table."""
    figure = new_figure(6.4, 5.4)
    grid = figure.add_gridspec(2, 1, height_ratios=[4, 1.05], hspace=0.12, left=0.14, right=0.97, top=0.86,
                               bottom=0.1)
    ax = figure.add_subplot(grid[0])
    risk_ax = figure.add_subplot(grid[1], sharex=ax)
    ticks = time_ticks(float(strat.frame["time"].max()))
    draw_km(ax, risk_ax, strat, ticks=ticks)
    figure.suptitle(f"{display_cohort(strat.cohort)} · {display_model(strat.model)}: Kaplan–Meier by predicted risk",
                    fontsize=BASE_FONT + 2, y=0.975)
    figure.text(0.5, 0.925, textwrap.fill(km_subtitle(strat), 110), ha="center", va="top", fontsize=BASE_FONT - 1,
                color="0.3")
    return figure


def km_grid_figure(strata: Sequence[RiskStratification]) -> Figure:
    """One model's KM panels across cohorts (≤ 3 per row), each with its numbers-at-risk table."""
    if not strata:
        raise ValueError("km_grid_figure needs at least one cohort")
    n = len(strata)
    columns = min(GRID_COLUMNS, n)
    rows = math.ceil(n / columns)
    width = max(4.3 * columns, 6.4)
    subtitle = textwrap.fill(km_subtitle(strata[0]), int(width * 16))
    header = 0.55 + 0.16 * (subtitle.count("\n") + 1) + 0.3  # inches: title, subtitle lines, panel title
    height = 4.3 * rows + header - 0.2
    figure = new_figure(width, height)
    outer = figure.add_gridspec(rows, columns, left=0.8 / width, right=1 - 0.15 / width, top=1 - header / height,
                                bottom=0.45 / height, wspace=0.28, hspace=0.32)
    for index, strat in enumerate(strata):
        cell = outer[index // columns, index % columns].subgridspec(2, 1, height_ratios=[4, 1.1], hspace=0.14)
        ax = figure.add_subplot(cell[0])
        risk_ax = figure.add_subplot(cell[1], sharex=ax)
        draw_km(ax, risk_ax, strat, ticks=time_ticks(float(strat.frame["time"].max())), font=BASE_FONT - 1,
                show_ylabel=index % columns == 0)
        ax.set_title(display_cohort(strat.cohort), fontsize=BASE_FONT + 1, fontweight="bold")
    figure.suptitle(f"{display_model(strata[0].model)}: Kaplan–Meier by predicted risk, all cohorts",
                    fontsize=BASE_FONT + 2, y=1 - 0.1 / height, va="top")
    figure.text(0.5, 1 - 0.42 / height, subtitle, ha="center", va="top", fontsize=BASE_FONT - 0.5, color="0.3")
    return figure


def bubble_points(summary_means: pd.Series, efficiency: pd.DataFrame) -> pd.DataFrame:
    """Per model: mean FLOPs at the reference bag size and mean params over cohorts, and the c-index."""
    grouped = efficiency.groupby("model", sort=False).agg(flops=("flops_reference", "mean"),
                                                          params=("n_params", "mean"),
                                                          modality=("modality", "first"))
    points = grouped.join(summary_means.rename("cindex"), how="inner")
    return points.dropna(subset=["flops", "params", "cindex"])


def bubble_figure(points: pd.DataFrame, *, reference_bag_size: int, variant: str) -> Figure:
    """c-index vs FLOPs, marker area ∝ parameters; each bubble numbered (by c-index, best first) with a
    label placed where it overlaps no other label, and a key of the numbers beside the plot: legible
    at the zoo's 27+ models, where names beside the bubbles overlapped."""
    rows = max(len(points), 1)
    figure = new_figure(10.0, max(5.2, 1.6 + 0.17 * rows))
    ax = figure.add_axes((0.08, 0.12, 0.5, 0.78))
    if points.empty:
        ax.text(0.5, 0.5, "no model with both FLOPs and c-index", ha="center", va="center", transform=ax.transAxes)
        return figure
    points = points.sort_values(["cindex", "flops"], ascending=[False, True])
    scale = MAX_BUBBLE_AREA / float(points["params"].max())
    colors = {key: modality.colour for key, modality in MODALITIES.items()}
    for _, row in points.iterrows():
        ax.scatter(row["flops"], row["cindex"], s=row["params"] * scale, color=colors.get(row["modality"], "0.5"),
                   alpha=0.55, edgecolor="black", lw=0.8, zorder=3)
    ax.set_xscale("log")
    _pad_limits(ax, points)
    ax.set_xlabel(f"Forward FLOPs per patient at {reference_bag_size:,} patches (log scale)", fontsize=BASE_FONT)
    ax.set_ylabel(f"Mean c-index over cohorts ({VARIANT_WORDS.get(variant, variant)})", fontsize=BASE_FONT)
    ax.tick_params(labelsize=BASE_FONT - 1)
    ax.grid(True, which="major", lw=0.4, alpha=0.5)
    ax.set_title("c-index vs compute (marker area ∝ parameters)", fontsize=BASE_FONT + 1)
    _number_bubbles(figure, ax, points, scale)
    _bubble_legends(figure, ax, points, scale)
    _number_key(figure, points, colors)
    return figure


def label_positions(centers: np.ndarray, radii: np.ndarray, sizes: np.ndarray,
                    bounds: tuple[float, float, float, float]) -> np.ndarray:
    """Centres for one label per point (display units) such that no two label boxes overlap.

    ``centers`` N×2 point centres, ``radii`` their marker radii, ``sizes`` N×2 label widths and
    heights, ``bounds`` (x0, y0, x1, y1) the area labels must stay in. In order, each label takes the
    first free spot of: the marker's centre (when the label fits inside the marker), then rings
    around the marker at growing distances and 16 angles (nearest first). A spot is free when its box
    overlaps no label placed before it and lies inside ``bounds``; if none is free, the spot of least
    overlap is taken."""
    x0, y0, x1, y1 = bounds
    placed: list[tuple[float, float, float, float]] = []
    out = np.zeros((len(centers), 2))
    angles = np.deg2rad(np.arange(0, 360, 22.5))
    for i, (center, radius, (w, h)) in enumerate(zip(centers, radii, sizes)):
        candidates = [center] if radius >= 0.6 * math.hypot(w, h) else []
        for gap in (2.0, 6.0, 12.0, 20.0, 30.0, 44.0, 60.0, 80.0, 110.0):
            reach = radius + gap + 0.5 * max(w, h)
            candidates += [center + reach * np.array([math.cos(a), math.sin(a)]) for a in angles]
        best, best_overlap = candidates[0], math.inf
        for spot in candidates:
            box = (spot[0] - w / 2, spot[1] - h / 2, spot[0] + w / 2, spot[1] + h / 2)
            if box[0] < x0 or box[1] < y0 or box[2] > x1 or box[3] > y1:
                continue
            overlap = sum(max(0.0, min(box[2], o[2]) - max(box[0], o[0]))
                          * max(0.0, min(box[3], o[3]) - max(box[1], o[1])) for o in placed)
            if overlap < best_overlap:
                best, best_overlap = spot, overlap
                if overlap == 0.0:
                    break
        out[i] = best
        placed.append((best[0] - w / 2, best[1] - h / 2, best[0] + w / 2, best[1] + h / 2))
    return out


def _number_bubbles(figure: Figure, ax, points: pd.DataFrame, scale: float) -> None:
    """Each bubble's number (its rank) where it overlaps no other number, with a thin line to its bubble."""
    figure.canvas.draw()  # final axes position and limits
    px_per_pt = figure.dpi / 72.0
    centers = ax.transData.transform(points[["flops", "cindex"]].to_numpy(dtype="float64"))
    radii = np.sqrt(points["params"].to_numpy(dtype="float64") * scale / math.pi) * px_per_pt
    font = BASE_FONT - 0.5
    renderer = figure.canvas.get_renderer()
    sizes = []
    for n in range(1, len(points) + 1):  # each label's real extent, plus a 1.5 pt margin
        probe = ax.text(0, 0, str(n), fontsize=font, fontweight="bold")
        extent = probe.get_window_extent(renderer)
        probe.remove()
        sizes.append([extent.width + 3 * px_per_pt, extent.height + 3 * px_per_pt])
    sizes = np.array(sizes)
    box = ax.get_window_extent()
    spots = label_positions(centers, radii, sizes, (box.x0, box.y0, box.x1, box.y1))
    to_data = ax.transData.inverted()
    for number, (center, spot) in enumerate(zip(centers, spots), start=1):
        moved = not np.allclose(center, spot)
        ax.annotate(str(number), to_data.transform(center), xytext=to_data.transform(spot), textcoords="data",
                    fontsize=font, fontweight="bold", ha="center", va="center", zorder=5,
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.35", "shrinkA": 0, "shrinkB": 0}
                    if moved else None)


def _number_key(figure: Figure, points: pd.DataFrame, colors: dict) -> None:
    """The numbers' key right of the legends: ``n  Model  c-index``, the number in its modality's colour."""
    key = figure.add_axes((0.80, 0.05, 0.19, 0.9))
    key.set_axis_off()
    key.set_xlim(0, 1)
    key.set_ylim(0, 1)
    step = min(0.045, 0.94 / max(len(points), 1))
    key.text(0.0, 1.0, "Models (by c-index)", fontsize=BASE_FONT - 1, ha="left", va="top")
    for number, (model, row) in enumerate(points.iterrows(), start=1):
        y = 1.0 - 0.05 - (number - 1) * step
        key.text(0.0, y, f"{number:>2}", fontsize=BASE_FONT - 1.5, ha="left", va="top", fontweight="bold",
                 color=colors.get(row["modality"], "0.3"))
        name = display_model(str(model))
        name = name if len(name) <= KEY_NAME_CHARS else name[:KEY_NAME_CHARS - 1] + "…"  # variants' long names
        key.text(0.13, y, f"{name}  {row['cindex']:.3f}", fontsize=BASE_FONT - 1.5, ha="left", va="top")


def _pad_limits(ax, points: pd.DataFrame) -> None:
    low, high = float(points["flops"].min()), float(points["flops"].max())
    ax.set_xlim(low / 10 ** 0.6, high * 10 ** 0.6)
    y_low, y_high = float(points["cindex"].min()), float(points["cindex"].max())
    pad = max(0.03, (y_high - y_low) * 0.25)
    ax.set_ylim(y_low - pad, y_high + pad)


def _bubble_legends(figure: Figure, ax, points: pd.DataFrame, scale: float) -> None:
    """Bubble-size key (true marker areas, stacked without overlap) and the modality legend, right of the plot."""
    box = (0.61, 0.45, 0.17, 0.45)
    key = figure.add_axes(box)
    key.set_axis_off()
    key.set_xlim(0, 1)
    key.set_ylim(0, 1)
    height_pt = box[3] * figure.get_figheight() * 72
    width_pt = box[2] * figure.get_figwidth() * 72
    values = size_legend_values(float(points["params"].min()), float(points["params"].max()))
    radii = [math.sqrt(value * scale / math.pi) for value in values]
    x_center = (max(radii) + 2) / width_pt
    key.text(0.0, 1.0, "Parameters", fontsize=BASE_FONT - 1, ha="left", va="top", transform=key.transAxes)
    y = height_pt - 16  # below the title
    for value, radius in zip(reversed(values), reversed(radii)):
        y -= radius
        key.scatter([x_center], [y / height_pt], s=value * scale, color="0.88", edgecolor="black", lw=0.8,
                    clip_on=False)
        key.text(x_center + (max(radii) + 6) / width_pt, y / height_pt, _short_count(value), fontsize=BASE_FONT - 1,
                 ha="left", va="center")
        y -= radius + 6
    modality_handles = [ax.scatter([], [], s=60, color=modality.colour, alpha=0.55, edgecolor="black",
                                   label=modality.paper_label)
                        for key, modality in MODALITIES.items() if key in set(points["modality"])]
    ax.legend(handles=modality_handles, loc="lower left", bbox_to_anchor=(1.04, 0.0), fontsize=BASE_FONT - 1,
              title="Modality", title_fontsize=BASE_FONT - 1, frameon=False, alignment="left")


def size_legend_values(low: float, high: float) -> list[float]:
    """Up to three round parameter counts spanning [low, high] for the bubble-size legend."""
    candidates = [m * 10 ** e for e in range(3, 11) for m in (1, 2, 5)]
    inside = [c for c in candidates if low * 0.5 <= c <= high * 1.5]
    if not inside:
        return [high]
    if len(inside) <= 3:
        return inside
    return [inside[0], inside[len(inside) // 2], inside[-1]]


def _short_count(value: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:g} {prefix}"
    return f"{value:g}"
