"""Finding 1 of issue 19: tables are read by content (plain, gzip, one-member zip), errors name the file.

PORPOISE publishes ``*.csv.zip`` files that are plain CSV text; they used to stop ``mmsurv train``
and ``manifest clean`` with a bare ``zipfile.BadZipFile`` that did not name the file.
"""

from __future__ import annotations

import gzip
import logging
import zipfile

import pandas as pd
import pytest

from mmsurv.cli import main
from mmsurv.data.cohort import (
    CohortError,
    read_case_ids,
    read_cohort_table,
    read_signatures,
)

CSV = ("case_id,slide_id,survival_months,censorship,A_rnaseq,B_cnv\n"
       "TCGA-AA-0001,TCGA-AA-0001-01Z-00-DX1.svs,12.5,0,0.1,1\n"
       "TCGA-AA-0002,TCGA-AA-0002-01Z-00-DX1.svs,30,1,-0.3,0\n")


def write_as(path, kind: str, text: str = CSV):
    if kind == "plain":
        path.write_text(text)
    elif kind == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("table.csv", text)
    return path


@pytest.mark.parametrize(("name", "kind"), [
    ("tcga_blca_all_clean.csv.zip", "plain"),   # PORPOISE's misnamed plain CSV
    ("table.csv.zip", "zip"),
    ("table.csv.gz", "gzip"),
    ("table.csv", "gzip"),                       # gzip under a plain name
    ("table.csv.gz", "plain"),                   # plain under a gzip name
    ("table.csv", "plain"),
])
def test_tables_are_read_by_content(tmp_path, caplog, name, kind):
    path = write_as(tmp_path / name, kind)
    with caplog.at_level(logging.INFO, logger="mmsurv.data.cohort"):
        table = read_cohort_table(path)
    assert table.case_ids == ["TCGA-AA-0001", "TCGA-AA-0002"]
    assert list(table.genomics.columns) == ["A_rnaseq", "B_cnv"]
    assert read_case_ids(path) == {"TCGA-AA-0001", "TCGA-AA-0002"}
    misnamed = (name.endswith(".zip") and kind != "zip") or (name.endswith(".gz") and kind != "gzip") \
        or (name.endswith(".csv") and kind != "plain")
    assert (f"{path}: the name says" in caplog.text) == misnamed


def test_signatures_read_by_content(tmp_path):
    path = write_as(tmp_path / "signatures.csv.zip", "plain", "Tumor Suppressor Genes,Oncogenes\nTP53,MYC\nRB1,\n")
    assert read_signatures(path) == {"Tumor Suppressor Genes": ["TP53", "RB1"], "Oncogenes": ["MYC"]}


def test_zip_of_two_files_is_an_error_naming_file_and_members(tmp_path):
    path = tmp_path / "two.csv.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.csv", CSV)
        archive.writestr("b.csv", CSV)
    with pytest.raises(CohortError, match=rf"{path}: a zipped table must hold exactly one file; this one holds 2: a.csv, b.csv"):
        read_cohort_table(path)


def test_broken_compressed_table_names_the_file(tmp_path):
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(gzip.compress(CSV.encode())[:30])
    with pytest.raises(CohortError, match=rf"{path}: cannot be read as a CSV table"):
        read_cohort_table(path)
    with pytest.raises(CohortError, match=rf"{tmp_path / 'missing.csv'}: cannot be read"):
        read_case_ids(tmp_path / "missing.csv")


def test_manifest_clean_cli_takes_a_porpoise_csv_zip(tmp_path, capsys):
    table = write_as(tmp_path / "tcga_blca_all_clean.csv.zip", "plain")
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("id\tfilename\tmd5\tsize\tstate\n"
                        f"f1\tTCGA-AA-0001-01Z-00-DX1.svs\t{'0' * 32}\t10\treleased\n")
    assert main(["manifest", "clean", "--manifest", str(manifest), "--table", str(table),
                 "--out-dir", str(tmp_path / "out")]) == 0
    samples = pd.read_csv(tmp_path / "out/samples.tsv", sep="\t")
    assert samples["case_id"].tolist() == ["TCGA-AA-0001"]
    assert "1 of 2 table cases have no slide (e.g. TCGA-AA-0002)" in capsys.readouterr().out
