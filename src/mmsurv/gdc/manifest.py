"""GDC manifests: strict reading and cleaning into the per-slide sample sheet of a cohort.

A GDC manifest (what the GDC portal's "Download manifest" button or ``mmsurv gdc manifest`` gives)
is a tab-separated file with the columns ``id filename md5 size state``. Researchers often build
one by hand or by merging several, so reading is strict: any malformed line stops the run with an
error naming the file, the line and the field, before a single slide is downloaded.

Cleaning keeps what a survival study of diagnostic slides needs and reports everything it drops:

* only diagnostic slides (TCGA slide barcodes whose last part starts with ``DX``; frozen tissue
  ``TS``/``BS``/``MS`` sections are dropped as ``not_diagnostic``),
* only ``.svs`` files (the format GDC serves diagnostic slides in; others: ``not_svs``),
* only slides whose case (the 12-character TCGA barcode prefix) is in the cohort table
  (``case_not_in_table``); a case present in the table is enough, the table need not list the
  slide itself,
* one row per file: exact duplicate rows are dropped (``duplicate_row``); the same id with two
  different rows, or the same filename under two ids, is an error because no choice is safe.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mmsurv.io import write_tsv
from mmsurv.naming import slide_stem

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("id", "filename", "md5", "size", "state")
SAMPLE_COLUMNS = ("slide", "slide_id", "case_id", "file_id", "md5", "size")
DROPPED_COLUMNS = ("line", "id", "filename", "reason", "detail")

MD5_PATTERN = re.compile(r"^[0-9a-fA-F]{32}$")
SIZE_PATTERN = re.compile(r"^[0-9]+$")
# TCGA-XX-XXXX-01Z-00-DX1 (project site, participant, sample/vial, portion, slide type + number)
TCGA_SLIDE_PATTERN = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})-[0-9A-Z]{2,3}-[0-9A-Z]{2,3}-([A-Z]{2})[0-9A-Z]*$")


class ManifestError(ValueError):
    """A manifest line or column is malformed; the message names the file, line and field."""


@dataclass(frozen=True)
class CleanedManifest:
    """Result of :func:`clean_manifest`: kept manifest rows, the sample sheet and the dropped rows."""

    manifest: pd.DataFrame
    samples: pd.DataFrame
    dropped: pd.DataFrame

    def summary(self) -> str:
        """One human-readable line per outcome, for the log."""
        lines = [f"kept {len(self.samples)} slides of {self.samples['case_id'].nunique()} cases"]
        for reason, count in self.dropped["reason"].value_counts().sort_index().items():
            lines.append(f"dropped {count} rows: {reason}")
        return "\n".join(lines)


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a GDC manifest; return columns ``line, id, filename, md5, size, state``.

    ``line`` is the 1-based line number in the file (the header is line 1). Raises
    :class:`ManifestError` naming the file, line and field of the first problem found.
    """
    path = Path(path)
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    missing = [column for column in MANIFEST_COLUMNS if column not in table.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {', '.join(missing)}; a GDC manifest has the tab-separated "
            f"header {' '.join(MANIFEST_COLUMNS)} (found: {' '.join(map(str, table.columns))})"
        )
    table = table.loc[:, list(MANIFEST_COLUMNS)].copy()
    table.insert(0, "line", range(2, len(table) + 2))
    for row in table.itertuples(index=False):
        _validate_row(path, row)
    table["size"] = table["size"].astype("int64")
    table["md5"] = table["md5"].str.lower()
    return table


def _validate_row(path: Path, row) -> None:
    where = f"{path}:{row.line}"
    if not row.id.strip():
        raise ManifestError(f"{where}: field 'id' is empty")
    if not row.filename.strip():
        raise ManifestError(f"{where}: field 'filename' is empty")
    if "/" in row.filename or "\\" in row.filename or ".." in row.filename:
        raise ManifestError(
            f"{where}: field 'filename' {row.filename!r} contains a path separator or '..'; "
            "a manifest names files, not paths"
        )
    if not MD5_PATTERN.match(row.md5):
        raise ManifestError(f"{where}: field 'md5' {row.md5!r} is not a 32-digit hexadecimal md5")
    if not SIZE_PATTERN.match(row.size):
        raise ManifestError(f"{where}: field 'size' {row.size!r} is not a non-negative integer")


def parse_tcga_slide(filename: str) -> tuple[str, str] | None:
    """Return ``(case_id, slide_type)`` of a TCGA slide file name, or None if it is not one."""
    barcode = filename.split(".", 1)[0]
    match = TCGA_SLIDE_PATTERN.match(barcode)
    return (match.group(1), match.group(2)) if match else None


def clean_manifest(manifest: pd.DataFrame, case_ids: set[str], source: str = "manifest") -> CleanedManifest:
    """Keep diagnostic ``.svs`` slides of cases in ``case_ids``; report every dropped row and why."""
    dropped: list[dict] = []
    manifest = _drop_exact_duplicates(manifest, dropped)
    _check_conflicts(manifest, source)
    keep = []
    for row in manifest.itertuples(index=False):
        reason, detail = _drop_reason(row.filename, case_ids)
        if reason is None:
            keep.append(True)
            continue
        keep.append(False)
        dropped.append({"line": row.line, "id": row.id, "filename": row.filename, "reason": reason, "detail": detail})
    kept = manifest.loc[keep].reset_index(drop=True)
    return CleanedManifest(
        manifest=kept.loc[:, list(MANIFEST_COLUMNS)],
        samples=_sample_sheet(kept),
        dropped=pd.DataFrame(dropped, columns=list(DROPPED_COLUMNS)).sort_values("line", kind="stable"),
    )


def _drop_exact_duplicates(manifest: pd.DataFrame, dropped: list[dict]) -> pd.DataFrame:
    duplicated = manifest.duplicated(subset=list(MANIFEST_COLUMNS), keep="first")
    for row in manifest.loc[duplicated].itertuples(index=False):
        first = manifest.loc[(manifest["id"] == row.id) & ~duplicated, "line"].iloc[0]
        dropped.append(
            {"line": row.line, "id": row.id, "filename": row.filename, "reason": "duplicate_row",
             "detail": f"same as line {first}"}
        )
    return manifest.loc[~duplicated]


def _check_conflicts(manifest: pd.DataFrame, source: str) -> None:
    for key, other in (("id", "rows"), ("filename", "ids")):
        repeated = manifest.loc[manifest[key].duplicated(keep=False)]
        if not repeated.empty:
            value = repeated[key].iloc[0]
            lines = repeated.loc[repeated[key] == value, "line"].tolist()
            raise ManifestError(
                f"{source}: {key} {value!r} appears with different {other} on lines "
                f"{', '.join(map(str, lines))}; remove the wrong one"
            )


def _drop_reason(filename: str, case_ids: set[str]) -> tuple[str | None, str]:
    parsed = parse_tcga_slide(filename)
    if parsed is None:
        return "not_tcga_slide", "file name does not start with a TCGA slide barcode"
    case_id, slide_type = parsed
    if slide_type != "DX":
        return "not_diagnostic", f"slide type {slide_type} (diagnostic slides are DX)"
    if not filename.lower().endswith(".svs"):
        return "not_svs", "diagnostic slides are .svs files"
    if case_id not in case_ids:
        return "case_not_in_table", f"case {case_id} has no row in the cohort table"
    return None, ""


def _sample_sheet(kept: pd.DataFrame) -> pd.DataFrame:
    samples = pd.DataFrame(
        {
            "slide": kept["filename"].map(slide_stem),
            "slide_id": kept["filename"],
            "case_id": kept["filename"].map(lambda name: parse_tcga_slide(name)[0]),
            "file_id": kept["id"],
            "md5": kept["md5"],
            "size": kept["size"].astype("int64"),
        }
    )
    return samples.sort_values(["case_id", "slide"]).reset_index(drop=True)


def read_samples(path: str | os.PathLike) -> pd.DataFrame:
    """Read a sample sheet written by :func:`clean_manifest_files`."""
    samples = pd.read_csv(path, sep="\t", dtype={"size": "int64"}, keep_default_na=False)
    missing = [column for column in SAMPLE_COLUMNS if column not in samples.columns]
    if missing:
        raise ManifestError(f"{path}: sample sheet lacks column(s) {', '.join(missing)}")
    return samples


def clean_manifest_files(
    manifest_path: str | os.PathLike,
    table_path: str | os.PathLike,
    out_manifest: str | os.PathLike,
    out_samples: str | os.PathLike,
    out_dropped: str | os.PathLike | None = None,
) -> CleanedManifest:
    """File-level entry point (CLI and Snakemake): read, clean, write the three TSVs atomically.

    ``out_dropped`` defaults to ``dropped.tsv`` beside ``out_manifest``.
    """
    from mmsurv.data.cohort import read_case_ids

    manifest = read_manifest(manifest_path)
    result = clean_manifest(manifest, read_case_ids(table_path), source=str(manifest_path))
    out_dropped = out_dropped or Path(out_manifest).with_name("dropped.tsv")
    write_tsv(result.dropped, out_dropped)
    if result.samples.empty:
        raise ManifestError(
            f"{manifest_path}: no slide is left after cleaning against {table_path} "
            f"({len(result.dropped)} rows dropped; reasons in {out_dropped})"
        )
    write_tsv(result.samples, out_samples)
    write_tsv(result.manifest, out_manifest)
    log.info("cleaned %s against %s:\n%s", manifest_path, table_path, result.summary())
    return result
