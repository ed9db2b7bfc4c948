"""Reading square patches of a slide for feature extraction: OpenSlide, or decoded JPEG tiles directly.

Who uses this: ``mmsurv.features.dataset`` (the DataLoader workers of the feature extraction) and
its benchmark. Each reader fills a caller's ``(size, size, 3)`` uint8 array with the RGB pixels of
the patch whose top-left level-0 corner is ``(x, y)``, with anything outside the scanned image as
white (OpenSlide's transparent padding composited onto white, as in ``mmsurv.wsi.slide``).

* ``OpenSlideRegions``: ``OpenSlide.read_region``. Works for every format OpenSlide supports.
* ``TiffTileRegions``: for tiled, JPEG-compressed, 8-bit RGB TIFF pages (Aperio SVS, generic
  tiled TIFF), read at level 0: the tiles' compressed bytes are read with ``os.pread`` and decoded
  by libjpeg-turbo through tifffile/imagecodecs; decoded tiles are kept in a small LRU cache, so a
  tile shared by neighbouring patches (patches visited in row order) is decoded once.

Why the second reader: measured here (``bench/extract.py``; 512 px patches, 256 px JPEG tiles),
``read_region`` costs ~6 ms per patch and the conversion of its premultiplied-ARGB PIL image to an
RGB array another ~2.5 ms, while decoding the same four tiles costs ~1.6 ms. With the encoder at
~80 patches/s (bf16, AOT-compiled) the OpenSlide path alone would eat ~1/3 of the CPU.

It must not change a single pixel, so ``choose_reader`` uses it only after checking, on the
slide itself, that it returns exactly what OpenSlide returns for a probe patch (the first patch
in reading order, and one straddling the image's lower-right corner); any difference, an
unsupported page (JPEG 2000, LZW, levels > 0...) or an error means OpenSlide, and the reason is
logged and recorded in the features' metadata.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Protocol

import numpy as np
import openslide

from mmsurv.features import READERS
from mmsurv.wsi.slide import rgba_to_rgb_on_white

log = logging.getLogger(__name__)

TILE_CACHE_BYTES = 192 << 20        # per reader (i.e. per DataLoader worker)
JPEG = 7                            # TIFF compression tag value for (new-style) JPEG


class RegionReader(Protocol):
    """What the feature dataset needs from a slide."""

    name: str

    def read_rgb_into(self, x: int, y: int, out: np.ndarray) -> None: ...

    def close(self) -> None: ...


class OpenSlideRegions:
    """``OpenSlide.read_region`` at one level, RGB on white."""

    name = "openslide"

    def __init__(self, path: str | os.PathLike, level: int, size: int):
        self.slide = openslide.OpenSlide(os.fspath(path))
        self.level, self.size = int(level), int(size)

    def read_rgb_into(self, x: int, y: int, out: np.ndarray) -> None:
        region = self.slide.read_region((x, y), self.level, (self.size, self.size))
        out[...] = rgba_to_rgb_on_white(np.asarray(region))

    def close(self) -> None:
        self.slide.close()



class UnsupportedSlide(ValueError):
    """The slide's level is not a tiled 8-bit RGB JPEG TIFF page: use OpenSlide."""


class TiffTileRegions:
    """Level-0 patches of a tiled JPEG TIFF page, decoded tile by tile (see the module docstring)."""

    name = "tiff"

    def __init__(self, path: str | os.PathLike, level: int, size: int, cache_bytes: int = TILE_CACHE_BYTES):
        import tifffile

        if level != 0:
            raise UnsupportedSlide(f"level {level} (only level 0 is read from the tiles)")
        self.size = int(size)
        self._tiff = tifffile.TiffFile(os.fspath(path))
        try:
            self.page = self._tiff.series[0].levels[0].keyframe
            self._check_page()
        except Exception:
            self._tiff.close()
            raise
        page = self.page
        self.width, self.height = int(page.imagewidth), int(page.imagelength)
        self.tile_w, self.tile_h = int(page.tilewidth), int(page.tilelength)
        self.tiles_across = -(-self.width // self.tile_w)
        self._fd = self._tiff.filehandle.fileno()
        self._offsets, self._counts = page.dataoffsets, page.databytecounts
        self._cache: OrderedDict[int, np.ndarray | None] = OrderedDict()
        self._cache_limit = max(1, cache_bytes // (self.tile_w * self.tile_h * 3))

    def _check_page(self) -> None:
        page = self.page
        problems = []
        if not page.is_tiled:
            problems.append("not tiled")
        if page.compression != JPEG:
            problems.append(f"compression {int(page.compression)} is not JPEG")
        if page.samplesperpixel != 3 or page.bitspersample != 8 or page.planarconfig != 1:
            problems.append(f"{page.samplesperpixel} samples of {page.bitspersample} bits (planar "
                            f"{int(page.planarconfig)}), not 8-bit interleaved RGB")
        if page.imagedepth != 1:
            problems.append("3-D tiles")
        if problems:
            raise UnsupportedSlide(", ".join(problems))

    def read_rgb_into(self, x: int, y: int, out: np.ndarray) -> None:
        size = self.size
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + size, self.width), min(y + size, self.height)
        if x0 >= x1 or y0 >= y1:
            out[...] = 255
            return
        if (x0, y0, x1, y1) != (x, y, x + size, y + size):
            out[...] = 255            # part of the patch lies outside the image
        for ty in range(y0 // self.tile_h, (y1 - 1) // self.tile_h + 1):
            for tx in range(x0 // self.tile_w, (x1 - 1) // self.tile_w + 1):
                self._copy_tile(tx, ty, x, y, (x0, y0, x1, y1), out)

    def _copy_tile(self, tx: int, ty: int, x: int, y: int, box: tuple[int, int, int, int], out: np.ndarray) -> None:
        left, top = tx * self.tile_w, ty * self.tile_h
        ax0, ay0 = max(box[0], left), max(box[1], top)
        ax1, ay1 = min(box[2], left + self.tile_w), min(box[3], top + self.tile_h)
        tile = self._tile(ty * self.tiles_across + tx)
        target = out[ay0 - y:ay1 - y, ax0 - x:ax1 - x]
        if tile is None:
            target[...] = 255         # a tile the scanner never wrote: OpenSlide leaves it transparent
        else:
            target[...] = tile[ay0 - top:ay1 - top, ax0 - left:ax1 - left]

    def _tile(self, index: int) -> np.ndarray | None:
        cache = self._cache
        if index in cache:
            cache.move_to_end(index)
            return cache[index]
        tile = self._decode(index)
        cache[index] = tile
        if len(cache) > self._cache_limit:
            cache.popitem(last=False)
        return tile

    def _decode(self, index: int) -> np.ndarray | None:
        count = int(self._counts[index])
        if count == 0:
            return None
        data = os.pread(self._fd, count, int(self._offsets[index]))
        if len(data) != count:
            raise OSError(f"tile {index}: file truncated ({len(data)} of {count} bytes)")
        decoded, _, _ = self.page.decode(data, index, jpegtables=self.page.jpegtables)
        if decoded is None:
            raise OSError(f"tile {index}: could not be decoded")
        return decoded.reshape(self.tile_h, self.tile_w, 3)

    def close(self) -> None:
        self._cache.clear()
        self._tiff.close()


def open_reader(kind: str, path: str | os.PathLike, level: int, size: int) -> RegionReader:
    """A reader of ``kind`` ("openslide" or "tiff") for ``size``-px patches at ``level``."""
    if kind == "tiff":
        return TiffTileRegions(path, level, size)
    if kind == "openslide":
        return OpenSlideRegions(path, level, size)
    raise ValueError(f"unknown reader {kind!r}; choose one of {READERS[1:]}")


def choose_reader(requested: str, path: str | os.PathLike, level: int, size: int,
                  probe: tuple[int, int] | None) -> tuple[str, str]:
    """(reader to use, why): "tiff" only when it reproduces OpenSlide's pixels on this slide.

    ``requested`` "openslide" is taken as is; "tiff" and "auto" are checked the same way, but a
    failed check falls back to OpenSlide for "auto" and raises ``UnsupportedSlide`` for "tiff".
    ``probe`` is a patch to compare (level-0 top-left); None (no patches) skips the comparison.
    """
    if requested not in READERS:
        raise ValueError(f"unknown reader {requested!r}; choose one of {READERS}")
    if requested == "openslide":
        return "openslide", "requested"
    try:
        reason = _check_tiff_reader(path, level, size, probe)
    except Exception as error:  # noqa: BLE001 - any problem of the fast path means OpenSlide
        if requested == "tiff":
            raise UnsupportedSlide(f"{path}: tile reader unusable: {error}") from error
        log.info("slide %s: reading patches with OpenSlide (tile reader unusable: %s)", path, error)
        return "openslide", f"tile reader unusable: {error}"
    return "tiff", reason


def _check_tiff_reader(path: str | os.PathLike, level: int, size: int, probe: tuple[int, int] | None) -> str:
    fast = TiffTileRegions(path, level, size)
    reference = OpenSlideRegions(path, level, size)
    try:
        dims = reference.slide.level_dimensions[0]
        if dims != (fast.width, fast.height):
            raise UnsupportedSlide(f"TIFF page is {fast.width}x{fast.height}, OpenSlide's level 0 is {dims}")
        if probe is None:
            return "tiled JPEG level 0 (no patch to compare)"
        corner = (fast.width - size // 2, fast.height - size // 2)
        for x, y in (probe, corner):
            expected, got = (np.empty((size, size, 3), np.uint8) for _ in range(2))
            reference.read_rgb_into(x, y, expected)
            fast.read_rgb_into(x, y, got)
            if not np.array_equal(expected, got):
                differ = int((expected != got).any(axis=2).sum())
                raise UnsupportedSlide(f"decoded tiles differ from OpenSlide at ({x}, {y}) in {differ} pixels")
        return "tiled JPEG level 0, identical to OpenSlide on probe patches"
    finally:
        fast.close()
        reference.close()
