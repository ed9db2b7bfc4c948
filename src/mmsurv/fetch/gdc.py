"""Slides from the GDC API into the run's slide folder, optionally through a shared slide store.

For runs with ``download.source: gdc``. A download is resumable and verified
(:class:`mmsurv.gdc.client.GdcClient`). With ``download.store`` set, slides are kept in a folder
shared between runs and cohorts (``{store}/{file_id}/{filename}``, the layout gdc-client uses): a
slide verified there once is linked, never downloaded again. Concurrent jobs wanting the same slide
(two cohorts, two runs) serialise on a lock file beside it, so only one of them downloads.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from mmsurv.fetch.local import link_slide
from mmsurv.gdc.client import DEFAULT_API, GdcClient, GdcConfig
from mmsurv.gdc.token import load_token
from mmsurv.io import atomic_write_text, exclusive_lock

log = logging.getLogger(__name__)

VERIFIED_SUFFIX = ".verified.json"


def gdc_config(download: dict) -> GdcConfig:
    """Client settings from the workflow's ``download:`` section (token from file or environment)."""
    return GdcConfig(
        api=download.get("api", DEFAULT_API),
        connect_timeout=float(download.get("connect_timeout", 10)),
        read_timeout=float(download.get("read_timeout", 60)),
        retries=int(download.get("retries", 5)),
        chunk_size=int(download.get("chunk_mb", 1) * 1024 * 1024),
        token=load_token(download.get("token_file")),
    )


def is_verified_in_store(path: Path, *, size: int, md5: str) -> bool:
    """True when ``path`` exists with the manifest size and a verification record for this md5."""
    record = path.with_name(path.name + VERIFIED_SUFFIX)
    if not (path.is_file() and record.is_file()):
        return False
    try:
        saved = json.loads(record.read_text())
    except ValueError:
        return False
    return saved.get("md5") == md5.lower() and saved.get("size") == size == path.stat().st_size


def fetch_gdc(sample: dict, dest: str | os.PathLike, download: dict, client: GdcClient | None = None) -> Path:
    """Download the slide of sample-sheet row ``sample`` to ``dest`` (through the store if configured)."""
    client = client or GdcClient(gdc_config(download))
    size, md5 = int(sample["size"]), str(sample["md5"]).lower()
    progress = bool(download.get("progress", True))
    store = download.get("store")
    if not store:
        client.download(sample["file_id"], dest, md5=md5, size=size, filename=sample["slide_id"], progress=progress)
        log.info("slide %s downloaded and verified (file id %s)", sample["slide"], sample["file_id"])
        return Path(dest)
    stored = Path(store) / sample["file_id"] / sample["slide_id"]
    with exclusive_lock(stored.with_name(stored.name + ".lock")):
        if is_verified_in_store(stored, size=size, md5=md5):
            log.info("slide %s already verified in the store %s: not downloaded", sample["slide"], store)
        else:
            client.download(sample["file_id"], stored, md5=md5, size=size, filename=sample["slide_id"], progress=progress)
            atomic_write_text(stored.with_name(stored.name + VERIFIED_SUFFIX), json.dumps({"md5": md5, "size": size}))
            log.info("slide %s downloaded into the store and verified (file id %s)", sample["slide"], sample["file_id"])
    link_slide(stored, dest, download.get("link", "symlink"))
    return Path(dest)
