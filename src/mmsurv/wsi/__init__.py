"""Tissue segmentation and patch coordinates for whole-slide images (the patching stage).

Who uses this: the workflow's patching jobs (:mod:`mmsurv.wsi.batch`), the ``mmsurv wsi patch``
command, and the feature-extraction stage that reads the coordinates.

:func:`mmsurv.wsi.patching.segment_and_patch` is the single entry point for one slide: it opens the
slide (``slide``), finds tissue on a low-resolution image (``segment``, ``presets``), selects
512 px patches at 20x on the tissue (``patch``) and writes the CLAM-compatible outputs
(``outputs``), returning the JSON summary it wrote last. A slide without tissue is not an error: it
gets zero coordinates, a warning, and all outputs. A slide that cannot be opened or read raises
``SlideError`` naming the slide.

Names are imported on first use, so a module of this package that needs only pandas (the cohort
summary, :mod:`mmsurv.wsi.summary`) imports neither OpenSlide nor OpenCV.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "segment_and_patch": "mmsurv.wsi.patching", "resolve_params": "mmsurv.wsi.patching",
    "PatchingSettings": "mmsurv.wsi.patching", "SegmentParams": "mmsurv.wsi.segment",
    "segment_slide": "mmsurv.wsi.segment", "PatchParams": "mmsurv.wsi.patch", "select_patches": "mmsurv.wsi.patch",
    "PRESETS": "mmsurv.wsi.presets", "SlideError": "mmsurv.wsi.slide", "SlideOpenError": "mmsurv.wsi.slide",
    "SlideReadError": "mmsurv.wsi.slide", "open_slide": "mmsurv.wsi.slide",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmsurv.wsi' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
