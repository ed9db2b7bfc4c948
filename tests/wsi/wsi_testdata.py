"""Test data for the WSI tests: generated slides (shared by modules) and ``shared_path``.

Not a test module.

* ``get(key)`` returns ``(path, SyntheticSlide)`` for one of ``SPECS``, writing the slide on first
  use into a temporary folder that is removed when the session ends. Slides are small
  (<= 4000 x 3000 px, ~0.5 s each) and their tissue geometry is known exactly
  (``SyntheticSlide.tissue_mask``).
* ``shared_path`` is re-exported from ``tests/mmsurv_testdata.py``.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

from mmsurv.demo.slides import SlideSpec, SyntheticSlide, make_slide

# key -> (spec, write keyword arguments)
SPECS: dict[str, tuple[SlideSpec, dict]] = {
    # 20x, two tissue pieces with holes, Aperio pyramid 1/4/16
    "20x": (SlideSpec(width=4000, height=3000, seed=11, n_regions=2), {}),
    # the same tissue written without a pyramid: segmentation must build a thumbnail
    "20x_single_level": (SlideSpec(width=4000, height=3000, seed=11, n_regions=2),
                         {"downsamples": (1,)}),
    # a 20x / 40x pair with the same physical tissue (generation is scale-equivariant);
    # JPEG quality 95 so compression ringing at the synthetic edges stays below a pixel
    "20x_pair": (SlideSpec(width=2000, height=1500, seed=5, n_regions=2), {"jpeg_quality": 95}),
    "40x_pair": (SlideSpec(width=4000, height=3000, mpp=0.25, app_mag=40, seed=5, n_regions=2),
                 {"jpeg_quality": 95}),
    "blank": (SlideSpec(width=2000, height=1500, seed=3, blank=True), {}),
}

from mmsurv_testdata import shared_path  # noqa: E402,F401  (re-exported)

_cache: dict[str, tuple[Path, SyntheticSlide]] = {}
_folder: Path | None = None


def _tmp_folder() -> Path:
    global _folder
    if _folder is None:
        _folder = Path(tempfile.mkdtemp(prefix="mmsurv-wsi-tests-"))
        atexit.register(shutil.rmtree, _folder, True)
    return _folder


def get(key: str) -> tuple[Path, SyntheticSlide]:
    """(slide path, synthetic slide with its ground truth) for ``key``; generated on first use."""
    if key not in _cache:
        spec, kwargs = SPECS[key]
        path = _tmp_folder() / f"{key}.svs"
        _cache[key] = (path, make_slide(path, spec, **kwargs))
    return _cache[key]
