"""The demo cohort: deterministic, MCAT-format, learnable survival, clean splits, realistic manifest."""

from __future__ import annotations

import numpy as np
import openslide
import pandas as pd
import pytest
from sksurv.metrics import concordance_index_censored

from mmsurv.data.cohort import read_cohort_table
from mmsurv.demo.cohort import DemoSpec, _genomics, _patients, _slides, generate_demo_cohort
from mmsurv.io import md5_file


def read_splits(cohort):
    return [pd.read_csv(cohort.splits_dir / f"splits_{k}.csv", index_col=0) for k in range(5)]


def test_splits_partition_the_patients(demo_cohort):
    cases = set(read_cohort_table(demo_cohort.table).case_ids)
    splits = read_splits(demo_cohort)
    vals = [set(split["val"].dropna()) for split in splits]
    assert set().union(*vals) == cases
    assert sum(len(v) for v in vals) == len(cases), "validation folds overlap"
    for split, val in zip(splits, vals):
        train = set(split["train"].dropna())
        assert not train & val and train | val == cases


def test_slides_open_in_openslide_as_aperio_20x(demo_cohort):
    for path in sorted(demo_cohort.slides_dir.glob("*.svs"))[:3]:
        with openslide.OpenSlide(path) as slide:
            assert slide.properties["openslide.vendor"] == "aperio"
            assert slide.level_count == 3
            assert [round(d) for d in slide.level_downsamples] == [1, 4, 16]
            assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
            assert slide.properties["openslide.objective-power"] == "20"


def test_manifest_has_real_md5_and_size_and_the_usual_oddities(demo_cohort):
    manifest = pd.read_csv(demo_cohort.manifest, sep="\t")
    assert list(manifest.columns) == ["id", "filename", "md5", "size", "state"]
    for row in manifest.drop_duplicates().itertuples():
        path = demo_cohort.slides_dir / row.filename
        assert (path.stat().st_size, md5_file(path)) == (row.size, row.md5)
    assert manifest.duplicated().sum() == 1
    assert manifest["filename"].str.contains("-TS1.").sum() == 1 and manifest["filename"].str.contains("-BS1.").sum() == 1
    table_cases = set(pd.read_csv(demo_cohort.table)["case_id"])
    assert sum(name[:12] not in table_cases for name in manifest["filename"]) == 1


def test_slide_names_follow_tcga_form(demo_cohort):
    table = pd.read_csv(demo_cohort.table)
    assert table["slide_id"].str.fullmatch(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}-01Z-00-DX[12]\.[0-9A-F-]{36}\.svs").all()
    assert (table["case_id"] == table["slide_id"].str.slice(0, 12)).all()


def test_same_seed_same_files(tmp_path):
    spec = DemoSpec(patients=5, seed=11, width=640, height=512, genes=10, informative_genes=2, extra_slide_size=(512, 512))
    first, second = generate_demo_cohort(tmp_path / "a", spec), generate_demo_cohort(tmp_path / "b", spec)

    def digests(cohort):
        files = sorted(p for p in cohort.outdir.rglob("*") if p.is_file())
        return {p.relative_to(cohort.outdir).as_posix(): md5_file(p) for p in files}

    assert digests(first) == digests(second)
    other = generate_demo_cohort(tmp_path / "c", DemoSpec(**{**spec.__dict__, "seed": 12}))
    assert md5_file(other.table) != md5_file(first.table)


def test_survival_carries_the_risk_with_about_half_events():
    rng = np.random.default_rng(0)
    patients = _patients(rng, DemoSpec(patients=4000))
    events = patients["censorship"] == 0
    assert 0.40 <= events.mean() <= 0.60
    cindex = concordance_index_censored(events.to_numpy(), patients["survival_months"].to_numpy(), patients["risk"].to_numpy())[0]
    assert cindex > 0.65


def test_informative_genes_carry_the_risk_and_the_others_do_not():
    rng = np.random.default_rng(0)
    spec = DemoSpec(patients=2000, genes=40, informative_genes=10)
    risk = rng.standard_normal(spec.patients)
    genomics = _genomics(rng, spec, [f"G{i:02d}" for i in range(spec.genes)], risk)
    correlation = {column: abs(np.corrcoef(genomics[column], risk)[0, 1]) for column in genomics}
    informative = [c for c in correlation if int(c[1:3]) < 10 and c.endswith("_rnaseq")]
    noise = [c for c in correlation if int(c[1:3]) >= 10]
    assert min(correlation[c] for c in informative) > 0.5
    assert max(correlation[c] for c in noise) < 0.1
    assert {c.rsplit("_", 1)[1] for c in genomics} == {"rnaseq", "cnv", "mut"}


def test_some_patients_have_two_diagnostic_slides():
    rng = np.random.default_rng(0)
    patients = _patients(rng, DemoSpec(patients=200))
    slides = _slides(rng, DemoSpec(patients=200), patients)
    per_case = slides.loc[slides["in_table"]].groupby("case_id").size()
    assert set(per_case) == {1, 2} and 0.15 < (per_case == 2).mean() < 0.35
