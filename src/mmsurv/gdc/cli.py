"""``mmsurv gdc``: download files from the GDC and build slide manifests from the command line.

``mmsurv gdc download`` fetches the files of a GDC manifest (or given file ids) into a folder,
several at a time, resuming interrupted transfers and verifying size and md5; files already
complete are skipped, so rerunning after a failure or a kill only fetches what is missing.
``mmsurv gdc manifest`` writes the manifest of a TCGA project's open diagnostic slides.
"""

from __future__ import annotations

import argparse
import logging
import sys

from mmsurv.gdc.client import DEFAULT_API, FileSpec, GdcClient, GdcConfig
from mmsurv.gdc.redact import redact
from mmsurv.gdc.token import TOKEN_ENV, TOKEN_FILE_ENV, load_token

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``gdc download`` and ``gdc manifest``."""
    gdc = subparsers.add_parser(
        "gdc", help="download from the GDC data API",
        description="Talk to the NCI Genomic Data Commons: download files, build slide manifests.",
    )
    actions = gdc.add_subparsers(dest="gdc_action", metavar="ACTION", required=True)
    _add_download(actions)
    _add_manifest(actions)


def _add_download(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "download", help="download GDC files (resumable, md5-verified)",
        description=(
            "Download GDC files into --out-dir/<filename>. Each file is written to <name>.part, resumed "
            "with HTTP Range after a broken transfer (also after a kill: just rerun), checked against the "
            "manifest size and md5, and only then renamed into place. Files already present with the right "
            "size and md5 are skipped. With --ids, names, sizes and md5s are looked up at the GDC. "
            f"Controlled-access files need a token: --token-file, or ${TOKEN_ENV} / ${TOKEN_FILE_ENV}."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--manifest", metavar="FILE", help="GDC manifest (tab-separated id filename md5 size state)")
    source.add_argument("--ids", metavar="ID", nargs="+", help="GDC file ids (UUIDs)")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="folder receiving the files")
    _add_api(parser)
    parser.add_argument("--token-file", metavar="F",
                        help=f"GDC token file (default: ${TOKEN_ENV}, then ${TOKEN_FILE_ENV}); keep it chmod 600")
    parser.add_argument("--workers", type=_positive_int, default=4, metavar="N",
                        help="files downloaded at the same time (default: 4)")
    parser.add_argument("--retries", type=_non_negative_int, default=5, metavar="N",
                        help="retries per request and per stalled transfer, with exponential backoff (default: 5)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="read timeout: a transfer silent this long is resumed (default: 60)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_download)


def _add_manifest(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "manifest", help="manifest of a project's open diagnostic slides",
        description=(
            "Query the GDC files endpoint for a project's open-access diagnostic slide images (SVS) and "
            "write them as a GDC manifest (tab-separated id filename md5 size state), sorted by file name."
        ),
    )
    parser.add_argument("--project", required=True, help="GDC project id, e.g. TCGA-BLCA")
    parser.add_argument("--out", required=True, metavar="FILE", help="manifest file to write")
    _add_api(parser)
    parser.set_defaults(func=run_manifest)


def _add_api(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default=DEFAULT_API, metavar="URL", help=f"GDC API base URL (default: {DEFAULT_API})")


def run_download(args: argparse.Namespace) -> int:
    """Download what the arguments ask for; exit code 1 if any file failed."""
    from mmsurv.gdc.files import lookup_files  # imports pandas: only when needed

    config = GdcConfig(api=args.api, retries=args.retries, read_timeout=args.timeout,
                       token=load_token(args.token_file), pool_size=max(16, args.workers))
    with GdcClient(config) as client:
        table = _read_manifest(args.manifest) if args.manifest else lookup_files(args.ids, client=client)
        specs = [FileSpec(row.id, row.filename, row.md5, int(row.size), origin=_origin(args, row.id, line))
                 for line, row in enumerate(table.itertuples(index=False), start=2)]
        results = client.download_many(specs, args.out_dir, workers=args.workers, progress=not args.no_progress)
    counts = {status: sum(r.status == status for r in results) for status in ("downloaded", "skipped", "failed")}
    print(f"{counts['downloaded']} downloaded, {counts['skipped']} already present, {counts['failed']} failed "
          f"-> {args.out_dir}")
    for result in results:
        if result.status == "failed":
            print(redact(f"FAILED {result.file_id}: {result.error}"), file=sys.stderr)
    return 1 if counts["failed"] else 0


def run_manifest(args: argparse.Namespace) -> int:
    """Write the project's slide manifest."""
    from mmsurv.gdc.files import build_manifest, write_manifest

    with GdcClient(GdcConfig(api=args.api)) as client:
        frame = build_manifest(args.project, client=client)
    write_manifest(frame, args.out)
    print(f"{len(frame)} slides ({frame['size'].sum() / 1e9:.2f} GB) of {args.project} -> {args.out}")
    return 0


def _origin(args: argparse.Namespace, file_id: str, line: int) -> str:
    """Where a download entry came from: the manifest file and line, or the GDC lookup of its id."""
    return f"manifest {args.manifest}, line {line}" if args.manifest else f"the GDC lookup of id {file_id}"


def _read_manifest(path: str):
    from mmsurv.gdc.manifest import read_manifest

    return read_manifest(path)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value
