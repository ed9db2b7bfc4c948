"""``mmsurv train``: train and validate one model on one cross-validation fold."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train one survival model on one fold",
        description=(
            "Train MODEL on fold K of a cohort (MCAT-format table and splits_K.csv), validate every epoch "
            "and write metrics.json, predictions.tsv, training_log.tsv, bin_edges.json and checkpoints "
            "(last and best epoch) into OUT_DIR."
        ),
    )
    parser.add_argument("--table", required=True, help="MCAT-format cohort table (.csv or .csv.gz)")
    parser.add_argument("--splits-dir", required=True, help="folder with splits_{k}.csv")
    parser.add_argument("--fold", type=int, required=True, help="fold number k")
    parser.add_argument("--model", required=True,
                        help="model name: a registered model (mmsurv.models) or a variant of the config's train.models")
    parser.add_argument("--out-dir", required=True, help="output folder (created)")
    parser.add_argument("--signatures", help="MCAT signatures.csv (genomic groups for grouped models such as MCAT)")
    parser.add_argument("--pathways", help="pathway gene-set CSV (used when the config says data.groups: pathways)")
    parser.add_argument("--features-dir", help="folder of per-slide feature files {slide}.pt (WSI models)")
    parser.add_argument("--config", help="YAML/JSON file with data/training/models/seed sections")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE",
                        help="Python file registering extra models (repeatable)")
    parser.add_argument("--seed", type=int, help="random seed (default: the config's, else 1)")
    parser.add_argument("--no-resume", action="store_true",
                        help="neither save nor use the per-epoch resume checkpoint (OUT_DIR/resume/state.pt); by "
                             "default a rerun continues a killed run of the same settings, and SIGTERM/SIGUSR1 "
                             "stop the run after saving, with exit code 75")
    parser.set_defaults(func=_run)


def load_config(path: str | None) -> dict:
    """A config file's content (YAML or JSON); an empty dict without a file."""
    if not path:
        return {}
    text = Path(path).read_text()
    document = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a train config must be a mapping with data/training/models/seed sections")
    return document.get("train", document) if set(document) == {"train"} else document


def _run(args: argparse.Namespace) -> int:
    from mmsurv.models.registry import load_plugins
    from mmsurv.train.resume import INTERRUPTED_EXIT_CODE, TrainingInterrupted
    from mmsurv.train.run import train_fold

    load_plugins(args.plugin)
    try:
        metrics = train_fold(load_config(args.config), cohort_table=args.table, splits_dir=args.splits_dir,
                             fold=args.fold, model=args.model, out_dir=args.out_dir, signatures=args.signatures,
                             features_dir=args.features_dir, pathways=args.pathways, seed=args.seed,
                             resume=not args.no_resume)
    except TrainingInterrupted as stopped:
        print(f"fold {args.fold} {args.model}: {stopped}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    print(f"fold {args.fold} {args.model}: c-index last {metrics['cindex_last']:.4f}, best {metrics['cindex_best']:.4f} "
          f"(epoch {metrics['best_epoch']}, selected on {metrics['best_selected_on']}); outputs in {args.out_dir}")
    return 0
