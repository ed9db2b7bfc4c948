"""The papers' published numbers: every shipped file parses, names its table and registered models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mmsurv.models.catalog import read_catalog
from mmsurv.report.published import PublishedError, published, published_files, read_published

REPO = Path(__file__).resolve().parents[2]


def test_every_shipped_file_parses_and_names_its_source_table():
    files = published_files()
    assert {path.name for path in files} >= {"survmamba_table1.csv", "survmamba_table2.csv", "survmamba_table3.csv",
                                             "cancermoe_table1.csv", "cancermoe_table2.csv"}
    registered = set(read_catalog().names())
    for path in files:
        frame = read_published(path)
        number = path.stem.rsplit("table", 1)[1]
        assert (frame["table"] == f"Table {number}").all(), path
        named = set(frame["model"]) - {""}
        assert named <= registered | preset_variants(path.stem.split("_table")[0]), (path, named - registered)


def preset_variants(paper: str) -> set[str]:
    """The variants (sweeps expanded) of the paper's preset: what its ablation rows name."""
    import yaml

    from mmsurv.models.catalog import with_sweeps

    preset = yaml.safe_load((REPO / f"config/papers/{paper}.yaml").read_text())
    return set(with_sweeps([], preset["train"].get("models"), preset["train"].get("sweeps"))[1])


def test_the_tables_hold_the_papers_rows():
    survmamba = published("survmamba")
    table1 = survmamba[(survmamba["table"] == "Table 1") & (survmamba["metric"] == "cindex")]
    assert len(table1) == 16 * 6  # 16 models × 5 cohorts + Overall
    row = table1[(table1["model"] == "survmamba") & (table1["cohort"] == "overall")]
    assert row["value"].item() == pytest.approx(0.717)
    cancermoe = published("cancermoe")
    assert set(cancermoe.loc[cancermoe["table"] == "Table 1", "cohort"]) >= {"blca", "luad", "ucec", "overall"}
    assert cancermoe["std"].isna().all()  # CancerMoE prints no standard deviations


def test_a_malformed_file_is_named_with_its_row(tmp_path):
    source = published_files()[0]
    bad = tmp_path / source.name
    shutil.copy(source, bad)
    lines = bad.read_text().splitlines()
    lines[3] = lines[3].replace(",cindex,", ",c_index,")
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(PublishedError, match=rf"{bad.name}, row 4: unknown metric 'c_index'"):
        read_published(bad)
    renamed = tmp_path / "survmamba_table9.csv"
    shutil.copy(source, renamed)
    with pytest.raises(PublishedError, match="do not match the file name"):
        read_published(renamed)
