"""Dry-run time of the workflow for a large generated cohort (5,000 slides x 3 models x 5 folds).

For whoever changes rules/common.smk: the input functions run once per job, so anything slow in
them multiplies by the number of slides. This script writes a synthetic cohort (manifest, table,
splits, signatures: no slides, download.source gdc so nothing local is needed), writes the
checkpoint's sample sheet in advance with ``mmsurv manifest clean`` (so the dry run sees every
per-slide job), then times ``snakemake -n`` and prints the figures.

    python bench/dag.py [--slides 5000] [--models snn abmil mcat] [--folds 5]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def write_cohort(root: Path, slides: int, folds: int) -> dict:
    cases = [f"TCGA-B{index % 10}-{index:04X}" for index in range(int(slides * 0.85))]
    rows, manifest = [], []
    for index in range(slides):
        case = cases[index % len(cases)]
        number = 1 + index // len(cases)
        name = f"{case}-01Z-00-DX{number}.{hashlib.md5(str(index).encode()).hexdigest().upper()}.svs"
        rows.append({"case_id": case, "slide_id": name, "survival_months": 1.0 + index % 97, "censorship": index % 2,
                     "G1_rnaseq": 0.1, "G2_cnv": 0})
        manifest.append({"id": f"file-{index:06d}", "filename": name, "md5": hashlib.md5(name.encode()).hexdigest(),
                         "size": 1000 + index, "state": "released"})
    pd.DataFrame(rows).to_csv(root / "table.csv", index=False)
    pd.DataFrame(manifest).to_csv(root / "manifest.txt", sep="\t", index=False)
    (root / "splits").mkdir()
    for fold in range(folds):
        val = cases[fold::folds]
        train = [case for case in cases if case not in set(val)]
        length = max(len(train), len(val))
        pd.DataFrame({"train": pd.Series(train).reindex(range(length)),
                      "val": pd.Series(val).reindex(range(length))}).to_csv(root / "splits" / f"splits_{fold}.csv")
    pd.DataFrame({"Oncogenes": ["G1", "G2"]}).to_csv(root / "signatures.csv", index=False)
    return {"manifest": str(root / "manifest.txt"), "table": str(root / "table.csv"),
            "splits_dir": str(root / "splits"), "signatures": str(root / "signatures.csv")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=5000)
    parser.add_argument("--models", nargs="+", default=["snn", "abmil", "mcat"])
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmsurv-dag-") as folder:
        root = Path(folder)
        cohort = write_cohort(root, args.slides, args.folds)
        config = {"results": "results", "cohorts": {"big": cohort}, "models": args.models, "folds": args.folds,
                  "download": {"source": "gdc"}}
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        clean = [str(BIN / "mmsurv"), "manifest", "clean", "--manifest", cohort["manifest"], "--table", cohort["table"],
                 "--out-dir", str(root / "results/big/manifest")]
        subprocess.run(clean, check=True, capture_output=True)
        command = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(root), "--configfile",
                   str(root / "config.yaml"), "-n", "--quiet", "rules"]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(result.stdout[-3000:] + result.stderr[-3000:])
        counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, flags=re.MULTILINE))
    total = sum(int(value) for key, value in counts.items() if key != "total")
    print(f"slides={args.slides} models={len(args.models)} folds={args.folds}")
    print("jobs per rule: " + ", ".join(f"{key}={value}" for key, value in sorted(counts.items())))
    print(f"dry-run: {seconds:.1f} s for {total} jobs (target: under 60 s)")


if __name__ == "__main__":
    main()
