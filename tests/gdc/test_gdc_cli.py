"""``mmsurv gdc download`` / ``mmsurv gdc manifest`` end to end, including a SIGKILL mid-download."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import mmsurv.cli
from mmsurv.cli import main
from mmsurv.gdc.files import build_manifest, write_manifest
from mmsurv.gdc.testserver import Faults
from mmsurv.io import md5_file


@pytest.fixture(autouse=True)
def _only_gdc_commands(monkeypatch):
    """Run the real ``main`` with just the ``gdc`` commands (other stages' imports stay out of these
    tests), and keep pytest's log capture: ``main`` would otherwise reconfigure the root logger."""
    monkeypatch.setattr(mmsurv.cli, "COMMAND_MODULES", ("mmsurv.gdc.cli",))
    monkeypatch.setattr(mmsurv.cli, "setup_logging", lambda *args, **kwargs: None)


@pytest.fixture
def slides(gdc_server, payload):
    return [gdc_server.add_file(payload(200_000 + i, seed=i), filename=f"slide{i}.svs") for i in range(3)]


def write_test_manifest(client, path):
    write_manifest(build_manifest("TCGA-TEST", client=client), path)
    return path


def test_gdc_download_manifest_then_rerun_skips(gdc_server, client, slides, tmp_path, capsys):
    manifest = write_test_manifest(client, tmp_path / "manifest.tsv")
    slides[1].faults.cut_after = 77_777
    argv = ["gdc", "download", "--manifest", str(manifest), "--out-dir", str(tmp_path / "wsi"),
            "--api", gdc_server.url, "--workers", "2", "--no-progress", "--retries", "2"]
    assert main(argv) == 0
    assert "3 downloaded, 0 already present, 0 failed" in capsys.readouterr().out
    for served in slides:
        assert md5_file(tmp_path / "wsi" / served.filename) == served.md5
    assert gdc_server.requests_for(slides[1].file_id)[-1].headers["Range"] == "bytes=77777-"
    count = len(gdc_server.requests)
    assert main(argv) == 0
    assert "0 downloaded, 3 already present" in capsys.readouterr().out
    assert len(gdc_server.requests) == count


def test_gdc_download_ids_and_failure_exit_code(gdc_server, slides, tmp_path, capsys):
    slides[2].faults.status = 403
    argv = ["gdc", "download", "--ids", slides[0].file_id, slides[2].file_id, "--out-dir", str(tmp_path),
            "--api", gdc_server.url, "--no-progress", "--retries", "0"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "1 downloaded, 0 already present, 1 failed" in captured.out
    assert f"FAILED {slides[2].file_id}" in captured.err and "token" in captured.err
    assert md5_file(tmp_path / "slide0.svs") == slides[0].md5


def test_gdc_manifest_command(gdc_server, slides, tmp_path, capsys):
    out = tmp_path / "m.tsv"
    assert main(["gdc", "manifest", "--project", "TCGA-TEST", "--out", str(out), "--api", gdc_server.url]) == 0
    assert "3 slides" in capsys.readouterr().out
    assert out.read_text().splitlines()[0] == "id\tfilename\tmd5\tsize\tstate"
    assert len(out.read_text().splitlines()) == 4


@pytest.mark.parametrize("argv", [["gdc", "--help"], ["gdc", "download", "--help"], ["gdc", "manifest", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "GDC" in capsys.readouterr().out


def test_download_requires_a_source(capsys):
    with pytest.raises(SystemExit):
        main(["gdc", "download", "--out-dir", "x"])
    assert "--manifest" in capsys.readouterr().err


def test_sigkill_mid_download_then_rerun_resumes(gdc_server, client, payload, tmp_path):
    served = gdc_server.add_file(payload(2_000_000, seed=42), filename="big.svs",
                                 faults=Faults(throttle_bps=500_000))
    manifest = tmp_path / "m.tsv"
    write_manifest(build_manifest("TCGA-TEST", client=client), manifest)
    out_dir = tmp_path / "wsi"
    command = [sys.executable, "-m", "mmsurv", "gdc", "download", "--manifest", str(manifest),
               "--out-dir", str(out_dir), "--api", gdc_server.url, "--no-progress", "--retries", "1"]
    part = out_dir / "big.svs.part"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (part.exists() and part.stat().st_size >= 300_000):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "download never started"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    on_disk = part.stat().st_size
    assert 300_000 <= on_disk < served.size
    assert not (out_dir / "big.svs").exists()

    served.faults.throttle_bps = None
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr
    assert gdc_server.requests_for(served.file_id)[-1].headers["Range"] == f"bytes={on_disk}-"
    assert md5_file(out_dir / "big.svs") == served.md5
    assert not part.exists()
