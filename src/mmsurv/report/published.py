"""The numbers the founding papers print, to set beside this pipeline's (paper tables).

For the report and whoever compares a run with a paper: :func:`published` reads the CSVs shipped in
``mmsurv/resources/published`` (one per results table of a paper; format in its README) into one
table, checked row by row: a malformed file stops with the file and row named.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd

PUBLISHED_DIR = Path(__file__).resolve().parents[1] / "resources" / "published"
COLUMNS = ("paper", "table", "setting", "model", "cohort", "metric", "value", "std", "note")
METRIC_RANGES = {"cindex": (0.0, 1.0), "params": (1.0, 1e12), "flops": (1.0, 1e16), "vram_gb": (0.0, 1e4),
                 "train_hours": (0.0, 1e5), "cases": (1.0, 1e7), "genomic_dim": (1.0, 1e7)}
TABLE_LABEL = re.compile(r"Table (\d+)")


class PublishedError(ValueError):
    """A published-numbers file that does not read as the format says."""


def published_files(folder: str | os.PathLike = PUBLISHED_DIR) -> list[Path]:
    """The shipped files, ``<paper>_table<N>.csv``."""
    return sorted(Path(folder).glob("*_table*.csv"))


def read_published(path: str | os.PathLike) -> pd.DataFrame:
    """One file, checked: columns, a table label matching the file name, known metrics, values in range."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise PublishedError(f"{path}: cannot be read as CSV ({error})") from error
    if tuple(frame.columns) != COLUMNS:
        raise PublishedError(f"{path}: columns must be {', '.join(COLUMNS)}; got {', '.join(frame.columns)}")
    stem = re.fullmatch(r"(\w+?)_table(\d+)", path.stem)
    if stem is None:
        raise PublishedError(f"{path}: the file name must be <paper>_table<N>.csv")
    for row, values in enumerate(frame.itertuples(index=False), start=2):
        where = f"{path}, row {row}"
        if values.paper != stem.group(1) or TABLE_LABEL.fullmatch(values.table) is None \
                or TABLE_LABEL.fullmatch(values.table).group(1) != stem.group(2):
            raise PublishedError(f"{where}: paper {values.paper!r} / table {values.table!r} do not match the file name")
        if not values.setting:
            raise PublishedError(f"{where}: no setting (the row label as printed)")
        if values.metric not in METRIC_RANGES:
            raise PublishedError(f"{where}: unknown metric {values.metric!r} (known: {', '.join(METRIC_RANGES)})")
        low, high = METRIC_RANGES[values.metric]
        for name in ("value", "std"):
            text = getattr(values, name)
            if name == "std" and text == "":
                continue
            try:
                number = float(text)
            except ValueError:
                raise PublishedError(f"{where}: {name} {text!r} is not a number") from None
            if not math.isfinite(number) or (name == "value" and not low <= number <= high) or number < 0:
                raise PublishedError(f"{where}: {name} {text} out of range for {values.metric}")
    frame["value"] = frame["value"].astype(float)
    frame["std"] = pd.to_numeric(frame["std"].replace("", None), errors="coerce")
    return frame


def published(paper: str | None = None, folder: str | os.PathLike = PUBLISHED_DIR) -> pd.DataFrame:
    """Every shipped number (of ``paper`` when given), one row per printed value."""
    files = [path for path in published_files(folder) if paper is None or path.stem.startswith(f"{paper}_")]
    if not files:
        raise PublishedError(f"no published numbers{f' of {paper}' if paper else ''} in {folder}")
    return pd.concat([read_published(path) for path in files], ignore_index=True)
