"""GPU slots: concurrent gpu=1 jobs get distinct devices; SLURM's choice is kept; CPU without GPUs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mmsurv.gpu import gpu_slot

BIN = Path(sys.executable).parent


def test_no_devices_means_cpu(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with gpu_slot([], lock_dir=tmp_path) as device:
        assert device is None and "CUDA_VISIBLE_DEVICES" not in os.environ


def test_slots_are_exclusive_and_released(monkeypatch, tmp_path):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with gpu_slot(["0", "1"], lock_dir=tmp_path) as first:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == first == "0"
        # another process must get the other device while this one holds "0"
        code = f"from mmsurv.gpu import gpu_slot\nwith gpu_slot(['0','1'], lock_dir={str(tmp_path)!r}) as d: print(d)"
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        assert other == "1"
        code = (f"from mmsurv.gpu import gpu_slot\nwith gpu_slot(['0'], lock_dir={str(tmp_path)!r}, poll_seconds=0.05, "
                "timeout_seconds=0.2): pass")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode != 0 and "TimeoutError: no free GPU among 0" in result.stderr
    with gpu_slot(["0"], lock_dir=tmp_path, timeout_seconds=0) as again:
        assert again == "0", "the slot is free again after the block"


def test_slurm_allocation_is_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with gpu_slot(["0", "1"], lock_dir=tmp_path) as device:
        assert device is None and os.environ["CUDA_VISIBLE_DEVICES"] == "3"


def test_two_concurrent_snakemake_gpu_jobs_see_different_devices(tmp_path):
    """Two gpu=1 jobs under --resources gpu=2 run at once and each gets its own device."""
    snakefile = tmp_path / "Snakefile"
    snakefile.write_text(textwrap.dedent(f"""
        rule all:
            input: expand("out/{{i}}.txt", i=range(2))

        rule job:
            output: "out/{{i}}.txt"
            resources: gpu=1
            run:
                import os, time
                from mmsurv.gpu import gpu_slot
                with gpu_slot(["0", "1"], lock_dir={str(tmp_path / "locks")!r}):
                    start = time.time()
                    time.sleep(2)
                    open(output[0], "w").write(f"{{os.environ['CUDA_VISIBLE_DEVICES']}} {{start}} {{time.time()}}")
    """))
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("SLURM_JOB_ID", None)
    result = subprocess.run(
        [str(BIN / "snakemake"), "-s", str(snakefile), "-d", str(tmp_path), "--cores", "2", "--resources", "gpu=2"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = [(tmp_path / f"out/{i}.txt").read_text().split() for i in range(2)]
    devices = {record[0] for record in records}
    (_, start_a, end_a), (_, start_b, end_b) = [(r[0], float(r[1]), float(r[2])) for r in records]
    assert max(start_a, start_b) < min(end_a, end_b), "the two jobs did not run concurrently"
    assert devices == {"0", "1"}
