"""Files shipped with mmsurv (pathway gene sets); :func:`default_pathways` gives their path."""

from __future__ import annotations

from pathlib import Path

PATHWAYS_DIR = Path(__file__).resolve().parent / "pathways"


def default_pathways() -> Path:
    """The default pathway gene-set file: SurvPath's 331 Hallmark + Reactome/PID pathways."""
    return PATHWAYS_DIR / "combine_signatures.csv"
