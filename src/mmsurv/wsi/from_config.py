"""The patching stage driven by the workflow's ``patching:`` config section (rule and tests).

Splits the flat section (``preset``, ``default_mpp``, ``segment: {...}`` overrides and the patch
settings ``magnification``, ``patch_size``, ``step_size``, ``min_tissue_fraction``) into the
arguments of :func:`mmsurv.wsi.segment_and_patch`; keys left out keep the package defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from mmsurv.wsi import segment_and_patch
from mmsurv.wsi.presets import DEFAULT_PRESET

PATCH_KEYS = ("magnification", "patch_size", "step_size", "min_tissue_fraction")
OTHER_KEYS = ("preset", "default_mpp", "segment")


def segment_and_patch_from_config(
    slide_path: str | os.PathLike, out_dir: str | os.PathLike, *, slide_name: str, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Run :func:`segment_and_patch` with the workflow's ``patching`` settings."""
    preset, segment, patch, extra = split_settings(settings)
    return segment_and_patch(slide_path, out_dir, slide_name=slide_name, preset=preset, segment=segment, patch=patch,
                             **extra)


def split_settings(settings: Mapping[str, Any]) -> tuple[str, dict, dict, dict]:
    """(preset, segment overrides, patch settings, other keyword arguments) of a ``patching`` section."""
    unknown = sorted(set(settings) - set(PATCH_KEYS) - set(OTHER_KEYS))
    if unknown:
        raise ValueError(f"config: patching.{unknown[0]} is not a patching setting")
    extra = {"default_mpp": settings["default_mpp"]} if "default_mpp" in settings else {}
    return (settings.get("preset", DEFAULT_PRESET), dict(settings.get("segment") or {}),
            {key: settings[key] for key in PATCH_KEYS if key in settings}, extra)
