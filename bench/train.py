"""Benchmark of survival training (``mmsurv.train``): speed and memory per model, and SNN on real tables.

Part 0, fixed cost of a train job: for each model, a fresh process as the workflow starts one (one
job trains every fold of a model) — interpreter start, imports, then 5 folds of one epoch on a
synthetic cohort of 40 patients with 32-patch bags (the demo's sizes); everything but the training
epochs is the job's fixed cost.

Measured (part 0, ``python bench/train.py --skip-real --skip-cost --models omic_mlp,snn,abmil,mcat,
transmil,porpoise_mmf``; Xeon with AMX, 2 vCPUs, quiet; "before" = the same script on the previous
version's package, without the job's quick exit), fixed cost of a 5-fold job before → after:
OmicMLP 5.44 → 1.46 s, SNN 5.01 → 1.68, ABMIL 5.04 → 1.78, MCAT 5.85 → 2.40, PORPOISE-MMF 5.63 →
2.15, TransMIL 12.67 → 9.42 (its 5 validations and hold-out evaluations of padded Nyström attention
are most of it). Imports 1.7 → 1.05 s (no torch._dynamo, scikit-learn, scikit-survival or SciPy's
statistics in a job), per-fold overhead 2.7 → 0.4-0.7 s (the table read once, one conversion of the
genomic block, each model file parsed once, no resume checkpoint per epoch), exit 0.6 → 0.03 s.

Part 1, cost: for each model (default: every registered model) and bag size (1k, 10k, 50k patches), a fresh child
process runs ``train_fold`` for ``--epochs`` epochs on a synthetic cohort of ``--patients``
patients (genomic groups of BLCA's sizes [94, 334, 521, 468, 1496, 479], random features; every
slide's ``{slide}.pt`` is a symbolic link to one N×1024 file per bag size, so disk use stays at one
bag). Reported: seconds per training epoch (forward + backward + steps over the training patients;
validation excluded), seconds per training patient, peak resident memory of the child (RSS, which
includes ~0.4 GB of interpreter + torch), FLOPs of one forward (``FlopCounterMode``) and parameters.

Part 2, genomic-only SNN on the real BLCA and LUAD tables (``../shared``) with their real 5-fold
splits and MCAT's SNN settings, checked against the settings file of MCAT's released SNN runs
(``results/ICCV/SNNsm_nll_surv_a0.0_reg1e-04_5foldcv_gc32_sig/.../experiment_*.txt`` of
mahmoodlab/MCAT): Adam, lr 2e-4, weight decay 1e-5 (MCAT ``--reg``), 20 epochs, batch 1 with
gradient accumulation 32 (``--gc``), NLL with α = 0 (``a0.0``), class-balanced sampling
(``weighted_sample``), L1 1e-4 on all weights (``reg1e-04``: ``--reg_type omic --lambda_reg 1e-4``),
``model_size_omic='small'`` (4 blocks of 256, Linear → ELU → AlphaDropout 0.25), seed 1; the genomic
vector is every ``_rnaseq``/``_cnv``/``_mut`` column, standard-scaled on the training fold (BLCA 3062,
LUAD 3096 inputs). Reported: c-index mean ± std over the folds (population std, ``np.std``, as
MCAT's ``cindex.csv``) of the last epoch and of the best epoch (selected on the validation fold
itself, as MCAT's ``Monitor_CIndex``: optimistic), seconds per training epoch and the total time.
Where we deviate from MCAT's code, deliberately:

* gradients of the last partial window of an epoch (BLCA: 298 = 9·32 + 10 patients) are applied by
  a last optimiser step; MCAT leaves them in ``.grad`` and they leak into the next epoch's first step;
* the L1 term is back-propagated once per window as ``k·λ·Σ|w|`` instead of ``k`` times ``λ·Σ|w|``
  (the weights do not change inside a window: the same gradient, without a pass over the ~1 M
  weights per patient);
* genomic columns are selected by suffix; MCAT takes every column after its first 11 metadata
  columns by position, which on these files (by our reading of its dataset code, not run) would
  swap one gene (``ZXDC_rnaseq``) for a non-genomic column (BLCA ``train``, LUAD ``censorship``);
* the real-table runs use 1 torch thread (the package default for genomic-only models; MCAT ran
  on a GPU): with 2 threads on this shared 2-core machine an epoch took 11–22 s instead of < 1 s.

Measured (``python bench/train.py --skip-cost``, 2 shared CPU cores with another job running,
1 thread, torch CPU, deterministic; 190 s for both studies)::

    SNN BLCA 5-fold: last epoch 0.5480 ± 0.0204; best epoch (val-selected) 0.5763 ± 0.0170
                     folds last 0.5752 0.5666 0.5466 0.5250 0.5265; 0.78 s/epoch, 88 s in all
    SNN LUAD 5-fold: last epoch 0.5556 ± 0.0448; best epoch (val-selected) 0.6019 ± 0.0573
                     folds last 0.6237 0.4905 0.5390 0.5820 0.5429; 0.88 s/epoch, 98 s in all
    MCAT's released SNN runs, last epoch: BLCA 0.5407 ± 0.0157, LUAD 0.5387 ± 0.0691

Seconds per epoch were 11–22 (2 threads) and 3.1 (1 thread) on BLCA fold 0 before the loop
stopped computing the L1 norm per patient and the dataset stopped reading pandas rows per sample;
0.78 s is now the cost of 298 batch-1 forward + backward passes of the SNN itself (~2.4 ms each).

    python bench/train.py                       # both parts
    python bench/train.py --skip-real           # parts 0 and 1 only
    python bench/train.py --skip-real --skip-cost --models all   # part 0: fixed cost per train job
    python bench/train.py --bags 1000 --models snn,abmil --skip-real
    python bench/train.py --skip-cost --l1 0    # part 2 without the L1 penalty
    python bench/train.py --skip-cost --studies blca --real-folds 0   # one fold of part 2
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

from mmsurv.machine import cpu_description

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "tcga"
BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]


def synthetic_cohort(root: Path, patients: int, seed: int = 0, folds: int = 1) -> dict:
    """A table with BLCA-sized genomic groups, signatures, slide names and ``folds`` splits (one:
    train all but 2; several: K-fold, each case validated once)."""
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
    if folds == 1:
        pd.DataFrame({"train": pd.Series(cases[2:]), "val": pd.Series(cases[:2])}).to_csv(root / "splits" / "splits_0.csv")
    for fold in range(folds if folds > 1 else 0):
        val = cases[fold::folds]
        pd.DataFrame({"train": pd.Series([c for c in cases if c not in val]), "val": pd.Series(val)}).to_csv(
            root / "splits" / f"splits_{fold}.csv")
    # 50 pathways of 15–200 of the genes (models reading pathway groups: SurvPath, SurvMamba)
    every_gene = [gene for family in genes.values() for gene in family]
    pathways = {f"PATHWAY_{k:02d}": list(rng.choice(every_gene, size=int(rng.integers(15, 200)), replace=False))
                for k in range(50)}
    longest = max(len(members) for members in pathways.values())
    pd.DataFrame({k: v + [None] * (longest - len(v)) for k, v in pathways.items()}).to_csv(root / "pathways.csv",
                                                                                         index=False)
    return {"table": root / "table.csv", "signatures": root / "signatures.csv", "splits": root / "splits",
            "pathways": root / "pathways.csv", "slides": table["slide_id"].tolist()}


def bag_folder(root: Path, slides: list[str], bag_size: int) -> Path:
    """``pt_files`` (and ``h5_files`` with the coordinates, a square 512 px grid) for one bag size:
    one real file of each, a symlink per slide."""
    import h5py
    import torch

    folder = root / f"bags_{bag_size}" / "pt_files"
    coords_folder = folder.parent / "h5_files"
    folder.mkdir(parents=True, exist_ok=True)
    coords_folder.mkdir(exist_ok=True)
    source, coords_source = folder / "_bag.pt", coords_folder / "_bag.h5"
    torch.save(torch.randn(bag_size, 1024, generator=torch.Generator().manual_seed(bag_size)), source)
    side = int(np.ceil(np.sqrt(bag_size)))
    grid = np.arange(bag_size)
    with h5py.File(coords_source, "w") as handle:
        handle["coords"] = (np.stack([grid % side, grid // side], axis=1) * 512).astype("int64")
    for slide in slides:
        for directory, target, suffix in ((folder, source, ".pt"), (coords_folder, coords_source, ".h5")):
            link = directory / f"{slide.removesuffix('.svs')}{suffix}"
            if not link.exists():
                link.symlink_to(target.name)
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
                         out_dir=out, signatures=cohort["signatures"], pathways=cohort["pathways"],
                         features_dir=features, seed=1)
    network = build_model(metrics["base_model"], ModelInputs(
        omic_dim=metrics["genomic_dim"], group_sizes=metrics["group_sizes"], group_names=metrics["group_names"]),
        metrics["config"]["model_params"])
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
                print(f"{row['model']:14s} bag {row['bag']:>6d}: {row['epoch_s']:7.2f} s/epoch ({row['n_train']} patients, "
                      f"{row['patient_s']:.3f} s/patient), peak RSS {row['peak_rss_mb']:.0f} MB "
                      f"(after imports {row['base_rss_mb']:.0f} MB), {row['gflops']:.1f} GFLOP/forward, "
                      f"{row['params']:,} params", flush=True)
            for file in features.iterdir():
                file.unlink()
    return rows


# MCAT's released SNN runs (results/ICCV/SNNsm_nll_surv_a0.0_reg1e-04_5foldcv_gc32_sig/cindex.csv of
# mahmoodlab/MCAT): last-epoch validation c-index, mean ± population std over the 5 folds.
MCAT_SNN = {"blca": (0.5407, 0.0157), "luad": (0.5387, 0.0691)}


def real_config(epochs: int, l1: float, threads: int | None) -> dict:
    """MCAT's SNN settings (``SNNsm_nll_surv_a0.0_reg1e-04_5foldcv_gc32``) as a ``train_fold`` config."""
    training = {"optimizer": "adam", "lr": 2e-4, "weight_decay": 1e-5, "epochs": epochs, "grad_accum": 32,
                "alpha": 0.0, "l1_reg": l1, "weighted_sampling": True}
    if threads:
        training["num_threads"] = threads  # else the package default: 1 thread for a genomic-only model
    return {"training": training, "seed": 1}


def run_real(studies: list[str], epochs: int, l1: float, threads: int | None, out_root: Path,
             folds: list[int]) -> dict:
    from mmsurv.train.run import train_fold

    config = real_config(epochs, l1, threads)
    summary = {}
    for study in studies:
        last, best, seconds = [], [], []
        started = time.perf_counter()
        for fold in folds:
            metrics = train_fold(config, cohort_table=SHARED / "tables" / f"tcga_{study}_all_clean.csv.gz",
                                 splits_dir=SHARED / "splits" / "5foldcv" / f"tcga_{study}", fold=fold, model="snn",
                                 out_dir=out_root / study / f"fold{fold}")
            last.append(metrics["cindex_last"])
            best.append(metrics["cindex_best"])
            seconds.append(metrics["seconds_per_epoch"])
            print(f"SNN {study.upper()} fold {fold}: c-index last {last[-1]:.4f}, best {best[-1]:.4f} "
                  f"(epoch {metrics['best_epoch']}), {seconds[-1]:.2f} s/epoch ({metrics['threads']} thread(s)), "
                  f"{metrics['seconds_total']:.1f} s for the fold, {metrics['n_train']} train / {metrics['n_val']} val, "
                  f"genomic dim {metrics['genomic_dim']}", flush=True)
        total = time.perf_counter() - started
        summary[study] = {"last_mean": float(np.mean(last)), "last_std": float(np.std(last)),
                          "best_mean": float(np.mean(best)), "best_std": float(np.std(best)),
                          "last": last, "best": best, "folds": folds,
                          "seconds_per_epoch": float(np.mean(seconds)), "seconds_total": total}
        s = summary[study]
        print(f"SNN {study.upper()} {len(folds)}-fold: last epoch {s['last_mean']:.4f} ± {s['last_std']:.4f}; "
              f"best epoch (val-selected, optimistic) {s['best_mean']:.4f} ± {s['best_std']:.4f}; "
              f"{s['seconds_per_epoch']:.2f} s/epoch, {total:.0f} s in all", flush=True)
        if study in MCAT_SNN:
            print(f"    MCAT's released SNN run on {study.upper()}, last epoch: "
                  f"{MCAT_SNN[study][0]:.4f} ± {MCAT_SNN[study][1]:.4f}", flush=True)
    return summary


FIXED_COST_SCRIPT = """
import sys, time, json
started = time.perf_counter()
from mmsurv.train.run import train_fold
imported = time.perf_counter()
epochs = 0.0
for fold in range(int(sys.argv[8])):
    metrics = train_fold({"training": {"epochs": 1, "grad_accum": 32, "num_threads": 1}}, cohort_table=sys.argv[1],
                         splits_dir=sys.argv[2], fold=fold, model=sys.argv[3], out_dir=f"{sys.argv[4]}/fold{fold}",
                         signatures=sys.argv[5], pathways=sys.argv[6], features_dir=sys.argv[7], seed=1,
                         keep_resume=True)
    epochs += metrics["seconds_per_epoch"] * metrics["epochs_run"]
done = time.perf_counter()
heavy = [m for m in ("torch._dynamo", "sklearn", "sksurv", "scipy.stats", "matplotlib") if m in sys.modules]
print(json.dumps({"imports": imported - started, "folds": done - imported, "epochs": epochs, "loaded": heavy}))
from mmsurv.logs import exit_job  # as the workflow's train script ends
exit_job(0)
"""


def run_fixed_cost(models: list[str], patients: int = 40, bag: int = 32, folds: int = 5) -> list[dict]:
    """A train job's fixed cost, per model, as the workflow runs one (``train_jobs: per_model``): a
    fresh process that trains every fold of a ``patients``-patient cohort for one epoch each. Fixed
    cost = the process's wall time − its training epochs: interpreter start, imports (torch,
    mmsurv, the model's module), and per fold the data preparation, model build, validation, FLOP
    count, outputs and the resume checkpoint, and the process's exit."""
    import subprocess

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_fixed_") as tmp:
        root = Path(tmp)
        cohort = synthetic_cohort(root, patients, folds=folds)
        features = bag_folder(root, cohort["slides"], bag)
        print(f"fixed cost of a train job: {folds} folds x 1 epoch, {patients} patients of {bag} patches, 1 thread",
              flush=True)
        for model in models:
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", FIXED_COST_SCRIPT, str(cohort["table"]), str(cohort["splits"]),
                                     model, str(root / f"fixed_{model}"), str(cohort["signatures"]),
                                     str(cohort["pathways"]), str(features), str(folds)], capture_output=True,
                                    text=True, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
            wall = time.perf_counter() - started
            if result.returncode != 0:
                print(f"{model}: fixed-cost run failed: {result.stderr[-500:]}", file=sys.stderr)
                continue
            parts = json.loads(result.stdout.strip().splitlines()[-1])
            row = {"model": model, "wall": wall, "imports": parts["imports"], "epochs": parts["epochs"],
                   "folds_minus_epochs": parts["folds"] - parts["epochs"], "loaded": parts["loaded"]}
            row["fixed"] = wall - parts["epochs"]
            row["start_and_exit"] = wall - parts["imports"] - parts["folds"]
            rows.append(row)
            print(f"{model:14s} fixed {row['fixed']:5.2f} s = imports {row['imports']:.2f} + {folds} folds' data, "
                  f"model, validation, FLOPs, outputs {row['folds_minus_epochs']:.2f} + interpreter start and exit "
                  f"{row['start_and_exit']:.2f}; training epochs {row['epochs']:.2f} s"
                  f"{'; loads ' + ', '.join(row['loaded']) if row['loaded'] else ''}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="all", help="comma-separated registry names, or all")
    parser.add_argument("--bags", default="1000,10000,50000", help="bag sizes (patches per patient)")
    parser.add_argument("--patients", type=int, default=6, help="synthetic patients (2 of them validate)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per cost run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the cost runs")
    parser.add_argument("--studies", default="blca,luad")
    parser.add_argument("--real-epochs", type=int, default=20)
    parser.add_argument("--real-folds", default="0,1,2,3,4", help="folds of the real-table runs")
    parser.add_argument("--real-threads", type=int, default=None,
                        help="torch threads of the real-table runs (default: the package's, 1 for the SNN)")
    parser.add_argument("--l1", type=float, default=1e-4, help="L1 weight for the SNN runs (MCAT reg_type omic)")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "train"), help="outputs of the real runs")
    parser.add_argument("--json", help="write all figures to this JSON file")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-fixed", action="store_true", help="skip the per-job fixed cost part")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not figures: SNN and ABMIL, 64-patch bags, 1 epoch, no real tables "
                             "(the test suite runs it so that the bench keeps running)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.bags, args.epochs, args.skip_real = "snn,abmil", "64", 1, True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    sys.path.insert(0, str(REPO / "src"))
    report: dict = {}
    started = time.perf_counter()
    print(cpu_description(), flush=True)
    models = args.models.split(",")
    if models == ["all"]:
        from mmsurv.models import available_models

        models = available_models()
    if not args.skip_fixed:
        report["fixed"] = run_fixed_cost(models)
    if not args.skip_cost:
        report["cost"] = run_cost(models, [int(b) for b in args.bags.split(",")], args.patients,
                                  args.epochs, args.threads)
    if not args.skip_real:
        if not SHARED.is_dir():
            print(f"skipping the real-table SNN runs: {SHARED} not found", file=sys.stderr)
        else:
            report["snn_real"] = run_real(args.studies.split(","), args.real_epochs, args.l1, args.real_threads,
                                          Path(args.out), [int(k) for k in args.real_folds.split(",")])
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
