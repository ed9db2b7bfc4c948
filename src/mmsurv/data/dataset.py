"""Patient-level training data: WSI feature bags, scaled genomics, genomic groups, sampling.

One sample is one PATIENT (MCAT's unit): all diagnostic slides of the case listed in the cohort
table, their per-slide feature files ``features_dir/{slide}.pt`` (``{slide}`` = slide file name
without ``.svs``; float32 N×1024, CLAM/MCAT format) concatenated in table order, plus the patient's
genomic vector and its groups.

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
* **Scaling.** Genomics are standard-scaled (scikit-learn ``StandardScaler``) with statistics of the
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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset

from mmsurv.data.cohort import CohortError, CohortTable
from mmsurv.data.splits import Split, holdout_split
from mmsurv.data.survival import survival_labels

log = logging.getLogger(__name__)

MODALITIES = ("omic", "path", "multimodal")
DEFAULT_FEATURE_DIM = 1024


def slide_stem(slide_id: str) -> str:
    """Feature file stem of a slide: the file name without ``.svs``."""
    return slide_id[:-4] if slide_id.lower().endswith(".svs") else slide_id


@dataclass(frozen=True)
class BagOptions:
    """Where the per-slide feature bags are and how a patient's bag is capped."""

    features_dir: Path | None = None
    feature_dim: int = DEFAULT_FEATURE_DIM
    max_patches: int | None = None  # training cap (random subset per visit)
    eval_max_patches: int | None = None  # validation / hold-out cap (fixed subset per case)
    cache: bool = False  # keep loaded bags in memory (small cohorts / small bags only)
    # Standardise every feature dimension with the mean/std of the TRAINING cases' patches. Off by
    # default (MCAT and the founding papers feed raw ResNet features); the offline demo turns it on
    # because its random-weight ResNet gives features dominated by one risk-unrelated direction.
    standardize: bool = False


class BagLoader:
    """Loads and concatenates the feature files of a case's slides."""

    def __init__(self, options: BagOptions):
        if options.features_dir is None:
            raise CohortError("a model that reads WSI features needs a features directory (features_dir)")
        self.options = options
        self.features_dir = Path(options.features_dir)
        if not self.features_dir.is_dir():
            raise FileNotFoundError(f"{self.features_dir}: features directory not found")
        self._cache: dict[str, torch.Tensor] = {}
        self._standardization: tuple[torch.Tensor, torch.Tensor] | None = None

    def fit_standardization(self, cases: Mapping[str, Sequence[str]]) -> None:
        """Per-dimension mean/std over every patch of ``cases`` (case_id → slide_ids): training cases only."""
        total = torch.zeros(self.options.feature_dim, dtype=torch.float64)
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

    def feature_file(self, slide_id: str) -> Path:
        return self.features_dir / f"{slide_stem(slide_id)}.pt"

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
        parts = [self._load_file(self.feature_file(slide)) for slide in self.available(slide_ids)]
        bag = torch.cat(parts, dim=0) if parts else torch.zeros(0, self.options.feature_dim)
        if self.options.cache:
            self._cache[case_id] = bag
        return bag

    def _load_file(self, path: Path) -> torch.Tensor:
        try:
            tensor = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # torch raises many kinds for corrupt files
            raise CohortError(f"{path}: cannot be loaded as a feature tensor ({error})") from error
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2:
            shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise CohortError(f"{path}: expected a 2-D N×{self.options.feature_dim} tensor, got {shape}")
        if tensor.shape[0] and tensor.shape[1] != self.options.feature_dim:
            raise CohortError(f"{path}: features have {tensor.shape[1]} columns, expected {self.options.feature_dim} (feature_dim)")
        return tensor.reshape(-1, self.options.feature_dim).float()


class GenomicScaler:
    """``StandardScaler`` over the genomic columns, fitted on training patients only."""

    def __init__(self) -> None:
        self._scaler = StandardScaler()
        self.fitted = False

    def fit(self, matrix: np.ndarray) -> GenomicScaler:
        self._scaler.fit(np.asarray(matrix, dtype="float64"))
        self.fitted = True
        return self

    def transform(self, matrix: np.ndarray) -> np.ndarray:
        if not self.fitted:
            raise RuntimeError("GenomicScaler.transform before fit")
        return self._scaler.transform(np.asarray(matrix, dtype="float64")).astype("float32")

    @property
    def mean_(self) -> np.ndarray:
        return self._scaler.mean_

    @property
    def scale_(self) -> np.ndarray:
        return self._scaler.scale_


@dataclass
class PatientSample:
    """One patient, as a model and the loss see it."""

    case_id: str
    path: torch.Tensor | None  # N×D (a single zero row when the case has no patches)
    omic: torch.Tensor | None  # all genomic columns, scaled
    omic_groups: list[torch.Tensor] | None  # one scaled vector per group
    label: int  # survival bin
    censorship: int  # 1 = censored
    time: float  # survival_months
    n_patches: int = 0


class SurvivalDataset(Dataset):
    """Patients of one fold side; ``training`` switches random patch capping on."""

    def __init__(self, patients: pd.DataFrame, omic: np.ndarray, group_index: Sequence[np.ndarray],
                 slides_of_case: Mapping[str, list[str]], *, modality: str, bags: BagLoader | None,
                 training: bool, seed: int = 0, name: str = "fold"):
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")
        if modality != "omic" and bags is None:
            raise CohortError(f"a '{modality}' model needs WSI features (features_dir)")
        self.patients = patients.reset_index(drop=True)
        self.omic = torch.from_numpy(np.ascontiguousarray(omic, dtype="float32"))
        self.group_index = [torch.as_tensor(index, dtype=torch.long) for index in group_index]
        # Per-patient values prepared once (no pandas or fancy indexing per visited sample): the
        # training loop reads thousands of samples per fold, and a genomic-only model does nothing
        # else per sample but a few small matrix products.
        self._case_ids = [str(case) for case in self.patients["case_id"]]
        self._labels = [int(value) for value in self.patients["bin"]]
        self._censorships = [int(value) for value in self.patients["censorship"]]
        self._times = [float(value) for value in self.patients["survival_months"]]
        self._group_omic = [self.omic[:, index].contiguous() for index in self.group_index]
        self.slides_of_case = slides_of_case
        self.modality = modality
        self.bags = bags if modality != "omic" else None
        self.training = training
        self.name = name
        self._generator = torch.Generator().manual_seed(int(seed))
        self._eval_seed = int(seed)
        if self.bags is not None:
            self._report_missing_features()

    def __len__(self) -> int:
        return len(self.patients)

    @property
    def case_ids(self) -> list[str]:
        return list(self._case_ids)

    @property
    def class_labels(self) -> np.ndarray:
        return self.patients["class_label"].to_numpy()

    def __getitem__(self, index: int) -> PatientSample:
        index = range(len(self))[index]  # negative indices as a list's; out of range is an IndexError
        case_id = self._case_ids[index]
        path, n_patches = self._path(case_id, index) if self.bags is not None else (None, 0)
        omic = groups = None
        if self.modality != "path":
            omic = self.omic[index]
            groups = [matrix[index] for matrix in self._group_omic]
        return PatientSample(case_id=case_id, path=path, omic=omic, omic_groups=groups, label=self._labels[index],
                             censorship=self._censorships[index], time=self._times[index], n_patches=n_patches)

    def _path(self, case_id: str, index: int) -> tuple[torch.Tensor, int]:
        bag = self.bags.load(case_id, self.slides_of_case.get(case_id, []))
        n_patches = int(bag.shape[0])
        if n_patches == 0:
            return torch.zeros(1, self.bags.options.feature_dim), 0
        cap = self.bags.options.max_patches if self.training else self.bags.options.eval_max_patches
        if cap is not None and n_patches > cap:
            generator = self._generator if self.training else torch.Generator().manual_seed(self._eval_seed + index)
            keep = torch.randperm(n_patches, generator=generator)[:cap].sort().values
            bag = bag[keep]
        return bag, n_patches

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
    group_names: list[str]
    group_sizes: list[int]


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


def build_fold_data(table: CohortTable, split: Split, *, edges: np.ndarray, groups: Mapping[str, Sequence[str]],
                    modality: str, bag_options: BagOptions, holdout_fraction: float = 0.0,
                    seed: int = 0) -> FoldData:
    """Datasets of one fold: scaler fitted on the training cases (minus any hold-out) only."""
    patients = patient_frame(table, edges).set_index("case_id", drop=False)
    columns = list(table.genomics.columns)
    train_cases, holdout_cases = list(split.train), []
    if holdout_fraction > 0:
        strata = patients.loc[train_cases, "class_label"].to_numpy()
        train_cases, holdout_cases = holdout_split(train_cases, strata, holdout_fraction, seed)
    scaler = GenomicScaler().fit(patients.loc[train_cases, columns].to_numpy())
    indices = group_indices(columns, groups)
    bags = BagLoader(bag_options) if modality != "omic" else None
    slides = table.slides_of_case()
    if bags is not None and bag_options.standardize:
        bags.fit_standardization({case: slides.get(case, []) for case in train_cases})

    def make(cases: list[str], training: bool, name: str, offset: int) -> SurvivalDataset:
        frame = patients.loc[cases].reset_index(drop=True)
        omic = scaler.transform(frame[columns].to_numpy()) if columns else np.zeros((len(frame), 0), "float32")
        return SurvivalDataset(frame.drop(columns=columns), omic, indices, slides, modality=modality, bags=bags,
                               training=training, seed=seed + offset, name=name)

    return FoldData(
        train=make(train_cases, True, "train", 0),
        val=make(list(split.val), False, "val", 1),
        holdout=make(holdout_cases, False, "holdout", 2) if holdout_cases else None,
        scaler=scaler,
        genomic_columns=columns,
        group_names=list(groups),
        group_sizes=[len(index) for index in indices],
    )


def features_dir_or_none(path: str | os.PathLike | None) -> Path | None:
    """``Path`` of a features directory argument, or None."""
    return Path(path) if path not in (None, "") else None
