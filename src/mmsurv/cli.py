"""The ``mmsurv`` command line: one subcommand per workflow stage, so every stage runs without Snakemake.

Each area of the package contributes its subcommands through a ``register(subparsers)`` function
in its ``cli`` module, listed in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from mmsurv import __version__
from mmsurv.logs import setup_logging

COMMAND_MODULES = (
    "mmsurv.demo.cli",
    "mmsurv.gdc.manifest_cli",
    "mmsurv.gdc.cli",
    "mmsurv.fetch.cli",
    "mmsurv.features.cli",
    "mmsurv.wsi.cli",
    "mmsurv.train.cli",
    "mmsurv.report.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="mmsurv",
        description="Multimodal (WSI + genomics) survival pipeline: every workflow stage as a command.",
    )
    parser.add_argument("--version", action="version", version=f"mmsurv {__version__}")
    parser.add_argument("--log-file", help="also write the log to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; return the process exit code."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_file, logging.DEBUG if args.verbose else logging.INFO)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        logging.getLogger("mmsurv").error("%s", error)
        print(f"mmsurv: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
