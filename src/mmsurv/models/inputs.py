"""The contract's vocabulary: input names, genomic groupings and modalities (labels, colours, order).

For the model contract, the source catalog, the data layer and the report alike. It imports
nothing from :mod:`mmsurv.models` and no torch, so the workflow's parse-time checks, the data
layer and the report tables read the same names from one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# Row-aligned inputs: one row per patch, capped and padded together (see mmsurv.models.base).
PATH_INPUTS = ("path", "coords", "slide_index", "slide_magnification")
OMIC_INPUTS = ("omic", "omic_groups")
GROUP_KINDS = ("signatures", "pathways")


@dataclass(frozen=True)
class Modality:
    """What a model reads, as the tables and figures name and colour it."""

    key: str  # omic | path | multimodal (metrics.json's ``modality``)
    label: str  # the model listing's word: genomic | pathology | multimodal
    paper_label: str  # the papers' column: Genomic | WSI | WSI + Genomic
    colour: str  # figures (matplotlib colour)


# In table order: genomic-only models first, then WSI-only, then multimodal.
MODALITIES = {
    "omic": Modality("omic", "genomic", "Genomic", "#2ca02c"),
    "path": Modality("path", "pathology", "WSI", "#9467bd"),
    "multimodal": Modality("multimodal", "multimodal", "WSI + Genomic", "#ff7f0e"),
}


def modality_of(inputs: Iterable[str]) -> str:
    """``omic`` (genomics only), ``path`` (WSI only) or ``multimodal``, from declared input names."""
    names = list(inputs)
    reads_path = any(name in PATH_INPUTS for name in names)
    reads_omic = any(name == "omic" or name.startswith("omic_groups") for name in names)
    if reads_path and reads_omic:
        return "multimodal"
    return "path" if reads_path else "omic"


def modality_rank(key: str) -> int:
    """A modality's place in the tables (unknown modalities last)."""
    return list(MODALITIES).index(key) if key in MODALITIES else len(MODALITIES)


def group_kind(name: str, default: str) -> str | None:
    """The grouping an ``omic_groups[:kind]`` input reads (``default`` for plain ``omic_groups``)."""
    if name == "omic_groups":
        return default
    if name.startswith("omic_groups:"):
        kind = name.split(":", 1)[1]
        if kind not in GROUP_KINDS:
            raise ValueError(f"input {name!r}: grouping must be one of {', '.join(GROUP_KINDS)}")
        return kind
    return None


class DescribesModel:
    """What a catalog entry and a registry spec derive alike from the declared ``inputs``."""

    inputs: tuple[str, ...]

    @property
    def modality(self) -> str:
        return modality_of(self.inputs)

    @property
    def label(self) -> str:
        """The table label: genomic, pathology or multimodal."""
        return MODALITIES[self.modality].label
