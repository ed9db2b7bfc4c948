"""Segmentation and patching of a batch of slides in one process (the workflow's batched jobs).

For the rule ``segment_and_patch_batch``: N slides per process, so a patching job's start-up is
paid once per batch. Each slide's four outputs are written as :func:`mmsurv.wsi.segment_and_patch`
writes them (atomically, the JSON summary last); a slide whose summary exists with the SAME
parameters is complete and skipped (a rerun after a kill redoes only the unfinished slides), a
summary with other parameters is redone. Failures are collected per slide (:mod:`mmsurv.batch`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsurv.batch import SlideOutcome, run_batch
from mmsurv.wsi.from_config import segment_and_patch_from_config, split_settings
from mmsurv.wsi.outputs import output_paths
from mmsurv.wsi.slide import DEFAULT_MPP
from mmsurv.wsi import resolve_params


def expected_parameters(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``parameters`` a slide's summary records for these ``patching`` settings."""
    preset, segment, patch, extra = split_settings(settings)
    seg_params, patch_params = resolve_params(preset, segment, patch)
    return json.loads(json.dumps({"preset": preset, "segment": seg_params.to_dict(), "patch": patch_params.to_dict(),
                                  "default_mpp": extra.get("default_mpp", DEFAULT_MPP)}))


def is_complete(out_dir: str | os.PathLike, slide_name: str, parameters: Mapping[str, Any]) -> bool:
    """True when the slide's outputs exist and its summary records ``parameters``."""
    paths = output_paths(out_dir, slide_name)
    if not all(Path(p).is_file() for p in (paths.h5, paths.mask, paths.stitch, paths.summary)):
        return False
    try:
        recorded = json.loads(Path(paths.summary).read_text()).get("parameters")
    except (OSError, ValueError):
        return False
    return recorded == parameters


def segment_and_patch_batch(slides: Sequence[tuple[str | os.PathLike, str]], out_dir: str | os.PathLike,
                            settings: Mapping[str, Any]) -> list[SlideOutcome]:
    """Patch every ``(slide_path, slide_name)``; skip complete ones; raise ``BatchError`` naming failures."""
    paths = {name: path for path, name in slides}
    parameters = expected_parameters(settings)

    def one(name: str) -> str:
        if is_complete(out_dir, name, parameters):
            return "skipped"
        segment_and_patch_from_config(paths[name], out_dir, slide_name=name, settings=settings)
        return "done"

    return run_batch("segment_and_patch", list(paths), one)
