"""Cohort slide lists: strict reading and cleaning of a GDC manifest or a plain sample sheet.

A cohort names its slides in one of two ways:

* a **GDC manifest** (what the GDC portal's "Download manifest" button or ``mmsurv gdc manifest``
  gives): tab-separated ``id filename md5 size state``. Researchers often build one by hand or by
  merging several, so reading is strict: any malformed line stops the run with an error naming the
  file, the line and the field, before a single slide is downloaded;
* a **sample sheet** (in-house and other non-GDC cohorts): a CSV or TSV with ``case_id`` and
  ``slide_id`` (the slide's file name in the cohort's ``slides_dir``), optionally ``md5`` and
  ``size`` (checked when fetching if given).

Cleaning keeps what a survival study of diagnostic slides needs and reports everything it drops:

* only files OpenSlide reads (by extension: :data:`SLIDE_EXTENSIONS`; others ``not_a_slide``),
* for TCGA cohorts only (``tcga: true``, the default for GDC manifests): only TCGA slide barcodes
  (``not_tcga_slide``; matched case-insensitively, so ``tcga-cr-7395-01a-01-ts1.svs`` is read as a
  TCGA name) and only diagnostic slides (last barcode part ``DX``; frozen ``TS``/``BS``/``MS``
  sections are ``not_diagnostic``); the case is the 12-character barcode prefix,
* for other cohorts the case is the sample sheet's ``case_id``, or for a manifest the table row
  whose ``slide_id`` is that file (``slide_not_in_table`` otherwise),
* only slides whose case is in the cohort table (``case_not_in_table``); a case present in the
  table is enough, the table need not list the slide itself,
* one row per file: exact duplicate rows are dropped (``duplicate_row``); the same id with two
  different rows, the same filename under two ids, or two kept files with the same slide name
  (``a.svs`` and ``a.tiff``) is an error because no choice is safe.

The summary also counts the table's cases that are left without any slide (they train on an
all-zero bag in WSI models): a missing modality is reported, not discovered in training logs.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mmsurv.io import atomic_write_text, write_tsv
from mmsurv.naming import slide_stem

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("id", "filename", "md5", "size", "state")
SAMPLE_COLUMNS = ("slide", "slide_id", "case_id", "file_id", "md5", "size")
SHEET_COLUMNS = ("case_id", "slide_id")
DROPPED_COLUMNS = ("line", "id", "filename", "reason", "detail")
# Extensions of the formats OpenSlide 4 opens (single-file or main file of a multi-file slide).
SLIDE_EXTENSIONS = (".svs", ".tif", ".tiff", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm")
NOT_RECORDED_SIZE = -1  # sample sheets without a size column: the size is not checked when fetching

MD5_PATTERN = re.compile(r"^[0-9a-fA-F]{32}$")
SIZE_PATTERN = re.compile(r"^[0-9]+$")
# TCGA-XX-XXXX-01Z-00-DX1 (project site, participant, sample/vial, portion, slide type + number)
TCGA_SLIDE_PATTERN = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4})-[0-9A-Z]{2,3}-[0-9A-Z]{2,3}-([A-Z]{2})[0-9A-Z]*$")


class ManifestError(ValueError):
    """A manifest line or column is malformed; the message names the file, line and field."""


@dataclass(frozen=True)
class CleanedManifest:
    """Result of :func:`clean_manifest`: kept manifest rows, the sample sheet and the dropped rows.

    ``table_cases`` are the cohort table's case ids (when known); the ones without any kept slide
    are :attr:`cases_without_slide`.
    """

    manifest: pd.DataFrame
    samples: pd.DataFrame
    dropped: pd.DataFrame
    table_cases: frozenset[str] = field(default_factory=frozenset)

    @property
    def cases_without_slide(self) -> list[str]:
        """Table cases with no kept slide, sorted."""
        return sorted(self.table_cases - set(self.samples["case_id"]))

    def summary(self) -> str:
        """One human-readable line per outcome, for the log."""
        lines = [f"kept {len(self.samples)} slides of {self.samples['case_id'].nunique()} cases"]
        for reason, count in self.dropped["reason"].value_counts().sort_index().items():
            lines.append(f"dropped {count} rows: {reason}")
        if self.table_cases:
            missing = self.cases_without_slide
            example = f" (e.g. {', '.join(missing[:3])})" if missing else ""
            lines.append(f"{len(missing)} of {len(self.table_cases)} table cases have no slide{example}")
        return "\n".join(lines)

    def summary_document(self) -> dict:
        """The summary as a JSON document (written beside the log and the outputs)."""
        return {
            "kept_slides": len(self.samples),
            "kept_cases": int(self.samples["case_id"].nunique()),
            "dropped": {str(k): int(v) for k, v in self.dropped["reason"].value_counts().sort_index().items()},
            "table_cases": len(self.table_cases),
            "table_cases_without_slide": len(self.cases_without_slide),
            "cases_without_slide": self.cases_without_slide,
        }


def read_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """Read and validate a GDC manifest; return columns ``line, id, filename, md5, size, state``.

    ``line`` is the 1-based line number in the file (the header is line 1). Raises
    :class:`ManifestError` naming the file, line and field of the first problem found.
    """
    path = Path(path)
    table = _read_text_table(path, sep="\t")
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


def read_sample_sheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read a cohort's sample sheet (CSV or TSV: ``case_id``, ``slide_id``, optional ``md5``, ``size``).

    Returns the manifest layout (``line, id, filename, md5, size, state``) plus ``case_id``: ``id``
    is the file name, a missing md5 is ``""`` (not checked) and a missing size
    :data:`NOT_RECORDED_SIZE`. Errors name the file, line and field.
    """
    path = Path(path)
    table = _read_text_table(path, sep=None)
    missing = [column for column in SHEET_COLUMNS if column not in table.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing column(s) {', '.join(missing)}; a sample sheet has the columns case_id "
            f"(the table's case) and slide_id (the slide's file name), optionally md5 and size "
            f"(found: {' '.join(map(str, table.columns))})"
        )
    sheet = pd.DataFrame({
        "line": range(2, len(table) + 2),
        "id": table["slide_id"].str.strip(),
        "filename": table["slide_id"].str.strip(),
        "md5": table["md5"].str.strip() if "md5" in table.columns else "",
        "size": table["size"].str.strip() if "size" in table.columns else "",
        "state": "",
        "case_id": table["case_id"].str.strip(),
    })
    for row in sheet.itertuples(index=False):
        where = f"{path}:{row.line}"
        if not row.case_id:
            raise ManifestError(f"{where}: field 'case_id' is empty")
        _check_filename(where, row.filename)
        if row.md5 and not MD5_PATTERN.match(row.md5):
            raise ManifestError(f"{where}: field 'md5' {row.md5!r} is not a 32-digit hexadecimal md5 (or leave it empty)")
        if row.size and not SIZE_PATTERN.match(row.size):
            raise ManifestError(f"{where}: field 'size' {row.size!r} is not a non-negative integer (or leave it empty)")
    sheet["size"] = [int(v) if v else NOT_RECORDED_SIZE for v in sheet["size"]]
    sheet["md5"] = sheet["md5"].str.lower()
    return sheet


def _read_text_table(path: Path, sep: str | None) -> pd.DataFrame:
    """Every field as text; ``sep=None``: tab if the header has one, else comma. Errors name the file."""
    from mmsurv.data.cohort import CohortError, read_table

    try:
        if sep is None:
            sep = "\t" if len(read_table(path, sep="\t", nrows=0).columns) > 1 else ","
        return read_table(path, sep=sep, dtype=str, keep_default_na=False, na_filter=False)
    except CohortError as error:
        raise ManifestError(str(error)) from error


def _check_filename(where: str, filename: str) -> None:
    if not filename.strip():
        raise ManifestError(f"{where}: field 'filename' is empty")
    if "/" in filename or "\\" in filename or ".." in filename:
        raise ManifestError(
            f"{where}: field 'filename' {filename!r} contains a path separator or '..'; "
            "a manifest names files, not paths"
        )


def _validate_row(path: Path, row) -> None:
    where = f"{path}:{row.line}"
    if not row.id.strip():
        raise ManifestError(f"{where}: field 'id' is empty")
    _check_filename(where, row.filename)
    if not MD5_PATTERN.match(row.md5):
        raise ManifestError(f"{where}: field 'md5' {row.md5!r} is not a 32-digit hexadecimal md5")
    if not SIZE_PATTERN.match(row.size):
        raise ManifestError(f"{where}: field 'size' {row.size!r} is not a non-negative integer")


def parse_tcga_slide(filename: str) -> tuple[str, str] | None:
    """Return ``(case_id, slide_type)`` of a TCGA slide file name (any letter case), or None."""
    barcode = filename.split(".", 1)[0].upper()
    match = TCGA_SLIDE_PATTERN.match(barcode)
    return (match.group(1), match.group(2)) if match else None


def is_slide_file(filename: str) -> bool:
    """Whether the file name has the extension of a format OpenSlide reads."""
    return Path(filename).suffix.lower() in SLIDE_EXTENSIONS


def clean_manifest(manifest: pd.DataFrame, case_ids, source: str = "manifest", *, tcga: bool = True,
                   table_slides: pd.DataFrame | None = None) -> CleanedManifest:
    """Keep the (diagnostic, for TCGA) slides of cases in ``case_ids``; report every dropped row and why.

    ``manifest`` comes from :func:`read_manifest` or :func:`read_sample_sheet` (which adds
    ``case_id``). A non-TCGA manifest without ``case_id`` takes each file's case from
    ``table_slides`` (``case_id``, ``slide_id`` of the cohort table, matched by file name or slide name).
    """
    case_ids = set(case_ids)
    dropped: list[dict] = []
    manifest = _drop_exact_duplicates(manifest, dropped)
    _check_conflicts(manifest, source)
    table_case_of = _table_case_of(table_slides)
    keep, cases = [], []
    for row in manifest.itertuples(index=False):
        sheet_case = getattr(row, "case_id", None)
        case_id, reason, detail = _case_or_drop_reason(row.filename, sheet_case, case_ids, tcga, table_case_of)
        keep.append(reason is None)
        cases.append(case_id)
        if reason is not None:
            dropped.append({"line": row.line, "id": row.id, "filename": row.filename, "reason": reason,
                            "detail": detail})
    kept = manifest.loc[keep].assign(case_id=[c for c, k in zip(cases, keep) if k]).reset_index(drop=True)
    _check_slide_names(kept, source)
    return CleanedManifest(
        manifest=kept.loc[:, list(MANIFEST_COLUMNS)],
        samples=_sample_sheet(kept),
        dropped=pd.DataFrame(dropped, columns=list(DROPPED_COLUMNS)).sort_values("line", kind="stable"),
        table_cases=frozenset(case_ids),
    )


def _table_case_of(table_slides: pd.DataFrame | None) -> dict[str, str]:
    """File name and slide name → case id, from the table's slide_id column."""
    mapping: dict[str, str] = {}
    if table_slides is None:
        return mapping
    for case_id, slide_id in zip(table_slides["case_id"], table_slides["slide_id"]):
        if slide_id:
            mapping[str(slide_id)] = str(case_id)
            mapping.setdefault(slide_stem(slide_id), str(case_id))
    return mapping


def _drop_exact_duplicates(manifest: pd.DataFrame, dropped: list[dict]) -> pd.DataFrame:
    columns = [c for c in manifest.columns if c != "line"]
    duplicated = manifest.duplicated(subset=columns, keep="first")
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


def _check_slide_names(kept: pd.DataFrame, source: str) -> None:
    """Two kept files must not share a slide name (``a.svs`` and ``a.tiff``): outputs are named by it."""
    names = kept["filename"].map(slide_stem)
    repeated = kept.loc[names.duplicated(keep=False)]
    if not repeated.empty:
        name = slide_stem(repeated["filename"].iloc[0])
        rows = repeated.loc[names[names.duplicated(keep=False)] == name]
        raise ManifestError(
            f"{source}: files {', '.join(rows['filename'])} (lines {', '.join(map(str, rows['line']))}) "
            f"would share the slide name {name!r} in every output path; keep one or rename the other"
        )


def _case_or_drop_reason(filename: str, sheet_case: str | None, case_ids: set[str], tcga: bool,
                         table_case_of: dict[str, str]) -> tuple[str | None, str | None, str]:
    """``(case_id, None, "")`` for a kept file, ``(None, reason, detail)`` for a dropped one."""
    if not is_slide_file(filename):
        return None, "not_a_slide", (f"extension {Path(filename).suffix or '(none)'!r} is not a slide format "
                                     f"OpenSlide reads ({' '.join(SLIDE_EXTENSIONS)})")
    if tcga:
        parsed = parse_tcga_slide(filename)
        if parsed is None:
            return None, "not_tcga_slide", ("file name does not start with a TCGA slide barcode "
                                            "(set tcga: false on a cohort that is not TCGA)")
        barcode_case, slide_type = parsed
        if slide_type != "DX":
            return None, "not_diagnostic", f"slide type {slide_type} (diagnostic slides are DX)"
        case_id = sheet_case or barcode_case
    elif sheet_case is not None:
        case_id = sheet_case
    else:
        case_id = table_case_of.get(filename) or table_case_of.get(slide_stem(filename))
        if case_id is None:
            return None, "slide_not_in_table", ("no table row has this slide_id (a non-TCGA manifest "
                                                "takes each slide's case from the table)")
    if case_id not in case_ids:
        return None, "case_not_in_table", f"case {case_id} has no row in the cohort table"
    return case_id, None, ""


def _sample_sheet(kept: pd.DataFrame) -> pd.DataFrame:
    samples = pd.DataFrame(
        {
            "slide": kept["filename"].map(slide_stem),
            "slide_id": kept["filename"],
            "case_id": kept["case_id"].astype(str) if len(kept) else pd.Series(dtype=str),
            "file_id": kept["id"],
            "md5": kept["md5"],
            "size": kept["size"].astype("int64"),
        }
    )
    return samples.sort_values(["case_id", "slide"]).reset_index(drop=True)


def read_samples(path: str | os.PathLike) -> pd.DataFrame:
    """Read a sample sheet written by :func:`clean_manifest_files`."""
    samples = pd.read_csv(path, sep="\t", dtype={"size": "int64", "md5": str, "case_id": str, "file_id": str},
                          keep_default_na=False)
    missing = [column for column in SAMPLE_COLUMNS if column not in samples.columns]
    if missing:
        raise ManifestError(f"{path}: sample sheet lacks column(s) {', '.join(missing)}")
    return samples


def clean_manifest_files(
    manifest_path: str | os.PathLike | None,
    table_path: str | os.PathLike,
    out_manifest: str | os.PathLike,
    out_samples: str | os.PathLike,
    out_dropped: str | os.PathLike | None = None,
    *,
    sample_sheet: str | os.PathLike | None = None,
    tcga: bool | None = None,
    out_summary: str | os.PathLike | None = None,
    diagnostics: Path | str | os.PathLike | None = None,
) -> CleanedManifest:
    """File-level entry point (CLI and Snakemake): read, clean, write the TSVs atomically.

    The cohort's slides come from the GDC manifest ``manifest_path`` or the ``sample_sheet``
    (exactly one). ``tcga`` defaults to True for a manifest and False for a sample sheet.
    ``out_dropped`` defaults to ``dropped.tsv`` and ``out_summary`` to ``summary.json`` beside
    ``out_manifest``. ``diagnostics`` (a path prefix, e.g. the log file without its suffix) gets
    ``<prefix>.dropped.tsv`` and ``<prefix>.summary.json`` too, written BEFORE any error: a job
    manager that deletes the outputs of a failed job cannot take the reasons with it.
    """
    from mmsurv.data.cohort import read_case_slides

    if (manifest_path is None) == (sample_sheet is None):
        raise ValueError("clean_manifest_files: give exactly one of a GDC manifest or a sample sheet")
    source = manifest_path if sample_sheet is None else sample_sheet
    tcga = (sample_sheet is None) if tcga is None else bool(tcga)
    rows = read_manifest(manifest_path) if sample_sheet is None else read_sample_sheet(sample_sheet)
    table = read_case_slides(table_path)
    result = clean_manifest(rows, set(table["case_id"]), source=str(source), tcga=tcga, table_slides=table)
    out_dropped = out_dropped or Path(out_manifest).with_name("dropped.tsv")
    out_summary = out_summary or Path(out_manifest).with_name("summary.json")
    document = {"source": str(source), "table": str(table_path), "tcga": tcga, **result.summary_document()}
    kept_reasons = []
    if diagnostics is not None:
        kept_reasons = [Path(f"{diagnostics}.dropped.tsv"), Path(f"{diagnostics}.summary.json")]
        write_tsv(result.dropped, kept_reasons[0])
        atomic_write_text(kept_reasons[1], json.dumps(document, indent=2) + "\n")
    write_tsv(result.dropped, out_dropped)
    if result.samples.empty:
        where = ", ".join(map(str, kept_reasons or [out_dropped]))
        raise ManifestError(
            f"{source}: no slide is left after cleaning against {table_path} "
            f"({len(result.dropped)} rows dropped; reasons in {where})\n{result.summary()}"
        )
    atomic_write_text(out_summary, json.dumps(document, indent=2) + "\n")
    write_tsv(result.samples, out_samples)
    write_tsv(result.manifest, out_manifest)
    log.info("cleaned %s against %s (%s rules):\n%s", source, table_path, "TCGA" if tcga else "non-TCGA",
             result.summary())
    if result.cases_without_slide:
        log.warning("%d of %d table cases have no slide: WSI models give them an all-zero bag (e.g. %s)",
                    len(result.cases_without_slide), len(result.table_cases),
                    ", ".join(result.cases_without_slide[:5]))
    return result
