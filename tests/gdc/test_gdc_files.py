"""Manifest building from the GDC files endpoint: filters, paging, TSV output."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mmsurv.gdc.client import GdcError
from mmsurv.gdc.files import build_manifest, lookup_files, write_manifest


@pytest.fixture
def blca(gdc_server, payload):
    """Five matching BLCA slides plus three that the filters must exclude."""
    slides = [gdc_server.add_file(payload(100 + i, seed=i), filename=f"TCGA-XX-000{i}-01Z-00-DX1.svs",
                                  cases__project__project_id="TCGA-BLCA") for i in range(5)]
    gdc_server.add_file(b"x", filename="other-project.svs", cases__project__project_id="TCGA-LUAD")
    gdc_server.add_file(b"y", filename="frozen.svs", cases__project__project_id="TCGA-BLCA",
                        experimental_strategy="Tissue Slide")
    gdc_server.add_file(b"z", filename="controlled.svs", cases__project__project_id="TCGA-BLCA",
                        access="controlled")
    return slides


def test_build_manifest_pages_and_filters(gdc_server, client, blca, tmp_path):
    frame = build_manifest("TCGA-BLCA", client=client, page_size=2)
    queries = [json.loads(r.body) for r in gdc_server.requests if r.path == "/files"]
    assert [q["from"] for q in queries] == [0, 2, 4]
    assert all(q["size"] == 2 and q["format"] == "json" for q in queries)
    assert queries[0]["fields"] == "file_id,file_name,md5sum,file_size,state"
    assert list(frame.columns) == ["id", "filename", "md5", "size", "state"]
    assert list(frame["filename"]) == sorted(f.filename for f in blca)

    out = tmp_path / "sub" / "manifest.tsv"
    write_manifest(frame, out)
    lines = out.read_text().splitlines()
    assert lines[0] == "id\tfilename\tmd5\tsize\tstate"
    expected = sorted((f.filename, f"{f.file_id}\t{f.filename}\t{f.md5}\t{f.size}\treleased") for f in blca)
    assert lines[1:] == [line for _, line in expected]
    assert [p.name for p in out.parent.iterdir()] == ["manifest.tsv"]  # no temp file left


def test_manifest_round_trips_through_read_manifest(client, blca, tmp_path):
    from mmsurv.gdc.manifest import read_manifest

    frame = build_manifest("TCGA-BLCA", client=client, page_size=3)
    write_manifest(frame, tmp_path / "m.tsv")
    again = read_manifest(tmp_path / "m.tsv")
    pd.testing.assert_frame_equal(again.drop(columns="line"), frame)


def test_empty_project_is_an_error(client, blca):
    with pytest.raises(GdcError, match="TCGA-NOPE"):
        build_manifest("TCGA-NOPE", client=client)


def test_lookup_files_keeps_order_and_rejects_unknown_ids(client, blca):
    ids = [blca[3].file_id, blca[0].file_id]
    assert list(lookup_files(ids, client=client)["id"]) == ids
    with pytest.raises(GdcError, match="unknown to GDC: not-an-id"):
        lookup_files([blca[0].file_id, "not-an-id"], client=client)
