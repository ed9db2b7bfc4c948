"""Input loaders: how each input a model may declare is read for one patient, and batch collation.

For contributors adding a new kind of model input. A loader is one function registered under the
input's name; it receives the dataset (its fold-level sources: the scaled genomic matrix, the
genomic groups, the bag loader with features and coordinates) and the patient's index::

    @input_loader("my_input")
    def _my_input(dataset, index, name):
        return ...  # a tensor (or a list of tensors) for this one patient

``rows=True`` marks inputs aligned row for row with the patch bag (``path``, ``coords``,
``slide_index``, ``slide_magnification``): they are capped to the same rows and padded together by :func:`collate`.
``needs_bags=True`` says the loader reads the per-slide files (the dataset then opens them).
Models declare the names they read (``SurvivalModel.inputs``); only those loaders run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmsurv.models.base import Batch, Target


@dataclass(frozen=True)
class InputLoader:
    name: str
    load: Callable[[Any, int, str], Any]
    rows: bool = False
    needs_bags: bool = False


_LOADERS: dict[str, InputLoader] = {}


def input_loader(name: str, *, rows: bool = False, needs_bags: bool = False):
    """Register ``fn(dataset, index, name)`` as the loader of input ``name``."""

    def decorate(fn):
        _LOADERS[name] = InputLoader(name=name, load=fn, rows=rows, needs_bags=needs_bags)
        return fn

    return decorate


def loader_for(name: str) -> InputLoader:
    """The loader of an input name (``omic_groups:<kind>`` shares the ``omic_groups`` loader)."""
    key = "omic_groups" if name.startswith("omic_groups:") else name
    try:
        return _LOADERS[key]
    except KeyError:
        raise ValueError(f"no loader for model input {name!r} (known: {', '.join(sorted(_LOADERS))}, "
                         "omic_groups:<kind>)") from None


def known_inputs() -> list[str]:
    return sorted(_LOADERS)


@input_loader("path", rows=True, needs_bags=True)
def _path(dataset, index: int, name: str) -> torch.Tensor:
    return dataset.bag(index)


@input_loader("coords", rows=True, needs_bags=True)
def _coords(dataset, index: int, name: str) -> torch.Tensor:
    return dataset.coords(index)


@input_loader("slide_index", rows=True, needs_bags=True)
def _slide_index(dataset, index: int, name: str) -> torch.Tensor:
    return dataset.slide_index(index)


@input_loader("slide_magnification", rows=True, needs_bags=True)
def _slide_magnification(dataset, index: int, name: str) -> torch.Tensor:
    """Level-0 magnification of each row's slide, from its ``h5_files`` attributes (NaN when not recorded)."""
    return dataset.slide_magnification(index)


@input_loader("omic")
def _omic(dataset, index: int, name: str) -> torch.Tensor:
    return dataset.omic[index]


@input_loader("omic_groups")
def _omic_groups(dataset, index: int, name: str) -> list[torch.Tensor]:
    return [matrix[index] for matrix in dataset.group_omic[name]]


def collate(samples: Sequence[Any], row_inputs: Sequence[str] | None = None) -> tuple[Batch, Target]:
    """Patients → one :class:`Batch` (bags zero-padded to the longest, with a mask) and its :class:`Target`.

    ``row_inputs`` (default: the inputs whose loader says ``rows=True``) are padded together."""
    names = list(samples[0].inputs)
    if row_inputs is None:
        row_inputs = [name for name in names if loader_for(name).rows]
    values: dict[str, Any] = {}
    mask = None
    lengths = [next((s.inputs[n].shape[0] for n in names if n in row_inputs), 0) for s in samples]
    longest = max(lengths) if lengths else 0
    padded = len(samples) > 1 and any(length != longest for length in lengths)
    if padded:
        mask = torch.zeros(len(samples), longest, dtype=torch.bool)
        for row, length in enumerate(lengths):
            mask[row, :length] = True
    for name in names:
        parts = [sample.inputs[name] for sample in samples]
        if isinstance(parts[0], list):
            values[name] = [torch.stack([part[g] for part in parts]) for g in range(len(parts[0]))]
        elif name in row_inputs and padded:
            values[name] = torch.stack([_pad_rows(part, longest) for part in parts])
        else:
            values[name] = torch.stack(parts)
    target = Target(label=torch.tensor([s.label for s in samples], dtype=torch.long),
                    censorship=torch.tensor([float(s.censorship) for s in samples]),
                    time=torch.tensor([float(s.time) for s in samples]))
    return Batch(values=values, mask=mask, size=len(samples)), target


def _pad_rows(tensor: torch.Tensor, length: int) -> torch.Tensor:
    if tensor.shape[0] == length:
        return tensor
    pad = torch.zeros((length - tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype)
    return torch.cat([tensor, pad])
