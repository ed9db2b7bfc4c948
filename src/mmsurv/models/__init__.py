"""Survival models behind one contract (:mod:`mmsurv.models.base`) and a name registry.

``build_model(name, ModelInputs(...), params)`` builds any registered model; ``n_params`` and
``count_flops`` describe a model's size and cost. The names below are imported on first use, so
``mmsurv.models.catalog`` (what the registry holds, read from source) needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Batch": "mmsurv.models.base", "ModelOutput": "mmsurv.models.base", "SurvivalModel": "mmsurv.models.base",
    "Target": "mmsurv.models.base", "n_params": "mmsurv.models.base", "count_flops": "mmsurv.models.flops",
    "ModelInputs": "mmsurv.models.registry", "available_models": "mmsurv.models.registry",
    "build_model": "mmsurv.models.registry", "model_spec": "mmsurv.models.registry",
    "register_model": "mmsurv.models.registry",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mmsurv.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
