"""Start-up time of the command line and of a workflow dry run (median of N runs each).

For whoever touches imports: every ``mmsurv`` subcommand should import only what it needs, and
parsing the Snakefile should not import torch. Prints the CPU, then for each command its median
wall-clock time over ``--runs`` runs (default 5) and whether it stays under the 1 s target that
applies to every non-training command, plus whether torch was imported (``-X importtime``).

    .venv/bin/python bench/startup.py [--runs 5] [--ref REV]

With ``--ref REV`` (e.g. the commit before a change) the same commands are timed on a checkout of
REV (``git worktree`` in a temporary folder, run with ``PYTHONPATH`` pointing at its ``src``), in
the same invocation and alternating with the current tree, so "before" and "after" share the
machine's load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "bench"))

from mmsurv.machine import cpu_description  # noqa: E402

COMMANDS = {
    "mmsurv --help": ["-m", "mmsurv.cli", "--help"],
    "mmsurv gdc download --help": ["-m", "mmsurv.cli", "gdc", "download", "--help"],
    "mmsurv wsi patch --help": ["-m", "mmsurv.cli", "wsi", "patch", "--help"],
    "mmsurv manifest clean --help": ["-m", "mmsurv.cli", "manifest", "clean", "--help"],
    "mmsurv train --help": ["-m", "mmsurv.cli", "train", "--help"],
}
TRAINING = {"mmsurv train --help"}


def timed(argv: list[str], tree: Path, workdir: Path) -> tuple[float, bool]:
    """(wall-clock s, torch imported?) of one run of ``python -X importtime argv`` against ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env,
                            cwd=workdir)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr[-2000:]}")
    torch = any(line.rstrip().endswith("| torch") for line in result.stderr.splitlines())
    return seconds, torch


def commands(tree: Path, workdir: Path) -> dict[str, list[str]]:
    dry_run = [str(BIN / "snakemake"), "-s", str(tree / "Snakefile"), "-d", str(workdir), "--configfile",
               str(tree / "config/config.yaml"), "-n", "--quiet", "rules"]
    return {**COMMANDS, "snakemake -n (demo config)": dry_run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ref", help="git revision to time alongside the working tree (before/after)")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not figures: one run (the test suite runs it so that the bench keeps running)")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 1
    print(cpu_description())
    with tempfile.TemporaryDirectory(prefix="mmsurv-startup-") as folder:
        trees = {"now": REPO}
        if args.ref:
            reference = Path(folder) / "ref"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(reference), args.ref],
                           check=True, capture_output=True)
            trees = {f"{args.ref}": reference, "now": REPO}
        try:
            times = {label: {name: [] for name in commands(REPO, REPO)} for label in trees}
            torch_seen = {label: {} for label in trees}
            for _ in range(args.runs):
                for label, tree in trees.items():  # alternate: before and after share the load
                    workdir = Path(folder) / f"work_{label}"
                    workdir.mkdir(exist_ok=True)
                    for name, argv in commands(tree, workdir).items():
                        seconds, torch = timed(argv, tree, workdir)
                        times[label][name].append(seconds)
                        torch_seen[label][name] = torch
        finally:
            if args.ref:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(reference)],
                               capture_output=True)
    for name in commands(REPO, REPO):
        cells = []
        for label in trees:
            median = statistics.median(times[label][name])
            verdict = "" if name in TRAINING or "snakemake" in name else (" OK" if median < 1 else " OVER 1 s")
            cells.append(f"{label}: {median:5.2f} s{verdict}{' (torch)' if torch_seen[label][name] else ''}")
        print(f"{name:30s} " + " | ".join(cells))
    print(f"median of {args.runs} runs each; target: every non-training command under 1 s")


if __name__ == "__main__":
    main()
