"""One slide into the run's slide folder, from the source the workflow config names.

``download.source`` is ``local`` (a folder the lab already has; verified, then linked) or ``gdc``
(downloaded from the GDC API, resumable and verified).
"""

from __future__ import annotations

import os
from pathlib import Path

from mmsurv.fetch.gdc import fetch_gdc
from mmsurv.fetch.local import fetch_local


def fetch_slide(sample: dict, dest: str | os.PathLike, download: dict, local_source: str | os.PathLike | None = None) -> Path:
    """Place the slide of sample-sheet row ``sample`` at ``dest`` according to ``download`` settings."""
    source = download.get("source", "local")
    if source == "local":
        if local_source is None:
            raise ValueError(f"slide {sample['slide']}: download.source is 'local' but no local file was given")
        return fetch_local(
            local_source, dest, slide=sample["slide"], size=int(sample["size"]), md5=sample["md5"],
            verify_md5=download.get("verify_md5", True), mode=download.get("link", "symlink"),
        )
    if source == "gdc":
        return fetch_gdc(sample, dest, download)
    raise ValueError(f"download.source {source!r} is not supported (use 'local' or 'gdc')")
