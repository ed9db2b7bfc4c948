"""Where a finished workflow run spent its time, stage by stage, from its Snakemake benchmark files.

For whoever times ``make demo`` (issue 26's table): run the demo (``time make demo`` from a fresh
clone with ``MMSURV_CACHE_DIR`` pointing at a new folder), then

    .venv/bin/python bench/demo_stages.py [results]

Each benchmarked job writes ``results/benchmarks/<rule>/...tsv`` when it ends (its ``s`` column is
the job's wall-clock seconds, ``cpu_time`` its CPU seconds), so a job ran from ``mtime - s`` to
``mtime``. A stage's wall-clock is the span from its first job's start to its last job's end (jobs
of one stage overlap when Snakemake runs them side by side); the job sum and CPU sum are printed
beside it. Rules without a benchmark (cleaning, the patching summary, the feature index, the HTML
report) fall between the stages: the whole run's span (first start to last end) is printed last.
``--smoke`` times a made-up benchmark tree instead of a real run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from mmsurv.machine import cpu_description

STAGES = {  # benchmark folder or file stem -> stage name, in DAG order
    "demo_cohort": "demo cohort",
    "segment_and_patch": "segmentation + patching",
    "extract_features": "features",
    "train": "training",
    "aggregate": "aggregate",
}


def job_times(benchmarks: Path) -> pd.DataFrame:
    """One row per benchmarked job: stage, start, end, wall and CPU seconds."""
    rows = []
    for path in sorted(benchmarks.rglob("*.tsv")):
        key = path.relative_to(benchmarks).parts[0].removesuffix(".tsv")
        stage = STAGES.get(key, key)
        table = pd.read_csv(path, sep="\t")
        if table.empty:
            raise ValueError(f"benchmark file {path} has no rows")
        wall, cpu = float(table["s"].iloc[-1]), float(table["cpu_time"].iloc[-1])
        end = path.stat().st_mtime
        rows.append({"stage": stage, "job": str(path.relative_to(benchmarks)), "start": end - wall,
                     "end": end, "wall": wall, "cpu": cpu})
    if not rows:
        raise FileNotFoundError(f"no benchmark files under {benchmarks}")
    return pd.DataFrame(rows)


def stage_table(jobs: pd.DataFrame) -> pd.DataFrame:
    order = {name: i for i, name in enumerate(STAGES.values())}
    stages = jobs.groupby("stage").agg(jobs=("job", "size"), start=("start", "min"), end=("end", "max"),
                                       job_wall_sum=("wall", "sum"), cpu_sum=("cpu", "sum"))
    stages["span"] = stages["end"] - stages["start"]
    return stages.loc[sorted(stages.index, key=lambda name: (order.get(name, len(order)), name))]


def write_fake(root: Path) -> Path:
    """A benchmark tree of four stages whose jobs overlap, for ``--smoke``."""
    benchmarks = root / "benchmarks"
    now = 1_700_000_000.0
    jobs = [("demo_cohort.tsv", 0, 2.0), ("segment_and_patch/demo/b0.tsv", 2, 5.0),
            ("extract_features/demo/b0.tsv", 7, 10.0), ("train/demo/snn/folds.tsv", 17, 3.0),
            ("train/demo/abmil/folds.tsv", 18, 4.0), ("aggregate.tsv", 23, 1.0)]
    for name, start, wall in jobs:
        path = benchmarks / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\tcpu_time\n{wall}\t{wall * 0.9}\n")
        os.utime(path, (now + start + wall, now + start + wall))
    return benchmarks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", default="results", help="the run's results folder")
    parser.add_argument("--smoke", action="store_true", help="a made-up benchmark tree (seconds)")
    args = parser.parse_args()
    print(cpu_description(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        benchmarks = write_fake(Path(tmp)) if args.smoke else Path(args.results) / "benchmarks"
        jobs = job_times(benchmarks)
    stages = stage_table(jobs)
    print(f"{'stage':<26}{'jobs':>5}{'wall (span) s':>15}{'job sum s':>11}{'CPU s':>9}")
    for name, row in stages.iterrows():
        print(f"{name:<26}{int(row['jobs']):>5}{row['span']:>15.1f}{row['job_wall_sum']:>11.1f}{row['cpu_sum']:>9.1f}")
    total = jobs["end"].max() - jobs["start"].min()
    print(f"{'benchmarked span':<26}{len(jobs):>5}{total:>15.1f}{jobs['wall'].sum():>11.1f}{jobs['cpu'].sum():>9.1f}")
    if args.smoke and abs(total - 24.0) > 1e-6:
        sys.exit(f"smoke: expected a 24 s span, got {total}")


if __name__ == "__main__":
    main()
