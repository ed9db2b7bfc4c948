"""GDC file metadata: build a download manifest for a TCGA project, or look up given file ids.

``build_manifest`` asks the GDC ``files`` endpoint for the open-access diagnostic whole-slide
images (SVS) of one project (e.g. ``TCGA-BLCA``), page by page, and returns them as a table with
the columns of a GDC manifest; ``write_manifest`` saves that table in the tab-separated format the
GDC Data Portal and ``gdc-client`` use (``id filename md5 size state``), atomically. This is how
the workflow pins exactly which slides it downloads.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from mmsurv.gdc.client import GdcClient, GdcConfig, GdcError, GdcHttpError
from mmsurv.io import atomic_write_text

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("id", "filename", "md5", "size", "state")
FIELDS = ("file_id", "file_name", "md5sum", "file_size", "state")
_FIELD_TO_COLUMN = dict(zip(FIELDS, MANIFEST_COLUMNS))
DEFAULT_PAGE_SIZE = 500


def _in(field: str, values: Sequence[str]) -> dict[str, Any]:
    return {"op": "in", "content": {"field": field, "value": list(values)}}


def diagnostic_slide_filters(project: str) -> dict[str, Any]:
    """GDC filter for a project's open-access diagnostic slides (SVS)."""
    return {"op": "and", "content": [
        _in("cases.project.project_id", [project]),
        _in("data_type", ["Slide Image"]),
        _in("experimental_strategy", ["Diagnostic Slide"]),
        _in("data_format", ["SVS"]),
        _in("access", ["open"]),
    ]}


def query_files(filters: dict[str, Any], *, client: GdcClient | None = None,
                config: GdcConfig | None = None, page_size: int = DEFAULT_PAGE_SIZE) -> pd.DataFrame:
    """All files matching ``filters`` as a manifest table (sorted by file name), following pagination."""
    own = client is None
    client = client or GdcClient(config)
    try:
        hits = _all_hits(client, filters, page_size)
    finally:
        if own:
            client.close()
    return _hits_to_frame(hits)


def build_manifest(project: str, *, client: GdcClient | None = None, config: GdcConfig | None = None,
                   page_size: int = DEFAULT_PAGE_SIZE) -> pd.DataFrame:
    """Manifest of the open diagnostic SVS slides of ``project``; raises ``GdcError`` if there are none."""
    frame = query_files(diagnostic_slide_filters(project), client=client, config=config, page_size=page_size)
    if frame.empty:
        raise GdcError(f"GDC lists no open-access diagnostic SVS slides for project {project!r}; "
                       "check the project id (e.g. TCGA-BLCA)")
    log.info("project %s: %d diagnostic slides, %.1f GB", project, len(frame), frame["size"].sum() / 1e9)
    return frame


def lookup_files(file_ids: Sequence[str], *, client: GdcClient | None = None,
                 config: GdcConfig | None = None) -> pd.DataFrame:
    """Manifest rows (name, md5, size) for the given file ids, in the given order; unknown ids raise."""
    unique = list(dict.fromkeys(file_ids))
    frame = query_files(_in("file_id", unique), client=client, config=config,
                        page_size=max(1, min(len(unique), DEFAULT_PAGE_SIZE)))
    missing = sorted(set(unique) - set(frame["id"]))
    if missing:
        raise GdcError(f"file id(s) unknown to GDC: {', '.join(missing)}")
    return frame.set_index("id", drop=False).loc[unique].reset_index(drop=True)


def write_manifest(frame: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``frame`` as a GDC manifest (tab-separated ``id filename md5 size state``) atomically."""
    missing = [column for column in MANIFEST_COLUMNS if column not in frame.columns]
    if missing:
        raise ValueError(f"manifest table lacks column(s) {', '.join(missing)}")
    text = frame.loc[:, list(MANIFEST_COLUMNS)].to_csv(sep="\t", index=False, lineterminator="\n")
    atomic_write_text(path, text)


def _all_hits(client: GdcClient, filters: dict[str, Any], page_size: int) -> list[dict[str, Any]]:
    hits: list[dict[str, Any]] = []
    total = None
    while total is None or len(hits) < total:
        page, pagination = _page(client, filters, offset=len(hits), size=page_size)
        total = int(pagination.get("total", 0))
        if not page:
            break
        hits.extend(page)
        log.debug("GDC files: %d of %d records", len(hits), total)
    if total is not None and len(hits) != total:
        raise GdcHttpError(f"GDC files query returned {len(hits)} records but announced {total}")
    return hits


def _page(client: GdcClient, filters: dict[str, Any], *, offset: int,
          size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    body = {"filters": filters, "fields": ",".join(FIELDS), "format": "json",
            "size": size, "from": offset, "sort": "file_id:asc"}
    payload = client.request_json("POST", "files", json_body=body)
    data = payload.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("hits"), list) \
            or not isinstance(data.get("pagination"), dict):
        raise GdcHttpError(f"unexpected GDC files answer: {json.dumps(payload)[:300]}")
    return data["hits"], data["pagination"]


def _hits_to_frame(hits: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for hit in hits:
        absent = [name for name in FIELDS if hit.get(name) in (None, "")]
        if absent:
            raise GdcHttpError(f"GDC record {hit.get('file_id', hit.get('id', '?'))} lacks {', '.join(absent)}")
        rows.append({_FIELD_TO_COLUMN[name]: hit[name] for name in FIELDS})
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    frame["size"] = frame["size"].astype("int64")
    duplicated = frame["id"][frame["id"].duplicated()]
    if not duplicated.empty:
        raise GdcHttpError(f"GDC paging returned file {duplicated.iloc[0]} twice; retry the query")
    return frame.sort_values("filename", kind="stable").reset_index(drop=True)
