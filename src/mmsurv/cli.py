"""The ``mmsurv`` command line: one subcommand per workflow stage, so every stage runs without Snakemake.

Each area of the package contributes its subcommands through a ``register(subparsers)`` function
in its ``cli`` module, listed in :data:`COMMANDS` with the one-line help ``mmsurv --help`` shows.
Only the chosen command's module is imported (``mmsurv gdc download`` never imports torch,
scikit-survival or matplotlib); ``mmsurv --help`` imports none of them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mmsurv import __version__
from mmsurv.gdc.redact import redact
from mmsurv.io import DiskFullError
from mmsurv.logs import setup_logging

COMMANDS = {  # command → (module whose register() adds it, help line)
    "demo-cohort": ("mmsurv.demo.cli", "generate the synthetic demo cohort"),
    "manifest": ("mmsurv.gdc.manifest_cli", "GDC manifest tools"),
    "gdc": ("mmsurv.gdc.cli", "download from the GDC data API"),
    "fetch": ("mmsurv.fetch.cli", "bring a cohort's slides into the run folder"),
    "features": ("mmsurv.features.cli", "patch feature extraction"),
    "wsi": ("mmsurv.wsi.cli", "whole-slide image processing"),
    "pathways": ("mmsurv.data.cli", "pathway gene sets: coverage in a cohort table, SurvMamba's process hierarchy"),
    "train": ("mmsurv.train.cli", "train one survival model on one fold"),
    "report": ("mmsurv.report.cli", "tables, Kaplan-Meier curves and figures from trained folds"),
    "predict": ("mmsurv.predict.cli", "risks of new patients from a trained run's fold checkpoints"),
    "heatmap": ("mmsurv.heatmap.cli", "a trained fold's patch scores drawn on a slide, with a GeoJSON for QuPath"),
}
COMMAND_MODULES = tuple(dict.fromkeys(module for module, _ in COMMANDS.values()))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every subcommand in full, or with ``command`` only that one in full
    (the others as help lines, without importing their modules)."""
    parser = argparse.ArgumentParser(
        prog="mmsurv",
        description="Multimodal (WSI + genomics) survival pipeline: every workflow stage as a command.",
    )
    parser.add_argument("--version", action="version", version=f"mmsurv {__version__}")
    parser.add_argument("--log-file", help="also write the log to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_line) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(module_name).register(subparsers)
        else:
            subparsers.add_parser(name, help=help_line)
    return parser


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is one), or None."""
    return next((word for word in argv if word in COMMANDS), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; return the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = chosen_command(argv)
    args = build_parser(command or "").parse_args(argv)
    setup_logging(args.log_file, logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError, DiskFullError) as error:
        message = redact(error)
        logging.getLogger("mmsurv").error("%s", message)
        print(f"mmsurv: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
