"""Per-slide outputs of the patching stage, CLAM-compatible, each written atomically.

Who uses this: ``mmsurv.wsi.patching.segment_and_patch``; the feature-extraction stage reads the ``.h5``
files, people read the PNGs, the workflow reads the ``.json`` (its existence = slide complete).

Layout under ``out_dir`` (``output_paths``)::

    patches/{slide}.h5     dataset "coords": int64 (N, 2) level-0 top-left (x, y)
    masks/{slide}.png      thumbnail with tissue contours (green) and holes (blue)
    stitches/{slide}.png   kept patches copied from the thumbnail onto a black canvas
    {slide}.json           parameters, tissue area (mm²), patch count, seconds per step

Attributes on ``coords`` (CLAM's ``process_contours`` names and meanings, then ours):

* ``patch_size``: patch side in pixels **of ``patch_level``** (what to read; 1024 at level 0 for
  512 px at 20x from a 40x scan), ``patch_level``, ``downsample`` (x, y of that level),
  ``level_dim`` and ``downsampled_level_dim`` (both (w, h) of ``patch_level``, as CLAM writes
  them), ``name`` (slide name).
* ``patch_size_level0`` (footprint in level-0 px), ``output_patch_size`` (side after resizing,
  e.g. 512), ``step_size_level0``, ``magnification`` (target, e.g. 20), ``target_mpp``,
  ``mpp`` (slide level-0 µm/px), ``slide_magnification``, ``mpp_source``, ``level0_dim``.

Every file goes through ``mmsurv.io.atomic_path`` (temporary file beside it, renamed when
complete), and ``write_summary`` is called last so the JSON is only there when all else is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import h5py
import numpy as np

from mmsurv.h5write import atomic_write_h5
from mmsurv.io import atomic_path, write_json
from mmsurv.wsi.segment import Segmentation, scale_contours

GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
DEFAULT_VIS_MAX_SIDE = 4096   # longest side (px) of the PNGs


@dataclass(frozen=True)
class OutputPaths:
    """Where one slide's outputs go."""

    h5: Path
    mask: Path
    stitch: Path
    summary: Path

    def relative_to(self, root: Path) -> dict[str, str]:
        return {key: os.path.relpath(getattr(self, key), root) for key in ("h5", "mask", "stitch")}


def output_paths(out_dir: str | os.PathLike, slide_name: str) -> OutputPaths:
    """The four output paths of ``slide_name`` under ``out_dir``."""
    root = Path(out_dir)
    return OutputPaths(h5=root / "patches" / f"{slide_name}.h5",
                       mask=root / "masks" / f"{slide_name}.png",
                       stitch=root / "stitches" / f"{slide_name}.png",
                       summary=root / f"{slide_name}.json")


# --------------------------------------------------------------------------------------------
# HDF5
# --------------------------------------------------------------------------------------------

def _h5_value(value: Any) -> Any:
    """h5py-friendly attribute value (tuples to arrays, None to empty string)."""
    if value is None:
        return ""
    if isinstance(value, (tuple, list)):
        return np.asarray(value)
    return value


def write_coords_h5(path: str | os.PathLike, coords: np.ndarray, attrs: Mapping[str, Any]) -> None:
    """``coords`` (N, 2) int64 as dataset ``coords`` with ``attrs`` on it, atomically."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    chunk_rows = max(1, min(coords.shape[0], 4096))

    def fill(handle: h5py.File) -> None:
        dataset = handle.create_dataset("coords", data=coords, maxshape=(None, 2), chunks=(chunk_rows, 2),
                                        dtype="int64")
        for key, value in attrs.items():
            dataset.attrs[key] = _h5_value(value)

    atomic_write_h5(path, fill)


def read_coords_h5(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, Any]]:
    """(coords, attributes) of a patches file (ours or CLAM's)."""
    with h5py.File(path, "r") as handle:
        dataset = handle["coords"]
        return dataset[()], dict(dataset.attrs)


# --------------------------------------------------------------------------------------------
# PNGs
# --------------------------------------------------------------------------------------------

def vis_factor(size: tuple[int, int], max_side: int) -> float:
    """Factor (<= 1) that brings an image of (width, height) within ``max_side``."""
    return min(1.0, max_side / max(size)) if max(size) > 0 else 1.0


def _shrink(rgb: np.ndarray, factor: float) -> np.ndarray:
    if factor >= 1.0:
        return rgb.copy()
    h, w = rgb.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def mask_image(segmentation: Segmentation, max_side: int = DEFAULT_VIS_MAX_SIDE) -> np.ndarray:
    """RGB thumbnail with tissue contours in green and kept holes in blue."""
    h, w = segmentation.image.shape[:2]
    factor = vis_factor((w, h), max_side)
    canvas = _shrink(segmentation.image, factor)
    fx, fy = canvas.shape[1] / w, canvas.shape[0] / h
    thickness = max(1, round(max(canvas.shape[:2]) / 600))
    tissue = scale_contours(segmentation.tissue, fx, fy)
    holes = scale_contours([hole for piece in segmentation.holes for hole in piece], fx, fy)
    cv2.drawContours(canvas, tissue, -1, GREEN, thickness, lineType=cv2.LINE_8)
    cv2.drawContours(canvas, holes, -1, BLUE, thickness, lineType=cv2.LINE_8)
    return canvas


def stitch_image(segmentation: Segmentation, coords: np.ndarray, footprint: int,
                 max_side: int = DEFAULT_VIS_MAX_SIDE) -> np.ndarray:
    """Kept patches (level-0 ``coords``, ``footprint`` px) shown from the thumbnail on black."""
    h, w = segmentation.image.shape[:2]
    factor = vis_factor((w, h), max_side)
    thumb = _shrink(segmentation.image, factor)
    th, tw = thumb.shape[:2]
    sx = segmentation.scale[0] * w / tw      # level-0 px per canvas px
    sy = segmentation.scale[1] * h / th
    covered = np.zeros((th, tw), bool)
    coords = np.asarray(coords, np.int64).reshape(-1, 2)
    x0 = np.floor(coords[:, 0] / sx).astype(np.int64)
    y0 = np.floor(coords[:, 1] / sy).astype(np.int64)
    x1 = np.ceil((coords[:, 0] + footprint) / sx).astype(np.int64)
    y1 = np.ceil((coords[:, 1] + footprint) / sy).astype(np.int64)
    for a, b, c, d in zip(x0.tolist(), y0.tolist(), x1.tolist(), y1.tolist()):
        covered[b:d, a:c] = True
    canvas = np.zeros_like(thumb)
    canvas[covered] = thumb[covered]
    return canvas


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB image as PNG, atomically."""
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write PNG {path}")


# --------------------------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------------------------

def write_summary(path: str | os.PathLike, summary: Mapping[str, Any]) -> None:
    """The slide's JSON summary, atomically (write it last: it marks the slide complete)."""
    write_json(path, dict(summary))
