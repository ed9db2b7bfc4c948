"""Every bench still runs: each ``bench/*.py`` in its ``--smoke`` mode (tiny sizes, seconds).

The figures of a smoke run mean nothing; what is checked is that the script runs to the end, prints
the machine it ran on (CPU model and flags, as every bench must) and reports no error row. A bench
without a smoke mode fails here, so no new bench can rot unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHES = sorted(path for path in (REPO / "bench").glob("*.py") if not path.name.startswith("_"))


def test_every_bench_has_a_smoke_mode():
    missing = [path.name for path in BENCHES if "--smoke" not in path.read_text()]
    assert not missing, f"bench scripts without a --smoke mode: {', '.join(missing)}"


@pytest.mark.slow
@pytest.mark.parametrize("bench", BENCHES, ids=[path.stem for path in BENCHES])
def test_bench_runs_in_smoke_mode(bench, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path), MMSURV_CACHE_DIR=str(tmp_path / "compiled"))
    done = subprocess.run([sys.executable, str(bench), "--smoke"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{bench.name} --smoke failed ({done.returncode}):\n{output[-3000:]}"
    assert "CPU:" in done.stdout and "flags:" in done.stdout, f"{bench.name} does not print the CPU and its flags"
    errors = [line for line in done.stdout.splitlines() if "error" in line.lower()]
    assert not errors, f"{bench.name} --smoke reported errors:\n" + "\n".join(errors[:10])
