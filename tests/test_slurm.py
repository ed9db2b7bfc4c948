"""The demo workflow through profiles/slurm on a real single-node SLURM cluster with 2 fake GPUs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from slurm_cluster import SlurmCluster, SlurmUnavailable

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        with SlurmCluster(tmp_path_factory.mktemp("slurm")) as running:
            yield running
    except SlurmUnavailable as reason:
        pytest.skip(f"no SLURM cluster here: {reason}")


def test_demo_workflow_runs_through_the_slurm_profile(cluster, tmp_path):
    config = {
        "results": "results",
        "demo": {"outdir": "resources/demo", "patients": 6, "seed": 2, "width": 2048, "height": 1536, "genes": 16},
        "cohorts": {"demo": {"manifest": "resources/demo/gdc_manifest.txt",
                             "table": "resources/demo/tcga_demo_all_clean.csv.gz",
                             "splits_dir": "resources/demo/splits", "signatures": "resources/demo/signatures.csv",
                             "slides_dir": "resources/demo/slides"}},
        "patching": {"segment": {"min_tissue_mm2": 0.02}},
        "features": {"weights": "none", "compile": False, "num_workers": 0},
        # ABMIL reads the features (a genomic-only run would extract none); SNN asks for no GPU
        "models": ["snn", "abmil"], "folds": 1, "slides_per_job": 3,
        "train": {"training": {"epochs": 1, "grad_accum": 1}},
        "download": {"source": "local"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = dict(cluster.env, PATH=f"{BIN}:{cluster.env['PATH']}")
    command = [
        str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
        "--configfile", str(tmp_path / "config.yaml"), "--profile", str(REPO / "profiles/slurm"),
        "--jobs", "4", "--cores", "2", "--resources", "mem_mb=8000", "gdc_connections=8", "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
        "--slurm-logdir", str(tmp_path / "slurm_logs"), "--slurm-keep-successful-logs",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1500)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:] + cluster.logs()
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", output)
    assert submitted, "no job went through SLURM"
    samples = pd.read_csv(tmp_path / "results/demo/manifest/samples.tsv", sep="\t")
    patching = pd.read_csv(tmp_path / "results/demo/wsi/patching.tsv", sep="\t")
    assert sorted(patching["slide"]) == sorted(samples["slide"])
    slurm_logs = list((tmp_path / "slurm_logs").rglob("*.log"))
    assert len(slurm_logs) == len(set(submitted)), "every submitted job left its SLURM log"
    grouped = [path for path in slurm_logs if "group_slide" in str(path)]
    assert grouped, "per-slide rules were not grouped into SLURM jobs"
    gpu_logs = sorted((tmp_path / "results/logs/extract_features/demo").glob("*.log"))
    assert len(gpu_logs) == -(-len(samples) // 3)  # one feature job per batch of 3 slides
    genomic = (tmp_path / "results/logs/train/demo/snn/fold0.log").read_text()
    assert "GPU from the SLURM allocation" not in genomic  # a genomic-only model asks for no GPU
    devices = set()
    for path in gpu_logs:
        found = re.search(r"GPU from the SLURM allocation: CUDA_VISIBLE_DEVICES=(\S+)", path.read_text())
        assert found, f"{path.name}: the job did not run with a SLURM GPU"
        devices.add(found.group(1))
    assert devices <= {"0", "1"}
    assert (tmp_path / "results/report/report.json").exists()
