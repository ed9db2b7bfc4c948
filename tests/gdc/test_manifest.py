"""Manifest reading and cleaning: the right slides are kept, every drop is reported, bad input named."""

from __future__ import annotations

import pandas as pd
import pytest

from mmsurv.data.cohort import read_case_ids
from mmsurv.gdc.manifest import (
    ManifestError,
    clean_manifest,
    clean_manifest_files,
    parse_tcga_slide,
    read_manifest,
    read_samples,
)

HEADER = "id\tfilename\tmd5\tsize\tstate\n"
MD5 = "0123456789abcdef0123456789abcdef"
DX = "TCGA-AB-1234-01Z-00-DX1.0A1B2C3D-0000-4000-8000-000000000001.svs"


def write(tmp_path, text, name="manifest.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_demo_manifest_keeps_exactly_the_diagnostic_slides_of_table_cases(demo_cohort, tmp_path):
    result = clean_manifest_files(
        demo_cohort.manifest, demo_cohort.table, tmp_path / "m.tsv", tmp_path / "s.tsv", tmp_path / "d.tsv"
    )
    table = pd.read_csv(demo_cohort.table)
    assert sorted(result.samples["slide_id"]) == sorted(table["slide_id"])
    assert set(result.samples["case_id"]) == set(table["case_id"])
    dropped = pd.read_csv(tmp_path / "d.tsv", sep="\t")
    reasons = dropped.groupby("reason")["filename"].apply(list).to_dict()
    assert sorted(reasons) == ["case_not_in_table", "duplicate_row", "not_diagnostic"]
    assert all("-TS1." in name or "-BS1." in name for name in reasons["not_diagnostic"])
    assert len(reasons["not_diagnostic"]) == 2
    assert [name.startswith("TCGA-D9-ZZZZ") for name in reasons["case_not_in_table"]] == [True]
    assert len(reasons["duplicate_row"]) == 1
    samples = read_samples(tmp_path / "s.tsv")
    assert list(samples["slide"]) == [name[: -len(".svs")] for name in samples["slide_id"]]
    manifest = pd.read_csv(demo_cohort.manifest, sep="\t")
    sizes = dict(zip(manifest["filename"], manifest["size"]))
    assert all(sizes[row.slide_id] == row.size for row in samples.itertuples())


def test_cleaning_summary_counts_each_reason(demo_cohort):
    result = clean_manifest(read_manifest(demo_cohort.manifest), read_case_ids(demo_cohort.table))
    summary = result.summary()
    assert f"kept {len(result.samples)} slides" in summary
    assert "dropped 2 rows: not_diagnostic" in summary


def test_parse_tcga_slide():
    assert parse_tcga_slide(DX) == ("TCGA-AB-1234", "DX")
    assert parse_tcga_slide("TCGA-AB-1234-01A-01-TS1.X.svs") == ("TCGA-AB-1234", "TS")
    assert parse_tcga_slide("slide_001.svs") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id\tfilename\tmd5\tsize\n" + f"f1\t{DX}\t{MD5}\t10\n", r"missing column\(s\) state"),
        (HEADER + f"f1\t{DX}\tnot-an-md5\t10\treleased\n", r"manifest.txt:2: field 'md5' 'not-an-md5'"),
        (HEADER + f"f1\t{DX}\t{MD5}\t10\treleased\nf2\tTCGA-AB-1234-01Z-00-DX2.svs\t{MD5}\t1e3\treleased\n",
         r"manifest.txt:3: field 'size' '1e3' is not a non-negative integer"),
        (HEADER + f"f1\t{DX}\t{MD5}\t10\treleased\nf1\t{DX}\t{MD5}\t11\treleased\n",
         "id 'f1' appears with different rows on lines 2, 3"),
        (HEADER + f"f1\tslides/{DX}\t{MD5}\t10\treleased\n", "manifest.txt:2: field 'filename'.*path separator"),
        (HEADER + f"f1\t..{DX}\t{MD5}\t10\treleased\n", "manifest.txt:2: field 'filename'.*'\\.\\.'"),
        (HEADER + f"f1\t{DX}\t{MD5}\t10\treleased\nf2\t{DX}\t{MD5}\t10\treleased\n",
         "filename .* appears with different ids on lines 2, 3"),
    ],
    ids=["missing-column", "bad-md5", "bad-size", "id-conflict", "path-separator", "dotdot", "filename-two-ids"],
)
def test_malformed_manifest_is_rejected_naming_line_and_field(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ManifestError, match=message):
        clean_manifest(read_manifest(path), {"TCGA-AB-1234"}, source=str(path))


def test_exact_duplicate_is_dropped_not_an_error(tmp_path):
    path = write(tmp_path, HEADER + f"f1\t{DX}\t{MD5}\t10\treleased\n" * 2)
    result = clean_manifest(read_manifest(path), {"TCGA-AB-1234"})
    assert len(result.samples) == 1
    assert result.dropped[["line", "reason", "detail"]].values.tolist() == [[3, "duplicate_row", "same as line 2"]]


def test_nothing_left_is_an_error_and_still_reports_the_drops(tmp_path):
    manifest = write(tmp_path, HEADER + f"f1\t{DX}\t{MD5}\t10\treleased\n")
    table = write(tmp_path, "case_id,slide_id,survival_months,censorship\nTCGA-ZZ-0000,x.svs,3,0\n", "table.csv")
    with pytest.raises(ManifestError, match="no slide is left"):
        clean_manifest_files(manifest, table, tmp_path / "m.tsv", tmp_path / "s.tsv")
    assert pd.read_csv(tmp_path / "dropped.tsv", sep="\t")["reason"].tolist() == ["case_not_in_table"]
    assert not (tmp_path / "s.tsv").exists()
