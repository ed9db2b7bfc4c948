"""Synthetic H&E-like whole-slide images written as Aperio-style pyramidal TIFFs.

Who uses this
-------------
* the offline demo cohort (``SlideSpec`` per patient, ~8000x6000 px, ~1-2 s per slide),
* tissue-segmentation tests, which need the exact ground-truth mask (``SyntheticSlide.tissue_mask``),
* the WSI benchmark, which needs a ~100000x80000 px 40x slide written with bounded memory.

Scene model (everything is defined in level-0 pixel coordinates, so every resolution shows the same
slide and tiles can be rendered independently, in any order)
* Tissue is the set where a signed field ``F > 0``. ``F`` is sampled once on a coarse node grid from
  a few randomly perturbed ellipses (each with 1-3 perturbed-ellipse holes, 2-6 % of its area) plus a
  little smooth noise for ragged edges, and bilinearly interpolated at pixel centres
  (``x + (j + 0.5) * downsample``). ``tissue_mask`` and ``render`` use the same evaluation, so the
  mask is the ground truth at every level.
* Stroma is eosin pink (~RGB 232,160,192) modulated by two low-frequency fields and a streaky
  "fibre" field. Nuclei (hematoxylin, ~RGB 90,60,150) are ellipses generated per 64 µm block from an
  RNG seeded with ``(seed, block x, block y)``; their density, size and darkness grow with
  ``risk``. When a nucleus would be smaller than one output pixel it is splatted as its area
  coverage (blurred) instead of drawn, i.e. its average effect.
* Background is near-white (240-245) plus a faint noise pattern that is periodic (256 output
  pixels), so every tile-aligned background tile at every level is identical.
* Rendering is exact per pixel: a region gives the same pixels however it is cut into tiles
  (interpolation by gathers rather than BLAS/cv2.transform, ellipses drawn on a padded canvas,
  nuclei cached per block but generated from the block's own RNG).
* ``tissue_fraction`` is met approximately before holes: blobs are grown about their centres to
  make up for overlaps and clipping (8000x6000, 0.35 -> ~0.35 before, ~0.33 after holes).

Writing (``write_aperio_slide``)
* One tiled, JPEG-compressed page per level in the main IFD chain (Aperio layout, no SubIFDs);
  level sizes are ``ceil(level0 / downsample)``; the first ImageDescription is Aperio's
  ``Aperio Image Library ...|AppMag = ..|MPP = ..`` string (``metadata=None`` so tifffile adds no
  JSON description). Written through ``mmsurv.io.atomic_path``.
* Tiles are rendered and JPEG-encoded here (bounded look-ahead; 2 threads only for slides with
  > 4096 level-0 tiles, as rendering is partly GIL-bound) and handed to tifffile as an iterator of
  ``(bytes, bytecount)``; memory stays at a few tiles whatever the slide size.
* Background tiles are never rendered: a single encoded background tile is reused, and a run of
  consecutive background tiles shares ONE stored copy: every tile of the run but the last is given
  as ``(b'', bytecount)``. tifffile (>= 2025.6.1, "iterator of bytes and bytecounts", #301) assigns
  an offset equal to the current write position to each item, so these tiles all point at the bytes
  written by the last tile of the run. Shared tile offsets are valid TIFF and libtiff/OpenSlide read
  them. This needs ``tile_size`` to be a multiple of 256 (else every tile is rendered) and falls
  back to storing every tile with older tifffile.

JPEG colour space (what we found)
* With ``photometric='rgb', compression='jpeg'`` tifffile (2026.3) silently stores YCbCr JPEG and
  writes PhotometricInterpretation = 6 (YCbCr) with YCbCrSubSampling (2, 2), i.e. the file is not
  RGB-photometric any more. Passing ``compressionargs={'outcolorspace': 'RGB'}`` (and
  ``subsampling=(1, 1)``) keeps Photometric = 2 like real Aperio ``JPEG/RGB`` slides.
* OpenSlide 4.0.1 decodes both variants correctly (checked: read_region equals the input). Since we
  encode tiles ourselves, we call ``imagecodecs.jpeg8_encode(colorspace='RGB',
  outcolorspace='RGB', subsampling='444')``: the JPEG stream stores RGB components (Adobe marker),
  consistent with Photometric = RGB, so readers that trust either the TIFF tag or the JPEG markers
  agree. RGB JPEG is ~1.6x larger than YCbCr 4:2:0 at the same quality, which is what Aperio does.

Measured (2 shared, busy cores; tifffile 2026.3.3, OpenSlide 4.0.1)
* 8000x6000, 20x, tissue 0.35: 1.7-1.9 s per slide (build + write), 6-14 MB (grows with risk).
* 100000x80000, 40x (mpp 0.25), tissue 0.05: 24-33 s, 160 MB BigTIFF (~6800 tissue tiles of ~20 KB;
  the 116k background tiles of level 0 share 402 stored copies of 4.6 KB), peak RSS ~165 MB.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import imagecodecs
import numpy as np
import tifffile

from mmsurv.io import atomic_path

__all__ = [
    "SlideSpec",
    "SyntheticSlide",
    "write_aperio_slide",
    "make_slide",
    "aperio_description",
]

BACKGROUND_NOISE = 1.0      # std of the background noise pattern (grey levels)
TISSUE_NOISE = 3.0          # std of the pixel noise on tissue
NOISE_PERIOD = 256          # period (output pixels) of the noise pattern
NUCLEUS_BLOCK_UM = 64.0     # side of the blocks nuclei are generated in
COLOUR_GRID_UM = 150.0      # node spacing of the low-frequency stain fields
FIBRE_GRID_UM = 8.0         # node spacing of the streaky stroma texture
STROMA_RGB = np.array([232.0, 160.0, 192.0], np.float32)
STROMA_SHADE = np.array([-14.0, -20.0, -12.0], np.float32)   # darker / lighter pink
STROMA_HUE = np.array([5.0, -6.0, 6.0], np.float32)          # redder / more violet
STROMA_FIBRE = np.array([-7.0, -10.0, -6.0], np.float32)
NUCLEUS_RGB = np.array([90.0, 60.0, 150.0], np.float32)


@dataclass(frozen=True)
class SlideSpec:
    """Everything that determines a synthetic slide (same spec -> same pixels and file bytes)."""

    width: int = 8000            # level-0 pixels
    height: int = 6000
    mpp: float = 0.5             # µm per level-0 pixel (0.25 for a 40x slide)
    app_mag: int = 20            # objective power written as AppMag
    risk: float = 0.0            # latent patient risk (~ standard normal)
    seed: int = 0
    n_regions: int | None = None  # tissue pieces; None -> random 2-5
    tissue_fraction: float = 0.35  # approx. fraction of the slide area covered by tissue (before holes)
    blank: bool = False          # no tissue at all


# --------------------------------------------------------------------------------------------
# Grid fields: values on nodes at level-0 positions (i * spacing, j * spacing), sampled bilinearly
# --------------------------------------------------------------------------------------------

@dataclass
class GridField:
    """Scalar field(s) given on a regular node grid in level-0 coordinates.

    ``values`` is (ny, nx) or channel-first (c, ny, nx); node (i, j) sits at level-0 (j, i) * spacing.
    """

    values: np.ndarray   # float32
    spacing: float       # level-0 pixels between nodes

    @property
    def grid_shape(self) -> tuple[int, int]:
        return self.values.shape[-2], self.values.shape[-1]

    def node_range(self, start: float, n: int, ds: float, axis: int) -> tuple[int, int]:
        """Nodes [lo, hi) along ``axis`` (0 rows, 1 cols) that sampling ``n`` pixels touches."""
        size = self.grid_shape[axis]
        u0 = (start + 0.5 * ds) / self.spacing
        u1 = (start + (n - 0.5) * ds) / self.spacing
        lo = min(max(int(math.floor(u0)), 0), size - 2)
        hi = min(max(int(math.floor(u1)), 0), size - 2) + 2
        return lo, hi

    def _axis(self, start: float, n: int, ds: float, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Lower node index and weight of the upper node for ``n`` pixel centres along an axis."""
        size = self.grid_shape[axis]
        u = (start + (np.arange(n, dtype=np.float64) + 0.5) * ds) / self.spacing
        i0 = np.clip(np.floor(u).astype(np.int64), 0, size - 2)
        t = np.clip(u - i0, 0.0, 1.0).astype(np.float32)
        return i0, t

    def sample(self, x: float, y: float, w: int, h: int, ds: float) -> np.ndarray:
        """float32 ([c,] h, w): field at the centres of the output pixels of a region.

        Separable bilinear interpolation by gathers (no BLAS: exact, chunk-independent and free
        of BLAS thread oversubscription when tiles render in parallel).
        """
        j0, tx = self._axis(x, w, ds, 1)
        i0, ty = self._axis(y, h, ds, 0)
        r0 = int(i0.min())
        rows = self.values[..., r0:int(i0.max()) + 2, :]
        left = rows[..., j0]
        along_x = left + (rows[..., j0 + 1] - left) * tx
        i0 = i0 - r0
        top = along_x[..., i0, :]
        out = along_x[..., i0 + 1, :] - top
        out *= ty[:, None]
        out += top
        return out

    def sample_points(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """Field at arbitrary level-0 points, ([c,] n) (vectorised bilinear, same edge rule)."""
        ny, nx = self.grid_shape
        u, v = px / self.spacing, py / self.spacing
        j0 = np.clip(np.floor(u).astype(np.int64), 0, nx - 2)
        i0 = np.clip(np.floor(v).astype(np.int64), 0, ny - 2)
        tu = np.clip(u - j0, 0.0, 1.0)
        tv = np.clip(v - i0, 0.0, 1.0)
        g = self.values
        top = g[..., i0, j0] * (1 - tu) + g[..., i0, j0 + 1] * tu
        bottom = g[..., i0 + 1, j0] * (1 - tu) + g[..., i0 + 1, j0 + 1] * tu
        return top * (1 - tv) + bottom * tv

    def max_over(self, x: float, y: float, w: int, h: int, ds: float) -> float:
        """Upper bound of the field over a region (max of the nodes interpolation can touch)."""
        c0, c1 = self.node_range(x, w, ds, 1)
        r0, r1 = self.node_range(y, h, ds, 0)
        return float(self.values[..., r0:r1, c0:c1].max())

    def max_in_box(self, x0: float, y0: float, x1: float, y1: float) -> float:
        """Upper bound of the field over the level-0 box [x0, x1] x [y0, y1]."""
        ny, nx = self.grid_shape
        c0 = min(max(int(x0 // self.spacing), 0), nx - 2)
        c1 = min(max(int(x1 // self.spacing), 0), nx - 2) + 2
        r0 = min(max(int(y0 // self.spacing), 0), ny - 2)
        r1 = min(max(int(y1 // self.spacing), 0), ny - 2) + 2
        return float(self.values[..., r0:r1, c0:c1].max())


def _grid_shape(width: int, height: int, spacing: float) -> tuple[int, int]:
    """Nodes needed to cover the slide plus the padding of partial edge tiles."""
    return int(math.ceil(height / spacing)) + 3, int(math.ceil(width / spacing)) + 3


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int],
                  sigma: tuple[float, float]) -> np.ndarray:
    """Unit-variance Gaussian-smoothed white noise (sigma = (x, y) in nodes)."""
    noise = rng.standard_normal(shape).astype(np.float32)
    noise = cv2.GaussianBlur(noise, (0, 0), sigmaX=sigma[0], sigmaY=sigma[1],
                             borderType=cv2.BORDER_REFLECT)
    std = float(noise.std())
    return noise / std if std > 0 else noise


# --------------------------------------------------------------------------------------------
# Tissue geometry: perturbed ellipses
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Blob:
    """A perturbed ellipse: r(phi) = 1 + sum_k amp_k cos(k phi + phase_k) in the ellipse frame."""

    cx: float
    cy: float
    a: float
    b: float
    theta: float
    amps: tuple[float, ...]
    phases: tuple[float, ...]

    @property
    def extent(self) -> float:
        """Radius of a circle around the centre that contains the blob."""
        return max(self.a, self.b) * (1.0 + float(np.sum(np.abs(self.amps))))

    def signed_field(self, px: np.ndarray, py: np.ndarray) -> np.ndarray:
        """~Signed distance in level-0 px: > 0 inside, < 0 outside."""
        dx, dy = px - self.cx, py - self.cy
        c, s = math.cos(self.theta), math.sin(self.theta)
        u = (dx * c + dy * s) / self.a
        v = (-dx * s + dy * c) / self.b
        rho = np.hypot(u, v)
        phi = np.arctan2(v, u)
        r = np.ones_like(rho)
        for k, (amp, phase) in enumerate(zip(self.amps, self.phases), start=2):
            r += amp * np.cos(k * phi + phase)
        return ((r - rho) * math.sqrt(self.a * self.b)).astype(np.float32)


def _random_blob(rng: np.random.Generator, area: float, cx: float, cy: float,
                 roughness: float, max_aspect: float) -> Blob:
    """Blob of (approximately) the given area centred at (cx, cy)."""
    ks = np.arange(2, 8)
    amps = rng.normal(0.0, roughness, ks.size) / ks ** 0.8
    amps = np.clip(amps, -0.25, 0.25)
    phases = rng.uniform(0.0, 2 * math.pi, ks.size)
    aspect = rng.uniform(1.0, max_aspect)
    ab = area / (math.pi * (1.0 + 0.5 * float(np.sum(amps ** 2))))
    return Blob(cx, cy, math.sqrt(ab * aspect), math.sqrt(ab / aspect),
                rng.uniform(0.0, math.pi), tuple(amps.tolist()), tuple(phases.tolist()))


def _place(rng: np.random.Generator, extent: float, width: int, height: int,
           placed: list[Blob]) -> tuple[float, float]:
    """Centre for a blob of radius ``extent``: inside the slide, least overlap of 40 tries."""
    mx, my = min(extent, width / 2), min(extent, height / 2)
    best, best_cost = (width / 2, height / 2), math.inf
    for _ in range(40):
        cx, cy = rng.uniform(mx, width - mx), rng.uniform(my, height - my)
        cost = sum(max(0.0, extent + o.extent - math.hypot(cx - o.cx, cy - o.cy)) for o in placed)
        if cost < best_cost:
            best, best_cost = (cx, cy), cost
        if cost == 0:
            break
    return best


def _make_regions(spec: SlideSpec, rng: np.random.Generator) -> list[tuple[Blob, list[Blob]]]:
    """Tissue regions, each with its holes."""
    if spec.blank or spec.tissue_fraction <= 0:
        return []
    n = spec.n_regions if spec.n_regions is not None else int(rng.integers(2, 6))
    total = spec.tissue_fraction * spec.width * spec.height
    shares = rng.dirichlet(np.full(n, 4.0))
    blobs: list[Blob] = []
    for share in shares:
        shape = _random_blob(rng, total * share, 0.0, 0.0, roughness=0.14, max_aspect=1.8)
        cx, cy = _place(rng, shape.extent, spec.width, spec.height, blobs)
        blobs.append(_moved(shape, cx, cy, 1.0))
    blobs = _calibrate(blobs, spec)
    return [(blob, _make_holes(rng, blob, math.pi * blob.a * blob.b)) for blob in blobs]


def _moved(blob: Blob, cx: float, cy: float, scale: float) -> Blob:
    return Blob(cx, cy, blob.a * scale, blob.b * scale, blob.theta, blob.amps, blob.phases)


def _coverage(blobs: list[Blob], width: int, height: int) -> float:
    """Fraction of the slide inside any blob (on a 256-point-wide sample grid)."""
    step = max(width, height) / 256.0
    ys, xs = np.mgrid[0:height:step, 0:width:step]
    inside = np.zeros(xs.shape, bool)
    for blob in blobs:
        inside |= blob.signed_field(xs + step / 2, ys + step / 2) > 0
    return float(inside.mean())


def _calibrate(blobs: list[Blob], spec: SlideSpec) -> list[Blob]:
    """Grow the blobs (about their centres) to make up for overlaps and clipping at the border."""
    target = spec.tissue_fraction
    for _ in range(4):
        covered = _coverage(blobs, spec.width, spec.height)
        if covered <= 0 or covered >= 0.97 * target:
            break
        scale = min(math.sqrt(target / covered), 1.15)
        blobs = [_moved(b, b.cx, b.cy, scale) for b in blobs]
    return blobs


def _make_holes(rng: np.random.Generator, region: Blob, area: float) -> list[Blob]:
    """1-3 holes covering 2-6 % of the region (``area``: its ellipse area), well inside it."""
    n = int(rng.integers(1, 4))
    fractions = rng.dirichlet(np.full(n, 3.0)) * rng.uniform(0.02, 0.06)
    holes = []
    c, s = math.cos(region.theta), math.sin(region.theta)
    for frac in fractions:
        phi, rho = rng.uniform(0, 2 * math.pi), 0.55 * math.sqrt(rng.uniform(0.0, 1.0))
        u, v = rho * math.cos(phi) * region.a, rho * math.sin(phi) * region.b
        cx, cy = region.cx + u * c - v * s, region.cy + u * s + v * c
        holes.append(_random_blob(rng, area * frac, cx, cy, roughness=0.2, max_aspect=2.2))
    return holes


def _rasterise_regions(regions: list[tuple[Blob, list[Blob]]], shape: tuple[int, int],
                       spacing: float) -> np.ndarray:
    """Signed tissue field on the node grid: max over regions of min(region, -holes)."""
    field_ = np.full(shape, -1e6, np.float32)
    for region, holes in regions:
        r0, r1, c0, c1 = _node_box(region, shape, spacing)
        ys = (np.arange(r0, r1, dtype=np.float64) * spacing)[:, None]
        xs = (np.arange(c0, c1, dtype=np.float64) * spacing)[None, :]
        px, py = np.broadcast_to(xs, (r1 - r0, c1 - c0)), np.broadcast_to(ys, (r1 - r0, c1 - c0))
        value = region.signed_field(px, py)
        for hole in holes:
            value = np.minimum(value, -hole.signed_field(px, py))
        np.maximum(field_[r0:r1, c0:c1], value, out=field_[r0:r1, c0:c1])
    return field_


def _node_box(blob: Blob, shape: tuple[int, int], spacing: float) -> tuple[int, int, int, int]:
    """Node rows/cols around a blob (with a margin of a few nodes)."""
    e = blob.extent + 4 * spacing
    r0 = max(int((blob.cy - e) // spacing), 0)
    r1 = min(int((blob.cy + e) // spacing) + 2, shape[0])
    c0 = max(int((blob.cx - e) // spacing), 0)
    c1 = min(int((blob.cx + e) // spacing) + 2, shape[1])
    return r0, max(r1, r0 + 1), c0, max(c1, c0 + 1)


# --------------------------------------------------------------------------------------------
# Nuclei
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NucleusModel:
    """How ``risk`` shows in the nuclei (all lengths in µm)."""

    density_per_mm2: float
    radius_um: float
    colour: np.ndarray

    @classmethod
    def from_risk(cls, risk: float) -> NucleusModel:
        r = float(np.clip(risk, -2.5, 2.5))
        colour = np.clip(NUCLEUS_RGB * (1.0 - 0.13 * r), 20, 200).astype(np.float32)
        return cls(3500.0 * math.exp(0.5 * r), 3.0 + 0.5 * r, colour)


@dataclass
class Nuclei:
    """Nuclei of one block, level-0 px: centres, semi-axes, angle (deg), opacity."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    angle: np.ndarray
    opacity: np.ndarray

    @classmethod
    def empty(cls) -> Nuclei:
        z = np.zeros(0, np.float32)
        return cls(z, z, z, z, z, z)

    @classmethod
    def concat(cls, parts: Sequence[Nuclei]) -> Nuclei:
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(p, f) for p in parts])
                     for f in ("x", "y", "a", "b", "angle", "opacity")))

    def __len__(self) -> int:
        return int(self.x.size)


# --------------------------------------------------------------------------------------------
# The slide
# --------------------------------------------------------------------------------------------

class SyntheticSlide:
    """A procedurally defined H&E-like slide; any region can be rendered at any downsample."""

    def __init__(self, spec: SlideSpec):
        if spec.width <= 0 or spec.height <= 0 or spec.mpp <= 0:
            raise ValueError(f"invalid slide geometry in {spec}")
        self.spec = spec
        self.nuclei_model = NucleusModel.from_risk(spec.risk)
        rng = np.random.default_rng([spec.seed, 0x7155])
        self.regions = _make_regions(spec, rng)
        self.tissue = self._make_tissue_field(rng)
        self.background_rgb = np.array(
            [rng.integers(241, 245), rng.integers(241, 245), rng.integers(239, 243)], np.float32)
        self.stain, self.fibre = self._make_stain_fields(rng)
        self.noise_rgb, self.noise_lum = self._make_noise_pattern(rng)
        self.background_tile = self._background_pattern()
        self._tissue_noise = TISSUE_NOISE * self.noise_rgb
        self._chromatin = np.clip(0.9 + 0.08 * self.noise_lum, 0.7, 1.0)
        self._block_px = NUCLEUS_BLOCK_UM / spec.mpp
        self._nuclei_cache: dict[tuple[int, int], Nuclei] = {}
        self._colour_cache: dict[tuple[int, int], np.ndarray] = {}

    # ---- construction helpers
    def _make_tissue_field(self, rng: np.random.Generator) -> GridField:
        spec = self.spec
        if not self.regions:
            return GridField(np.full(_grid_shape(spec.width, spec.height, 64.0), -1e6,
                                     np.float32), 64.0)
        scale = math.sqrt(spec.tissue_fraction * spec.width * spec.height / len(self.regions))
        spacing = float(np.clip(scale / 120.0, 2.0, 256.0))
        shape = _grid_shape(spec.width, spec.height, spacing)
        values = _rasterise_regions(self.regions, shape, spacing)
        values += _smooth_noise(rng, shape, (1.5, 1.5)) * (1.5 * spacing)  # ragged edges
        return GridField(values, spacing)

    def _make_stain_fields(self, rng: np.random.Generator) -> tuple[GridField, GridField]:
        """(shade, hue) low-frequency 2-channel field and the streaky fibre field."""
        spec = self.spec
        cs = COLOUR_GRID_UM / spec.mpp
        shape = _grid_shape(spec.width, spec.height, cs)
        stain = np.stack([_smooth_noise(rng, shape, (1.2, 1.2)),
                          _smooth_noise(rng, shape, (1.5, 1.5))])
        fs = FIBRE_GRID_UM / spec.mpp
        fshape = _grid_shape(spec.width, spec.height, fs)
        fibre = GridField(_smooth_noise(rng, fshape, (3.0, 0.7)), fs)
        return GridField(stain, cs), fibre

    @staticmethod
    def _make_noise_pattern(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p = NOISE_PERIOD
        lum = rng.standard_normal((p, p, 1)).astype(np.float32)
        rgb = (0.85 * lum + 0.5 * rng.standard_normal((p, p, 3))).astype(np.float32)
        return rgb, lum[..., 0]

    def _background_pattern(self) -> np.ndarray:
        tile = self.background_rgb + BACKGROUND_NOISE * self.noise_rgb
        return np.clip(np.rint(tile), 0, 255).astype(np.uint8)

    # ---- public API
    def level_shape(self, downsample: float) -> tuple[int, int]:
        """(height, width) of the image at a downsample (ceil of level-0 size / downsample)."""
        return (int(math.ceil(self.spec.height / downsample)),
                int(math.ceil(self.spec.width / downsample)))

    def tissue_mask(self, downsample: float) -> np.ndarray:
        """Ground truth: bool (ceil(h/ds), ceil(w/ds)), True on tissue (holes excluded)."""
        h, w = self.level_shape(downsample)
        mask = np.zeros((h, w), bool)
        step = 2048
        for oy in range(0, h, step):
            for ox in range(0, w, step):
                ch, cw = min(step, h - oy), min(step, w - ox)
                x0, y0 = ox * downsample, oy * downsample
                if self.tissue.max_over(x0, y0, cw, ch, downsample) <= 0:
                    continue
                mask[oy:oy + ch, ox:ox + cw] = self.tissue.sample(x0, y0, cw, ch, downsample) > 0
        return mask

    def is_background(self, x: float, y: float, w: int, h: int, downsample: float = 1.0) -> bool:
        """True when the region certainly contains no tissue (cheap: node maximum)."""
        return self.tissue.max_over(x, y, w, h, downsample) <= 0

    def render(self, x: int, y: int, w: int, h: int, downsample: float = 1.0) -> np.ndarray:
        """uint8 RGB (h, w, 3) of the region with level-0 top-left (x, y) at ``downsample``.

        Output pixel (i, j) shows level-0 point (x + (j + .5) ds, y + (i + .5) ds).
        """
        ds = float(downsample)
        if self.is_background(x, y, w, h, ds):
            return self.render_background(x, y, w, h, ds)
        mask = self.tissue.sample(x, y, w, h, ds) > 0
        img = self._stroma(x, y, w, h, ds)
        alpha = self._nuclei_alpha(x, y, w, h, ds)
        alpha *= mask
        if alpha.any():
            alpha3 = cv2.merge([alpha, alpha, alpha])
            hema = cv2.multiply(cv2.subtract(self._nucleus_colour(h, w), img), alpha3)
            img = cv2.add(img, hema)
        img = cv2.add(img, _wrap_window(self._tissue_noise, x, y, w, h, ds))
        out = cv2.convertScaleAbs(img)              # round + saturate (values are >= 0)
        if not mask.all():
            background = np.ascontiguousarray(_wrap_window(self.background_tile, x, y, w, h, ds))
            out = cv2.copyTo(background, (~mask).view(np.uint8), out)
        return out

    def _nucleus_colour(self, h: int, w: int) -> np.ndarray:
        """Constant (h, w, 3) float32 image of the hematoxylin colour (cached per shape)."""
        key = (h, w)
        image = self._colour_cache.get(key)
        if image is None:
            image = np.empty((h, w, 3), np.float32)
            image[:] = self.nuclei_model.colour
            if len(self._colour_cache) < 8:
                self._colour_cache[key] = image
        return image

    # ---- rendering pieces
    def render_background(self, x: float, y: float, w: int, h: int, ds: float) -> np.ndarray:
        """What ``render`` returns for a region without tissue (the periodic background)."""
        return np.array(_wrap_window(self.background_tile, x, y, w, h, ds))

    def _stroma(self, x: float, y: float, w: int, h: int, ds: float) -> np.ndarray:
        """float32 (h, w, 3) eosin-stained stroma."""
        fibre_gain = min(1.0, 0.5 * self.fibre.spacing / ds)  # fine texture averages out
        shade, hue = self.stain.sample(x, y, w, h, ds)
        fibre = self.fibre.sample(x, y, w, h, ds) if fibre_gain > 0.05 else None
        channels = []
        for c in range(3):   # 2-D numpy ops: exact per pixel, so independent of the region cut
            channel = shade * STROMA_SHADE[c]
            channel += hue * STROMA_HUE[c]
            if fibre is not None:
                channel += fibre * (fibre_gain * STROMA_FIBRE[c])
            channel += STROMA_RGB[c]
            channels.append(channel)
        return cv2.merge(channels)

    def _block_nuclei(self, bx: int, by: int) -> Nuclei:
        """Nuclei whose centre lies in block (bx, by) and in tissue; cached, tile-independent."""
        key = (bx, by)
        cached = self._nuclei_cache.get(key)
        if cached is not None:
            return cached
        bp = self._block_px
        x0, y0 = bx * bp, by * bp
        if self.tissue.max_in_box(x0, y0, x0 + bp, y0 + bp) <= 0:
            nuclei = Nuclei.empty()
        else:
            nuclei = self._generate_nuclei(bx, by, x0, y0)
        self._nuclei_cache[key] = nuclei
        return nuclei

    def _generate_nuclei(self, bx: int, by: int, x0: float, y0: float) -> Nuclei:
        model, spec, bp = self.nuclei_model, self.spec, self._block_px
        rng = np.random.default_rng([spec.seed, 0xA11C, bx, by])
        centre_shade = float(self.stain.sample_points(np.array([x0 + bp / 2]),
                                                      np.array([y0 + bp / 2]))[0, 0])
        lam = model.density_per_mm2 * (NUCLEUS_BLOCK_UM / 1000.0) ** 2 * math.exp(
            0.45 * centre_shade - 0.1)
        n = int(rng.poisson(lam))
        px = x0 + rng.uniform(0, bp, n)
        py = y0 + rng.uniform(0, bp, n)
        r_px = model.radius_um / spec.mpp
        a = np.minimum(r_px * rng.lognormal(0.0, 0.18, n), 2.0 * r_px)
        b = a * rng.uniform(0.6, 1.0, n)
        angle = rng.uniform(0, 180, n)
        opacity = rng.uniform(0.72, 0.97, n)
        keep = self.tissue.sample_points(px, py) > 0
        return Nuclei(*(v[keep].astype(np.float32) for v in (px, py, a, b, angle, opacity)))

    def _nuclei_in(self, x: float, y: float, w: int, h: int, ds: float) -> Nuclei:
        bp = self._block_px
        margin = 2.0 * self.nuclei_model.radius_um / self.spec.mpp * 2.0
        bx0 = int(math.floor((x - margin) / bp))
        by0 = int(math.floor((y - margin) / bp))
        bx1 = int(math.floor((x + w * ds + margin) / bp))
        by1 = int(math.floor((y + h * ds + margin) / bp))
        parts = [self._block_nuclei(bx, by)
                 for by in range(max(by0, 0), by1 + 1) for bx in range(max(bx0, 0), bx1 + 1)]
        return Nuclei.concat([p for p in parts if len(p)])

    def _nuclei_alpha(self, x: float, y: float, w: int, h: int, ds: float) -> np.ndarray:
        """float32 (h, w) opacity of the hematoxylin layer."""
        nuclei = self._nuclei_in(x, y, w, h, ds)
        if not len(nuclei):
            return np.zeros((h, w), np.float32)
        cx = (nuclei.x - x) / ds - 0.5
        cy = (nuclei.y - y) / ds - 0.5
        if self.nuclei_model.radius_um / self.spec.mpp / ds >= 1.0:
            alpha = _draw_ellipses(cx, cy, nuclei.a / ds, nuclei.b / ds, nuclei.angle,
                                   nuclei.opacity, w, h)
            alpha *= _wrap_window(self._chromatin, x, y, w, h, ds)   # chromatin texture
            return alpha
        return _splat_coverage(cx, cy, np.pi * nuclei.a * nuclei.b / ds ** 2 * nuclei.opacity, w, h)


def _wrap_window(pattern: np.ndarray, x: float, y: float, w: int, h: int,
                 ds: float) -> np.ndarray:
    """Window of a NOISE_PERIOD-periodic pattern at output pixel (round(x/ds), round(y/ds)).

    A view (no copy) when the window is tile-aligned and fits in one period.
    """
    p = NOISE_PERIOD
    ox, oy = int(round(x / ds)) % p, int(round(y / ds)) % p
    if ox + w <= p and oy + h <= p:
        return pattern[oy:oy + h, ox:ox + w]
    ry, rx = -(-(oy + h) // p), -(-(ox + w) // p)
    reps = (ry, rx) + (1,) * (pattern.ndim - 2)
    return np.tile(pattern, reps)[oy:oy + h, ox:ox + w]


def _draw_ellipses(cx: np.ndarray, cy: np.ndarray, a: np.ndarray, b: np.ndarray,
                   angle: np.ndarray, opacity: np.ndarray, w: int, h: int) -> np.ndarray:
    """Anti-aliased filled ellipses (sub-pixel positions) into a float32 opacity map.

    Drawn on a canvas padded by the largest semi-axis so no ellipse is clipped: OpenCV
    anti-aliases clipped polygons differently, which would make tiles depend on their cut.
    """
    shift = 4
    f = 1 << shift
    reach = a + 2.0                                   # semi-axis + anti-aliasing fringe
    sel = (cx + reach >= 0) & (cx - reach <= w) & (cy + reach >= 0) & (cy - reach <= h)
    if not sel.any():
        return np.zeros((h, w), np.float32)
    pad = int(math.ceil(float(a[sel].max()))) + 2
    canvas = np.zeros((h + 2 * pad, w + 2 * pad), np.uint8)
    icx = np.rint((cx[sel] + pad) * f).astype(np.int64)
    icy = np.rint((cy[sel] + pad) * f).astype(np.int64)
    ia = np.maximum(np.rint(a[sel] * f), 1).astype(np.int64)
    ib = np.maximum(np.rint(b[sel] * f), 1).astype(np.int64)
    values = np.rint(opacity[sel] * 255).astype(np.int64)
    angles = angle[sel]
    for i in range(icx.size):
        cv2.ellipse(canvas, (int(icx[i]), int(icy[i])), (int(ia[i]), int(ib[i])),
                    float(angles[i]), 0, 360, int(values[i]), -1, cv2.LINE_AA, shift)
    return canvas[pad:pad + h, pad:pad + w].astype(np.float32) * (1.0 / 255.0)


def _splat_coverage(cx: np.ndarray, cy: np.ndarray, area_px: np.ndarray, w: int,
                    h: int) -> np.ndarray:
    """Average effect of sub-pixel nuclei: accumulated coverage, blurred, as opacity."""
    pad = 3
    ix = np.rint(cx).astype(np.int64) + pad
    iy = np.rint(cy).astype(np.int64) + pad
    pw, ph = w + 2 * pad, h + 2 * pad
    ok = (ix >= 0) & (ix < pw) & (iy >= 0) & (iy < ph)
    cov = np.bincount(iy[ok] * pw + ix[ok], weights=area_px[ok], minlength=pw * ph)
    cov = cov.reshape(ph, pw).astype(np.float32)
    cov = cv2.GaussianBlur(cov, (0, 0), 0.6)[pad:pad + h, pad:pad + w]
    return 1.0 - np.exp(-cov)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------

def aperio_description(width: int, height: int, tile: int, quality: int, app_mag: int,
                       mpp: float, level_size: tuple[int, int] | None = None) -> str:
    """Aperio ImageDescription: full header for level 0, '-> WxH' form for reduced levels."""
    head = f"Aperio Image Library v12.0.0\r\n{width}x{height} [0,0 {width}x{height}] ({tile}x{tile})"
    if level_size is not None:
        return f"{head} -> {level_size[0]}x{level_size[1]} JPEG/RGB Q={quality}"
    return f"{head} JPEG/RGB Q={quality}|AppMag = {app_mag}|MPP = {mpp!r}"


def _encode_jpeg(tile: np.ndarray, quality: int) -> bytes:
    """RGB-colour-space JPEG (no YCbCr transform, 4:4:4), matching Photometric = RGB."""
    return bytes(imagecodecs.jpeg8_encode(tile, level=quality, colorspace="RGB",
                                          outcolorspace="RGB", subsampling="444"))


@dataclass
class _LevelWriter:
    """Yields a level's encoded tiles in row-major order as (bytes, bytecount)."""

    slide: SyntheticSlide
    downsample: int
    tile: int
    quality: int
    pool: ThreadPoolExecutor | None
    background: bytes | None     # shared encoded background tile (None: render each one)
    share: bool = True           # runs of background tiles share one stored copy
    lookahead: int = 16
    stats: dict[str, int] = field(default_factory=lambda: {"tiles": 0, "background": 0})

    def _tile_origin(self, index: int, ntx: int) -> tuple[int, int]:
        ty, tx = divmod(index, ntx)
        step = self.tile * self.downsample
        return tx * step, ty * step

    def _encode(self, x: int, y: int) -> bytes:
        t, ds = self.tile, self.downsample
        return _encode_jpeg(self.slide.render(x, y, t, t, ds), self.quality)

    def _chunks(self) -> Iterator[bytes | None]:
        """Encoded tile bytes in order; None for a background tile."""
        h, w = self.slide.level_shape(self.downsample)
        ntx, nty = -(-w // self.tile), -(-h // self.tile)
        pending: deque[Future[bytes] | bytes | None] = deque()
        for index in range(ntx * nty):
            x, y = self._tile_origin(index, ntx)
            if self.background is not None and self.slide.is_background(
                    x, y, self.tile, self.tile, self.downsample):
                pending.append(None)
            elif self.pool is None:
                pending.append(self._encode(x, y))
            else:
                pending.append(self.pool.submit(self._encode, x, y))
            while len(pending) > self.lookahead:
                yield _resolve(pending.popleft())
        while pending:
            yield _resolve(pending.popleft())

    def __iter__(self) -> Iterator[tuple[bytes, int]] | Iterator[bytes]:
        return self._shared() if self.share else self._plain()

    def _plain(self) -> Iterator[bytes]:
        """Every tile stored on its own."""
        for chunk in self._chunks():
            self.stats["tiles"] += 1
            yield self.background if chunk is None else chunk   # type: ignore[misc]

    def _shared(self) -> Iterator[tuple[bytes, int]]:
        """Runs of background tiles share one stored copy (see module docstring)."""
        background = self.background or b""
        size = len(background)
        previous_background = False
        for chunk in self._chunks():
            self.stats["tiles"] += 1
            if previous_background:
                # the previous background tile is stored now only if the run ends here
                yield (b"" if chunk is None else background, size)
            if chunk is None:
                self.stats["background"] += 1
                previous_background = True
            else:
                previous_background = False
                yield chunk, len(chunk)
        if previous_background:
            yield background, size


def _tifffile_shares_offsets() -> bool:
    """tifffile >= 2025.6.1 writes iterators of (bytes, bytecount) (offset = write position)."""
    try:
        version = tuple(int(p) for p in tifffile.__version__.split(".")[:3])
    except ValueError:
        return False
    return version >= (2025, 6, 1)


def _resolve(item: Future[bytes] | bytes | None) -> bytes | None:
    return item.result() if isinstance(item, Future) else item


def _needs_bigtiff(slide: SyntheticSlide, downsamples: Sequence[int], tile: int) -> bool:
    """Conservative: BigTIFF when the uncompressed, tile-padded pyramid could pass 4 GiB."""
    total = 0
    for ds in downsamples:
        h, w = slide.level_shape(ds)
        total += (-(-h // tile) * tile) * (-(-w // tile) * tile) * 3
    return total >= 2 ** 32 - 2 ** 26


def _default_workers(slide: SyntheticSlide, tile: int) -> int:
    """Two render threads only pay off for large slides (rendering is partly GIL-bound)."""
    h, w = slide.level_shape(1)
    tiles = -(-h // tile) * -(-w // tile)
    return min(2, os.cpu_count() or 1) if tiles > 4096 else 1


def write_aperio_slide(path: str | os.PathLike, slide: SyntheticSlide,
                       downsamples: Sequence[int] = (1, 4, 16), tile_size: int = 256,
                       jpeg_quality: int = 85, bigtiff: bool | None = None,
                       workers: int | None = None) -> None:
    """Write ``slide`` as an Aperio-style tiled JPEG pyramid (one page per level), atomically.

    ``downsamples`` must be integers starting at 1 (level size = ceil(level-0 size / ds)).
    ``bigtiff=None`` picks BigTIFF when the uncompressed pyramid could exceed 4 GiB.
    ``workers`` render/encode threads (None: 1, or 2 for slides with > 4096 level-0 tiles);
    the output bytes do not depend on it.
    """
    downsamples = [int(d) for d in downsamples]
    if downsamples[0] != 1 or sorted(set(downsamples)) != downsamples:
        raise ValueError(f"downsamples must start at 1 and increase: {downsamples}")
    if tile_size % 16:
        raise ValueError("tile_size must be a multiple of 16")
    spec = slide.spec
    if bigtiff is None:
        bigtiff = _needs_bigtiff(slide, downsamples, tile_size)
    if workers is None:
        workers = _default_workers(slide, tile_size)
    background = None
    if tile_size % NOISE_PERIOD == 0:   # every tile-aligned background tile is identical
        background = _encode_jpeg(slide.render_background(0, 0, tile_size, tile_size, 1.0),
                                  jpeg_quality)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            for ds in downsamples:
                h, w = slide.level_shape(ds)
                level = _LevelWriter(slide, ds, tile_size, jpeg_quality, pool, background,
                                     share=_tifffile_shares_offsets())
                desc = aperio_description(spec.width, spec.height, tile_size, jpeg_quality,
                                          spec.app_mag, spec.mpp,
                                          None if ds == 1 else (w, h))
                tw.write(iter(level), shape=(h, w, 3), dtype=np.uint8,
                         tile=(tile_size, tile_size), photometric="rgb", compression="jpeg",
                         compressionargs={"outcolorspace": "RGB"}, subsampling=(1, 1),
                         description=desc, metadata=None, software=False)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def make_slide(path: str | os.PathLike, spec: SlideSpec, **write_kwargs) -> SyntheticSlide:
    """Build the slide for ``spec`` and write it to ``path``; returns the slide (for its mask)."""
    slide = SyntheticSlide(spec)
    write_aperio_slide(Path(path), slide, **write_kwargs)
    return slide
