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


def test_a_full_disk_leaves_no_partial_file_and_names_the_path_then_the_rerun_completes(small_tmpfs):
    import numpy as np
    import torch

    from mmsurv.h5write import atomic_write_h5
    from mmsurv.io import DiskFullError, atomic_write_bytes, write_tsv

    filler = small_tmpfs / "filler.bin"
    filler.write_bytes(b"x" * (700 << 10))
    big = np.ones((100_000, 4), dtype="float32")  # 1.6 MB in every format
    writers = {
        "features.pt": lambda tmp: torch.save(torch.from_numpy(big), tmp),  # torch hides the OS error
        "features.h5": None,  # HDF5 builds it in memory (atomic_write_h5): it never meets the full disk itself
        "table.tsv": None,
        "raw.bin": None,
    }
    for name, write in writers.items():
        dest = small_tmpfs / name
        with pytest.raises(DiskFullError) as caught:
            if name == "table.tsv":
                import pandas as pd

                write_tsv(pd.DataFrame(big), dest)
            elif name == "raw.bin":
                atomic_write_bytes(dest, big.tobytes())
            elif name == "features.h5":
                atomic_write_h5(dest, lambda h5: h5.create_dataset("features", data=big))
            else:
                with atomic_path(dest) as tmp:
                    write(tmp)
        message = str(caught.value)
        assert str(dest) in message and "\n" not in message and "no space left" in message
        assert caught.value.errno == 28 and caught.value.filename == str(dest)
        assert sorted(p.name for p in small_tmpfs.iterdir()) == ["filler.bin"], name  # no partial file
    filler.unlink()  # space freed: the same write completes
    atomic_write_bytes(small_tmpfs / "raw.bin", big[:50_000].tobytes())
    assert (small_tmpfs / "raw.bin").stat().st_size == 800_000


def test_an_error_that_is_not_a_full_disk_is_raised_as_it_is(tmp_path):
    from mmsurv.io import DiskFullError

    with pytest.raises(RuntimeError, match="crash") as caught:
        with atomic_path(tmp_path / "a.bin") as tmp:
            tmp.write_bytes(b"x")
            raise RuntimeError("crash")
    assert not isinstance(caught.value, DiskFullError)
