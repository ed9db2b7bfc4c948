"""Patch scores as GeoJSON for QuPath: one square tile per patch, its scores as measurements.

QuPath (File → Import objects, or drag and drop) reads a FeatureCollection whose features carry
``properties.objectType`` (``tile`` here) and ``properties.measurements`` (name → number): the
tiles appear over the original slide in level-0 pixel coordinates and can be coloured by any
measurement (Measure → Show measurement maps). Written and validated with the ``geojson`` package.
"""

from __future__ import annotations

import os
from pathlib import Path

import geojson
import numpy as np

from mmsurv.io import atomic_write_text


def patch_features(coords: np.ndarray, patch_size: int, scores: dict[str, np.ndarray], *,
                   name: str = "") -> geojson.FeatureCollection:
    """Tiles at the level-0 ``coords`` (top-left corners) of side ``patch_size``; ``scores``: measurement
    name → one value per patch (a NaN value is left out of that tile's measurements)."""
    columns = {key: np.asarray(values, dtype="float64") for key, values in scores.items()}
    features = []
    for index, (x, y) in enumerate(np.asarray(coords, dtype="int64").tolist()):
        ring = [[x, y], [x + patch_size, y], [x + patch_size, y + patch_size], [x, y + patch_size], [x, y]]
        measurements = {key: float(values[index]) for key, values in columns.items() if np.isfinite(values[index])}
        features.append(geojson.Feature(geometry=geojson.Polygon([ring]), id=index,
                                        properties={"objectType": "tile", "name": f"patch {index}",
                                                    "measurements": measurements}))
    collection = geojson.FeatureCollection(features)
    if name:
        collection["name"] = name
    if not collection.is_valid:
        raise ValueError(f"GeoJSON of {name or 'the patches'} is not valid: {collection.errors()}")
    return collection


def write_geojson(path: str | os.PathLike, collection: geojson.FeatureCollection) -> Path:
    """Write ``collection`` atomically (compact JSON: a 50,000-patch slide stays a few MB)."""
    atomic_write_text(path, geojson.dumps(collection, separators=(",", ":")) + "\n")
    return Path(path)


def read_scores(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A file of :func:`write_geojson` back: the tiles' top-left corners (N×2) and each measurement
    per tile (NaN where a tile has none)."""
    collection = geojson.loads(Path(path).read_text())
    if not collection.is_valid:
        raise ValueError(f"{path}: not valid GeoJSON ({collection.errors()})")
    corners, measured = [], []
    for feature in collection["features"]:
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        corners.append(ring[:-1].min(axis=0))
        measured.append(feature["properties"].get("measurements", {}))
    names = list(dict.fromkeys(key for values in measured for key in values))
    scores = {key: np.array([values.get(key, np.nan) for values in measured], dtype="float64") for key in names}
    return np.asarray(corners, dtype="int64").reshape(-1, 2), scores

