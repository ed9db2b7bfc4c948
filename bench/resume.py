"""Cost of the per-epoch resume checkpoint (``mmsurv.train.resume``) at the demo's sizes.

For each model, one fold of ``train_fold`` on a synthetic cohort of the demo's size (40 patients,
5 folds: 32 training / 8 validation patients, one slide per patient with ~20 patches of 1024
features, ``grad_accum`` 1, standardised features, 1 thread, the demo's settings) with the resume
checkpoint on. Reported per model: seconds of an epoch (training + validation, from the
history's ``seconds`` plus evaluation), seconds per checkpoint save (``torch.save`` to a temporary
file, fsync, rename; mean over the epochs) and its size in MB (model + optimiser state + best
weights + RNG states and history), and the save's share of the epoch.

Measured (``python bench/resume.py --models abmil,mcat,transmil,mmm,mome --epochs 4``; 2 shared
CPU cores, 1 thread, torch 2.14.1 CPU, ext4 disk; MB of the last epoch's file)::

    model          params  train s/epoch   save s       MB  save/epoch
    abmil          920069          0.124    0.021     14.1      16.8%
    mcat          3704582          0.520    0.086     56.7      16.6%
    transmil      2673172          1.519    0.054     40.9       3.5%
    mmm           1090040          0.453    0.036     16.9       8.0%
    mome         20141436          1.271    0.349    174.6      27.4%

A save is ~60 % serialisation (``torch.save``) and ~40 % fsync; its size is about 3-4 times the
model's weights (weights, Adam's two moments, the best epoch's weights unless they are the current
ones). The demo's epochs (32 training patients of ~20 patches) are so short that a save is 4-27 %
of one; on real cohorts (hundreds of patients, thousands of patches) an epoch takes minutes and
the save stays under a second.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from mmsurv.demo.cohort import DemoSpec, generate_demo_cohort
from mmsurv.demo.features import write_random_features
from mmsurv.machine import cpu_description
from mmsurv.train.run import train_fold


def demo_sized_cohort(root: Path) -> dict:
    cohort = generate_demo_cohort(root / "cohort", DemoSpec(patients=40, seed=0, width=256, height=256, genes=200,
                                                            informative_genes=10, extra_slide_size=(256, 256)))
    features = write_random_features(cohort.table, root / "features", dim=1024, rows=(15, 26))
    return {"table": cohort.table, "splits_dir": cohort.splits_dir, "signatures": cohort.signatures,
            "pathways": cohort.pathways, "features_dir": features}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="abmil,mcat,transmil,mmm")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not figures: ABMIL, 1 epoch (the test suite runs it so that the bench keeps running)")
    args = parser.parse_args()
    if args.smoke:
        args.models, args.epochs = "abmil", 1
    print(cpu_description(), flush=True)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_resume_") as tmp:
        root = Path(tmp)
        cohort = demo_sized_cohort(root)
        for model in args.models.split(","):
            config = {"data": {"standardize_features": True},
                      "training": {"epochs": args.epochs, "grad_accum": 1, "num_threads": 1}}
            started = time.perf_counter()
            metrics = train_fold(config, cohort_table=cohort["table"], splits_dir=cohort["splits_dir"], fold=0,
                                 model=model, out_dir=root / model, signatures=cohort["signatures"],
                                 pathways=cohort["pathways"], features_dir=cohort["features_dir"])
            total = time.perf_counter() - started
            resume = metrics["resume_checkpoint"]
            epoch = metrics["seconds_per_epoch"]
            rows.append({"model": model, "params": metrics["n_params"], "epoch_train_s": epoch,
                         "save_s": resume["seconds_per_save"], "checkpoint_mb": resume["mb"],
                         "save_share_of_train_epoch": resume["seconds_per_save"] / epoch, "total_s": total})
    print(f"{'model':10s} {'params':>10s} {'train s/epoch':>14s} {'save s':>8s} {'MB':>8s} {'save/epoch':>11s}")
    for row in rows:
        print(f"{row['model']:10s} {row['params']:10d} {row['epoch_train_s']:14.3f} {row['save_s']:8.3f} "
              f"{row['checkpoint_mb']:8.1f} {row['save_share_of_train_epoch']:10.1%}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
