"""Slides that already sit in a local folder (a lab's shared drive): verify, then link into the run.

For labs that keep their TCGA slides on a shared drive and want no download. Each slide is checked
against the GDC manifest (size always; md5 unless switched off, since hashing 1,000 multi-GB slides
takes a while) and then linked into the run's slide folder, so the drive is never modified and the
run's folder holds only verified slides.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from mmsurv.io import atomic_path, atomic_symlink, md5_file

log = logging.getLogger(__name__)

LINK_MODES = ("symlink", "hardlink", "copy")


class SlideVerificationError(RuntimeError):
    """A slide is missing, or its size or md5 differ from the manifest; the message names the slide."""


def verify_slide(path: str | os.PathLike, *, slide: str, size: int, md5: str | None) -> None:
    """Check ``path`` against the manifest's size (unless negative: not recorded) and md5 (when
    given and not empty); raise naming the slide."""
    path = Path(path)
    if not path.is_file():
        raise SlideVerificationError(f"slide {slide}: file not found at {path}")
    actual_size = path.stat().st_size
    if size >= 0 and actual_size != size:
        raise SlideVerificationError(
            f"slide {slide}: {path} has {actual_size} bytes, the manifest says {size} (truncated or a different file)"
        )
    if md5:
        actual_md5 = md5_file(path)
        if actual_md5 != md5.lower():
            raise SlideVerificationError(
                f"slide {slide}: md5 of {path} is {actual_md5}, the manifest says {md5.lower()} (corrupt or a different file)"
            )


def link_slide(source: str | os.PathLike, dest: str | os.PathLike, mode: str = "symlink") -> Path:
    """Place ``source`` at ``dest`` as a symlink (default), hard link or copy; atomically."""
    if mode not in LINK_MODES:
        raise ValueError(f"link mode {mode!r} is not one of {', '.join(LINK_MODES)}")
    source, dest = Path(source).resolve(), Path(dest)
    _link_companion_folder(source, dest, mode)
    if mode == "symlink":
        atomic_symlink(source, dest)
    elif mode == "hardlink":
        with atomic_path(dest) as tmp:
            tmp.unlink()
            os.link(source, tmp)
    else:
        with atomic_path(dest) as tmp:
            shutil.copyfile(source, tmp)
    return dest


def _link_companion_folder(source: Path, dest: Path, mode: str) -> None:
    """MIRAX (``.mrxs``) slides keep their tiles in a folder named like the slide beside the file:
    it goes with the slide (a symlink to the folder, or a copy), or OpenSlide cannot open it."""
    if source.suffix.lower() != ".mrxs":
        return
    folder = source.with_suffix("")
    if not folder.is_dir():
        raise SlideVerificationError(f"slide {dest.stem}: MIRAX slide {source} has no data folder {folder}")
    target = dest.with_suffix("")
    if mode == "copy":
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    else:
        atomic_symlink(folder, target)


def fetch_local(
    source: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    slide: str,
    size: int,
    md5: str | None,
    verify_md5: bool = True,
    mode: str = "symlink",
) -> Path:
    """Verify a slide in a local folder against the manifest and link it to ``dest``."""
    verify_slide(source, slide=slide, size=size, md5=md5 if verify_md5 else None)
    link_slide(source, dest, mode)
    log.info("slide %s verified (%s) and linked (%s) from %s", slide, "size+md5" if verify_md5 else "size", mode, source)
    return Path(dest)
