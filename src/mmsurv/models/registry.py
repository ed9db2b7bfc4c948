"""Model registry: ``name → builder``, filled by the ``@register_model`` decorator.

A builder receives the input sizes of the fold (:class:`ModelInputs`) and the model's
hyper-parameter overrides from the config (``models: {name: {...}}``) and returns a
:class:`~mmsurv.models.base.SurvivalModel`. Overrides are checked against the model class's
keyword arguments, so a typo is an error naming the accepted parameters.

Adding a model::

    @register_model("mymodel")
    def _build(inputs: ModelInputs, **params) -> SurvivalModel:
        return MyModel(omic_dim=inputs.omic_dim, n_bins=inputs.n_bins, **params)

and import its module in :data:`BUILTIN_MODULES` (or before calling :func:`build_model`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field

from mmsurv.models.base import SurvivalModel

BUILTIN_MODULES = ("mmsurv.models.snn", "mmsurv.models.abmil", "mmsurv.models.mcat")


@dataclass(frozen=True)
class ModelInputs:
    """Input sizes a model is built for (known once the fold's data is prepared)."""

    omic_dim: int = 0
    group_sizes: list[int] = field(default_factory=list)
    path_dim: int = 1024
    n_bins: int = 4


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., SurvivalModel]
    model_class: type[SurvivalModel]

    @property
    def modality(self) -> str:
        return self.model_class.modality

    def parameters(self) -> dict[str, object]:
        """Overridable hyper-parameters and their defaults (the class's keyword arguments)."""
        fixed = {"self", "omic_dim", "group_sizes", "path_dim", "n_bins"}
        signature = inspect.signature(self.model_class.__init__)
        return {name: p.default for name, p in signature.parameters.items()
                if name not in fixed and p.default is not p.empty}


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, model_class: type[SurvivalModel]):
    """Decorator registering a builder for ``model_class`` under ``name``."""

    def decorate(builder: Callable[..., SurvivalModel]) -> Callable[..., SurvivalModel]:
        if name in _MODELS and _MODELS[name].builder is not builder:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = ModelSpec(name=name, builder=builder, model_class=model_class)
        return builder

    return decorate


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def available_models() -> list[str]:
    _load_builtins()
    return sorted(_MODELS)


def model_spec(name: str) -> ModelSpec:
    _load_builtins()
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (available: {', '.join(sorted(_MODELS))})") from None


def build_model(name: str, inputs: ModelInputs, params: dict | None = None) -> SurvivalModel:
    """Build model ``name`` for ``inputs`` with hyper-parameter overrides ``params``."""
    spec = model_spec(name)
    params = dict(params or {})
    accepted = spec.parameters()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r}: unknown parameter(s) {', '.join(unknown)} "
                         f"(accepted: {', '.join(f'{k}={v!r}' for k, v in accepted.items())})")
    return spec.builder(inputs, **params)
