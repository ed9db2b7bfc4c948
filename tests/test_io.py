"""Atomic outputs: complete or absent, never half-written; usual permissions."""

from __future__ import annotations

import os
import stat

import pytest

from mmsurv.io import atomic_path, atomic_symlink, atomic_write_text, md5_file


def test_success_renames_into_place_with_umask_permissions(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert (tmp_path / "a.txt").read_text() == "hello"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_failure_leaves_old_content_and_no_temp_file(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temp_path_keeps_the_suffix(tmp_path):
    with atomic_path(tmp_path / "t.csv.gz") as tmp:
        assert tmp.name.endswith(".gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")


def test_symlink_and_md5(tmp_path):
    (tmp_path / "data").write_bytes(b"abc")
    atomic_symlink(tmp_path / "data", tmp_path / "link")
    assert os.readlink(tmp_path / "link") == str(tmp_path / "data")
    assert md5_file(tmp_path / "link") == "900150983cd24fb0d6963f7d28e17f72"
