"""Issue 19, findings 2, 3 and 5 (cleaning side): any slide name and format, non-TCGA cohorts and
sample sheets, diagnostics that outlive a failing job, and table cases without a slide counted."""

from __future__ import annotations

import json

import pandas as pd
import pytest

# the module, not its names: each test fails on its own on code without the feature it checks
from mmsurv.gdc import manifest as m
from mmsurv.gdc.manifest import (
    ManifestError,
    clean_manifest,
    clean_manifest_files,
    parse_tcga_slide,
    read_manifest,
)

HEADER = "id\tfilename\tmd5\tsize\tstate\n"
MD5 = "0123456789abcdef0123456789abcdef"
TABLE = "case_id,slide_id,survival_months,censorship\n"


def write(path, text):
    path.write_text(text)
    return path


def test_lower_case_tcga_names_are_tcga_slides(tmp_path):
    assert parse_tcga_slide("tcga-cr-7395-01a-01-ts1.svs") == ("TCGA-CR-7395", "TS")
    path = write(tmp_path / "m.txt", HEADER + f"f1\ttcga-cr-7395-01a-01-ts1.svs\t{MD5}\t1\treleased\n"
                 f"f2\ttcga-cr-7395-01z-00-dx1.svs\t{MD5}\t1\treleased\n")
    result = clean_manifest(read_manifest(path), {"TCGA-CR-7395"})
    assert result.dropped["reason"].tolist() == ["not_diagnostic"]
    assert result.samples[["slide", "case_id"]].values.tolist() == [["tcga-cr-7395-01z-00-dx1", "TCGA-CR-7395"]]


def test_tcga_diagnostic_slides_in_any_openslide_format_are_kept(tmp_path):
    names = [f"TCGA-AB-1234-01Z-00-DX{i}{ext}" for i, ext in enumerate((".svs", ".tiff", ".ndpi", ".mrxs"))]
    path = write(tmp_path / "m.txt", HEADER + "".join(f"f{i}\t{n}\t{MD5}\t1\treleased\n" for i, n in enumerate(names))
                 + f"f9\tTCGA-AB-1234-01Z-00-DX9.xml\t{MD5}\t1\treleased\n")
    result = clean_manifest(read_manifest(path), {"TCGA-AB-1234"})
    assert sorted(result.samples["slide_id"]) == sorted(names)
    assert result.dropped[["filename", "reason"]].values.tolist() == [["TCGA-AB-1234-01Z-00-DX9.xml", "not_a_slide"]]


def test_sample_sheet_cohort_keeps_in_house_names_and_formats(tmp_path):
    sheet = write(tmp_path / "samples.csv", "case_id,slide_id\n"
                  "LIV-001,LIV-001 HE block2.ndpi\nLIV-002,liv002.tiff\nLIV-002,scan_7.mrxs\n"
                  "LIV-003,notes.txt\nLIV-999,orphan.svs\n")
    table = write(tmp_path / "table.csv", TABLE + "LIV-001,x,1,0\nLIV-002,y,2,1\nLIV-003,z,3,0\nLIV-004,w,4,0\n")
    out = tmp_path / "out"
    result = clean_manifest_files(None, table, out / "manifest.tsv", out / "samples.tsv", sample_sheet=sheet)
    samples = pd.read_csv(out / "samples.tsv", sep="\t", keep_default_na=False)
    assert samples[["slide", "slide_id", "case_id"]].values.tolist() == [
        ["LIV-001 HE block2", "LIV-001 HE block2.ndpi", "LIV-001"],
        ["liv002", "liv002.tiff", "LIV-002"], ["scan_7", "scan_7.mrxs", "LIV-002"]]
    assert samples["md5"].tolist() == ["", "", ""] and samples["size"].tolist() == [-1, -1, -1]
    assert dict(zip(result.dropped["filename"], result.dropped["reason"])) == {
        "notes.txt": "not_a_slide", "orphan.svs": "case_not_in_table"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tcga"] is False
    assert summary["table_cases_without_slide"] == 2 and summary["cases_without_slide"] == ["LIV-003", "LIV-004"]


def test_sample_sheet_tsv_with_md5_and_size(tmp_path):
    sheet = write(tmp_path / "samples.tsv", f"case_id\tslide_id\tmd5\tsize\nP1\ta.svs\t{MD5.upper()}\t12\nP2\tb.scn\t\t\n")
    rows = m.read_sample_sheet(sheet)
    assert rows[["case_id", "filename", "md5", "size"]].values.tolist() == [["P1", "a.svs", MD5, 12], ["P2", "b.scn", "", -1]]


@pytest.mark.parametrize(("text", "message"), [
    ("case\tslide_id\nP1\ta.svs\n", r"missing column\(s\) case_id"),
    ("case_id,slide_id\n,a.svs\n", r"samples.csv:2: field 'case_id' is empty"),
    ("case_id,slide_id\nP1,dir/a.svs\n", r"samples.csv:2: field 'filename' 'dir/a.svs' contains a path separator"),
    ("case_id,slide_id,md5\nP1,a.svs,xyz\n", r"samples.csv:2: field 'md5' 'xyz'"),
    ("case_id,slide_id\nP1,a.svs\nP2,a.tiff\n", r"files a.svs, a.tiff \(lines 2, 3\) would share the slide name 'a'"),
])
def test_bad_sample_sheet_is_named(tmp_path, text, message):
    sheet = write(tmp_path / "samples.csv", text)
    table = write(tmp_path / "table.csv", TABLE + "P1,x,1,0\nP2,y,1,0\n")
    with pytest.raises(ManifestError, match=message):
        clean_manifest_files(None, table, tmp_path / "m.tsv", tmp_path / "s.tsv", sample_sheet=sheet)


def test_non_tcga_manifest_takes_cases_from_the_table(tmp_path):
    manifest = write(tmp_path / "m.txt", HEADER + f"u1\tcase7_slideA.tif\t{MD5}\t5\treleased\n"
                     f"u2\tunknown.svs\t{MD5}\t5\treleased\n")
    table = write(tmp_path / "table.csv", TABLE + "C7,case7_slideA.tif,1,0\n")
    with pytest.raises(ManifestError, match="no slide is left"):  # TCGA rules by default for a manifest
        clean_manifest_files(manifest, table, tmp_path / "m.tsv", tmp_path / "s.tsv")
    assert pd.read_csv(tmp_path / "dropped.tsv", sep="\t")["reason"].tolist() == ["not_tcga_slide"] * 2
    result = clean_manifest_files(manifest, table, tmp_path / "m.tsv", tmp_path / "s.tsv", tcga=False)
    assert result.samples[["slide", "case_id", "file_id"]].values.tolist() == [["case7_slideA", "C7", "u1"]]
    assert result.dropped["reason"].tolist() == ["slide_not_in_table"]


def test_diagnostics_are_written_to_the_log_folder_before_the_error(tmp_path):
    """Finding 3: the reasons must survive the job manager deleting a failed job's outputs."""
    manifest = write(tmp_path / "m.txt", HEADER + f"f1\tTCGA-AB-1234-01Z-00-DX1.svs\t{MD5}\t10\treleased\n")
    table = write(tmp_path / "table.csv", TABLE + "TCGA-ZZ-0000,x.svs,3,0\n")
    prefix = tmp_path / "logs/clean_manifest/demo"
    with pytest.raises(ManifestError, match=rf"reasons in {prefix}.dropped.tsv, {prefix}.summary.json"):
        clean_manifest_files(manifest, table, tmp_path / "out/m.tsv", tmp_path / "out/s.tsv", diagnostics=prefix)
    assert pd.read_csv(f"{prefix}.dropped.tsv", sep="\t")["reason"].tolist() == ["case_not_in_table"]
    summary = json.loads((tmp_path / "logs/clean_manifest/demo.summary.json").read_text())
    assert summary["kept_slides"] == 0 and summary["cases_without_slide"] == ["TCGA-ZZ-0000"]


def test_summary_counts_table_cases_without_a_slide(demo_cohort, tmp_path):
    """Finding 5: the cleaning summary says how many table cases have no slide."""
    table = pd.read_csv(demo_cohort.table)
    extra = table.iloc[[0]].assign(case_id="TCGA-NO-SLID", slide_id="TCGA-NO-SLID-01Z-00-DX1.svs")
    path = tmp_path / "table.csv"
    pd.concat([table, extra]).to_csv(path, index=False)
    result = clean_manifest_files(demo_cohort.manifest, path, tmp_path / "m.tsv", tmp_path / "s.tsv")
    n_cases = table["case_id"].nunique() + 1
    assert result.cases_without_slide == ["TCGA-NO-SLID"]
    assert f"1 of {n_cases} table cases have no slide (e.g. TCGA-NO-SLID)" in result.summary()
    assert json.loads((tmp_path / "summary.json").read_text())["table_cases_without_slide"] == 1


def test_every_openslide_extension_is_a_slide():
    assert {".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".bif"} <= set(m.SLIDE_EXTENSIONS)
