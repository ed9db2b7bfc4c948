"""Local slide source: verified against the manifest, linked atomically, mismatches name the slide."""

from __future__ import annotations

import hashlib
import os

import pytest

from mmsurv.fetch.local import SlideVerificationError, fetch_local, link_slide, verify_slide
from mmsurv.fetch.slide import fetch_slide


@pytest.fixture()
def slide(tmp_path):
    path = tmp_path / "drive" / "TCGA-AB-1234-01Z-00-DX1.X.svs"
    path.parent.mkdir()
    data = os.urandom(100_000)
    path.write_bytes(data)
    return path, len(data), hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("mode", ["symlink", "hardlink", "copy"])
def test_verified_slide_is_placed(tmp_path, slide, mode):
    path, size, md5 = slide
    dest = tmp_path / "run" / "slides" / "s.svs"
    fetch_local(path, dest, slide="s", size=size, md5=md5, mode=mode)
    assert dest.read_bytes() == path.read_bytes()
    assert dest.is_symlink() == (mode == "symlink")
    assert [p.name for p in dest.parent.iterdir()] == ["s.svs"]


def test_size_mismatch_names_the_slide_and_links_nothing(tmp_path, slide):
    path, size, md5 = slide
    dest = tmp_path / "out.svs"
    with pytest.raises(SlideVerificationError, match=f"slide s1: .* has {size} bytes, the manifest says {size + 1}"):
        fetch_local(path, dest, slide="s1", size=size + 1, md5=md5)
    assert not dest.exists()


def test_md5_mismatch_names_the_slide_and_both_digests(tmp_path, slide):
    path, size, md5 = slide
    wrong = "f" * 32
    with pytest.raises(SlideVerificationError, match=f"slide s1: md5 .* is {md5}, the manifest says {wrong}"):
        fetch_local(path, tmp_path / "out.svs", slide="s1", size=size, md5=wrong)


def test_md5_check_can_be_switched_off(tmp_path, slide):
    path, size, _ = slide
    fetch_local(path, tmp_path / "out.svs", slide="s1", size=size, md5="f" * 32, verify_md5=False)
    assert (tmp_path / "out.svs").exists()


def test_missing_slide_is_named(tmp_path):
    with pytest.raises(SlideVerificationError, match="slide s9: file not found at .*nope.svs"):
        verify_slide(tmp_path / "nope.svs", slide="s9", size=1, md5=None)


def test_relinking_replaces_an_existing_link(tmp_path, slide):
    path, _, _ = slide
    other = tmp_path / "other.svs"
    other.write_bytes(b"x")
    dest = tmp_path / "out.svs"
    link_slide(other, dest)
    link_slide(path, dest)
    assert os.readlink(dest) == str(path.resolve())


def test_fetch_slide_dispatches_on_source(tmp_path, slide):
    path, size, md5 = slide
    sample = {"slide": "s1", "size": size, "md5": md5, "file_id": "f"}
    fetch_slide(sample, tmp_path / "a.svs", {"source": "local"}, local_source=path)
    assert (tmp_path / "a.svs").exists()
    with pytest.raises(ValueError, match="download.source 'ftp' is not supported"):
        fetch_slide(sample, tmp_path / "b.svs", {"source": "ftp"})
