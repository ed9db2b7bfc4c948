"""Cohort tables in the MCAT format: clinical metadata and genomic features, one row per slide.

The MCAT release (Chen et al., ICCV 2021) of the TCGA tables is what MCAT, MOTCat, MoME, MMM and
HDMoE all train on, and the demo cohort is written in the same format. Column order differs
between files and some carry stray ``Unnamed: 0`` index columns, so this loader selects metadata
columns by NAME and genomic columns by SUFFIX (``_rnaseq``, ``_cnv``, ``_mut``), never by position.

Tables are read by CONTENT, not by file name (:func:`read_table`): plain CSV, gzip, or a zip with
one member. PORPOISE publishes ``*.csv.zip`` files that are plain CSV text; such a misnamed file is
read for what it is, with a note in the log. Every table error names the file.
"""

from __future__ import annotations

import gzip
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

GENOMIC_SUFFIXES = ("_mut", "_cnv", "_rnaseq")
REQUIRED_COLUMNS = ("case_id", "slide_id", "survival_months", "censorship")
OPTIONAL_METADATA = ("site", "is_female", "oncotree_code", "age")
IGNORED_COLUMNS = ("train",)  # legacy split flag of some MCAT files; the split files rule
# what a file's name says about its compression (for the note when the content disagrees)
_SUFFIX_COMPRESSION = {".gz": "gzip", ".gzip": "gzip", ".zip": "zip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}

log = logging.getLogger(__name__)


class CohortError(ValueError):
    """A cohort table or signatures file is malformed; the message names the file, row and column."""


@dataclass(frozen=True)
class CohortTable:
    """A cohort table split into metadata (by name) and genomic features (by suffix), per slide row."""

    path: Path
    metadata: pd.DataFrame
    genomics: pd.DataFrame

    @property
    def case_ids(self) -> list[str]:
        """Distinct case ids, in table order."""
        return list(dict.fromkeys(self.metadata["case_id"]))

    def patients(self) -> pd.DataFrame:
        """One row per case (the first slide row of each case, as MCAT does), metadata + genomics."""
        first = ~self.metadata["case_id"].duplicated(keep="first")
        joined = pd.concat([self.metadata.loc[first], self.genomics.loc[first]], axis=1)
        return joined.reset_index(drop=True)

    def slides_of_case(self) -> dict[str, list[str]]:
        """Mapping case_id → slide_ids listed in the table."""
        return self.metadata.groupby("case_id", sort=False)["slide_id"].apply(list).to_dict()


def genomic_columns(columns) -> list[str]:
    """The genomic feature columns of a table: names ending in ``_mut``, ``_cnv`` or ``_rnaseq``."""
    return [column for column in columns if str(column).endswith(GENOMIC_SUFFIXES)]


def table_compression(path: str | os.PathLike) -> str | None:
    """The compression of a table file by its first bytes: ``"gzip"``, ``"zip"`` or None (plain text).

    A zip must hold exactly one file (a table); the error otherwise names the file and its members.
    A file whose name promises another compression than its content is read for what it is, and
    the log says so (PORPOISE's ``*.csv.zip`` are plain CSV).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            magic = handle.read(4)
    except OSError as error:
        raise CohortError(f"{path}: cannot be read ({error.strerror or error})") from error
    if magic[:2] == b"\x1f\x8b":
        found = "gzip"
    elif magic == b"PK\x03\x04":
        found = "zip"
        try:
            with zipfile.ZipFile(path) as archive:
                members = [info.filename for info in archive.infolist() if not info.is_dir()]
        except zipfile.BadZipFile as error:
            raise CohortError(f"{path}: looks like a zip archive but cannot be opened ({error})") from error
        if len(members) != 1:
            raise CohortError(f"{path}: a zipped table must hold exactly one file; this one holds "
                              f"{len(members)}: {', '.join(members[:5]) or 'nothing'}")
    else:
        found = None
    named = _SUFFIX_COMPRESSION.get(path.suffix.lower())
    if named != found:
        log.info("%s: the name says %s but the content is %s; reading it as %s", path,
                 named or "plain text", found or "plain text", found or "plain text")
    return found


def read_table(path: str | os.PathLike, **read_csv_args) -> pd.DataFrame:
    """Read a CSV table (plain, gzip or one-member zip, told apart by content); errors name the file."""
    path = Path(path)
    compression = table_compression(path)
    try:
        return pd.read_csv(path, compression=compression, **read_csv_args)
    except (OSError, EOFError, zipfile.BadZipFile, gzip.BadGzipFile, pd.errors.ParserError,
            pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise CohortError(f"{path}: cannot be read as a CSV table ({type(error).__name__}: {error})") from error


def read_cohort_table(path: str | os.PathLike, *, require_survival: bool = True) -> CohortTable:
    """Load an MCAT-format table (CSV, gzip or one-member zip, by content), validating the survival columns.

    ``require_survival=False`` (patients to score, not to train or evaluate on): a table without
    ``survival_months`` and ``censorship`` is read with both NaN; when present they are validated."""
    path = Path(path)
    raw = read_table(path, low_memory=False)
    survival = ("survival_months", "censorship")
    if not require_survival and not any(column in raw.columns for column in survival):
        raw = raw.assign(survival_months=np.nan, censorship=np.nan)
        checked = False
    else:
        checked = True
    missing = [column for column in REQUIRED_COLUMNS if column not in raw.columns]
    if missing:
        raise CohortError(f"{path}: missing column(s) {', '.join(missing)} (an MCAT-format table has {', '.join(REQUIRED_COLUMNS)})")
    metadata_columns = list(REQUIRED_COLUMNS) + [c for c in OPTIONAL_METADATA if c in raw.columns]
    metadata = raw.loc[:, metadata_columns].copy()
    metadata["case_id"] = metadata["case_id"].astype(str)
    metadata["slide_id"] = metadata["slide_id"].astype(str)
    if checked:
        _validate_survival(path, metadata)
    genomics = _genomic_frame(path, raw, genomic_columns(raw.columns))
    _validate_genomics(path, genomics)
    return CohortTable(path=path, metadata=metadata.reset_index(drop=True), genomics=genomics.reset_index(drop=True))


def _genomic_frame(path: Path, raw: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The genomic columns as one float32 block (one ``to_numpy``: a column-by-column ``astype``
    of a table of thousands of columns costs 0.3 s); a column that is not numeric is named."""
    try:
        values = raw.loc[:, columns].to_numpy(dtype="float32")
    except (ValueError, TypeError) as error:
        for column in columns:
            numbers = pd.to_numeric(raw[column], errors="coerce")
            bad = numbers.isna() & raw[column].notna()
            if bad.any():
                index = int(np.flatnonzero(bad.to_numpy())[0])
                raise CohortError(f"{path}: {_row_label(index)}: genomic column '{column}' holds "
                                  f"{raw[column].iloc[index]!r}, not a number") from error
        raise CohortError(f"{path}: genomic columns cannot be read as numbers ({error})") from error
    return pd.DataFrame(values, columns=columns)


def _row_label(index: int) -> str:
    return f"row {index + 2}"  # 1-based file line, header on line 1


def _validate_survival(path: Path, metadata: pd.DataFrame) -> None:
    months = pd.to_numeric(metadata["survival_months"], errors="coerce")
    bad = months.isna() | (months < 0)
    if bad.any():
        index = int(np.flatnonzero(bad.to_numpy())[0])
        raise CohortError(
            f"{path}: {_row_label(index)} (case {metadata['case_id'].iloc[index]}): field 'survival_months' "
            f"{metadata['survival_months'].iloc[index]!r} is not a non-negative number"
        )
    censorship = pd.to_numeric(metadata["censorship"], errors="coerce")
    bad = ~censorship.isin([0, 1])
    if bad.any():
        index = int(np.flatnonzero(bad.to_numpy())[0])
        raise CohortError(
            f"{path}: {_row_label(index)} (case {metadata['case_id'].iloc[index]}): field 'censorship' "
            f"{metadata['censorship'].iloc[index]!r} must be 0 (death observed) or 1 (censored)"
        )
    metadata["survival_months"] = months.astype("float64")
    metadata["censorship"] = censorship.astype("int64")


def _validate_genomics(path: Path, genomics: pd.DataFrame) -> None:
    if genomics.empty:
        return
    non_finite = ~np.isfinite(genomics.to_numpy())
    if non_finite.any():
        row, column = (int(v[0]) for v in np.nonzero(non_finite))
        raise CohortError(f"{path}: {_row_label(row)}: genomic column '{genomics.columns[column]}' is missing or not finite")


def read_case_ids(path: str | os.PathLike) -> set[str]:
    """The case ids of a cohort table (reads only the ``case_id`` column)."""
    return set(read_case_slides(path)["case_id"])


def read_case_slides(path: str | os.PathLike) -> pd.DataFrame:
    """``case_id`` and ``slide_id`` (empty when the table has no such column) of every table row."""
    try:
        table = read_table(path, usecols=lambda column: column in ("case_id", "slide_id"), dtype=str)
    except ValueError as error:
        raise CohortError(f"{path}: cannot be read as a CSV table ({error})") from error
    if "case_id" not in table.columns:
        raise CohortError(f"{path}: no 'case_id' column (an MCAT-format table has {', '.join(REQUIRED_COLUMNS)})")
    table = table.dropna(subset=["case_id"])
    if "slide_id" not in table.columns:
        table["slide_id"] = ""
    return table.loc[:, ["case_id", "slide_id"]].fillna("").reset_index(drop=True)


def read_signatures(path: str | os.PathLike) -> dict[str, list[str]]:
    """MCAT's ``signatures.csv``: one column per gene family, gene symbols, NaN-padded."""
    table = read_table(path, dtype=str)
    families = {str(family): table[family].dropna().str.strip().tolist() for family in table.columns}
    if not families or not any(families.values()):
        raise CohortError(f"{path}: no gene family columns with genes")
    return families


def signature_groups(columns, signatures: dict[str, list[str]]) -> dict[str, list[str]]:
    """MCAT's ``apply_sig`` genomic groups: per family, the ``gene+suffix`` columns present, sorted.

    For every gene of a family the candidates ``GENE_mut``, ``GENE_cnv`` and ``GENE_rnaseq`` are
    kept when the table has them; each group is sorted by name (as MCAT sorts it).
    """
    available = set(genomic_columns(columns))
    return {
        family: sorted({gene + suffix for gene in genes for suffix in GENOMIC_SUFFIXES} & available)
        for family, genes in signatures.items()
    }
