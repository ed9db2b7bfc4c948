"""Segmentation and patching of a batch of slides in one process (the workflow's batched jobs).

For the rule ``segment_and_patch_batch``: N slides per process, so a patching job's start-up is
paid once per batch. Each slide's four outputs are written as :func:`mmsurv.wsi.patching.segment_and_patch`
writes them (atomically, the JSON summary last; the ``patching`` section resolved once per batch,
:class:`~mmsurv.wsi.patching.PatchingSettings`); a slide whose summary exists with the SAME
parameters is complete and skipped (a rerun after a kill redoes only the unfinished slides), a
summary with other parameters is redone and the log names each difference
(``patch.patch_size: made with 512, now 256``). The parameters are every setting that changes the
coordinates: the preset's resolved segmentation parameters, the patch parameters, the default
mpp; plus the slide file's size (a slide replaced under the same name). The PNGs' display size
changes no number and is not compared. Failures are collected per slide (:mod:`mmsurv.batch`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmsurv.batch import SlideOutcome, run_batch
from mmsurv.wsi.outputs import output_paths
from mmsurv.wsi.patching import PatchingSettings, segment_and_patch

log = logging.getLogger(__name__)


def expected_parameters(settings: PatchingSettings) -> dict[str, Any]:
    """The ``parameters`` a slide's summary records for these settings (as read back from its JSON)."""
    return json.loads(json.dumps(settings.parameters()))


def is_complete(out_dir: str | os.PathLike, slide_name: str, parameters: Mapping[str, Any],
                slide_path: str | os.PathLike | None = None) -> bool:
    """True when the slide's outputs exist and its summary records ``parameters`` (and the slide's size)."""
    return not completion_problem(out_dir, slide_name, parameters, slide_path)


def completion_problem(out_dir: str | os.PathLike, slide_name: str, parameters: Mapping[str, Any],
                       slide_path: str | os.PathLike | None = None) -> str:
    """Why the slide's outputs cannot be reused ("" when they can): missing files or what differs."""
    paths = output_paths(out_dir, slide_name)
    if not all(Path(p).is_file() for p in (paths.h5, paths.mask, paths.stitch, paths.summary)):
        return "outputs missing"
    try:
        summary = json.loads(Path(paths.summary).read_text())
    except (OSError, ValueError) as error:
        return f"summary {paths.summary} unreadable ({type(error).__name__})"
    differences = differing(summary.get("parameters") or {}, dict(parameters))
    recorded_bytes = (summary.get("slide_info") or {}).get("file_bytes")
    if slide_path is not None and recorded_bytes is not None and Path(slide_path).is_file():
        size = Path(slide_path).stat().st_size
        if size != recorded_bytes:
            differences.append(f"slide file size: made with {recorded_bytes}, now {size}")
    return "; ".join(differences)


def differing(recorded: Mapping[str, Any], expected: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``key: made with X, now Y`` for every leaf that differs between two nested settings dicts."""
    result = []
    for key in sorted(set(recorded) | set(expected), key=str):
        old, new = recorded.get(key), expected.get(key)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            result += differing(old, new, f"{prefix}{key}.")
        elif old != new:
            result.append(f"{prefix}{key}: made with {old!r}, now {new!r}")
    return result


def segment_and_patch_batch(slides: Sequence[tuple[str | os.PathLike, str]], out_dir: str | os.PathLike,
                            settings: Mapping[str, Any]) -> list[SlideOutcome]:
    """Patch every ``(slide_path, slide_name)``; skip complete ones; raise ``BatchError`` naming failures."""
    paths = {name: path for path, name in slides}
    resolved = PatchingSettings.from_config(settings)  # once for the batch: what runs is what is compared
    parameters = expected_parameters(resolved)

    def one(name: str) -> str:
        problem = completion_problem(out_dir, name, parameters, paths[name])
        if not problem:
            return "skipped"
        if problem != "outputs missing":
            log.warning("slide %s: existing patches not reusable (%s): recomputing", name, problem)
        segment_and_patch(paths[name], out_dir, slide_name=name, preset=resolved.preset, segment=resolved.segment,
                          patch=resolved.patch, default_mpp=resolved.default_mpp)
        return "done"

    return run_batch("segment_and_patch", list(paths), one)
