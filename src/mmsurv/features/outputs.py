"""The outputs of one slide's feature extraction: paths, metadata, atomic writes and the reuse check.

For :func:`mmsurv.features.extract.extract_slide_features` and the cohort's feature index
(:mod:`mmsurv.features.index`). ``h5_files/{slide}.h5``, ``pt_files/{slide}.pt`` and
``json/{slide}.json`` are written atomically; an existing output is reused only when it is
complete and its numbers key (:func:`numbers_key`) equals the run's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from mmsurv.features import ExtractSettings
from mmsurv.features.dataset import (
    PatchCoords,
)
from mmsurv.features.encoders import Encoder
from mmsurv.features.plan import ExtractionPlan
from mmsurv.h5write import atomic_write_h5
from mmsurv.io import atomic_path

log = logging.getLogger(__name__)


OUTPUT_FORMAT_VERSION = 2  # 2: the numbers key (reuse check)


@dataclass(frozen=True)
class FeaturePaths:
    """The three outputs of one slide."""

    h5: Path
    pt: Path
    json: Path

    @classmethod
    def of(cls, out_dir: str | os.PathLike, slide_name: str) -> FeaturePaths:
        out = Path(out_dir)
        return cls(out / "h5_files" / f"{slide_name}.h5", out / "pt_files" / f"{slide_name}.pt",
                   out / "json" / f"{slide_name}.json")


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"


def build_metadata(slide_name: str, slide_path: str | os.PathLike, patches_h5: str | os.PathLike,
                   patches: PatchCoords, built: Encoder, settings: ExtractSettings, plan: ExtractionPlan, *,
                   compiled: str, prepare_s: float, extract_s: float, total_s: float) -> dict[str, Any]:
    import torchvision

    n = len(patches)
    info = built.info
    return {
        "format_version": OUTPUT_FORMAT_VERSION,
        "slide": slide_name,
        "slide_path": os.fspath(slide_path),
        "patches_h5": os.fspath(patches_h5),
        "n_patches": n,
        "feature_dim": built.out_dim,
        "patch_size": patches.patch_size,
        "patch_level": patches.patch_level,
        "patch_attrs": patches.attrs,
        "encoder": info.name,
        "weights": info.weights,
        "weights_requested": settings.weights,
        "weights_detail": info.weights_detail,
        "pretrained": info.pretrained,
        "preprocessing": asdict(info.preprocessing),
        "resize": f"{info.preprocessing.resize_side}px {info.preprocessing.interpolation} antialias, "
                  + ("uint8 in DataLoader workers" if plan.resize == "worker" else "float32 on the device")
                  + (f", central {info.preprocessing.input_size}px" if info.preprocessing.resize_size else ""),
        "reader": plan.reader,
        "reader_reason": plan.reader_reason,
        "precision": plan.precision,
        "precision_requested": settings.precision,
        "channels_last": settings.channels_last,
        "compile": compiled,               # "aot", "jit" or "none" (also when compilation failed)
        "batch_size": settings.batch_size,
        "num_workers": settings.num_workers,
        "encoder_processes": plan.encoder_processes,
        "parallelism": plan.parallelism(settings),
        "device": device_description(plan.device),
        "seconds": round(total_s, 3),
        "seconds_prepare": round(prepare_s, 3),
        "seconds_extract": round(extract_s, 3),
        "patches_per_s": round(n / extract_s, 2) if extract_s > 0 and n else 0.0,
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_outputs(paths: FeaturePaths, features: np.ndarray, patches: PatchCoords, metadata: dict) -> None:
    """h5, then pt, then json; each atomically."""
    atomic_write_h5(paths.h5, lambda h5: _fill_h5(h5, features, patches, metadata))
    with atomic_path(paths.pt) as tmp:
        torch.save(torch.from_numpy(features), tmp)
    write_json(paths.json, metadata)


def _fill_h5(h5: h5py.File, features: np.ndarray, patches: PatchCoords, metadata: dict) -> None:
    h5.create_dataset("features", data=features.astype(np.float32, copy=False))
    coords = h5.create_dataset("coords", data=patches.coords.astype(np.int64, copy=False))
    for key, value in patches.attrs.items():
        with contextlib.suppress(TypeError, ValueError):
            coords.attrs[key] = value
    for key, value in metadata.items():
        if isinstance(value, str):
            h5.attrs[key] = str(value)      # np.str_ has no HDF5 conversion
        elif isinstance(value, (bool, int, float)):
            h5.attrs[key] = value
    h5.attrs["metadata"] = json.dumps(metadata, sort_keys=True)


def write_json(path: Path, metadata: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")


def remove_stale_temp_files(paths: FeaturePaths) -> None:
    """Delete temp files a killed run left beside this slide's outputs (they are never trusted)."""
    for final in (paths.h5, paths.pt, paths.json):
        if final.parent.is_dir():
            for stale in final.parent.glob(f".{final.name}.*.tmp{final.suffix}"):
                log.info("removing leftover temp file %s", stale)
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()


def numbers_key(built: Encoder, plan: ExtractionPlan, patches: PatchCoords) -> dict[str, Any]:
    """Every setting that changes the features' numbers (see the module docstring), as JSON values."""
    info = built.info
    return json.loads(json.dumps({
        "encoder": info.name,
        "encoder_version": info.version,
        "weights": info.weights_id or info.weights_detail,
        "preprocessing": asdict(info.preprocessing),
        "precision": plan.precision,
        "resize": plan.resize,
        "patch_size": patches.patch_size,
        "patch_level": patches.patch_level,
        "feature_dim": built.out_dim,
    }))


def numbers_difference(recorded: Any, expected: dict[str, Any]) -> str:
    """Which settings of the numbers key differ (empty when none), for the log."""
    if not isinstance(recorded, dict):
        return "made by an older version that did not record its settings"
    keys = sorted(set(recorded) | set(expected))
    return "; ".join(f"{key}: made with {recorded.get(key)!r}, now {expected.get(key)!r}"
                     for key in keys if recorded.get(key) != expected.get(key))


def valid_existing_metadata(paths: FeaturePaths, patches: PatchCoords, numbers: dict[str, Any]
                            ) -> dict[str, Any] | None:
    """The stored metadata when the outputs exist, are readable and consistent; else None."""
    if not (paths.h5.is_file() and paths.pt.is_file()):
        return None
    try:
        with h5py.File(paths.h5, "r") as h5:
            features = np.asarray(h5["features"][()])
            coords = np.asarray(h5["coords"][()])
            metadata = json.loads(h5.attrs["metadata"])
        tensor = torch.load(paths.pt, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file means "recompute"
        log.warning("existing features %s unreadable (%s): recomputing", paths.h5, error)
        return None
    problem = _output_problem(features, coords, tensor, metadata, patches, numbers)
    if problem:
        log.warning("existing features %s not reusable (%s): recomputing", paths.h5, problem)
        return None
    return metadata


def _output_problem(features: np.ndarray, coords: np.ndarray, tensor: Any, metadata: dict,
                    patches: PatchCoords, numbers: dict[str, Any]) -> str:
    n = len(patches)
    if features.dtype != np.float32 or features.ndim != 2 or features.shape[0] != n:
        return f"features {features.dtype} {features.shape}, expected ({n}, D) float32"
    if coords.shape != patches.coords.shape or not np.array_equal(coords, patches.coords):
        return "coords differ from the patch file"
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32 or tuple(tensor.shape) != features.shape:
        return "pt tensor does not match the h5 features"
    if not np.array_equal(tensor.numpy(), features):
        return "pt and h5 features differ"
    return numbers_difference(metadata.get("numbers"), numbers)
