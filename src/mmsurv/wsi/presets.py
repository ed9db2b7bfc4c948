"""Named tissue-segmentation presets equivalent to CLAM's ``presets/*.csv``, with areas in mm².

Who uses this: ``mmsurv wsi patch --preset NAME``, the workflow config (``wsi.preset``) and
``mmsurv.wsi.patching.segment_and_patch``.

Values are CLAM's (``mahmoodlab/CLAM``, ``presets/tcga.csv``, ``bwh_biopsy.csv``,
``bwh_resection.csv``)::

    preset         sthresh  mthresh  close  use_otsu  a_t  a_h  max_n_holes
    tcga                 8        7      4     False   16    4            8
    bwh_biopsy          15       11      2     False    1    1            2
    bwh_resection       15       11      4     False  100   16            8

(The issue quoted sthresh 8 / mthresh 7 / close 4 for the two BWH presets; CLAM's files say
15 / 11 / 2 and 15 / 11 / 4, which is what is used here.)

From CLAM's patch-count areas to mm²
------------------------------------
CLAM's ``a_t`` and ``a_h`` count *reference patches*: in ``segmentTissue`` they are multiplied by
``ref_patch_size**2 / (scale_x * scale_y)``, i.e. by the area, in segmentation-level pixels, of a
512 x 512 patch at level 0. So ``a_t = 16`` means "16 x 512² level-0 pixels", whose physical size
depends on the scan: (512 px x mpp)² per reference patch,

    =  0.065536 mm² at 0.5 µm/px (20x)      =  0.016384 mm² at 0.25 µm/px (40x).

We state the thresholds in mm² so a 20x and a 40x scan of the same tissue are treated alike, and
convert at ``REFERENCE_MPP = 0.25`` µm/px (40x), the resolution of most TCGA diagnostic slides,
i.e. the scans CLAM's ``tcga`` preset was tuned on:

    min_tissue_mm2 = a_t * (512 * 0.25 µm)² = a_t * 0.016384 mm²
    min_hole_mm2   = a_h * 0.016384 mm²

For ``tcga``: tissue pieces > 0.262 mm², holes > 0.066 mm². Converting at 20x instead would give
1.05 mm², and that (like CLAM's default ``a_t = 100``, 6.6 mm² at 20x) rejects everything on the
real 2220 x 2967 px (1.1 x 1.5 mm) ``CMU-1-Small-Region.svs`` crop, whose largest tissue piece is
~0.63 mm²: a small biopsy fragment that should be kept. At the 40x reference it is kept, and
specks of dust or debris (< 0.26 mm², e.g. ~0.006 mm² on that slide) are still dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mmsurv.wsi.segment import SegmentParams

REFERENCE_PATCH_PX = 512      # CLAM's ref_patch_size (level-0 px)
REFERENCE_MPP = 0.25          # µm/px at which CLAM's patch counts are converted (TCGA: mostly 40x)


def reference_patch_mm2(mpp: float = REFERENCE_MPP, patch_px: int = REFERENCE_PATCH_PX) -> float:
    """Area in mm² of one CLAM reference patch (``patch_px``² level-0 px at ``mpp`` µm/px)."""
    return (patch_px * mpp / 1000.0) ** 2


@dataclass(frozen=True)
class ClamPreset:
    """One CLAM preset row (the parameters this package uses)."""

    name: str
    sthresh: int
    mthresh: int
    close: int
    use_otsu: bool
    a_t: float            # min tissue area, in reference patches
    a_h: float            # min hole area, in reference patches
    max_n_holes: int

    def segment_params(self, mpp: float = REFERENCE_MPP, **overrides) -> SegmentParams:
        """``SegmentParams`` with areas converted to mm² at ``mpp`` (plus explicit overrides)."""
        unit = reference_patch_mm2(mpp)
        params = SegmentParams(sthresh=self.sthresh, mthresh=self.mthresh, close=self.close,
                               use_otsu=self.use_otsu, min_tissue_mm2=self.a_t * unit,
                               min_hole_mm2=self.a_h * unit, max_n_holes=self.max_n_holes)
        return replace(params, **{k: v for k, v in overrides.items() if v is not None})


PRESETS: dict[str, ClamPreset] = {
    preset.name: preset
    for preset in (
        ClamPreset("tcga", sthresh=8, mthresh=7, close=4, use_otsu=False, a_t=16, a_h=4, max_n_holes=8),
        ClamPreset("bwh_biopsy", sthresh=15, mthresh=11, close=2, use_otsu=False, a_t=1, a_h=1,
                   max_n_holes=2),
        ClamPreset("bwh_resection", sthresh=15, mthresh=11, close=4, use_otsu=False, a_t=100, a_h=16,
                   max_n_holes=8),
    )
}
DEFAULT_PRESET = "tcga"


def get_preset(name: str) -> ClamPreset:
    """The preset called ``name``; a ValueError lists the known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown segmentation preset {name!r} (known: {', '.join(PRESETS)})") from None


def preset_params(name: str = DEFAULT_PRESET, **overrides) -> SegmentParams:
    """``SegmentParams`` of preset ``name`` with mm² areas; ``None`` overrides are ignored."""
    return get_preset(name).segment_params(**overrides)
