"""Benchmark of survival training (``mmsurv.train``): speed and memory per model, and SNN on real tables.

Part 1, cost: for each model (SNN, ABMIL, MCAT) and bag size (1k, 10k, 50k patches), a fresh child
process runs ``train_fold`` for ``--epochs`` epochs on a synthetic cohort of ``--patients``
patients (genomic groups of BLCA's sizes [94, 334, 521, 468, 1496, 479], random features; every
slide's ``{slide}.pt`` is a symbolic link to one N×1024 file per bag size, so disk use stays at one
bag). Reported: seconds per training epoch (forward + backward + steps over the training patients;
validation excluded), seconds per training patient, peak resident memory of the child (RSS, which
includes ~0.4 GB of interpreter + torch), FLOPs of one forward (``FlopCounterMode``) and parameters.

Part 2, genomic-only SNN on the real BLCA and LUAD tables (``../shared``) with their real 5-fold
splits and MCAT's SNN settings: Adam, lr 2e-4, weight decay 1e-5, 20 epochs, batch 1 with
gradient accumulation 32, NLL with α = 0 (MCAT ``--alpha_surv`` default), class-balanced sampling,
L1 1e-4 on all weights (``--reg_type omic``). Reported: c-index mean ± std over the folds, last
epoch and best epoch (selected on the validation fold itself, as MCAT's monitor: optimistic).

    python bench/train.py                       # both parts
    python bench/train.py --skip-real           # part 1 only
    python bench/train.py --bags 1000 --models snn,abmil --skip-real
    python bench/train.py --skip-cost --l1 0    # part 2 without the L1 penalty
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "tcga"
BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]


def synthetic_cohort(root: Path, patients: int, seed: int = 0) -> dict:
    """A table with BLCA-sized genomic groups, signatures, one split (train all but 2) and slide names."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    genes = {f"F{g}": [f"F{g}G{i:04d}" for i in range(size)] for g, size in enumerate(BLCA_GROUPS)}
    cases = [f"TCGA-BE-{i:04d}" for i in range(patients)]
    table = pd.DataFrame({
        "case_id": cases,
        "slide_id": [f"{case}-01Z-00-DX1.BENCH.svs" for case in cases],
        "survival_months": rng.exponential(30, patients).round(2) + 0.1,
        "censorship": (np.arange(patients) % 4 == 3).astype(int),
    })
    columns = {f"{gene}_rnaseq": rng.standard_normal(patients) for family in genes.values() for gene in family}
    table = pd.concat([table, pd.DataFrame(columns)], axis=1)
    table.to_csv(root / "table.csv", index=False)
    longest = max(BLCA_GROUPS)
    pd.DataFrame({f: members + [None] * (longest - len(members)) for f, members in genes.items()}).to_csv(
        root / "signatures.csv", index=False)
    (root / "splits").mkdir(exist_ok=True)
    pd.DataFrame({"train": pd.Series(cases[2:]), "val": pd.Series(cases[:2])}).to_csv(root / "splits" / "splits_0.csv")
    return {"table": root / "table.csv", "signatures": root / "signatures.csv", "splits": root / "splits",
            "slides": table["slide_id"].tolist()}


def bag_folder(root: Path, slides: list[str], bag_size: int) -> Path:
    """``pt_files`` for one bag size: one real N×1024 file, a symlink per slide."""
    import torch

    folder = root / f"pt_{bag_size}"
    folder.mkdir(exist_ok=True)
    source = folder / "_bag.pt"
    torch.save(torch.randn(bag_size, 1024, generator=torch.Generator().manual_seed(bag_size)), source)
    for slide in slides:
        link = folder / f"{slide.removesuffix('.svs')}.pt"
        if not link.exists():
            link.symlink_to(source.name)
    return folder


def cost_child(model: str, bag_size: int, cohort: dict, features: str, epochs: int, threads: int, out: str, queue) -> None:
    """Child process: one short training run; puts its measurements on ``queue``."""
    import torch

    from mmsurv.models import ModelInputs, build_model, count_flops
    from mmsurv.train.run import peak_rss_mb, train_fold

    torch.set_num_threads(threads)
    base_rss = peak_rss_mb()
    config = {"training": {"epochs": epochs, "num_threads": threads, "grad_accum": 32}}
    metrics = train_fold(config, cohort_table=cohort["table"], splits_dir=cohort["splits"], fold=0, model=model,
                         out_dir=out, signatures=cohort["signatures"], features_dir=features, seed=1)
    network = build_model(model, ModelInputs(omic_dim=sum(BLCA_GROUPS), group_sizes=BLCA_GROUPS))
    queue.put({
        "model": model, "bag": bag_size, "epoch_s": metrics["seconds_per_epoch"],
        "patient_s": metrics["seconds_per_epoch"] / metrics["n_train"], "peak_rss_mb": metrics["peak_rss_mb"],
        "base_rss_mb": base_rss, "gflops": count_flops(network, bag_size) / 1e9, "params": metrics["n_params"],
        "n_train": metrics["n_train"],
    })


def run_cost(models: list[str], bags: list[int], patients: int, epochs: int, threads: int) -> list[dict]:
    context = multiprocessing.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        cohort = synthetic_cohort(root, patients)
        for bag in bags:
            features = bag_folder(root, cohort["slides"], bag)
            for model in models:
                queue = context.Queue()
                child = context.Process(target=cost_child, args=(model, bag, cohort, str(features), epochs, threads,
                                                                  str(root / f"out_{model}_{bag}"), queue))
                child.start()
                child.join()
                if child.exitcode != 0:
                    print(f"{model} bag {bag}: child failed (exit {child.exitcode})", file=sys.stderr)
                    continue
                row = queue.get()
                rows.append(row)
                print(f"{row['model']:6s} bag {row['bag']:>6d}: {row['epoch_s']:7.2f} s/epoch ({row['n_train']} patients, "
                      f"{row['patient_s']:.3f} s/patient), peak RSS {row['peak_rss_mb']:.0f} MB "
                      f"(after imports {row['base_rss_mb']:.0f} MB), {row['gflops']:.1f} GFLOP/forward, "
                      f"{row['params']:,} params", flush=True)
            for file in features.iterdir():
                file.unlink()
    return rows


def run_real(studies: list[str], epochs: int, l1: float, threads: int, out_root: Path) -> dict:
    from mmsurv.train.run import train_fold

    config = {"training": {"optimizer": "adam", "lr": 2e-4, "weight_decay": 1e-5, "epochs": epochs, "grad_accum": 32,
                           "alpha": 0.0, "l1_reg": l1, "weighted_sampling": True, "num_threads": threads}}
    summary = {}
    for study in studies:
        last, best, seconds = [], [], []
        for fold in range(5):
            metrics = train_fold(config, cohort_table=SHARED / "tables" / f"tcga_{study}_all_clean.csv.gz",
                                 splits_dir=SHARED / "splits" / "5foldcv" / f"tcga_{study}", fold=fold, model="snn",
                                 out_dir=out_root / study / f"fold{fold}", seed=1)
            last.append(metrics["cindex_last"])
            best.append(metrics["cindex_best"])
            seconds.append(metrics["seconds_per_epoch"])
            print(f"SNN {study.upper()} fold {fold}: c-index last {last[-1]:.4f}, best {best[-1]:.4f} "
                  f"(epoch {metrics['best_epoch']}), {seconds[-1]:.2f} s/epoch, {metrics['n_train']} train / "
                  f"{metrics['n_val']} val, genomic dim {metrics['genomic_dim']}", flush=True)
        summary[study] = {"last_mean": float(np.mean(last)), "last_std": float(np.std(last)),
                          "best_mean": float(np.mean(best)), "best_std": float(np.std(best)),
                          "last": last, "best": best, "seconds_per_epoch": float(np.mean(seconds))}
        s = summary[study]
        print(f"SNN {study.upper()} 5-fold: last epoch {s['last_mean']:.4f} ± {s['last_std']:.4f}; "
              f"best epoch (val-selected) {s['best_mean']:.4f} ± {s['best_std']:.4f}", flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="snn,abmil,mcat")
    parser.add_argument("--bags", default="1000,10000,50000", help="bag sizes (patches per patient)")
    parser.add_argument("--patients", type=int, default=6, help="synthetic patients (2 of them validate)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per cost run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--studies", default="blca,luad")
    parser.add_argument("--real-epochs", type=int, default=20)
    parser.add_argument("--l1", type=float, default=1e-4, help="L1 weight for the SNN runs (MCAT reg_type omic)")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "train"), help="outputs of the real runs")
    parser.add_argument("--json", help="write all figures to this JSON file")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    sys.path.insert(0, str(REPO / "src"))
    report: dict = {}
    started = time.perf_counter()
    if not args.skip_cost:
        report["cost"] = run_cost(args.models.split(","), [int(b) for b in args.bags.split(",")], args.patients,
                                  args.epochs, args.threads)
    if not args.skip_real:
        if not SHARED.is_dir():
            print(f"skipping the real-table SNN runs: {SHARED} not found", file=sys.stderr)
        else:
            import torch

            torch.set_num_threads(args.threads)
            report["snn_real"] = run_real(args.studies.split(","), args.real_epochs, args.l1, args.threads, Path(args.out))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
