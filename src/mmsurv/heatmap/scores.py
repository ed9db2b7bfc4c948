"""A trained fold's per-patch scores on one slide (the model contract's ``patch_scores``).

For the heatmap command and rule: the fold's checkpoint (``checkpoint_last.pt`` or
``checkpoint_best.pt``) carries what applying its model to a new bag needs — the model and its
hyper-parameters, the genomic columns, the training fold's genomic scaler, the groups' columns and
the feature standardisation — so one slide's bag goes through exactly the input pipeline of
training (:class:`mmsurv.data.dataset.SurvivalDataset`, evaluation mode, no patch cap). The bag is
the slide's patches alone: for a patient with several slides, the scores of one slide are those of
a forward over that slide, not over the patient's whole bag (as CLAM's heatmaps, per slide).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mmsurv.data.cohort import read_cohort_table
from mmsurv.data.inputs import collate
from mmsurv.models.base import PatchScores, SurvivalModel
from mmsurv.naming import slide_stem
from mmsurv.predict.apply import PredictError, checkpoint_dataset, load_fold_model, reads_genomics, scaled_genomics

log = logging.getLogger(__name__)

class HeatmapError(PredictError):
    """A fold, slide or table that cannot give patch scores; the message names it."""


@dataclass
class SlideScores:
    """One slide's patch scores from one fold: level-0 patch corners, footprint and the scores."""

    slide: str
    case_id: str
    model: str
    fold_dir: Path
    coords: np.ndarray  # N×2 level-0 (x, y) top-left corners
    patch_size: int  # level-0 pixels per patch side
    level0_dims: tuple[int, int] | None  # (width, height) the patching recorded
    scores: PatchScores
    risk: float

    def frame(self) -> pd.DataFrame:
        """One row per patch: x, y, size, and one column per score row (``score`` for a single row)."""
        frame = pd.DataFrame({"x": self.coords[:, 0], "y": self.coords[:, 1], "size": self.patch_size})
        for name, values in zip(self.scores.rows, self.scores.scores.numpy()):
            frame[name] = values
        return frame


def slide_scores(fold_dir: str | os.PathLike, slide: str, *, features_dir: str | os.PathLike,
                 cohort_table: str | os.PathLike | None = None, variant: str = "last",
                 model: SurvivalModel | None = None, checkpoint: dict | None = None) -> SlideScores:
    """Run the fold's model on ``slide``'s bag (its ``pt_files`` feature file, coordinates from the
    ``h5_files`` beside it) and return its patch scores. ``cohort_table`` is needed by models that
    read genomics (the slide's patient row); ``model``/``checkpoint`` reuse a loaded fold."""
    if model is None or checkpoint is None:
        model, checkpoint = load_fold_model(fold_dir, variant)
    reads = tuple(checkpoint["inputs_read"])
    if "path" not in reads:
        raise HeatmapError(f"model {checkpoint['model']} reads no WSI features: it has no patch scores")
    if model.patch_score_kind is None:
        raise HeatmapError(f"model {checkpoint['model']} has no per-patch scores (patch_score_kind is None)")
    slide_id = slide_name(slide)
    case_id, omic_row = _patient(checkpoint, slide_id, cohort_table)
    entry = f"{slide_id}.pt"  # the loader strips one extension from a table's slide file name
    if not (Path(features_dir) / entry).is_file():
        raise HeatmapError(f"slide {slide_id}: no feature file {Path(features_dir) / entry}")
    dataset = checkpoint_dataset(checkpoint, [case_id], omic_row, {case_id: [entry]}, features_dir,
                                 name=f"slide {slide_id}", cap=False)
    bags = dataset.bags
    sample = dataset[0]
    batch, _ = collate([sample])
    coords = bags.load_coords(case_id, [entry]).numpy()
    model.score_patches(True)
    try:
        with torch.no_grad():
            output = model(batch)
        scores = model.patch_scores(output)
        risk = float(output.risk.reshape(-1)[0])
    finally:
        model.score_patches(False)
    if scores.scores.shape[1] != len(coords):
        raise HeatmapError(f"slide {slide_id}: model {checkpoint['model']} gave {scores.scores.shape[1]} scores for "
                           f"{len(coords)} patches")
    patch_size, dims = _patch_geometry(bags.coords_file(entry))
    log.info("heatmap: slide %s (case %s), %d patches, model %s, risk %.4f", slide_id, case_id, len(coords),
             checkpoint["model"], risk)
    return SlideScores(slide=slide_id, case_id=case_id, model=str(checkpoint["model"]), fold_dir=Path(fold_dir),
                       coords=coords, patch_size=patch_size, level0_dims=dims, scores=scores, risk=risk)


def slide_name(slide: str | os.PathLike) -> str:
    """A slide given as a file name (``X.svs``, any extension OpenSlide reads) or as its id (``X``,
    which may hold dots, as TCGA's ``…-DX1.<uuid>``) → its id."""
    from mmsurv.gdc.manifest import SLIDE_EXTENSIONS

    name = Path(slide).name
    return slide_stem(name) if Path(name).suffix.lower() in SLIDE_EXTENSIONS else name


def _patient(checkpoint: dict, slide_id: str, cohort_table) -> tuple[str, np.ndarray]:
    """The slide's case id and its scaled genomic row (1×G; 1×0 for a model that reads no genomics)."""
    if cohort_table is None:
        if reads_genomics(checkpoint):
            raise HeatmapError(f"model {checkpoint['model']} reads genomics: give the cohort table (--cohort-table)")
        return slide_id, np.zeros((1, 0), dtype="float32")
    table = read_cohort_table(cohort_table, require_survival=False)
    cases = [case for case, slides in table.slides_of_case().items() if slide_id in map(slide_stem, slides)]
    if not cases:
        raise HeatmapError(f"slide {slide_id} is not in the cohort table {cohort_table}")
    if not reads_genomics(checkpoint):
        return cases[0], np.zeros((1, 0), dtype="float32")
    return cases[0], scaled_genomics(checkpoint, table, cases[:1])


def _patch_geometry(h5_path: Path) -> tuple[int, tuple[int, int] | None]:
    """Level-0 patch side and the level-0 (width, height) the patching recorded on ``coords``."""
    import h5py

    with h5py.File(h5_path, "r") as handle:
        attrs = handle["coords"].attrs
        if "patch_size_level0" not in attrs and "patch_size" not in attrs:
            raise HeatmapError(f"{h5_path}: 'coords' records no patch size (patch_size_level0 or patch_size)")
        if "patch_size_level0" in attrs:
            size = int(attrs["patch_size_level0"])
        else:  # CLAM's own files: patch_size at patch_level
            downsample = np.ravel(attrs.get("downsample", [1.0]))[0]
            size = int(round(float(attrs["patch_size"]) * float(downsample)))
        dims = tuple(int(v) for v in np.ravel(attrs["level0_dim"])) if "level0_dim" in attrs else None
    return size, dims
