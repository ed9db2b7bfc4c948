"""One slide from its file to patch coordinates: segment, select patches, write the four outputs.

For the workflow's batched patching jobs (:mod:`mmsurv.wsi.batch`), ``mmsurv wsi patch`` and
tests. :class:`PatchingSettings` is the workflow's ``patching:`` section resolved ONCE (preset,
then segmentation overrides; patch parameters; default mpp): the values :func:`segment_and_patch`
runs with are the values the summary records and the reuse check compares.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from mmsurv.wsi.outputs import (
    DEFAULT_VIS_MAX_SIDE,
    mask_image,
    output_paths,
    stitch_image,
    write_coords_h5,
    write_png,
    write_summary,
)
from mmsurv.wsi.patch import PatchParams, PatchResult, select_patches
from mmsurv.wsi.presets import DEFAULT_PRESET, get_preset
from mmsurv.wsi.segment import Segmentation, SegmentParams, segment_slide
from mmsurv.wsi.slide import (
    DEFAULT_MPP,
    WsiSlide,
    open_slide,
    slide_name_of,
)

PATCH_KEYS = ("magnification", "patch_size", "step_size", "min_tissue_fraction")
OTHER_KEYS = ("preset", "default_mpp", "segment")

log = logging.getLogger(__name__)


def _override(params: Any, overrides: Mapping[str, Any] | None, what: str) -> Any:
    """``params`` with the non-None ``overrides`` applied; unknown keys raise ValueError."""
    if not overrides:
        return params
    known = {f.name for f in fields(params)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown {what} parameter(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    return replace(params, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class PatchingSettings:
    """Resolved patching settings: what changes the coordinates (the summary's ``parameters``)."""

    preset: str
    segment: SegmentParams
    patch: PatchParams
    default_mpp: float = DEFAULT_MPP

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> PatchingSettings:
        """From the workflow's flat ``patching`` section (``preset``, ``default_mpp``, ``segment: {...}``
        overrides, and the patch settings ``magnification``, ``patch_size``, ``step_size``,
        ``min_tissue_fraction``); keys left out keep the package defaults."""
        unknown = sorted(set(section) - set(PATCH_KEYS) - set(OTHER_KEYS))
        if unknown:
            raise ValueError(f"config: patching.{unknown[0]} is not a patching setting")
        preset = section.get("preset", DEFAULT_PRESET)
        segment, patch = resolve_params(preset, dict(section.get("segment") or {}),
                                        {key: section[key] for key in PATCH_KEYS if key in section})
        return cls(preset, segment, patch, float(section.get("default_mpp", DEFAULT_MPP)))

    def parameters(self) -> dict[str, Any]:
        """As the slide's JSON summary records them (the reuse check compares these)."""
        return {"preset": self.preset, "segment": self.segment.to_dict(), "patch": self.patch.to_dict(),
                "default_mpp": self.default_mpp}


def resolve_params(preset: str = DEFAULT_PRESET,
                   segment: SegmentParams | Mapping[str, Any] | None = None,
                   patch: PatchParams | Mapping[str, Any] | None = None
                   ) -> tuple[SegmentParams, PatchParams]:
    """Segmentation parameters (preset, then overrides) and patch parameters."""
    seg = segment if isinstance(segment, SegmentParams) else _override(
        get_preset(preset).segment_params(), segment, "segmentation")
    pat = patch if isinstance(patch, PatchParams) else _override(PatchParams(), patch, "patch")
    return seg, pat


class _Timer:
    """Seconds per named step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    def step(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._start, 4)
        self._start = now


def segment_and_patch(slide_path: str | os.PathLike, out_dir: str | os.PathLike, *,
                      slide_name: str | None = None, preset: str = DEFAULT_PRESET,
                      segment: SegmentParams | Mapping[str, Any] | None = None,
                      patch: PatchParams | Mapping[str, Any] | None = None,
                      default_mpp: float = DEFAULT_MPP,
                      vis_max_side: int = DEFAULT_VIS_MAX_SIDE) -> dict[str, Any]:
    """Segment ``slide_path``, select patches and write its four outputs under ``out_dir``.

    ``segment`` overrides fields of the preset (e.g. ``{"min_tissue_mm2": 0.1}``) or replaces it
    (a ``SegmentParams``); ``patch`` likewise for ``PatchParams`` (``magnification``,
    ``patch_size``, ``step_size``, ``min_tissue_fraction``). Returns the JSON summary.
    Raises ``SlideError`` (naming the slide) when the slide cannot be opened or read.
    """
    name = slide_name or slide_name_of(slide_path)
    seg_params, patch_params = resolve_params(preset, segment, patch)
    paths = output_paths(out_dir, name)
    total_start = time.perf_counter()
    timer = _Timer()
    with open_slide(slide_path, slide_name=name, default_mpp=default_mpp) as slide:
        timer.step("open")
        segmentation = segment_slide(slide, seg_params)
        timer.step("segment")
        patches = select_patches(slide, segmentation, patch_params)
        timer.step("patch")
        warnings = list(slide.warnings)
        if patches.count == 0:
            message = ("no tissue found" if not segmentation.found_tissue
                       else "tissue found but no patch reaches the tissue fraction threshold")
            warnings.append(f"{message}: writing zero coordinates")
            log.warning("slide %s: %s", name, warnings[-1])
        write_coords_h5(paths.h5, patches.coords, _h5_attrs(slide, patches, patch_params))
        timer.step("write_h5")
        write_png(paths.mask, mask_image(segmentation, vis_max_side))
        timer.step("mask")
        write_png(paths.stitch, stitch_image(segmentation, patches.coords,
                                             patches.geometry.patch_size_level0, vis_max_side))
        timer.step("stitch")
        seconds = dict(timer.seconds, total=round(time.perf_counter() - total_start, 4))
        summary = _summary(slide, segmentation, patches, seg_params, patch_params, preset,
                           default_mpp, warnings, seconds, paths.relative_to(Path(out_dir)))
    write_summary(paths.summary, summary)
    log.info("slide %s: %d patches, %.3f mm² tissue, %.1f s", name, patches.count,
             segmentation.tissue_area_mm2, seconds["total"])
    return summary


def _h5_attrs(slide: WsiSlide, patches: PatchResult, params: PatchParams) -> dict[str, Any]:
    g = patches.geometry
    level_dim = slide.level_dimensions[g.level]
    return {
        "patch_size": g.patch_size_level, "patch_level": g.level,
        "downsample": g.level_downsample, "level_dim": level_dim,
        "downsampled_level_dim": level_dim, "name": slide.name,
        "patch_size_level0": g.patch_size_level0, "output_patch_size": g.patch_size,
        "step_size_level0": g.step_level0, "magnification": params.magnification,
        "target_mpp": g.target_mpp, "mpp": slide.scale.mpp,
        "slide_magnification": slide.scale.magnification, "mpp_source": slide.scale.source,
        "level0_dim": slide.dimensions,
    }


def _file_bytes(path: str | os.PathLike) -> int | None:
    """Size of the slide file (its data folder is not counted for MIRAX): recorded for the reuse check."""
    return Path(path).stat().st_size if Path(path).is_file() else None


def _summary(slide: WsiSlide, seg: Segmentation, patches: PatchResult, seg_params: SegmentParams,
             patch_params: PatchParams, preset: str, default_mpp: float, warnings: list[str],
             seconds: dict[str, float], outputs: dict[str, str]) -> dict[str, Any]:
    g = patches.geometry
    return {
        "slide": slide.name,
        "slide_path": str(slide.path),
        "status": "ok" if patches.count else "no_tissue",
        "tissue_area_mm2": round(seg.tissue_area_mm2, 6),
        "patch_count": patches.count,
        "parameters": {"preset": preset, "segment": seg_params.to_dict(),
                       "patch": patch_params.to_dict(), "default_mpp": default_mpp},
        "slide_info": {
            "vendor": slide.vendor, "dimensions": slide.dimensions, "file_bytes": _file_bytes(slide.path),
            "level_count": slide.level_count,
            "level_downsamples": [round(d, 4) for d in slide.level_downsamples],
            "mpp": slide.scale.mpp, "magnification": slide.scale.magnification,
            "scale_source": slide.scale.source,
        },
        "segmentation": {
            "method": seg.source.method, "level": seg.source.level, "size": seg.source.size,
            "downsample": round(seg.source.downsample, 4),
            "pixel_um": round(seg.source.downsample * slide.scale.mpp, 4),
            "candidate_pieces": seg.n_candidates, "tissue_pieces": len(seg.tissue),
            "holes": sum(len(h) for h in seg.holes),
        },
        "patches": {
            "count": patches.count, "grid": patches.grid_shape,
            "patch_size": g.patch_size, "patch_size_level0": g.patch_size_level0,
            "patch_level": g.level, "patch_size_level": g.patch_size_level,
            "step_level0": g.step_level0, "target_magnification": patch_params.magnification,
            "target_mpp": round(g.target_mpp, 6),
        },
        "outputs": outputs,
        "seconds": seconds,
        "warnings": warnings,
    }
