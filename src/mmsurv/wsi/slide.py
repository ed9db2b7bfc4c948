"""Opening a whole-slide image and resolving its physical scale (µm per pixel, magnification).

Who uses this: the tissue segmentation and patching stage (``mmsurv.wsi.segment``,
``mmsurv.wsi.patch``) and anything downstream that needs to read regions of a slide with
errors that name the slide.

* ``open_slide(path, slide_name=...)`` wraps ``openslide.OpenSlide``: a missing, unsupported or
  corrupt file raises ``SlideOpenError``; a failed region read raises ``SlideReadError``. Both are
  ``SlideError`` (a ``RuntimeError``) and name the slide, so a batch run can report which slide
  failed and carry on with the others.
* ``resolve_scale(properties, ...)`` decides the slide's µm/px and objective power:

  - OpenSlide's ``openslide.mpp-x``/``-y`` and ``openslide.objective-power`` when present and
    plausible. An MPP outside ``PLAUSIBLE_MPP`` is ignored: generic TIFFs without a real
    resolution report the TIFF default of 72 dpi, i.e. 352.8 µm/px (``boxes.tiff``).
  - If only one of the two is known the other is derived with ``mpp ≈ 10 / objective power``
    (a 20x objective images ~0.5 µm/px, 40x ~0.25 µm/px) and a warning is logged.
  - If neither is known, a configured default MPP (0.5 µm/px, i.e. 20x) is used, with a warning.

  ``SlideScale.source`` records which case applied; it ends up in the per-slide JSON summary.
* ``WsiSlide.read_rgb(x, y, level, w, h)`` returns an RGB ``uint8`` array with OpenSlide's
  transparent padding (outside the slide, or unscanned regions) composited onto white, which is
  what a glass slide looks like and what the tissue detector treats as background.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openslide

from mmsurv.naming import slide_stem

log = logging.getLogger(__name__)

DEFAULT_MPP = 0.5                 # µm/px assumed when a slide states neither MPP nor magnification
MPP_TIMES_MAGNIFICATION = 10.0    # mpp ≈ 10 / objective power (0.5 µm/px at 20x, 0.25 at 40x)
PLAUSIBLE_MPP = (0.05, 20.0)      # µm/px; outside this the metadata is not a real scan resolution
PLAUSIBLE_MAGNIFICATION = (1.0, 200.0)


class SlideError(RuntimeError):
    """A slide could not be processed; the message names the slide."""

    def __init__(self, slide: str, message: str):
        super().__init__(f"slide {slide}: {message}")
        self.slide = slide


class SlideOpenError(SlideError):
    """The file is missing, not a slide format OpenSlide supports, or cannot be opened."""


class SlideReadError(SlideError):
    """The slide opened but reading pixels failed (corrupt tiles, truncated file...)."""


@dataclass(frozen=True)
class SlideScale:
    """Physical scale of level 0: µm per pixel and objective power, and where they came from."""

    mpp: float
    magnification: float
    source: str                       # "metadata" | "mpp_from_magnification" | ... | "default"
    warnings: tuple[str, ...] = ()


@dataclass
class WsiSlide:
    """An open slide: OpenSlide handle, name (for messages and outputs) and resolved scale."""

    path: Path
    name: str
    handle: openslide.OpenSlide
    scale: SlideScale
    warnings: list[str] = field(default_factory=list)

    # ---- geometry
    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return tuple(self.handle.dimensions)  # type: ignore[return-value]

    @property
    def level_count(self) -> int:
        return int(self.handle.level_count)

    @property
    def level_dimensions(self) -> list[tuple[int, int]]:
        return [tuple(d) for d in self.handle.level_dimensions]  # type: ignore[misc]

    @property
    def level_downsamples(self) -> list[float]:
        return [float(d) for d in self.handle.level_downsamples]

    def level_scale(self, level: int) -> tuple[float, float]:
        """Exact (x, y) level-0 pixels per pixel of ``level`` (from the level sizes)."""
        w0, h0 = self.dimensions
        w, h = self.level_dimensions[level]
        return w0 / w, h0 / h

    @property
    def properties(self) -> Mapping[str, str]:
        return self.handle.properties

    @property
    def vendor(self) -> str:
        return str(self.handle.properties.get(openslide.PROPERTY_NAME_VENDOR, "unknown"))

    # ---- pixels
    def read_rgb(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """uint8 RGB (height, width, 3) at ``level``; (x, y) is the level-0 top-left corner."""
        try:
            region = self.handle.read_region((int(x), int(y)), int(level), (int(width), int(height)))
        except openslide.OpenSlideError as error:
            raise SlideReadError(self.name, f"cannot read region at ({x}, {y}) level {level} "
                                            f"of {self.path}: {error}") from error
        return rgba_to_rgb_on_white(np.asarray(region))

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> WsiSlide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rgba_to_rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite OpenSlide's (non-premultiplied) RGBA onto white; fully opaque input is a copy."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha.astype(np.float32)[..., None] * (1.0 / 255.0)
    out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def slide_name_of(path: str | os.PathLike) -> str:
    """Default slide name: the file name without its extension (``TCGA-XX-...-DX1``), as everywhere
    (:func:`mmsurv.naming.slide_stem`)."""
    return slide_stem(path)


def open_slide(path: str | os.PathLike, *, slide_name: str | None = None,
               default_mpp: float = DEFAULT_MPP) -> WsiSlide:
    """Open ``path`` with OpenSlide and resolve its scale; errors name the slide."""
    path = Path(path)
    name = slide_name or slide_name_of(path)
    if not path.is_file():
        raise SlideOpenError(name, f"file not found: {path}")
    try:
        handle = openslide.OpenSlide(os.fspath(path))
    except openslide.OpenSlideUnsupportedFormatError as error:
        raise SlideOpenError(name, f"{path} is not a slide format OpenSlide can read: {error}") from error
    except openslide.OpenSlideError as error:
        raise SlideOpenError(name, f"OpenSlide cannot open {path}: {error}") from error
    scale = resolve_scale(handle.properties, slide_name=name, default_mpp=default_mpp)
    return WsiSlide(path=path, name=name, handle=handle, scale=scale, warnings=list(scale.warnings))


# --------------------------------------------------------------------------------------------
# Scale resolution
# --------------------------------------------------------------------------------------------

def _parse_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _in_range(value: float | None, bounds: tuple[float, float]) -> bool:
    return value is not None and bounds[0] <= value <= bounds[1]


def read_mpp(properties: Mapping[str, str]) -> float | None:
    """Mean of OpenSlide's MPP x/y (one of them if only one is set); None when absent."""
    values = [_parse_float(properties.get(key))
              for key in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y)]
    values = [v for v in values if v is not None and v > 0]
    return float(np.mean(values)) if values else None


def resolve_scale(properties: Mapping[str, str], *, slide_name: str,
                  default_mpp: float = DEFAULT_MPP) -> SlideScale:
    """µm/px and objective power of level 0 (see the module docstring for the fallbacks)."""
    if not default_mpp > 0:
        raise ValueError(f"default_mpp must be positive, got {default_mpp}")
    warnings: list[str] = []
    mpp = read_mpp(properties)
    if mpp is not None and not _in_range(mpp, PLAUSIBLE_MPP):
        warnings.append(f"ignoring implausible MPP {mpp:.6g} µm/px (TIFF default resolution?)")
        mpp = None
    mag = _parse_float(properties.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))
    if mag is not None and not _in_range(mag, PLAUSIBLE_MAGNIFICATION):
        warnings.append(f"ignoring implausible objective power {mag:g}")
        mag = None

    if mpp is not None and mag is not None:
        source = "metadata"
    elif mpp is not None:
        mag = MPP_TIMES_MAGNIFICATION / mpp
        source = "magnification_from_mpp"
        warnings.append(f"no objective power; derived {mag:.3g}x from MPP {mpp:.4g} µm/px")
    elif mag is not None:
        mpp = MPP_TIMES_MAGNIFICATION / mag
        source = "mpp_from_magnification"
        warnings.append(f"no MPP; derived {mpp:.4g} µm/px from objective power {mag:g}x")
    else:
        mpp = float(default_mpp)
        mag = MPP_TIMES_MAGNIFICATION / mpp
        source = "default"
        warnings.append(f"neither MPP nor objective power; using the default {mpp:g} µm/px "
                        f"({mag:.3g}x)")
    for message in warnings:
        log.warning("slide %s: %s", slide_name, message)
    return SlideScale(mpp=float(mpp), magnification=float(mag), source=source,
                      warnings=tuple(warnings))
