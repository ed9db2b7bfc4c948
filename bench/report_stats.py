"""Time the report's survival statistics on fake demo-sized results (issue 27: under 30 s on 2 cores).

The demo trains 27 models on one cohort of 40 patients (5 folds of 8 validation patients). This
script writes fake fold outputs of that shape (predictions.tsv with S_1..S_4, metrics.json,
bin_edges.json; outcomes shared by every model, risks model-specific), then times what the
statistics add to ``aggregate``: :func:`mmsurv.report.stats.compute_statistics` (per-fold and pooled
metrics with scikit-survival, 1,000 bootstrap resamples, 351 paired comparisons) and
:func:`mmsurv.report.stats_report.write_statistics` (tables, the significance matrix, 27
calibration figures). ``--patients 400`` gives a real-cohort-sized run (LUAD/BLCA scale).

    .venv/bin/python bench/report_stats.py [--models 27] [--patients 40] [--boot 1000] [--smoke]

``--smoke`` (3 models, 50 resamples) only checks that the script runs. One thread (OMP_NUM_THREADS=1).

Measured (2 shared cores, one thread, 27 models × 40 patients, 1,000 resamples, 351 pairs):
compute_statistics 3.0 s, write_statistics 6.4 s (the 28 figures dominate), 9.4 s wall-clock,
4.6 s CPU: under the 30 s target. On the real demo results (/work/main/results, 27 models) the whole
``mmsurv report`` took 51 s wall-clock, KM figures and FLOP counts included.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from mmsurv.machine import cpu_description  # noqa: E402

EDGES = [0.0, 10.0, 25.0, 50.0, 300.0]


def write_fake(root: Path, n_models: int, patients: int, folds: int = 5, seed: int = 0) -> list[str]:
    from sksurv.metrics import concordance_index_censored

    rng = np.random.default_rng(seed)
    time_ = rng.exponential(40.0, patients).round(2) + 0.5
    event = (rng.random(patients) < 0.6).astype(int)
    fold_of = np.arange(patients) % folds
    latent = -np.log(time_)
    models = [f"model{m:02d}" for m in range(n_models)]
    for m, model in enumerate(models):
        risk = latent * (0.2 + 0.03 * m) + rng.normal(0, 1, patients)
        survival = np.exp(-np.outer(np.exp(risk), [0.1, 0.3, 0.6, 1.0]))
        for k in range(folds):
            out = root / "demo" / model / f"fold{k}"
            out.mkdir(parents=True)
            mask = fold_of == k
            frame = pd.DataFrame({"case_id": [f"P{i:04d}" for i in np.flatnonzero(mask)], "risk": risk[mask]})
            for b in range(4):
                frame[f"S_{b + 1}"] = survival[mask, b]
            frame["time"], frame["event"] = time_[mask], event[mask]
            frame.to_csv(out / "predictions.tsv", sep="\t", index=False)
            (out / "bin_edges.json").write_text(json.dumps({"edges_months": EDGES}))
            cindex = concordance_index_censored(event[mask].astype(bool), time_[mask], risk[mask])[0]
            (out / "metrics.json").write_text(json.dumps({"model": model, "modality": "omic", "cindex_last": cindex,
                                                          "n_train": int((~mask).sum())}))
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=27)
    parser.add_argument("--patients", type=int, default=40)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--out", help="keep the tables and figures in this folder")
    parser.add_argument("--smoke", action="store_true", help="3 models, 50 resamples")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.boot = 3, 50
    from mmsurv.report.collect import collect_results
    from mmsurv.report.stats import compute_statistics
    from mmsurv.report.stats_report import write_statistics

    print(cpu_description(), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "results"
        models = write_fake(root, args.models, args.patients)
        results = collect_results(root, ["demo"], models)
        started = time.perf_counter()
        cpu = time.process_time()
        stats = compute_statistics(results, n_boot=args.boot, seed=0)
        computed = time.perf_counter()
        write_statistics(stats, Path(args.out) if args.out else Path(tmp) / "report")
        written = time.perf_counter()
        cpu = time.process_time() - cpu
    print(f"{args.models} models x {args.patients} patients x 5 folds, {args.boot} resamples, "
          f"{len(stats.comparisons)} pairs")
    print(f"compute_statistics {computed - started:.2f} s, write_statistics {written - computed:.2f} s, "
          f"total {written - started:.2f} s wall-clock, {cpu:.2f} s CPU (target: under 30 s)")


if __name__ == "__main__":
    main()
