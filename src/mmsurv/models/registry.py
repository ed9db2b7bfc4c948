"""Model registry: every module of ``mmsurv/models/`` that registers a model, found automatically.

For contributors and for the workflow. Adding a model is one file with one entry::

    @register_model("mymodel", display="MyModel", citation="Doe et al., Journal 2025")
    class MyModel(SurvivalModel):
        inputs = ("path", "omic_groups")
        defaults = {"training": {"lr": 1e-4}}

        def __init__(self, *, dim: int = 256, **sizes):
            super().__init__(**sizes)
            ...

The model is built as ``MyModel(**sizes, **params)`` where ``sizes`` are the fold's input sizes
(:class:`ModelInputs`: ``n_bins``, ``path_dim``, ``omic_dim``, ``group_sizes``, ``group_names``)
and ``params`` the hyper-parameter overrides of the config (``train.models.mymodel``); overrides
are checked against the class's keyword arguments, so a typo is an error naming the accepted ones.

**Plugins.** A model may also live outside the package: a Python file that registers it, named in
``MMSURV_MODEL_PLUGINS`` (``os.pathsep``-separated files), in the workflow config's
``model_plugins`` list (exported to that variable, so every job sees it) or by ``mmsurv train
--plugin FILE``; :func:`discover` imports those files after the package's own modules.

**Variants.** A config entry ``train.models.NAME: {model: BASE, key: value, ...}`` defines a model
NAME that is BASE with those hyper-parameters (and optionally its own ``data``/``training``
settings and ``display`` name): ablations train as models of their own (:func:`resolve_model`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import pkgutil
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mmsurv.models import catalog
from mmsurv.models.catalog import (
    NOT_MODEL_MODULES,
    PLUGINS_VARIABLE,
    SIZE_ARGUMENTS,
    Catalog,
    NotStatic,
    ResolvedModel,
)
from mmsurv.models.inputs import DescribesModel

if TYPE_CHECKING:  # the contract (torch) is imported when a model registers, not with the registry
    from mmsurv.models.base import SurvivalModel


@dataclass(frozen=True)
class ModelInputs:
    """Input sizes a model is built for (known once the fold's data is prepared)."""

    omic_dim: int = 0
    group_sizes: list[int] = field(default_factory=list)
    path_dim: int = 1024
    n_bins: int = 4
    group_names: list[str] = field(default_factory=list)

    def sizes(self) -> dict:
        return {"n_bins": self.n_bins, "path_dim": self.path_dim, "omic_dim": self.omic_dim,
                "group_sizes": list(self.group_sizes), "group_names": list(self.group_names)}


@dataclass(frozen=True)
class ModelSpec(DescribesModel):
    """A registered model: its class, builder, table name and citation."""

    name: str
    builder: Callable[..., SurvivalModel]
    model_class: type[SurvivalModel]
    display_name: str = ""
    citation: str = ""
    preset: dict = field(default_factory=dict)  # the registration's own parameter values (register_model params=)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.model_class.inputs)

    @property
    def batchable(self) -> bool:
        return bool(self.model_class.batchable)

    @property
    def patch_score_kind(self) -> str | None:
        return self.model_class.patch_score_kind

    @property
    def defaults(self) -> dict[str, dict]:
        return {key: dict(value) for key, value in (self.model_class.defaults or {}).items()}

    def parameters(self) -> dict[str, object]:
        """Overridable hyper-parameters and their defaults (the class's keyword arguments)."""
        fixed = {"self", *SIZE_ARGUMENTS}
        signature = inspect.signature(self.model_class.__init__)
        defaults = {name: p.default for name, p in signature.parameters.items()
                    if name not in fixed and p.default is not p.empty}
        return {**defaults, **self.preset}


_MODELS: dict[str, ModelSpec] = {}
_DISCOVERED = False


def register_model(name: str, model_class: type[SurvivalModel] | None = None, *, display: str | None = None,
                   citation: str = "", params: Mapping | None = None):
    """Register a model under ``name``.

    As a class decorator (``@register_model("x", display=..., citation=...)``), the class is built
    with the fold's sizes and the overrides as keyword arguments. As a builder decorator
    (``@register_model("x", ModelClass)`` on ``def build(inputs, **params)``), the builder does it.
    ``params`` (literal values of the class's keyword arguments) makes the registration a preset:
    one class may be registered under several names, each a table row of its own with its own
    parameter defaults (the late-fusion rows: one class, a backbone and a fusion per name).
    """

    from mmsurv.models.base import SurvivalModel

    def decorate(target):
        if isinstance(target, type) and issubclass(target, SurvivalModel):
            cls, builder = target, _class_builder(target)
        else:
            if model_class is None:
                raise TypeError(f"register_model({name!r}): a builder function needs the model class")
            cls, builder = model_class, target
        if name in _MODELS and (_MODELS[name].model_class is not cls or _MODELS[name].preset != dict(params or {})):
            raise ValueError(f"model {name!r} is already registered (by {_MODELS[name].model_class.__module__})")
        doc = (cls.__doc__ or "").strip().splitlines()
        _MODELS[name] = ModelSpec(name=name, builder=builder, model_class=cls, display_name=display or name,
                                  citation=citation or (doc[0] if doc else ""), preset=dict(params or {}))
        return target

    return decorate


def _class_builder(cls: type[SurvivalModel]) -> Callable[..., SurvivalModel]:
    accepted = set(inspect.signature(cls.__init__).parameters)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())

    def build(inputs: ModelInputs, **params) -> SurvivalModel:
        sizes = {k: v for k, v in inputs.sizes().items() if takes_any or k in accepted}
        return cls(**sizes, **params)

    return build


def discover() -> None:
    """Import every model module of ``mmsurv.models`` once (each registers itself), then the plugins."""
    global _DISCOVERED
    if not _DISCOVERED:
        import mmsurv.models as package

        for module in pkgutil.iter_modules(package.__path__):
            if module.name in NOT_MODEL_MODULES or module.name.startswith("_"):
                continue
            importlib.import_module(f"{package.__name__}.{module.name}")
        _DISCOVERED = True
    load_plugins(path for path in os.environ.get(PLUGINS_VARIABLE, "").split(os.pathsep) if path)


def load_plugins(paths) -> None:
    """Import model plugin files (each registers its models); a file is imported once."""
    for path in paths:
        path = os.path.abspath(os.fspath(path))
        name = "mmsurv_plugin_" + hashlib.sha1(path.encode()).hexdigest()[:12]
        if name in sys.modules:
            continue
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: model plugin file not found ({PLUGINS_VARIABLE} / model_plugins)")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise


def available_models() -> list[str]:
    """Names of every registered model (not config variants)."""
    discover()
    return sorted(_MODELS)


def model_spec(name: str) -> ModelSpec:
    discover()
    try:
        return _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (available: {', '.join(sorted(_MODELS))})") from None


def build_model(name: str, inputs: ModelInputs, params: dict | None = None) -> SurvivalModel:
    """Build registered model ``name`` for ``inputs`` with hyper-parameter overrides ``params``."""
    spec = model_spec(name)
    params = dict(params or {})
    accepted = spec.parameters()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r}: unknown parameter(s) {', '.join(unknown)} "
                         f"(accepted: {', '.join(f'{k}={v!r}' for k, v in accepted.items())})")
    return spec.builder(inputs, **{**spec.preset, **params})


def known_models(plugins: Iterable[str | os.PathLike] = ()) -> Catalog:
    """Every registered model (and those of ``plugins``): read from source when every file says
    everything (no torch: the workflow's parse-time checks), else from the imported modules."""
    try:
        return catalog.read_catalog(plugins)
    except (NotStatic, SyntaxError, OSError) as reason:
        load_plugins(plugins)
        discover()
        return Catalog({name: model_spec(name) for name in available_models()}, static=False, reason=str(reason))


def resolve_model(name: str, models_config: Mapping | None = None) -> ResolvedModel:
    """Resolve ``name`` against the config's ``train.models`` section (variants included)."""
    return catalog.resolve_model(name, models_config, model_spec, available_models)


def expand_models(models: str | list[str], models_config: Mapping | None = None) -> list[str]:
    """The config's ``models`` value as names (``all``: every registered model and every variant)."""
    return catalog.expand_models(models, models_config, available_models())
