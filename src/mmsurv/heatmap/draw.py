"""Drawing patch scores: the overlay on the slide's thumbnail and the top/bottom patches montage.

CLAM's heatmap conventions where they make sense: scores turned into percentiles over the slide
(``normalize="percentile"``; ``"minmax"`` and ``"none"`` besides), the ``jet`` colormap, an alpha
blend over the tissue, an optional Gaussian blur, and the top-k / bottom-k patches read at full
resolution. Memory is bounded by the thumbnail: OpenSlide's ``get_thumbnail`` reads from the
smallest level that covers it, level 0 is never read whole, and each montage patch is one region.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from mmsurv.io import atomic_path

NORMALIZATIONS = ("percentile", "minmax", "none")


def normalized(values: np.ndarray, how: str = "percentile") -> np.ndarray:
    """Scores → [0, 1] (NaN stays NaN): percentile rank over the finite scores (ties share their mean
    rank, as CLAM's ``percentileofscore``), min-max, or as given (clipped)."""
    if how not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {how!r}")
    values = np.asarray(values, dtype="float64")
    out = np.full(values.shape, np.nan)
    finite = np.isfinite(values)
    if not finite.any():
        return out
    kept = values[finite]
    if how == "percentile":
        from scipy.stats import rankdata

        out[finite] = rankdata(kept, method="average") / kept.size
    elif how == "minmax":
        span = kept.max() - kept.min()
        out[finite] = (kept - kept.min()) / span if span > 0 else 0.5
    else:
        out[finite] = np.clip(kept, 0.0, 1.0)
    return out


def score_canvas(coords: np.ndarray, patch_size: int, values: np.ndarray, shape: tuple[int, int],
                 scale: float) -> np.ndarray:
    """An H×W float canvas (``shape``) at ``scale`` canvas pixels per level-0 pixel with each patch's
    value painted over its square (the mean where squares overlap), NaN where no patch lies."""
    height, width = shape
    total = np.zeros(shape, dtype="float64")
    count = np.zeros(shape, dtype="float32")
    side = max(1, int(round(patch_size * scale)))
    for (x, y), value in zip(np.asarray(coords), np.asarray(values, dtype="float64")):
        if not np.isfinite(value):
            continue
        x0, y0 = int(math.floor(x * scale)), int(math.floor(y * scale))
        x1, y1 = min(width, x0 + side), min(height, y0 + side)
        if x1 <= max(0, x0) or y1 <= max(0, y0):
            continue
        total[max(0, y0):y1, max(0, x0):x1] += value
        count[max(0, y0):y1, max(0, x0):x1] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def blurred(canvas: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of the painted part only (normalised convolution: uncovered pixels add nothing)."""
    import cv2

    covered = np.isfinite(canvas).astype("float32")
    filled = np.nan_to_num(canvas, nan=0.0).astype("float32")
    numerator = cv2.GaussianBlur(filled, (0, 0), sigma)
    weight = cv2.GaussianBlur(covered, (0, 0), sigma)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = numerator / weight
    return np.where(covered > 0, out, np.nan)


def overlay(thumbnail: np.ndarray, canvas: np.ndarray, *, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """The thumbnail (H×W×3 uint8) with ``canvas`` values in [0, 1] colour-mapped and alpha-blended where painted."""
    from matplotlib import colormaps

    colours = colormaps[cmap](np.nan_to_num(canvas, nan=0.0))[..., :3] * 255.0
    painted = np.isfinite(canvas)[..., None]
    base = thumbnail.astype("float32")
    mixed = np.where(painted, (1 - alpha) * base + alpha * colours, base)
    return np.clip(np.rint(mixed), 0, 255).astype("uint8")


def draw_heatmap(slide_path: str | os.PathLike, coords: np.ndarray, patch_size: int, values: np.ndarray, *,
                 max_side: int = 2048, alpha: float = 0.4, cmap: str = "jet", normalize: str = "percentile",
                 blur: float = 0.0) -> np.ndarray:
    """The heatmap of ``values`` (one per patch at level-0 ``coords``) over the slide's thumbnail
    (longest side ``max_side``), as H×W×3 uint8; ``blur``: Gaussian sigma in canvas pixels (0: none)."""
    from mmsurv.wsi.slide import open_slide

    with open_slide(slide_path) as slide:
        width, height = slide.dimensions
        thumbnail = np.asarray(slide.handle.get_thumbnail((max_side, max_side)).convert("RGB"))
    scale = thumbnail.shape[1] / width
    canvas = score_canvas(coords, patch_size, normalized(values, normalize), thumbnail.shape[:2], scale)
    if blur > 0:
        canvas = blurred(canvas, blur)
    return overlay(thumbnail, canvas, alpha=alpha, cmap=cmap)


def extreme_patches(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` highest and the ``k`` lowest finite scores (highest first, lowest first)."""
    values = np.asarray(values, dtype="float64")
    finite = np.flatnonzero(np.isfinite(values))
    order = finite[np.argsort(values[finite], kind="stable")]
    k = min(k, len(order))
    return order[::-1][:k], order[:k]


def patch_montage(slide_path: str | os.PathLike, coords: np.ndarray, patch_size: int, values: np.ndarray, *,
                  k: int = 8, tile: int = 256, title: str = ""):
    """A figure of the top-k (first row) and bottom-k (second row) patches read at level 0, each
    titled with its score and position; a matplotlib figure for :func:`save_png`."""
    import cv2

    from mmsurv.report.figures import BASE_FONT, new_figure
    from mmsurv.wsi.slide import open_slide

    top, bottom = extreme_patches(values, k)
    columns = max(1, len(top))
    figure = new_figure(1.9 * columns + 0.6, 4.6)
    if title:
        figure.suptitle(title, fontsize=BASE_FONT)
    with open_slide(slide_path) as slide:
        for row, (label, indices) in enumerate((("highest", top), ("lowest", bottom))):
            for column, index in enumerate(indices):
                x, y = (int(v) for v in coords[index])
                patch = slide.read_rgb(x, y, 0, patch_size, patch_size)
                ax = figure.add_subplot(2, columns, row * columns + column + 1)
                ax.imshow(cv2.resize(patch, (tile, tile), interpolation=cv2.INTER_AREA))
                ax.set_title(f"{label} {column + 1}: {values[index]:.3g}\n({x}, {y})", fontsize=BASE_FONT - 3)
                ax.axis("off")
    figure.tight_layout()
    return figure


def save_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write an H×W×3 uint8 RGB image as PNG, atomically."""
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise OSError(f"{path}: the image could not be encoded as PNG")
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return path
