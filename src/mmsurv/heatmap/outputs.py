"""One slide's heatmap files: the overlay, the top/bottom patches, the scores table and the GeoJSON.

For the ``mmsurv heatmap`` command and the workflow's ``heatmaps`` rule
(:mod:`mmsurv.heatmap.batch`): from a :class:`~mmsurv.heatmap.scores.SlideScores` and the slide's
image, ``<slide>.heatmap.png``, ``<slide>.patches.png``, ``<slide>.scores.tsv`` and
``<slide>.geojson`` in one folder.
"""

from __future__ import annotations

import os
from pathlib import Path

OUTPUTS = ("heatmap.png", "patches.png", "scores.tsv", "geojson")


def find_slide_file(slides_dir: str | os.PathLike, slide: str) -> Path:
    """The image of ``slide`` in ``slides_dir`` (any extension OpenSlide reads); an error names both."""
    from mmsurv.heatmap.scores import slide_name

    stem = slide_name(slide)
    folder = Path(slides_dir)
    matches = sorted(p for p in folder.glob(f"{stem}.*") if p.suffix.lower() not in (".h5", ".pt", ".json", ".tsv"))
    if not matches:
        raise FileNotFoundError(f"slide {stem}: no image in {folder}")
    return matches[0]


def write_outputs(scores, slide_file: str | os.PathLike, out_dir: str | os.PathLike, *, group: str | None = None,
                  top_k: int = 8, max_side: int = 2048, alpha: float = 0.4, cmap: str = "jet",
                  normalize: str = "percentile", blur: float = 0.0) -> dict[str, Path]:
    """The four files of one :class:`~mmsurv.heatmap.scores.SlideScores` → ``{kind: path}``."""
    from mmsurv.heatmap.draw import draw_heatmap, patch_montage, save_png
    from mmsurv.heatmap.qupath import patch_features, write_geojson
    from mmsurv.io import write_tsv
    from mmsurv.report.figures import save_figure

    out = Path(out_dir)
    values = scores.scores.row(group).numpy()
    row_name = group or scores.scores.rows[0]
    paths = {kind: out / f"{scores.slide}.{kind}" for kind in OUTPUTS}
    image = draw_heatmap(slide_file, scores.coords, scores.patch_size, values, max_side=max_side, alpha=alpha,
                         cmap=cmap, normalize=normalize, blur=blur)
    save_png(image, paths["heatmap.png"])
    title = f"{scores.model} on {scores.slide} ({row_name}; risk {scores.risk:.3f})"
    save_figure(patch_montage(slide_file, scores.coords, scores.patch_size, values, k=top_k, title=title),
                paths["patches.png"])
    write_tsv(scores.frame(), paths["scores.tsv"], float_format="%.8g")
    columns = dict(zip(scores.scores.rows, scores.scores.scores.numpy()))
    write_geojson(paths["geojson"], patch_features(scores.coords, scores.patch_size, columns,
                                                   name=f"{scores.model} {scores.slide}"))
    return paths
