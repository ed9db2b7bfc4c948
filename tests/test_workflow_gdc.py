"""The workflow with download.source gdc against a local GDC-shaped server: killed mid-file, rerun, verified."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mmsurv.gdc.testserver import Faults, GdcTestServer
from mmsurv.io import md5_file

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snakemake(workdir: Path, *args: str, **popen) -> subprocess.Popen:
    command = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--cores", "1", *args]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **popen)


@pytest.fixture()
def server_and_run(tmp_path, demo_cohort):
    manifest = pd.read_csv(demo_cohort.manifest, sep="\t").drop_duplicates()
    with GdcTestServer() as server:
        for row in manifest.itertuples():
            server.add_file((demo_cohort.slides_dir / row.filename).read_bytes(), file_id=row.id, filename=row.filename)
        config = {
            "results": "results",
            "cohorts": {"demo": {"manifest": str(demo_cohort.manifest), "table": str(demo_cohort.table),
                                 "splits_dir": str(demo_cohort.splits_dir), "signatures": str(demo_cohort.signatures)}},
            "download": {"source": "gdc", "api": server.url, "read_timeout": 5, "retries": 2, "progress": False,
                         "chunk_mb": 0.01},
        }
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
        yield server, tmp_path


def test_sigkill_mid_download_then_rerun_resumes_and_verifies(server_and_run, demo_cohort):
    server, workdir = server_and_run
    samples = None
    # First run: one slide is served slowly; kill the whole workflow while that slide is half on disk.
    manifest = pd.read_csv(demo_cohort.manifest, sep="\t").drop_duplicates()
    slow = manifest.loc[manifest["filename"].str.contains("-DX1.")].iloc[0]
    server.files[slow.id].faults = Faults(throttle_bps=40_000)
    part = workdir / "results/demo/slides" / (slow.filename[: -len(".svs")] + ".svs.part")
    process = snakemake(workdir, "results/demo/slides.tsv", start_new_session=True)
    deadline = time.monotonic() + 120
    while not (part.exists() and part.stat().st_size > 20_000):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the slow slide never started downloading"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    kept = part.stat().st_size
    assert not part.with_suffix("").exists(), "a killed download must not leave the final file"
    # Rerun as a user would (unlock after the kill), at full speed.
    server.files[slow.id].faults = Faults()
    assert snakemake(workdir, "--unlock").wait() == 0
    rerun = snakemake(workdir, "results/demo/slides.tsv")
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output[-3000:]
    final = part.with_suffix("")
    assert md5_file(final) == slow.md5
    ranges = [r.headers.get("Range") for r in server.requests_for(slow.id)]
    assert ranges[0] is None and ranges[-1] is not None
    assert int(ranges[-1].split("=")[1].rstrip("-")) >= kept, "the rerun resumed from the bytes on disk"
    samples = pd.read_csv(workdir / "results/demo/manifest/samples.tsv", sep="\t")
    inventory = pd.read_csv(workdir / "results/demo/slides.tsv", sep="\t")
    assert sorted(inventory["slide"]) == sorted(samples["slide"])
    for row in samples.itertuples():
        assert md5_file(workdir / f"results/demo/slides/{row.slide}.svs") == row.md5
    not_diagnostic = manifest.loc[manifest["filename"].str.contains("-TS1.|-BS1.")]
    assert all(not server.requests_for(file_id) for file_id in not_diagnostic["id"]), "dropped slides are not downloaded"
