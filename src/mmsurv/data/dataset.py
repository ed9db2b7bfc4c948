"""Patient-level training data: WSI feature bags, scaled genomics, genomic groups, sampling.

One sample is one PATIENT (MCAT's unit): all diagnostic slides of the case listed in the cohort
table, their per-slide feature files ``features_dir/{slide}.pt`` (``{slide}`` = slide file name
without its extension, :func:`mmsurv.naming.slide_stem`; float32 N×1024, CLAM/MCAT format)
concatenated in table order, plus the patient's genomic vector and its groups. A sample holds only
the inputs its model declares (:mod:`mmsurv.data.inputs`): ``coords`` come from the CLAM-format
``h5_files/{slide}.h5`` beside ``pt_files`` (or ``BagOptions.h5_dir``), row for row with the
features, and ``slide_magnification`` (each row's slide's level-0 magnification) from the attributes
of the same dataset (:func:`recorded_magnification`).

Decisions (all configurable through :class:`BagOptions` and :func:`build_fold_data`):

* **Missing / empty bags.** A case whose slides have no feature file, or whose files hold 0
  patches, keeps its genomics and survival label. Models that read the bag then get a single
  all-zero feature vector (1×D) instead of an empty tensor, and the sample records
  ``n_patches = 0``; missing files are counted and logged once per dataset. If NO case of the
  fold has a feature file, that is an error (most likely a wrong ``features_dir``).
* **Patch cap.** ``max_patches`` caps the bag during TRAINING by drawing that many patches at
  random without replacement (kept in file order), from a generator seeded per dataset, as
  SurvPath samples 4096 patches; ``eval_max_patches`` (default: none) does the same for
  validation (deterministic per case). ``None`` uses every patch.
* **Scaling.** Genomics are standard-scaled (scikit-learn ``StandardScaler``'s arithmetic) with statistics of the
  training cases only (:class:`GenomicScaler`), as MCAT's ``get_scaler``/``apply_scaler``. When an
  early-stopping hold-out is carved from the training fold, the scaler is fitted on the remaining
  training cases, so the hold-out is as unseen as the validation fold.
* **Groups.** Genomic groups (MCAT signature families, or pathways) are lists of column names,
  turned into index arrays over the genomic columns; each sample carries one tensor per group.
* **Sampling.** :func:`epoch_order` draws an epoch's visiting order: MCAT's class-balanced sampler
  (``WeightedRandomSampler`` with weight N / count(class) over the 2 × n_bins classes
  bin × censorship, N draws with replacement) or a plain permutation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mmsurv.data.cohort import CohortError, CohortTable
from mmsurv.data.inputs import loader_for
from mmsurv.data.splits import Split, holdout_split
from mmsurv.data.survival import survival_labels
from mmsurv.models.inputs import group_kind, modality_of
from mmsurv.naming import slide_stem

log = logging.getLogger(__name__)

DEFAULT_FEATURE_DIM = 1024


@dataclass(frozen=True)
class BagOptions:
    """Where the per-slide feature bags are and how a patient's bag is capped."""

    features_dir: Path | None = None
    # None: read from the features (the first feature file found; every other must match)
    feature_dim: int | None = None
    max_patches: int | None = None  # training cap (random subset per visit)
    eval_max_patches: int | None = None  # validation / hold-out cap (fixed subset per case)
    cache: bool = False  # keep loaded bags in memory (small cohorts / small bags only)
    # Standardise every feature dimension with the mean/std of the TRAINING cases' patches. Off by
    # default (MCAT and the founding papers feed raw ResNet features); the offline demo turns it on
    # because its random-weight ResNet gives features dominated by one risk-unrelated direction.
    standardize: bool = False
    h5_dir: Path | None = None  # CLAM h5_files with the coords (default: features_dir/../h5_files)


def recorded_magnification(attrs: Mapping[str, Any]) -> float:
    """The level-0 magnification (objective power) a patch file's ``coords`` attributes record, else NaN.

    mmsurv's patching writes ``slide_magnification`` (:mod:`mmsurv.wsi.outputs`); without it, the
    footprint ratio ``patch_size_level0 / output_patch_size`` times the target ``magnification``
    gives the same number. CLAM's own files record neither (NaN: the model decides what to assume)."""
    def number(key: str) -> float:
        try:
            value = float(np.asarray(attrs[key]).reshape(-1)[0])
        except (KeyError, TypeError, ValueError, IndexError):
            return float("nan")
        return value if np.isfinite(value) and value > 0 else float("nan")

    level0 = number("slide_magnification")
    if np.isfinite(level0):
        return level0
    return number("patch_size_level0") / number("output_patch_size") * number("magnification")


class BagLoader:
    """Loads and concatenates the feature files of a case's slides."""

    def __init__(self, options: BagOptions):
        if options.features_dir is None:
            raise CohortError("a model that reads WSI features needs a features directory (features_dir)")
        self.options = options
        self.features_dir = Path(options.features_dir)
        if not self.features_dir.is_dir():
            raise FileNotFoundError(f"{self.features_dir}: features directory not found")
        self.h5_dir = Path(options.h5_dir) if options.h5_dir else self.features_dir.parent / "h5_files"
        self._cache: dict[str, torch.Tensor] = {}
        self._coords_cache: dict[str, torch.Tensor] = {}
        self._rows: dict[str, int] = {}
        self._magnification: dict[str, float] = {}
        self._standardization: tuple[torch.Tensor, torch.Tensor] | None = None
        self._dim = options.feature_dim

    @property
    def feature_dim(self) -> int:
        """The features' dimension: ``options.feature_dim`` when set, else that of the first feature file
        of the folder (:func:`features_dimension`)."""
        if self._dim is None:
            self._dim = features_dimension(self.features_dir)
        return self._dim

    def fit_standardization(self, cases: Mapping[str, Sequence[str]]) -> None:
        """Per-dimension mean/std over every patch of ``cases`` (case_id → slide_ids): training cases only."""
        total = torch.zeros(self.feature_dim, dtype=torch.float64)
        squares = torch.zeros_like(total)
        count = 0
        for case_id, slide_ids in cases.items():
            bag = self._raw(case_id, slide_ids).double()
            total += bag.sum(0)
            squares += (bag * bag).sum(0)
            count += bag.shape[0]
        if count == 0:
            raise CohortError("standardize: the training cases have no patch features to fit on")
        mean = total / count
        std = (squares / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-6)
        self._standardization = (mean.float(), std.float())

    @property
    def standardization(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The fitted per-dimension (mean, std) of :meth:`fit_standardization`, or None."""
        return self._standardization

    def use_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise with a fold's saved (mean, std) (a checkpoint's), as :meth:`fit_standardization` would."""
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (self.feature_dim,) or std.shape != mean.shape:
            raise CohortError(f"feature standardisation: expected {self.feature_dim} values, got "
                              f"{tuple(mean.shape)} and {tuple(std.shape)}")
        self._standardization = (mean, std)

    def feature_file(self, slide_id: str) -> Path:
        """``{slide}.pt`` (CLAM's ``pt_files``, ours), else ``{slide}.h5`` (TRIDENT's per-slide files or
        CLAM's ``h5_files``: datasets ``features`` and ``coords``); the .pt path when neither exists."""
        stem = slide_stem(slide_id)
        torch_file = self.features_dir / f"{stem}.pt"
        if torch_file.is_file():
            return torch_file
        h5_file = self.features_dir / f"{stem}.h5"
        return h5_file if h5_file.is_file() else torch_file

    def available(self, slide_ids: Sequence[str]) -> list[str]:
        """The slides of a case that have a feature file."""
        return [slide for slide in slide_ids if self.feature_file(slide).is_file()]

    def load(self, case_id: str, slide_ids: Sequence[str]) -> torch.Tensor:
        """The case's bag, N×D float32 (N may be 0), standardised when fitted."""
        bag = self._raw(case_id, slide_ids)
        if self._standardization is not None and bag.shape[0]:
            mean, std = self._standardization
            bag = (bag - mean) / std
        return bag

    def _raw(self, case_id: str, slide_ids: Sequence[str]) -> torch.Tensor:
        if case_id in self._cache:
            return self._cache[case_id]
        parts = []
        for slide in self.available(slide_ids):
            part = self._load_file(self.feature_file(slide))
            self._rows[slide] = int(part.shape[0])
            parts.append(part)
        bag = torch.cat(parts, dim=0) if parts else torch.zeros(0, self.feature_dim)
        if self.options.cache:
            self._cache[case_id] = bag
        return bag

    def coords_file(self, slide_id: str) -> Path:
        """The h5 with the slide's ``coords``: its feature file when that is an h5 (TRIDENT, CLAM's
        h5_files), else ``h5_files/{slide}.h5`` beside the features."""
        feature_file = self.feature_file(slide_id)
        if feature_file.suffix == ".h5":
            return feature_file
        return self.h5_dir / f"{slide_stem(slide_id)}.h5"

    def load_coords(self, case_id: str, slide_ids: Sequence[str]) -> torch.Tensor:
        """N×2 level-0 (x, y) of the case's bag rows (same slides, same order as :meth:`load`)."""
        if case_id in self._coords_cache:
            return self._coords_cache[case_id]
        parts = [self._read_coords(slide) for slide in self.available(slide_ids)]
        coords = torch.cat(parts) if parts else torch.zeros(0, 2, dtype=torch.long)
        if self.options.cache:
            self._coords_cache[case_id] = coords
        return coords

    def slide_index(self, case_id: str, slide_ids: Sequence[str]) -> torch.Tensor:
        """For each bag row, the position of its slide among the case's slides with features (0, 1, …)."""
        counts = [self.row_count(slide) for slide in self.available(slide_ids)]
        return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts, dtype=torch.long))

    def load_magnification(self, case_id: str, slide_ids: Sequence[str]) -> torch.Tensor:
        """For each bag row, the level-0 magnification of its slide as its ``h5_files`` record it (NaN if not)."""
        slides = self.available(slide_ids)
        values = torch.tensor([self.slide_magnification(slide) for slide in slides], dtype=torch.float32)
        return torch.repeat_interleave(values, torch.tensor([self.row_count(s) for s in slides], dtype=torch.long))

    def slide_magnification(self, slide_id: str) -> float:
        """The level-0 magnification recorded on the slide's ``coords`` (:func:`recorded_magnification`)."""
        if slide_id not in self._magnification:
            import h5py

            path = self._coords_path(slide_id)
            try:
                with h5py.File(path, "r") as handle:
                    self._magnification[slide_id] = recorded_magnification(handle["coords"].attrs)
            except (OSError, KeyError) as error:
                raise CohortError(f"{path}: cannot read dataset 'coords' ({error})") from error
        return self._magnification[slide_id]

    def row_count(self, slide_id: str) -> int:
        if slide_id not in self._rows:
            self._rows[slide_id] = int(self._load_file(self.feature_file(slide_id)).shape[0])
        return self._rows[slide_id]

    def _coords_path(self, slide_id: str) -> Path:
        path = self.coords_file(slide_id)
        if not path.is_file():
            raise CohortError(f"{path}: no coordinates for slide {slide_id} (the model reads 'coords', which come "
                              f"from CLAM-format h5_files beside {self.features_dir}; a features folder with pt_files "
                              "only cannot feed it)")
        return path

    def _read_coords(self, slide_id: str) -> torch.Tensor:
        path = self._coords_path(slide_id)
        coords = read_h5_dataset(path, "coords", "a CLAM h5 file")
        if coords.ndim != 2 or coords.shape[1] != 2:
            raise CohortError(f"{path}: 'coords' must be N×2, got shape {coords.shape}")
        expected = self.row_count(slide_id)
        if coords.shape[0] != expected:
            raise CohortError(f"{path}: {coords.shape[0]} coordinates but {self.feature_file(slide_id)} has "
                              f"{expected} feature rows (coords and features must come from the same extraction)")
        return torch.from_numpy(coords.astype("int64"))

    def _load_file(self, path: Path) -> torch.Tensor:
        tensor = read_feature_file(path)
        dim = self.feature_dim
        if tensor.shape[0] and tensor.shape[1] != dim:
            origin = "data.feature_dim" if self.options.feature_dim else f"the first feature file of {self.features_dir}"
            raise CohortError(f"{path}: features have {tensor.shape[1]} columns, expected {dim} ({origin}); "
                              "one folder must hold one encoder's features")
        return tensor.reshape(-1, dim).float()


def read_h5_dataset(path: Path, name: str, kind: str) -> np.ndarray:
    """Dataset ``name`` of the h5 file ``path``; a clear error naming both when it cannot be read."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return np.asarray(handle[name][()])
    except (OSError, KeyError) as error:
        raise CohortError(f"{path}: cannot read dataset {name!r}, truncated or not {kind} "
                          f"({first_line(error)})") from error


def read_feature_file(path: Path) -> torch.Tensor:
    """A slide's N×D features from a torch file (a 2-D tensor: CLAM's pt_files, ours) or an h5 file
    (dataset ``features``, N×D or 1×N×D: TRIDENT's per-slide files, CLAM's h5_files)."""
    if path.suffix == ".h5":
        array = read_h5_dataset(path, "features", "a TRIDENT/CLAM feature h5")
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        tensor = torch.from_numpy(array)
    else:
        try:
            tensor = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many kinds for corrupt files
            raise CohortError(f"{path}: cannot be loaded as a feature tensor, truncated or not a torch tensor file "
                              f"({first_line(error)})") from error
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2:
        shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise CohortError(f"{path}: expected a 2-D N×D feature tensor, got {shape}")
    return tensor


def features_dimension(features_dir: Path) -> int:
    """The dimension D of the first feature file (``*.pt``, else ``*.h5``, by name) in ``features_dir``."""
    for pattern in ("*.pt", "*.h5"):
        for path in sorted(Path(features_dir).glob(pattern)):
            return int(read_feature_file(path).shape[1])
    raise CohortError(f"{features_dir}: no feature files (*.pt or *.h5) to read the feature dimension from")


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (library errors can span a page)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


class GenomicScaler:
    """Standard scaling of the genomic columns, fitted on training patients only.

    The arithmetic of scikit-learn's ``StandardScaler`` (1.9; MCAT's scaler) step for step: mean
    and the corrected two-pass variance of Chan, Golub and LeVeque in float64, NaNs ignored, near-
    constant columns (``var <= n·eps·var + (n·mean·eps)²``) scaled by 1; ``(x − mean) / scale``,
    then float32. Equal to it bit for bit (``tests/data/test_data_dataset.py``), without importing
    scikit-learn, which with SciPy's statistics is 0.6 s of every training job's start-up.
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.var_: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self.mean_ is not None

    def fit(self, matrix: np.ndarray) -> GenomicScaler:
        matrix = np.array(matrix, dtype="float64")
        if matrix.ndim != 2 or len(matrix) == 0:
            raise ValueError(f"GenomicScaler.fit needs a non-empty 2-D matrix, got shape {matrix.shape}")
        missing = np.isnan(matrix)
        total = np.nansum if missing.any() else np.sum
        count = len(matrix) - missing.sum(axis=0).astype("float64")
        column_sum = total(matrix, axis=0)
        mean = column_sum / count
        centred = matrix - column_sum / count
        correction = total(centred, axis=0)
        centred **= 2
        variance = (total(centred, axis=0) - correction**2 / count) / count
        eps = np.finfo(np.float64).eps
        constant = variance <= count * eps * variance + (count * mean * eps) ** 2
        scale = np.sqrt(variance)
        scale[constant] = 1.0
        self.mean_, self.var_, self.scale_ = mean, variance, scale
        return self

    def transform(self, matrix: np.ndarray) -> np.ndarray:
        if not self.fitted:
            raise RuntimeError("GenomicScaler.transform before fit")
        matrix = np.array(matrix, dtype="float64")
        matrix -= self.mean_
        matrix /= self.scale_
        return matrix.astype("float32")


@dataclass
class PatientSample:
    """One patient, as a model and the loss see it: the declared inputs by name, and the label."""

    case_id: str
    inputs: dict[str, Any]  # input name → tensor (or list of tensors), without the patient dimension
    label: int  # survival bin
    censorship: int  # 1 = censored
    time: float  # survival_months
    n_patches: int = 0

    @property
    def path(self) -> torch.Tensor | None:
        return self.inputs.get("path")

    @property
    def omic(self) -> torch.Tensor | None:
        return self.inputs.get("omic")

    @property
    def omic_groups(self) -> list[torch.Tensor] | None:
        keys = [key for key in self.inputs if key.startswith("omic_groups")]
        return self.inputs[keys[0]] if keys else None


class SurvivalDataset(Dataset):
    """Patients of one fold side; loads the declared ``inputs``; ``training`` switches random capping on."""

    def __init__(self, patients: pd.DataFrame, omic: np.ndarray, group_index: Mapping[str, Sequence[np.ndarray]],
                 slides_of_case: Mapping[str, list[str]], *, inputs: Sequence[str], bags: BagLoader | None,
                 training: bool, seed: int = 0, name: str = "fold"):
        self.inputs = tuple(inputs)
        self.loaders = {input_name: loader_for(input_name) for input_name in self.inputs}
        self.modality = modality_of(self.inputs)
        needs_bags = any(loader.needs_bags for loader in self.loaders.values())
        if needs_bags and bags is None:
            raise CohortError(f"a model reading {', '.join(self.inputs)} needs WSI features (features_dir)")
        self.patients = patients.reset_index(drop=True)
        self.omic = torch.from_numpy(np.ascontiguousarray(omic, dtype="float32"))
        # Per-patient values prepared once (no pandas or fancy indexing per visited sample): the
        # training loop reads thousands of samples per fold, and a genomic-only model does nothing
        # else per sample but a few small matrix products.
        self._case_ids = [str(case) for case in self.patients["case_id"]]
        self._labels = [int(value) for value in self.patients["bin"]]
        self._censorships = [int(value) for value in self.patients["censorship"]]
        self._times = [float(value) for value in self.patients["survival_months"]]
        self.group_omic = {key: [self.omic[:, torch.as_tensor(index, dtype=torch.long)].contiguous() for index in indices]
                           for key, indices in group_index.items()}
        self.slides_of_case = slides_of_case
        self.bags = bags if needs_bags else None
        self.training = training
        self.name = name
        self._row_inputs = [n for n, loader in self.loaders.items() if loader.rows]
        self._generator = torch.Generator().manual_seed(int(seed))
        self._eval_seed = int(seed)
        self.n_without_features = 0
        if self.bags is not None:
            self._report_missing_features()

    def __len__(self) -> int:
        return len(self.patients)

    @property
    def case_ids(self) -> list[str]:
        return list(self._case_ids)

    @property
    def rng(self) -> torch.Generator:
        """The generator of the training patch cap (saved and restored by a resumed run)."""
        return self._generator

    @property
    def class_labels(self) -> np.ndarray:
        return self.patients["class_label"].to_numpy()

    def __getitem__(self, index: int) -> PatientSample:
        index = range(len(self))[index]  # negative indices as a list's; out of range is an IndexError
        values = {name: loader.load(self, index, name) for name, loader in self.loaders.items()}
        n_patches = self._cap_rows(values, index)
        return PatientSample(case_id=self._case_ids[index], inputs=values, label=self._labels[index],
                             censorship=self._censorships[index], time=self._times[index], n_patches=n_patches)

    # --- sources the input loaders read -------------------------------------------------------
    def _slides(self, index: int) -> list[str]:
        return self.slides_of_case.get(self._case_ids[index], [])

    def bag(self, index: int) -> torch.Tensor:
        """The patient's full bag (N×D, N may be 0), standardised when fitted."""
        return self.bags.load(self._case_ids[index], self._slides(index))

    def coords(self, index: int) -> torch.Tensor:
        return self.bags.load_coords(self._case_ids[index], self._slides(index))

    def slide_index(self, index: int) -> torch.Tensor:
        return self.bags.slide_index(self._case_ids[index], self._slides(index))

    def slide_magnification(self, index: int) -> torch.Tensor:
        return self.bags.load_magnification(self._case_ids[index], self._slides(index))

    def _cap_rows(self, values: dict[str, Any], index: int) -> int:
        """Row inputs: same random subset under the cap; an empty bag becomes one zero row. → N before capping."""
        if not self._row_inputs:
            return 0
        lengths = {name: int(values[name].shape[0]) for name in self._row_inputs}
        if len(set(lengths.values())) > 1:
            raise CohortError(f"case {self._case_ids[index]}: row-aligned inputs differ in length {lengths}")
        n_patches = next(iter(lengths.values()))
        if n_patches == 0:
            for name in self._row_inputs:
                values[name] = torch.zeros((1, *values[name].shape[1:]), dtype=values[name].dtype)
            return 0
        cap = self.bags.options.max_patches if self.training else self.bags.options.eval_max_patches
        if cap is not None and n_patches > cap:
            generator = self._generator if self.training else torch.Generator().manual_seed(self._eval_seed + index)
            keep = torch.randperm(n_patches, generator=generator)[:cap].sort().values
            for name in self._row_inputs:
                values[name] = values[name][keep]
        return n_patches

    def _report_missing_features(self) -> None:
        without = [case for case in self.case_ids if not self.bags.available(self.slides_of_case.get(case, []))]
        if len(without) == len(self):
            raise CohortError(
                f"{self.bags.features_dir}: none of the {len(self)} {self.name} case(s) has a feature file "
                f"(expected e.g. {self.bags.feature_file(self.slides_of_case.get(self.case_ids[0], ['SLIDE.svs'])[0])})"
            )
        if without:
            log.warning("%s: %d of %d case(s) have no WSI feature file; they get a single zero feature vector (e.g. %s)",
                        self.name, len(without), len(self), without[0])
        self.n_without_features = len(without)


def balanced_weights(class_labels: Sequence[int]) -> np.ndarray:
    """MCAT's per-sample weights: N / (number of samples of the sample's class)."""
    labels = np.asarray(class_labels)
    values, counts = np.unique(labels, return_counts=True)
    per_class = dict(zip(values.tolist(), (len(labels) / counts).tolist()))
    return np.array([per_class[label] for label in labels.tolist()], dtype="float64")


def epoch_order(class_labels: Sequence[int], *, weighted: bool, generator: torch.Generator) -> list[int]:
    """One epoch's sample indices: class-balanced draws with replacement, or a permutation."""
    count = len(class_labels)
    if weighted:
        weights = torch.as_tensor(balanced_weights(class_labels), dtype=torch.double)
        return torch.multinomial(weights, count, replacement=True, generator=generator).tolist()
    return torch.randperm(count, generator=generator).tolist()


@dataclass
class FoldData:
    """Everything a fold trains and validates on."""

    train: SurvivalDataset
    val: SurvivalDataset
    holdout: SurvivalDataset | None
    scaler: GenomicScaler
    genomic_columns: list[str]
    group_names: list[str]  # of the model's genomic groups input (first one if several)
    group_sizes: list[int]
    group_index: dict[str, list[np.ndarray]] = field(default_factory=dict)  # input → column indices per group
    bags: BagLoader | None = None


def patient_frame(table: CohortTable, edges: np.ndarray) -> pd.DataFrame:
    """One labelled row per patient (metadata + genomics + bin/event/class_label)."""
    return survival_labels(table.patients(), edges)


def group_indices(columns: Sequence[str], groups: Mapping[str, Sequence[str]]) -> list[np.ndarray]:
    """Each group's column names as indices into ``columns``; unknown names are an error."""
    position = {column: index for index, column in enumerate(columns)}
    result = []
    for name, members in groups.items():
        unknown = [column for column in members if column not in position]
        if unknown:
            raise CohortError(f"genomic group {name!r}: column {unknown[0]!r} is not a genomic column of the table")
        result.append(np.array([position[column] for column in members], dtype="int64"))
    return result


def build_fold_data(table: CohortTable, split: Split, *, edges: np.ndarray,
                    groups: Mapping[str, Mapping[str, Sequence[str]]], inputs: Sequence[str],
                    bag_options: BagOptions, holdout_fraction: float = 0.0, seed: int = 0,
                    default_groups: str = "signatures") -> FoldData:
    """Datasets of one fold for a model reading ``inputs``; the scaler sees the training cases only.

    ``groups`` maps each grouping (``signatures``, ``pathways``) to its groups (name → columns);
    only the groupings the inputs read are needed (``omic_groups`` reads ``default_groups``)."""
    patients = patient_frame(table, edges).set_index("case_id", drop=False)
    columns = list(table.genomics.columns)
    train_cases, holdout_cases = list(split.train), []
    if holdout_fraction > 0:
        strata = patients.loc[train_cases, "class_label"].to_numpy()
        train_cases, holdout_cases = holdout_split(train_cases, strata, holdout_fraction, seed)
    scaler = GenomicScaler().fit(patients.loc[train_cases, columns].to_numpy())
    group_index: dict[str, list[np.ndarray]] = {}
    group_names: list[str] = []
    group_sizes: list[int] = []
    for name in inputs:
        kind = group_kind(name, default_groups)
        if kind is None:
            continue
        if kind not in groups:
            raise CohortError(f"input {name!r} reads the {kind!r} genomic groups, which were not given")
        group_index[name] = group_indices(columns, groups[kind])
        if not group_names:
            group_names = list(groups[kind])
            group_sizes = [len(index) for index in group_index[name]]
    needs_bags = any(loader_for(name).needs_bags for name in inputs)
    bags = BagLoader(bag_options) if needs_bags else None
    slides = table.slides_of_case()
    if bags is not None and bag_options.standardize:
        bags.fit_standardization({case: slides.get(case, []) for case in train_cases})

    def make(cases: list[str], training: bool, name: str, offset: int) -> SurvivalDataset:
        frame = patients.loc[cases].reset_index(drop=True)
        omic = scaler.transform(frame[columns].to_numpy()) if columns else np.zeros((len(frame), 0), "float32")
        return SurvivalDataset(frame.drop(columns=columns), omic, group_index, slides, inputs=inputs, bags=bags,
                               training=training, seed=seed + offset, name=name)

    return FoldData(
        train=make(train_cases, True, "train", 0),
        val=make(list(split.val), False, "val", 1),
        holdout=make(holdout_cases, False, "holdout", 2) if holdout_cases else None,
        scaler=scaler,
        genomic_columns=columns,
        group_names=group_names,
        group_sizes=group_sizes,
        group_index=group_index,
        bags=bags,
    )


def bag_feature_dim(features_dir: Path | None, configured: int | None, *, reads_features: bool) -> int:
    """The feature dimension a model is built with: ``configured`` (``data.feature_dim``) when set,
    else the features' own (:func:`features_dimension`); a model that reads no features gets the
    default, 1024, which nothing uses."""
    if configured:
        return int(configured)
    if not reads_features or features_dir is None:
        return DEFAULT_FEATURE_DIM
    return features_dimension(features_dir)


def features_dir_or_none(path: str | os.PathLike | None) -> Path | None:
    """``Path`` of a features directory argument, or None."""
    return Path(path) if path not in (None, "") else None
