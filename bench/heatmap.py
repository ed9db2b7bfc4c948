"""Time and peak memory of one slide's heatmap at 50,000 patches: model forward, overlay, GeoJSON.

For whoever checks the heatmap target (issue 30: a 50,000-patch slide draws in under 2 GiB and 60 s
on CPU). Each model runs in a fresh process: it is built at its defaults on 1024-d features (BLCA's
signature groups for the co-attention models), a 50,000-patch bag of noise goes through the fold
pipeline's forward with patch scores on (TransMIL's class-token row included), then the scores are
drawn over a synthetic 2048 × 2048 thumbnail at the coordinates of a 224 × 224 grid of 512 px
patches (a slide of 114,688 px a side), the top/bottom montage is skipped (16 region reads, slide
I/O only), and the GeoJSON of the 50,000 tiles is written. Peak memory is the process's maximum RSS.

    python bench/heatmap.py                       # ABMIL, CLAM-SB, TransMIL, MCAT, SurvPath at 50,000 patches
    python bench/heatmap.py --models abmil --patches 100000
    python bench/heatmap.py --smoke               # seconds: ABMIL at 500 patches

Measured (Xeon with AMX, 2 vCPUs, one thread; ``python bench/heatmap.py``), 50,000 patches, seconds
forward / overlay / GeoJSON (12 MB), total, peak RSS of the whole process: ABMIL 0.58 / 2.32 / 1.32,
4.2 s, 1.26 GiB; CLAM-SB 0.56 / 1.18 / 1.30, 3.0 s, 1.26 GiB; TransMIL 8.09 / 1.21 / 1.31, 10.6 s,
1.84 GiB (bounded-memory attention from 8,192 patches on; the package's own forward took 35-41 s
and 3.6 GiB); MCAT 0.34 / 1.44 / 1.33, 3.1 s, 1.28 GiB; SurvPath 0.42 / 1.19 / 1.29, 2.9 s, 1.32 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mmsurv.machine import cpu_description

BLCA_GROUPS = [94, 334, 521, 468, 1496, 479]
PATHWAYS = [40] * 50


def measure(model_name: str, patches: int) -> dict:
    import numpy as np
    import torch

    from mmsurv.heatmap.draw import normalized, overlay, score_canvas
    from mmsurv.heatmap.qupath import patch_features, write_geojson
    from mmsurv.models import ModelInputs, build_model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    groups = PATHWAYS if model_name == "survpath" else BLCA_GROUPS
    inputs = ModelInputs(omic_dim=sum(groups), group_sizes=groups, path_dim=1024,
                         group_names=[f"g{i}" for i in range(len(groups))])
    model = build_model(model_name, inputs, {}).eval()
    batch = model.example_batch(bag_size=patches)
    started = time.perf_counter()
    model.score_patches(True)
    with torch.no_grad():
        scores = model.patch_scores(model(batch)).row().numpy()
    forward = time.perf_counter() - started
    side = 224
    grid = np.arange(patches)
    coords = np.stack([(grid % side) * 512, (grid // side) * 512], axis=1)
    started = time.perf_counter()
    thumbnail = np.full((2048, 2048, 3), 240, dtype="uint8")
    scale = 2048 / (side * 512)
    image = overlay(thumbnail, score_canvas(coords, 512, normalized(scores), thumbnail.shape[:2], scale))
    draw = time.perf_counter() - started
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        path = write_geojson(Path(folder) / "slide.geojson", patch_features(coords, 512, {"score": scores}))
        megabytes = path.stat().st_size / 2**20
    geo = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB → GiB
    return {"forward_s": forward, "draw_s": draw, "geojson_s": geo, "geojson_mb": megabytes, "peak_gib": peak,
            "painted": int((image != 240).any(axis=2).sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["abmil", "clam_sb", "transmil", "mcat", "survpath"])
    parser.add_argument("--patches", type=int, default=50_000)
    parser.add_argument("--smoke", action="store_true", help="seconds: ABMIL at 500 patches (the test suite runs it)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]))))
        return 0
    if args.smoke:
        args.models, args.patches = ["abmil"], 500
    print(cpu_description(), flush=True)
    print(f"{'model':10s} {'patches':>8s} {'forward s':>9s} {'draw s':>7s} {'geojson s':>9s} {'MB':>6s} "
          f"{'total s':>7s} {'peak GiB':>8s}")
    failed = False
    for name in args.models:
        done = subprocess.run([sys.executable, __file__, "--child", name, str(args.patches)], capture_output=True,
                              text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        if done.returncode != 0:
            failed = True
            print(f"{name:10s} error: {(done.stderr.strip().splitlines() or ['failed'])[-1][:150]}", flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        total = row["forward_s"] + row["draw_s"] + row["geojson_s"]
        print(f"{name:10s} {args.patches:>8d} {row['forward_s']:>9.2f} {row['draw_s']:>7.2f} {row['geojson_s']:>9.2f} "
              f"{row['geojson_mb']:>6.1f} {total:>7.2f} {row['peak_gib']:>8.2f}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
