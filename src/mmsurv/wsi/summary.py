"""Per-cohort patching summary: one row per slide from the ``{slide}.json`` files of the stage.

For a person checking a run (which slides have little or no tissue, how long each took) and for
later stages that need the bag sizes (e.g. FLOPs at the cohort's median bag size).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from mmsurv.io import write_tsv

COLUMNS = ("slide", "n_patches", "tissue_area_mm2", "mpp", "magnification", "patch_size_level0", "seconds", "warnings")


def summarise_patching(summaries: Iterable[str | os.PathLike], out: str | os.PathLike) -> pd.DataFrame:
    """Collect the per-slide JSON summaries into a TSV (atomically) and return it."""
    rows = [_row(Path(path)) for path in summaries]
    table = pd.DataFrame(rows, columns=list(COLUMNS)).sort_values("slide").reset_index(drop=True)
    write_tsv(table, out)
    return table


def _row(path: Path) -> dict:
    try:
        summary = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not a valid patching summary ({error})") from error
    info, patches = summary.get("slide_info", {}), summary.get("patches", {})
    return {
        "slide": summary.get("slide", path.stem),
        "n_patches": summary.get("patch_count"),
        "tissue_area_mm2": summary.get("tissue_area_mm2"),
        "mpp": info.get("mpp"),
        "magnification": info.get("magnification"),
        "patch_size_level0": patches.get("patch_size_level0"),
        "seconds": (summary.get("seconds") or {}).get("total"),
        "warnings": "; ".join(summary.get("warnings", [])),
    }
