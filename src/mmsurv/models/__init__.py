"""Survival models behind one forward contract (:mod:`mmsurv.models.base`) and a name registry.

``build_model(name, ModelInputs(...), params)`` builds ``snn`` (genomics), ``abmil`` (WSI) or
``mcat`` (both); ``n_params`` and ``count_flops`` describe a model's size and cost.
"""

from mmsurv.models.base import Batch, ModelOutput, SurvivalModel, n_params
from mmsurv.models.flops import count_flops
from mmsurv.models.registry import ModelInputs, available_models, build_model, model_spec, register_model

__all__ = ["Batch", "ModelInputs", "ModelOutput", "SurvivalModel", "available_models", "build_model",
           "count_flops", "model_spec", "n_params", "register_model"]
