"""Benchmark of the GDC download client against a local GDC-shaped server.

Starts ``mmsurv.gdc.testserver`` in a separate process (so the server does not compete with the
client for the GIL), serving N files of M MB of random bytes, then downloads them all with 1, 4
and 8 concurrent downloads (each download streams to ``.part``, hashes on the fly, verifies md5
and size, renames). Prints throughput (MB/s, files/s) per concurrency level, and the CPU cost of
md5 verification of files already on disk (``mmsurv.io.md5_file``: what a rerun pays to skip a
file). Loopback numbers measure the client's own overhead, not a real network.

    python bench/download.py                      # 20 files x 50 MB, concurrency 1 4 8
    python bench/download.py --files 8 --size-mb 10 --concurrency 1 2
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from mmsurv.gdc.client import FileSpec, GdcClient, GdcConfig
from mmsurv.gdc.testserver import GdcTestServer
from mmsurv.io import md5_file
from mmsurv.machine import cpu_description

MB = 1024 * 1024


def serve(conn: Connection, files: int, size: int, seed: int) -> None:
    """Server process: generate the files, report (url, specs), serve until told to stop."""
    stride = 4099  # each file is a different window of one random pool: distinct md5s, little memory
    rng_pool = memoryview(bytes(_random_bytes(size + files * stride, seed)))
    with GdcTestServer() as server:
        specs = []
        for index in range(files):
            served = server.add_file(rng_pool[index * stride: index * stride + size],
                                     filename=f"bench-{index:03d}.svs")
            specs.append((served.file_id, served.filename, served.md5, served.size))
        conn.send((server.url, specs))
        conn.recv()  # any message means stop


def _random_bytes(count: int, seed: int) -> bytes:
    import random

    return random.Random(seed).randbytes(count)


def run_round(api: str, specs: list[FileSpec], workers: int, out_dir: Path) -> tuple[float, int]:
    """Download every file with ``workers`` concurrent downloads; return (seconds, bytes)."""
    config = GdcConfig(api=api, pool_size=max(16, workers), retries=2, backoff_factor=0.1)
    with GdcClient(config) as client:
        started = time.perf_counter()
        results = client.download_many(specs, out_dir, workers=workers, progress=False)
        elapsed = time.perf_counter() - started
    failed = [r for r in results if r.status != "downloaded"]
    if failed:
        raise SystemExit(f"benchmark download failed: {failed[0]}")
    return elapsed, sum(spec.size or 0 for spec in specs)


def md5_rate(paths: list[Path]) -> float:
    """MB/s of ``md5_file`` over ``paths`` (read back from the page cache: mostly CPU)."""
    started = time.perf_counter()
    total = 0
    for path in paths:
        md5_file(path)
        total += path.stat().st_size
    return total / MB / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20, help="number of files (default 20)")
    parser.add_argument("--size-mb", type=float, default=50, help="size of each file in MB (default 50)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8], help="levels (default 1 4 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tmp", help="folder for the downloads (default: system temp)")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not figures: 2 files of 1 MB at concurrency 1 and 2 "
                             "(the test suite runs it so that the bench keeps running)")
    args = parser.parse_args()
    print(cpu_description(), flush=True)
    if args.smoke:
        args.files, args.size_mb, args.concurrency = 2, 1.0, [1, 2]

    size = int(args.size_mb * MB)
    parent, child = multiprocessing.get_context("fork").Pipe()
    server = multiprocessing.get_context("fork").Process(target=serve, args=(child, args.files, size, args.seed))
    server.start()
    try:
        api, raw_specs = parent.recv()
        specs = [FileSpec(*spec) for spec in raw_specs]
        print(f"{args.files} files x {args.size_mb:g} MB from {api} (server in pid {server.pid}), "
              f"{os.cpu_count()} CPUs")
        rows, md5_mbs = [], None
        for workers in args.concurrency:
            out_dir = Path(tempfile.mkdtemp(prefix="mmsurv-bench-", dir=args.tmp))
            try:
                elapsed, total = run_round(api, specs, workers, out_dir)
                rows.append((workers, elapsed, total))
                if md5_mbs is None:
                    md5_mbs = md5_rate(sorted(out_dir.iterdir()))
            finally:
                shutil.rmtree(out_dir, ignore_errors=True)
    finally:
        parent.send("stop")
        server.join(timeout=30)
    print_table(rows, len(specs), md5_mbs)


def print_table(rows: list[tuple[int, float, int]], files: int, md5_mbs: float | None) -> None:
    print(f"\n{'concurrency':>11} {'seconds':>8} {'MB/s':>8} {'files/s':>8}")
    for workers, elapsed, total in rows:
        print(f"{workers:>11} {elapsed:>8.2f} {total / MB / elapsed:>8.1f} {files / elapsed:>8.2f}")
    if md5_mbs is not None:
        print(f"\nmd5 verification (md5_file, one thread, page cache): {md5_mbs:.0f} MB/s")


if __name__ == "__main__":
    main()
