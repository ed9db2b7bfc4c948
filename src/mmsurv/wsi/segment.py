"""Tissue segmentation of a whole-slide image on a low-resolution image, CLAM-style.

Who uses this: ``mmsurv.wsi.patching.segment_and_patch`` (the ``segment_and_patch_batch`` workflow rule and the
``mmsurv wsi patch`` command) and the benchmark ``bench/segment.py``.

Steps (``segment_slide``):

1. **Segmentation image** (``read_segmentation_image``). The pyramid level whose downsample is
   closest (in log scale) to ``seg_downsample`` (64, like CLAM's ``seg_level=-1``) is read, in
   blocks, when it is at least ``min_level_downsample`` (16) times coarser than level 0. Otherwise
   (single-level slides such as ``CMU-1-Small-Region.svs``, or pyramids that stop at 4x) a
   thumbnail at ``thumbnail_mpp`` µm/px (8 µm/px: the 16x level of a 20x scan) is built block by
   block from the coarsest level that is still finer than the thumbnail, each block shrunk with
   ``cv2.INTER_AREA``; level 0 is never loaded whole.
2. **Foreground**: HSV saturation, median blur (``mthresh``, odd), binary threshold at ``sthresh``
   or Otsu, morphological close with a ``close`` x ``close`` square. Kernel sizes are in pixels
   of the segmentation image, as in CLAM.
3. **Contours with holes**: ``cv2.findContours(RETR_CCOMP)``: outer tissue boundaries and their
   holes. A tissue piece is kept when its area minus all its holes exceeds ``min_tissue_mm2``;
   its ``max_n_holes`` largest holes are kept when larger than ``min_hole_mm2``. Areas are
   converted to mm² through the slide's MPP, so the thresholds mean the same on 20x and 40x scans
   (see ``mmsurv.wsi.presets`` for how CLAM's patch-count areas were converted).
4. **Mask**: kept tissue pieces filled, minus the background inside kept holes (dropped holes
   count as tissue). This rasterised mask is what patch selection uses and what the tissue area
   (mm²) is measured on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from mmsurv.wsi.slide import WsiSlide

log = logging.getLogger(__name__)

Contour = np.ndarray   # int32 (n, 1, 2) of (x, y) in segmentation-image pixels
# OpenSlide reports e.g. 15.98 for a "16x" level whose size was rounded up; accept it as 16x.
LEVEL_TOLERANCE = 0.95


@dataclass(frozen=True)
class SegmentParams:
    """Tissue-detection parameters (CLAM names where they exist; areas in mm²)."""

    sthresh: int = 8                  # saturation threshold (0-255) when not using Otsu
    mthresh: int = 7                  # median blur kernel (odd, segmentation-image px)
    close: int = 4                    # morphological close kernel side (px); 0 = none
    use_otsu: bool = False
    min_tissue_mm2: float = 0.262144  # tissue pieces must be larger (net of holes)
    min_hole_mm2: float = 0.065536    # holes must be larger to be excluded
    max_n_holes: int = 8              # largest holes kept per tissue piece
    seg_downsample: float = 64.0      # pyramid level closest to this downsample...
    min_level_downsample: float = 16.0  # ...if at least this coarse, else build a thumbnail
    thumbnail_mpp: float = 8.0        # µm/px of the thumbnail built when no level is coarse enough
    read_block: int = 4096            # max side (source px) of one read_region call

    def __post_init__(self) -> None:
        if self.mthresh < 0 or (self.mthresh > 1 and self.mthresh % 2 == 0):
            raise ValueError(f"mthresh must be odd (median blur kernel), got {self.mthresh}")
        if not 0 <= self.sthresh <= 255:
            raise ValueError(f"sthresh must be in 0..255, got {self.sthresh}")
        if self.close < 0 or self.max_n_holes < 0:
            raise ValueError("close and max_n_holes must be >= 0")
        if self.min_tissue_mm2 < 0 or self.min_hole_mm2 < 0:
            raise ValueError("area thresholds must be >= 0")
        if self.seg_downsample <= 0 or self.thumbnail_mpp <= 0 or self.read_block < 64:
            raise ValueError("seg_downsample and thumbnail_mpp must be > 0, read_block >= 64")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SegmentationSource:
    """Which slide level the segmentation image comes from, and its geometry."""

    method: str                   # "level" (a pyramid level as is) or "thumbnail"
    level: int                    # slide level read
    size: tuple[int, int]         # (width, height) of the segmentation image
    scale: tuple[float, float]    # level-0 px per segmentation px, (x, y)

    @property
    def downsample(self) -> float:
        return float(math.sqrt(self.scale[0] * self.scale[1]))


@dataclass
class Segmentation:
    """Result of ``segment_slide``: the image, contours, hole contours and rasterised mask."""

    image: np.ndarray                 # uint8 RGB segmentation image (thumbnail)
    source: SegmentationSource
    mpp: float                        # slide level-0 µm/px used for areas
    tissue: list[Contour]             # kept tissue contours (segmentation px)
    holes: list[list[Contour]]        # kept holes, per tissue contour
    mask: np.ndarray                  # uint8 0/1: tissue, holes excluded
    n_candidates: int = 0             # outer contours before area filtering

    @property
    def scale(self) -> tuple[float, float]:
        return self.source.scale

    @property
    def pixel_area_mm2(self) -> float:
        return pixel_area_mm2(self.source.scale, self.mpp)

    @property
    def tissue_area_mm2(self) -> float:
        return float(np.count_nonzero(self.mask)) * self.pixel_area_mm2

    @property
    def found_tissue(self) -> bool:
        return bool(self.tissue)


def pixel_area_mm2(scale: tuple[float, float], mpp: float) -> float:
    """Area of one segmentation pixel in mm² (level-0 px per px times µm per level-0 px)."""
    return scale[0] * scale[1] * mpp * mpp * 1e-6


# --------------------------------------------------------------------------------------------
# 1. Segmentation image
# --------------------------------------------------------------------------------------------

def choose_source(slide: WsiSlide, params: SegmentParams) -> SegmentationSource:
    """Pyramid level closest to ``seg_downsample`` if coarse enough, else a thumbnail plan."""
    downsamples = slide.level_downsamples
    best = min(range(len(downsamples)),
               key=lambda i: abs(math.log(downsamples[i] / params.seg_downsample)))
    if downsamples[best] >= params.min_level_downsample * LEVEL_TOLERANCE:
        return SegmentationSource("level", best, slide.level_dimensions[best],
                                  slide.level_scale(best))
    w0, h0 = slide.dimensions
    target = max(1.0, params.thumbnail_mpp / slide.scale.mpp)
    size = (max(1, round(w0 / target)), max(1, round(h0 / target)))
    scale = (w0 / size[0], h0 / size[1])
    fine_enough = [i for i, d in enumerate(downsamples) if d <= min(scale) * (1 + 1e-6)]
    level = max(fine_enough, key=lambda i: downsamples[i]) if fine_enough else 0
    return SegmentationSource("thumbnail", level, size, scale)


def _blocks(length: int, block: int) -> list[tuple[int, int]]:
    return [(start, min(block, length - start)) for start in range(0, length, block)]


def read_segmentation_image(slide: WsiSlide, source: SegmentationSource,
                            read_block: int = 4096) -> np.ndarray:
    """uint8 RGB (height, width, 3) segmentation image, read in blocks of bounded size."""
    width, height = source.size
    out = np.empty((height, width, 3), np.uint8)
    if source.method == "level":
        sx, sy = source.scale
        for y, bh in _blocks(height, read_block):
            for x, bw in _blocks(width, read_block):
                out[y:y + bh, x:x + bw] = slide.read_rgb(round(x * sx), round(y * sy),
                                                         source.level, bw, bh)
        return out
    _fill_thumbnail(slide, source, out, read_block)
    return out


def _fill_thumbnail(slide: WsiSlide, source: SegmentationSource, out: np.ndarray,
                    read_block: int) -> None:
    """Shrink the source level block by block into ``out`` (INTER_AREA)."""
    sx, sy = source.scale
    lsx, lsy = slide.level_scale(source.level)
    lw, lh = slide.level_dimensions[source.level]
    ratio = max(sx / lsx, sy / lsy)            # source px per thumbnail px
    block = max(1, int(read_block // ratio))   # thumbnail px per block side
    height, width = out.shape[:2]
    for ty, th in _blocks(height, block):
        for tx, tw in _blocks(width, block):
            lx0, ly0 = math.floor(tx * sx / lsx), math.floor(ty * sy / lsy)
            lx1 = min(lw, math.ceil((tx + tw) * sx / lsx))
            ly1 = min(lh, math.ceil((ty + th) * sy / lsy))
            region = slide.read_rgb(round(lx0 * lsx), round(ly0 * lsy), source.level,
                                    max(1, lx1 - lx0), max(1, ly1 - ly0))
            if region.shape[:2] != (th, tw):
                region = cv2.resize(region, (tw, th), interpolation=cv2.INTER_AREA)
            out[ty:ty + th, tx:tx + tw] = region


# --------------------------------------------------------------------------------------------
# 2.-4. Foreground, contours, mask
# --------------------------------------------------------------------------------------------

def foreground(rgb: np.ndarray, params: SegmentParams) -> np.ndarray:
    """uint8 0/255 foreground from the saturation channel (blur, threshold, close)."""
    saturation = np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1])
    if params.mthresh > 1:
        saturation = cv2.medianBlur(saturation, params.mthresh)
    if params.use_otsu:
        _, binary = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    else:
        _, binary = cv2.threshold(saturation, params.sthresh, 255, cv2.THRESH_BINARY)
    if params.close > 0:
        kernel = np.ones((params.close, params.close), np.uint8)
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    return binary


def filter_contours(binary: np.ndarray, pixel_mm2: float, params: SegmentParams
                    ) -> tuple[list[Contour], list[list[Contour]], int]:
    """Kept tissue contours, their kept holes, and the number of candidate pieces."""
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None or not contours:
        return [], [], 0
    parents = hierarchy[0][:, 3]
    children: dict[int, list[int]] = {}
    for index, parent in enumerate(parents):
        if parent >= 0:
            children.setdefault(int(parent), []).append(index)
    outer = np.flatnonzero(parents == -1)
    tissue, holes = [], []
    for index in outer:
        hole_ids = children.get(int(index), [])
        hole_areas = np.array([cv2.contourArea(contours[h]) for h in hole_ids], np.float64)
        net = cv2.contourArea(contours[index]) - float(hole_areas.sum())
        if net <= 0 or net * pixel_mm2 <= params.min_tissue_mm2:
            continue
        largest = np.argsort(-hole_areas, kind="stable")[:params.max_n_holes]
        kept = [contours[hole_ids[i]] for i in largest
                if hole_areas[i] * pixel_mm2 > params.min_hole_mm2]
        tissue.append(contours[index])
        holes.append(kept)
    return tissue, holes, int(outer.size)


def rasterise(shape: tuple[int, int], binary: np.ndarray, tissue: list[Contour],
              holes: list[list[Contour]]) -> np.ndarray:
    """uint8 0/1 mask: kept pieces filled, minus the background pixels of kept holes."""
    mask = np.zeros(shape, np.uint8)
    if not tissue:
        return mask
    cv2.drawContours(mask, tissue, -1, 1, thickness=cv2.FILLED)
    all_holes = [h for piece in holes for h in piece]
    if all_holes:
        hole_fill = np.zeros(shape, np.uint8)
        cv2.drawContours(hole_fill, all_holes, -1, 1, thickness=cv2.FILLED)
        mask[(hole_fill == 1) & (binary == 0)] = 0
    return mask


def segment_image(rgb: np.ndarray, source: SegmentationSource, mpp: float,
                  params: SegmentParams) -> Segmentation:
    """Segment an already-read segmentation image (pure function of pixels and geometry)."""
    binary = foreground(rgb, params)
    tissue, holes, n_candidates = filter_contours(binary, pixel_area_mm2(source.scale, mpp), params)
    mask = rasterise(binary.shape, binary, tissue, holes)
    return Segmentation(image=rgb, source=source, mpp=mpp, tissue=tissue, holes=holes, mask=mask,
                        n_candidates=n_candidates)


def segment_slide(slide: WsiSlide, params: SegmentParams | None = None) -> Segmentation:
    """Read the segmentation image of ``slide`` and detect tissue (see the module docstring)."""
    params = params or SegmentParams()
    source = choose_source(slide, params)
    log.debug("slide %s: segmenting %s of level %d at %dx%d (downsample %.2f)", slide.name,
              source.method, source.level, *source.size, source.downsample)
    rgb = read_segmentation_image(slide, source, params.read_block)
    return segment_image(rgb, source, slide.scale.mpp, params)


def scale_contours(contours: list[Contour], factor_x: float, factor_y: float) -> list[Contour]:
    """Contours multiplied by (factor_x, factor_y), e.g. to level-0 px or a smaller canvas."""
    factor = np.array([factor_x, factor_y], np.float64)
    return [np.rint(c.astype(np.float64) * factor).astype(np.int32) for c in contours]
