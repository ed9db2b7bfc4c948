"""``mmsurv features extract`` as the workflow runs it: help, a run, and SIGKILL mid-slide then rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest
import torch

from mmsurv.cli import main

N_PATCHES = 12
KILL_AFTER = f"4/{N_PATCHES} patches"     # DEBUG progress line after the second batch of 2


@pytest.mark.parametrize("command", [["features"], ["features", "extract"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: mmsurv features" in out
    if command[-1] == "extract":
        for option in ("--slide", "--patches", "--out-dir", "--weights", "--batch-size", "--workers",
                       "--precision", "--compile", "--no-compile", "--channels-last", "--compile-mode", "--reader",
                       "--encoder-processes"):
            assert option in out


def extract_command(slide_path, patches, out_dir, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mmsurv", *extra, "features", "extract", "--slide", str(slide_path),
            "--patches", str(patches), "--out-dir", str(out_dir), "--name", "slide", "--weights", "none",
            "--batch-size", "2", "--workers", "1", "--threads", "2", "--no-compile"]


def kill_group_mid_slide(command: list[str], marker: str, timeout_s: float = 240.0) -> list[str]:
    """Start ``command`` in its own session, SIGKILL the whole group once stderr shows ``marker``."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    watchdog = threading.Timer(timeout_s, lambda: os.killpg(process.pid, signal.SIGKILL))
    watchdog.start()
    seen: list[str] = []
    try:
        for line in process.stderr:
            seen.append(line)
            if marker in line:
                os.killpg(process.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, "".join(seen[-20:])
    assert any(marker in line for line in seen), "".join(seen[-20:])
    return seen


def test_sigkill_mid_slide_then_rerun_gives_valid_outputs(slide, grid_coords, write_patch_file, tmp_path):
    coords = grid_coords(512, N_PATCHES, step=256)
    assert len(coords) == N_PATCHES
    patches = write_patch_file(tmp_path / "patches/slide.h5", coords)
    out = tmp_path / "features"
    kill_group_mid_slide(extract_command(slide[0], patches, out, "-v"), KILL_AFTER)
    time.sleep(0.2)                                        # let the orphaned reader notice and exit
    assert not (out / "h5_files/slide.h5").exists() and not (out / "pt_files/slide.pt").exists()

    # What a kill during the write phase would leave: temp files, never to be trusted or kept.
    stale = [out / "h5_files/.slide.h5.k1ll3d.tmp.h5", out / "pt_files/.slide.pt.k1ll3d.tmp.pt"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half-written")

    rerun = subprocess.run(extract_command(slide[0], patches, out), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["n_patches"] == N_PATCHES and summary["skipped"] is False and summary["pretrained"] is False
    assert not any(path.exists() for path in stale)
    with h5py.File(out / "h5_files/slide.h5", "r") as h5:
        features, stored = h5["features"][()], h5["coords"][()]
    assert features.shape == (N_PATCHES, 1024) and features.dtype == np.float32 and np.isfinite(features).all()
    assert np.array_equal(stored, coords)
    assert np.array_equal(torch.load(out / "pt_files/slide.pt", weights_only=True).numpy(), features)
    assert json.loads((out / "json/slide.json").read_text())["n_patches"] == N_PATCHES


def test_cli_error_names_the_slide(slide, tmp_path, capsys):
    code = main(["features", "extract", "--no-compile", "--slide", str(slide[0]), "--patches", str(tmp_path / "nope.h5"),
                 "--out-dir", str(tmp_path / "features"), "--name", "TCGA-XX", "--weights", "none"])
    assert code == 1 and "slide TCGA-XX" in capsys.readouterr().err
