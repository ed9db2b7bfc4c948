"""Benchmark of the per-patient preprocessing of DeepAttnMISL and Patch-GCN, and their training cost.

Part 1, preprocessing at 1k / 10k / 50k patches of one slide: Patch-GCN's kNN graph (k = 8,
``scipy.spatial.cKDTree`` on a row-major 512 px grid of coordinates as a patching run gives them;
cold, and a cache hit), and DeepAttnMISL's k-means (10 clusters, scikit-learn, on N×1024 standard
normal features, the same random bags as ``bench/train.py``: unstructured noise, the slowest case
for Lloyd's algorithm) with the default fit on at most 10,000 patches and, with ``--kmeans-full``,
on every patch (the paper's choice).

Part 2, cost: the ``bench/train.py`` cost runs (``train_fold`` in a child process per model and bag
size, synthetic cohort with BLCA's genomic groups, seconds per training patient, peak RSS) for
models that read ``coords``: ``bench/train.py`` writes no ``h5_files``, so this script adds one
coordinate file per slide (the same grid) beside its ``pt_files`` and reuses its functions. Every
synthetic patient links to the same bag, so clustering and graph building run once per child and
are cached for the other patients: the per-patient figures are the network's; add part 1 for a
patient's first visit.

    python bench/graph_models.py                            # both parts, both models
    python bench/graph_models.py --skip-cost                # part 1 only
    python bench/graph_models.py --models patch_gcn --bags 50000 --skip-prep
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mmsurv.machine import cpu_description

REPO = Path(__file__).resolve().parents[1]


def grid(n: int):
    import torch

    side = max(1, int(n ** 0.5 + 0.999))
    index = torch.arange(n)
    return torch.stack([index % side, index // side], dim=1) * 512


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def run_prep(bags: list[int], kmeans_full: bool, repeats: int) -> list[dict]:
    from collections import OrderedDict

    import torch

    from mmsurv.models.deepattnmisl import kmeans_labels
    from mmsurv.models.patch_gcn import knn_edge_index

    rows = []
    for bag in bags:
        coords, slides = grid(bag), torch.zeros(bag, dtype=torch.long)
        cold = best_of(lambda c=coords, s=slides: knn_edge_index(c, s, 8), repeats)
        cache = OrderedDict()
        knn_edge_index(coords, slides, 8, cache)
        hit = best_of(lambda c=coords, s=slides, h=cache: knn_edge_index(c, s, 8, h), repeats)
        features = torch.randn(bag, 1024, generator=torch.Generator().manual_seed(bag)).numpy()
        kmeans = best_of(lambda f=features: kmeans_labels(f, 10, 0), 1)
        full = best_of(lambda f=features: kmeans_labels(f, 10, 0, max_patches=None), 1) if kmeans_full else None
        row = {"bag": bag, "graph_s": cold, "graph_cached_s": hit, "kmeans_s": kmeans, "kmeans_full_s": full}
        rows.append(row)
        print(f"bag {bag:>6d}: kNN graph {cold * 1e3:7.1f} ms (cached {hit * 1e3:5.2f} ms); k-means (fit ≤ 10k) "
              f"{kmeans:6.2f} s" + (f", k-means on all patches {full:6.2f} s" if full is not None else ""), flush=True)
    return rows


def write_coords(folder: Path, slides: list[str], bag: int) -> None:
    import h5py

    folder.mkdir(exist_ok=True)
    source = folder / "_coords.h5"
    with h5py.File(source, "w") as handle:
        handle["coords"] = grid(bag).numpy()
    for slide in slides:
        link = folder / f"{slide.removesuffix('.svs')}.h5"
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(source.name)


def run_cost(models: list[str], bags: list[int], patients: int, epochs: int, threads: int) -> list[dict]:
    """``bench/train.py``'s cost runs, its bag folders completed with ``h5_files`` coordinates."""
    sys.path.insert(0, str(REPO / "bench"))
    import train as bench_train

    bag_folder = bench_train.bag_folder

    def bag_folder_with_coords(root: Path, slides: list[str], bag: int) -> Path:
        write_coords(root / "h5_files", slides, bag)
        return bag_folder(root, slides, bag)

    bench_train.bag_folder = bag_folder_with_coords
    try:
        return bench_train.run_cost(models, bags, patients, epochs, threads)
    finally:
        bench_train.bag_folder = bag_folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="deepattnmisl,patch_gcn")
    parser.add_argument("--bags", default="1000,10000,50000", help="bag sizes (patches per patient)")
    parser.add_argument("--patients", type=int, default=6, help="synthetic patients (2 of them validate)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per cost run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--repeats", type=int, default=3, help="graph timings: best of this many")
    parser.add_argument("--kmeans-full", action="store_true", help="also time k-means fitted on every patch")
    parser.add_argument("--json", help="write all figures to this JSON file")
    parser.add_argument("--skip-prep", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not figures: 200-patch bags, 1 epoch, 1 repeat "
                             "(the test suite runs it so that the bench keeps running)")
    args = parser.parse_args(argv)
    print(cpu_description(), flush=True)
    if args.smoke:
        args.bags, args.epochs, args.repeats = "200", 1, 1
    sys.path.insert(0, str(REPO / "src"))
    import torch

    torch.set_num_threads(args.threads)
    bags = [int(b) for b in args.bags.split(",")]
    report: dict = {}
    if not args.skip_prep:
        report["prep"] = run_prep(bags, args.kmeans_full, args.repeats)
    if not args.skip_cost:
        report["cost"] = run_cost(args.models.split(","), bags, args.patients, args.epochs, args.threads)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
