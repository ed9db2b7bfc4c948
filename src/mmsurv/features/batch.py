"""Feature extraction for a batch of slides in one process (the workflow's batched jobs).

For the rule ``extract_features_batch``: imports, the encoder, its compiled package and the CUDA
context are set up once for N slides (:func:`mmsurv.features.encode.shared_encoder` and
``shared_forward`` keep them for the process). Each slide is extracted by
:func:`~mmsurv.features.extract.extract_slide_features`, which writes its outputs atomically and
skips a slide whose valid outputs exist (so a rerun after a kill redoes only unfinished slides);
a failing slide is reported by name and the batch goes on (:mod:`mmsurv.batch`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from mmsurv.batch import SlideOutcome, run_batch
from mmsurv.features.extract import extract_slide_features


def extract_features_batch(slides: Sequence[tuple[str | os.PathLike, str | os.PathLike, str]],
                           out_dir: str | os.PathLike, **settings: Any) -> list[SlideOutcome]:
    """Extract every ``(slide_path, patches_h5, slide_name)`` into ``out_dir``; raise ``BatchError``
    naming the slides that failed, after all others are done."""
    jobs = {name: (slide, patches) for slide, patches, name in slides}
    job_patches = sum(patch_count(patches) for _, patches in jobs.values())
    return run_batch("extract_features", list(jobs),
                     lambda name: extract_slide_features(*jobs[name], out_dir, slide_name=name,
                                                         job_patches=job_patches, **settings))


def patch_count(patches_h5: str | os.PathLike) -> int:
    """Patches listed in a CLAM-style patch file (0 when it cannot be read: that slide's own
    extraction then reports the problem, naming it)."""
    import h5py

    try:
        with h5py.File(patches_h5, "r") as h5:
            return int(h5["coords"].shape[0])
    except (OSError, KeyError):
        return 0
