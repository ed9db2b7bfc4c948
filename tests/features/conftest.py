"""Fixtures for the feature-extraction tests: a small generated slide and CLAM-style patch files.

The ResNet50 trunk costs ~0.1 s per 224 px patch on 2 CPU cores, so tests use a handful of patches.
Helpers are handed out as fixtures (``write_patch_file``, ``grid_coords``): test folders have no
``__init__.py``, so ``from conftest import ...`` could pick another folder's conftest.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mmsurv.demo.slides import SlideSpec, make_slide

SLIDE_SPEC = SlideSpec(width=3072, height=2048, mpp=0.5, app_mag=20, risk=0.5, seed=11, n_regions=2,
                       tissue_fraction=0.6)


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    """Use the usable cores (2 here), never more: other jobs share the machine."""
    import os

    torch.set_num_threads(max(1, min(2, len(os.sched_getaffinity(0)))))


@pytest.fixture(scope="session")
def slide(tmp_path_factory):
    """(path, SyntheticSlide) of a 3072x2048 20x slide (levels 1/4/16), written once."""
    path = tmp_path_factory.mktemp("slides") / "TCGA-FE-0001-01Z-00-DX1.svs"
    return path, make_slide(path, SLIDE_SPEC)


def tissue_coords(synthetic, patch_size: int, limit: int | None = None, step: int | None = None) -> np.ndarray:
    """Level-0 top-left (x, y) of grid patches mostly on tissue, in CLAM's column-major-ish grid order."""
    step = step or patch_size
    mask = synthetic.tissue_mask(16)
    width, height = synthetic.spec.width, synthetic.spec.height
    coords = []
    for x in range(0, width - patch_size + 1, step):          # x outer: NOT row order, on purpose
        for y in range(0, height - patch_size + 1, step):
            window = mask[y // 16:(y + patch_size) // 16, x // 16:(x + patch_size) // 16]
            if window.mean() > 0.3:
                coords.append((x, y))
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    return coords[:limit] if limit is not None else coords


def write_patch_h5(path: Path, coords: np.ndarray, *, patch_size: int = 512, patch_level: int = 0,
                   downsample: float = 1.0, level_dim: tuple[int, int] = (3072, 2048), name: str = "slide",
                   mpp: float = 0.5, magnification: int = 20) -> Path:
    """A patch file as the patching stage writes it (CLAM's attributes on ``coords``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        dataset = h5.create_dataset("coords", data=np.asarray(coords, dtype=np.int64).reshape(-1, 2))
        dataset.attrs.update({
            "patch_size": patch_size, "patch_level": patch_level, "downsample": np.array([downsample, downsample]),
            "level_dim": np.array(level_dim), "downsampled_level_dim": np.array(level_dim), "name": name,
            "mpp": mpp, "magnification": magnification, "patch_size_level0": int(round(patch_size * downsample)),
        })
    return path


@pytest.fixture(scope="session")
def write_patch_file():
    """``write_patch_h5`` (a CLAM-style patch file writer) as a fixture."""
    return write_patch_h5


@pytest.fixture(scope="session")
def grid_coords(slide):
    """``grid_coords(patch_size, limit=None, step=None)``: tissue patch coords on the session slide."""
    return lambda patch_size, limit=None, step=None: tissue_coords(slide[1], patch_size, limit, step)


@pytest.fixture()
def patches_h5(slide, tmp_path):
    """Factory: write a patch h5 for the session slide with up to ``n`` tissue patches."""
    _, synthetic = slide

    def make(n: int | None = 6, patch_size: int = 512, name: str = "slide", coords: np.ndarray | None = None):
        chosen = tissue_coords(synthetic, patch_size, n) if coords is None else coords
        return write_patch_h5(tmp_path / "patches" / f"{name}.h5", chosen, patch_size=patch_size, name=name), chosen

    return make
