"""Benchmark of tissue segmentation, patch selection and stitching (``mmsurv.wsi``).

For each slide, a fresh child process opens it and times separately: reading the segmentation
image, segmenting it, selecting patches, writing the coordinates, drawing the mask and stitch
PNGs. It reports peak memory two ways: the process's peak resident set (VmHWM, or
``ru_maxrss``; includes OpenCV/OpenSlide buffers; "+base" is the same right after the imports)
and the peak of Python and NumPy allocations (``tracemalloc``). Then it checks the result:

* generated slides (default): mask IoU against the ground truth (``SyntheticSlide.tissue_mask``
  at the segmentation downsample), patch count against the count the same rule gives on the
  ground-truth mask, and agreement (IoU of kept sets) between fraction thresholds and CLAM's
  ``four_pt`` rule emulated on our rasters (the numbers behind ``DEFAULT_MIN_TISSUE_FRACTION``);
* with ``--clam-dir DIR`` holding CLAM's ``patches/{slide}.h5`` (or ``{slide}.h5``): the fraction
  of CLAM's coordinates we also produce (exactly, and as area of CLAM's patches covered by ours,
  since CLAM anchors its grid per contour). A mask IoU is not possible from CLAM's h5.

Generated slides (written once into ``--cache-dir``, default ``results/bench/wsi``):
20x 20000x16000 px (tissue fraction 0.35) and 40x 100000x80000 px (tissue fraction 0.03, mostly
background: ~100 MB, about 35 s to generate here). Sizes are arguments.

    python bench/segment.py                                  # both generated slides
    python bench/segment.py --size-40x 50000x40000           # a smaller 40x slide
    python bench/segment.py --slides ../shared/data/wsi/CMU-1-Small-Region.svs --no-generated
    python bench/segment.py --clam-dir /path/to/clam_output  # compare with CLAM's coordinates
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import multiprocessing
import resource
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from mmsurv.machine import cpu_description

REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3)


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def generated_slides(cache: Path, size20: tuple[int, int], size40: tuple[int, int]) -> list[dict]:
    """Specs of the two generated slides; written into ``cache`` unless already there."""
    from mmsurv.demo import slides as slides_module
    from mmsurv.demo.slides import SlideSpec, make_slide

    cache.mkdir(parents=True, exist_ok=True)
    # the generator is still evolving: a slide written by another version has other ground truth
    version = hashlib.md5(inspect.getsource(slides_module).encode(), usedforsecurity=False).hexdigest()[:8]
    specs = [
        SlideSpec(width=size20[0], height=size20[1], mpp=0.5, app_mag=20, seed=1, tissue_fraction=0.35),
        SlideSpec(width=size40[0], height=size40[1], mpp=0.25, app_mag=40, seed=2, tissue_fraction=0.03),
    ]
    out = []
    for spec in specs:
        path = cache / (f"synthetic-{spec.app_mag}x-{spec.width}x{spec.height}"
                        f"-tf{spec.tissue_fraction}-s{spec.seed}-g{version}.svs")
        if not path.exists():
            start = time.perf_counter()
            print(f"generating {path.name} ...", flush=True)
            make_slide(path, spec)
            print(f"  {time.perf_counter() - start:.1f} s, {path.stat().st_size / 1e6:.0f} MB", flush=True)
        out.append({"path": str(path), "spec": spec})
    return out


# --------------------------------------------------------------------------------------------
# Child process: one slide
# --------------------------------------------------------------------------------------------

def _rss_mb() -> float:
    """Peak resident set of this process in MB.

    ``/proc/self/status`` VmHWM where available: it belongs to the process image, whereas Linux
    carries ``ru_maxrss`` over from the parent across fork + exec (the spawned child would report
    the parent's peak, e.g. after generating slides).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def measure(job: dict[str, Any]) -> dict[str, Any]:
    """Run the stage steps on one slide, timed; then the quality checks."""
    from mmsurv.wsi.outputs import mask_image, stitch_image, write_coords_h5, write_png
    from mmsurv.wsi.patch import PatchParams, select_patches
    from mmsurv.wsi.presets import preset_params
    from mmsurv.wsi.segment import choose_source, read_segmentation_image, segment_image
    from mmsurv.wsi.slide import open_slide

    baseline = _rss_mb()
    tracemalloc.start()
    seconds: dict[str, float] = {}
    seg_params = preset_params(job["preset"])
    patch_params = PatchParams(patch_size=job["patch_size"])
    out = Path(job["out_dir"])
    t = time.perf_counter()
    with open_slide(job["path"]) as slide:
        source = choose_source(slide, seg_params)
        rgb = read_segmentation_image(slide, source, seg_params.read_block)
        seconds["read"] = time.perf_counter() - t
        t = time.perf_counter()
        seg = segment_image(rgb, source, slide.scale.mpp, seg_params)
        seconds["segment"] = time.perf_counter() - t
        t = time.perf_counter()
        patches = select_patches(slide, seg, patch_params)
        seconds["patch"] = time.perf_counter() - t
        t = time.perf_counter()
        write_coords_h5(out / "coords.h5", patches.coords, {"patch_size": patches.geometry.patch_size_level})
        write_png(out / "mask.png", mask_image(seg))
        seconds["write"] = time.perf_counter() - t
        t = time.perf_counter()
        write_png(out / "stitch.png", stitch_image(seg, patches.coords, patches.geometry.patch_size_level0))
        seconds["stitch"] = time.perf_counter() - t
        dims = slide.dimensions
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    result = {
        "name": Path(job["path"]).name, "dims": dims, "seconds": seconds,
        "rss_peak_mb": _rss_mb(), "rss_baseline_mb": baseline, "traced_peak_mb": traced_peak / 2**20,
        "seg": f"{source.method} L{source.level} {source.size[0]}x{source.size[1]}",
        "tissue_mm2": seg.tissue_area_mm2, "patches": patches.count,
        "footprint": patches.geometry.patch_size_level0,
    }
    if job.get("spec") is not None:
        result.update(compare_ground_truth(job["spec"], seg, patches, patch_params, dims))
    result["four_pt"] = compare_four_pt(seg, patches, dims)
    if job.get("clam_h5"):
        result.update(compare_clam(job["clam_h5"], patches))
    return result


def compare_ground_truth(spec, seg, patches, patch_params, dims) -> dict[str, Any]:
    """Mask IoU and patch count against the synthetic slide's exact tissue."""
    from mmsurv.demo.slides import SyntheticSlide
    from mmsurv.wsi.patch import tissue_fractions

    synthetic = SyntheticSlide(spec)
    ds = round(seg.source.downsample)
    truth = synthetic.tissue_mask(ds)
    ours = seg.mask.astype(bool)
    if truth.shape != ours.shape:
        return {"gt_iou": float("nan"), "gt_patches": -1}
    iou = float((truth & ours).sum() / max(1, (truth | ours).sum()))
    g = patches.geometry
    _, _, fractions = tissue_fractions(truth.astype(np.uint8), seg.scale, dims,
                                       g.patch_size_level0, g.step_level0)
    expected = int((fractions >= patch_params.min_tissue_fraction).sum())
    gt_area = float(truth.sum()) * seg.pixel_area_mm2
    return {"gt_iou": iou, "gt_patches": expected, "gt_mm2": gt_area}


def compare_four_pt(seg, patches, dims) -> dict[float, tuple[float, int]]:
    """Threshold -> (IoU of kept sets with CLAM's four_pt, count difference)."""
    from mmsurv.wsi.patch import clam_four_pt_keep, clam_rasters, tissue_fractions

    g = patches.geometry
    filled, in_hole = clam_rasters(seg)
    four_pt = clam_four_pt_keep(filled, in_hole, seg.scale, dims, g.patch_size_level0, g.step_level0)
    _, _, fractions = tissue_fractions(seg.mask, seg.scale, dims, g.patch_size_level0, g.step_level0)
    out = {}
    for threshold in THRESHOLDS:
        keep = fractions >= threshold
        iou = float((keep & four_pt).sum() / max(1, (keep | four_pt).sum()))
        out[threshold] = (iou, int(keep.sum()) - int(four_pt.sum()))
    return out


def _interp_integral(integral: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear value of an integral image at points (u = column, v = row)."""
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    u, v = np.clip(u, 0, w), np.clip(v, 0, h)
    i0 = np.clip(np.floor(u).astype(int), 0, w - 1)
    j0 = np.clip(np.floor(v).astype(int), 0, h - 1)
    tu, tv = u - i0, v - j0
    top = integral[j0, i0] * (1 - tu) + integral[j0, i0 + 1] * tu
    bottom = integral[j0 + 1, i0] * (1 - tu) + integral[j0 + 1, i0 + 1] * tu
    return top * (1 - tv) + bottom * tv


def compare_clam(h5_path: str, patches) -> dict[str, Any]:
    """Fraction of CLAM's coords we produce exactly, and of CLAM's patch area our patches cover."""
    from mmsurv.wsi.outputs import read_coords_h5

    clam, attrs = read_coords_h5(h5_path)
    if len(clam) == 0:
        return {"clam_patches": 0, "clam_exact": float("nan"), "clam_covered": float("nan")}
    size0 = float(attrs["patch_size"]) * float(np.asarray(attrs.get("downsample", [1.0]))[0])
    ours = {tuple(c) for c in patches.coords.tolist()}
    exact = float(np.mean([tuple(c) in ours for c in clam.tolist()]))
    step = patches.geometry.step_level0
    rows, cols = patches.grid_shape
    grid = np.zeros((rows, cols), np.float64)
    if patches.count:
        grid[patches.coords[:, 1] // step, patches.coords[:, 0] // step] = 1.0
    integral = np.zeros((rows + 1, cols + 1))
    integral[1:, 1:] = grid.cumsum(0).cumsum(1)
    x0, y0 = clam[:, 0] / step, clam[:, 1] / step
    x1, y1 = (clam[:, 0] + size0) / step, (clam[:, 1] + size0) / step
    covered = (_interp_integral(integral, x1, y1) - _interp_integral(integral, x0, y1)
               - _interp_integral(integral, x1, y0) + _interp_integral(integral, x0, y0))
    return {"clam_patches": len(clam), "clam_exact": exact,
            "clam_covered": float(np.mean(covered / (size0 / step) ** 2))}


def _child(job: dict[str, Any], conn) -> None:
    try:
        conn.send(measure(job))
    except BaseException as error:  # report, do not hang the parent
        conn.send({"name": Path(job["path"]).name, "error": f"{type(error).__name__}: {error}"})
    finally:
        conn.close()


def run_isolated(job: dict[str, Any]) -> dict[str, Any]:
    """``measure`` in a fresh process so peak memory is this slide's alone."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(job, child))
    process.start()
    child.close()
    result = parent.recv()
    process.join()
    return result


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def print_report(results: list[dict[str, Any]]) -> None:
    head = (f"{'slide':44s} {'level-0 px':>13s} {'seg image':>22s} {'read s':>7s} {'seg s':>6s} "
            f"{'patch s':>7s} {'write s':>7s} {'stitch s':>8s} {'RSS MB':>7s} {'+base':>6s} "
            f"{'traced MB':>9s} {'mm²':>8s} {'patches':>7s}")
    print("\n" + head)
    print("-" * len(head))
    for r in results:
        if "error" in r:
            print(f"{r['name']:44s} ERROR {r['error']}")
            continue
        s = r["seconds"]
        print(f"{r['name'][:44]:44s} {r['dims'][0]:>6d}x{r['dims'][1]:<6d} {r['seg']:>22s} "
              f"{s['read']:7.2f} {s['segment']:6.2f} {s['patch']:7.3f} {s['write']:7.2f} "
              f"{s['stitch']:8.2f} {r['rss_peak_mb']:7.0f} {r['rss_baseline_mb']:6.0f} "
              f"{r['traced_peak_mb']:9.0f} {r['tissue_mm2']:8.2f} {r['patches']:7d}")
    quality = [r for r in results if "gt_iou" in r]
    if quality:
        print(f"\n{'vs ground truth':44s} {'mask IoU':>8s} {'mm² ours':>9s} {'mm² truth':>9s} "
              f"{'patches':>8s} {'truth':>6s} {'diff %':>7s}")
        for r in quality:
            diff = 100.0 * (r["patches"] - r["gt_patches"]) / max(1, r["gt_patches"])
            print(f"{r['name'][:44]:44s} {r['gt_iou']:8.4f} {r['tissue_mm2']:9.3f} {r['gt_mm2']:9.3f} "
                  f"{r['patches']:8d} {r['gt_patches']:6d} {diff:7.2f}")
    clam = [r for r in results if "clam_patches" in r]
    if clam:
        print(f"\n{'vs CLAM h5':44s} {'CLAM n':>7s} {'ours n':>7s} {'exact':>7s} {'covered':>8s}")
        for r in clam:
            print(f"{r['name'][:44]:44s} {r['clam_patches']:7d} {r['patches']:7d} "
                  f"{r['clam_exact']:7.3f} {r['clam_covered']:8.3f}")
    rows = [r for r in results if "four_pt" in r]
    if rows:
        print("\nfraction threshold vs CLAM four_pt (IoU of kept sets / count difference)")
        print(f"{'slide':44s} " + " ".join(f"{t:>13.2f}" for t in THRESHOLDS))
        for r in rows:
            print(f"{r['name'][:44]:44s} " + " ".join(
                f"{r['four_pt'][t][0]:7.4f}/{r['four_pt'][t][1]:+5d}" for t in THRESHOLDS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=REPO / "results" / "bench" / "wsi",
                        help="where generated slides are kept (default %(default)s)")
    parser.add_argument("--size-20x", type=parse_size, default=(20000, 16000), help="WxH of the 20x slide")
    parser.add_argument("--size-40x", type=parse_size, default=(100000, 80000), help="WxH of the 40x slide")
    parser.add_argument("--no-generated", action="store_true", help="only the --slides given")
    parser.add_argument("--slides", nargs="*", default=[], help="extra slide files to benchmark")
    parser.add_argument("--clam-dir", type=Path, help="CLAM output folder (patches/{slide}.h5)")
    parser.add_argument("--preset", default="tcga")
    parser.add_argument("--patch-size", type=int, default=512)
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not figures: 3000x2000 (20x) and 6000x4000 (40x) slides in a temporary "
                             "folder (the test suite runs it so that the bench keeps running)")
    args = parser.parse_args(argv)
    print(cpu_description(), flush=True)
    if args.smoke:
        args.size_20x, args.size_40x = (3000, 2000), (6000, 4000)
        args.cache_dir = Path(tempfile.mkdtemp(prefix="mmsurv-bench-wsi-smoke-"))

    jobs: list[dict[str, Any]] = []
    if not args.no_generated:
        jobs += generated_slides(args.cache_dir, args.size_20x, args.size_40x)
    jobs += [{"path": str(Path(p).resolve()), "spec": None} for p in args.slides]
    results = []
    with tempfile.TemporaryDirectory(prefix="mmsurv-bench-wsi-") as tmp:
        for index, job in enumerate(jobs):
            job.update(preset=args.preset, patch_size=args.patch_size, out_dir=str(Path(tmp) / str(index)))
            if args.clam_dir is not None:
                stem = Path(job["path"]).stem
                for candidate in (args.clam_dir / "patches" / f"{stem}.h5", args.clam_dir / f"{stem}.h5"):
                    if candidate.exists():
                        job["clam_h5"] = str(candidate)
            print(f"measuring {Path(job['path']).name} ...", flush=True)
            results.append(run_isolated(job))
    print_report(results)
    if args.smoke:
        shutil.rmtree(args.cache_dir, ignore_errors=True)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
