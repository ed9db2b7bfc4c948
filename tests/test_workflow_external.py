"""Issue 19: the workflow on a cohort that is not TCGA, named by a sample sheet, with in-house
slide names and two formats (the real CMU-1 crop as ``.svs``, generated Aperio-style ``.tiff`` and
``.tif``), from the sample sheet to ``report.html``; and cleaning diagnostics that outlive failure.

Kept small: 5 patients (the minimum of the demo generator), 1 fold (3 train / 2 val), 2 epochs,
SNN + ABMIL, ~1k px generated slides, random-weight features without compilation.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mmsurv_testdata import shared_path
from test_workflow import run_snakemake

# case, slide file, months, censorship: 4 deaths at distinct times (4 quantile bins); P4 dies before
# P5 is censored (one comparable validation pair)
PATIENTS = [("LIV-001", "LIV-001 HE.block2.svs", 14.0, 0), ("LIV-002", "liv002_he.tiff", 30.0, 0),
            ("LIV-003", "LIV-003-A.tif", 8.0, 0), ("LIV-004", "scan_0004.tiff", 5.0, 0),
            ("LIV-005", "LIV-005.final.TIFF", 22.0, 1)]
GENES = [f"G{i}" for i in range(6)]


def write_cohort(root, cmu1) -> dict:
    from mmsurv.demo.slides import SlideSpec, make_slide

    slides = root / "resources/slides"
    slides.mkdir(parents=True)
    (slides / PATIENTS[0][1]).symlink_to(cmu1)
    for index, (_, name, _, _) in enumerate(PATIENTS[1:], start=1):
        make_slide(slides / name, SlideSpec(width=1024, height=1024, seed=index, n_regions=1, tissue_fraction=0.6))
    pd.DataFrame({"case_id": [p[0] for p in PATIENTS], "slide_id": [p[1] for p in PATIENTS]}).to_csv(
        root / "resources/samples.tsv", sep="\t", index=False)
    table = pd.DataFrame({"case_id": [p[0] for p in PATIENTS], "slide_id": [p[1] for p in PATIENTS],
                          "survival_months": [p[2] for p in PATIENTS], "censorship": [p[3] for p in PATIENTS]})
    for i, gene in enumerate(GENES):
        table[f"{gene}_rnaseq"] = [((i + 1) * (j + 2)) % 7 / 3.0 for j in range(len(PATIENTS))]
    # the table as a plain CSV under a .csv.zip name, as PORPOISE publishes its tables
    table.to_csv(root / "resources/liver_all_clean.csv.zip", index=False)
    pd.DataFrame({"Family A": GENES[:3], "Family B": GENES[3:]}).to_csv(root / "resources/signatures.csv", index=False)
    (root / "resources/splits").mkdir()
    pd.DataFrame({"train": ["LIV-001", "LIV-002", "LIV-003"], "val": ["LIV-004", "LIV-005", None]}).to_csv(
        root / "resources/splits/splits_0.csv")
    return {"samples": "resources/samples.tsv", "tcga": False, "table": "resources/liver_all_clean.csv.zip",
            "splits_dir": "resources/splits", "signatures": "resources/signatures.csv",
            "slides_dir": "resources/slides"}


def config_for(cohort: dict) -> dict:
    return {"results": "results", "cohorts": {"liver": cohort},
            "patching": {"preset": "tcga", "segment": {"min_tissue_mm2": 0.01}},
            "features": {"weights": "none", "compile": False, "num_workers": 0, "encoder_processes": 0},
            "models": ["snn", "abmil"], "folds": 1, "seed": 1,
            "train": {"data": {"standardize_features": True, "n_bins": 2},
                      "training": {"epochs": 2, "grad_accum": 1, "weighted_sampling": False}},
            "download": {"source": "local", "verify_md5": False, "link": "symlink"}}


@pytest.mark.shared
@pytest.mark.slow
def test_non_tcga_cohort_with_any_names_and_formats_runs_to_report_html(tmp_path):
    cmu1 = shared_path("data", "wsi", "CMU-1-Small-Region.svs")
    config = config_for(write_cohort(tmp_path, cmu1))
    result = run_snakemake(tmp_path, config, "--cores", "1")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    report = run_snakemake(tmp_path, config, "--report", str(tmp_path / "report.html"))
    assert report.returncode == 0, (report.stdout + report.stderr)[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 50_000

    results = tmp_path / "results/liver"
    samples = pd.read_csv(results / "manifest/samples.tsv", sep="\t", keep_default_na=False)
    assert sorted(samples["slide_id"]) == sorted(p[1] for p in PATIENTS)
    for row in samples.itertuples():
        assert (results / "slides" / row.slide_id).resolve() == (tmp_path / "resources/slides" / row.slide_id).resolve()
        assert (results / "features/pt_files" / f"{row.slide}.pt").is_file()
    patching = pd.read_csv(results / "wsi/patching.tsv", sep="\t")
    assert (patching["n_patches"] > 0).all()
    vendors = {json.loads((results / f"wsi/{slide}.json").read_text())["slide_info"]["vendor"]
               for slide in samples["slide"]}
    assert vendors == {"aperio"}  # OpenSlide read the .svs and the .tiff/.tif/.TIFF files alike
    summary = json.loads((results / "manifest/summary.json").read_text())
    assert summary["tcga"] is False and summary["table_cases_without_slide"] == 0
    for model in ("snn", "abmil"):
        metrics = json.loads((results / f"{model}/fold0/metrics.json").read_text())
        assert metrics["n_val"] == 2 and metrics["n_without_features"] == {"train": 0, "val": 0}
    efficiency = (tmp_path / "results/report/efficiency.md").read_text()
    assert "| No WSI |" in efficiency and "| 0 / 2 |" in efficiency


def test_failed_cleaning_keeps_its_reasons_in_the_log_folder(tmp_path):
    """Finding 3: Snakemake deletes the outputs of a failed job; the reasons must survive it."""
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources/manifest.txt").write_text(
        "id\tfilename\tmd5\tsize\tstate\n"
        f"f1\tTCGA-AB-1234-01Z-00-DX1.svs\t{'0' * 32}\t10\treleased\n"
        f"f2\tTCGA-AB-1234-01Z-00-TS1.svs\t{'1' * 32}\t10\treleased\n")
    (tmp_path / "resources/table.csv").write_text(
        "case_id,slide_id,survival_months,censorship\nTCGA-ZZ-0000,TCGA-ZZ-0000-01Z-00-DX1.svs,3,0\n")
    cohort = {"manifest": "resources/manifest.txt", "table": "resources/table.csv", "splits_dir": "resources",
              "signatures": "resources/table.csv", "slides_dir": "resources"}
    result = run_snakemake(tmp_path, config_for(cohort), "results/liver/manifest/samples.tsv")
    assert result.returncode != 0
    prefix = "results/logs/clean_manifest/liver"
    assert f"reasons in {prefix}.dropped.tsv" in (tmp_path / f"{prefix}.log").read_text()
    assert not (tmp_path / "results/liver/manifest/dropped.tsv").exists()  # removed by Snakemake, as expected
    dropped = pd.read_csv(tmp_path / f"{prefix}.dropped.tsv", sep="\t")
    assert dict(zip(dropped["filename"], dropped["reason"])) == {
        "TCGA-AB-1234-01Z-00-DX1.svs": "case_not_in_table", "TCGA-AB-1234-01Z-00-TS1.svs": "not_diagnostic"}
    summary = json.loads((tmp_path / f"{prefix}.summary.json").read_text())
    assert summary["kept_slides"] == 0 and summary["cases_without_slide"] == ["TCGA-ZZ-0000"]
