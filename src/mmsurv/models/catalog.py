"""What the registry holds, known without importing torch: names, inputs, parameters, defaults.

For the workflow's parse-time checks and the command line, which must start fast. Each model
module of ``mmsurv/models/`` (and each plugin file) is read as source: a class decorated with
``@register_model("name", display=..., citation=...)`` whose ``inputs``, ``batchable`` and
``defaults`` are literals in its body (or in a base class of the same file) and whose keyword
arguments have defaults is described here without running the module. A model the source does not
fully describe (a builder function, attributes computed or inherited from another module) raises
:class:`NotStatic`, and :func:`mmsurv.models.registry.known_models` imports the modules instead
(with torch): always right, only slower; ``tests/models/test_models_catalog.py`` checks both agree
and that the built-in models are static. This module imports nothing of the registry.

Variants (``train.models.NAME: {model: BASE, ...}``) and ``models: all`` are resolved here too
(:func:`resolve_model`, :func:`expand_models`), for the registry and the catalog alike.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsurv.models.inputs import DescribesModel

MODELS_DIR = Path(__file__).resolve().parent
NOT_MODEL_MODULES = {"base", "registry", "flops", "layers", "catalog", "inputs", "survival"}
SIZE_ARGUMENTS = ("n_bins", "path_dim", "omic_dim", "group_sizes", "group_names")
CONFIG_KEYS = ("model", "data", "training", "display")
PLUGINS_VARIABLE = "MMSURV_MODEL_PLUGINS"
_BASE_DEFAULTS = {"inputs": ("omic",), "batchable": False, "defaults": {}, "patch_score_kind": None}


@dataclass(frozen=True)
class ModelEntry(DescribesModel):
    """A registered model as its source describes it (same interface as the registry's ModelSpec)."""

    name: str
    inputs: tuple[str, ...]
    batchable: bool
    defaults_literal: dict
    parameter_defaults: dict
    display_name: str
    citation: str
    source: str
    patch_score_kind: str | None = None  # what its per-patch scores are (heatmaps); None: it has none

    @property
    def defaults(self) -> dict[str, dict]:
        return {key: dict(value) for key, value in self.defaults_literal.items()}

    def parameters(self) -> dict[str, Any]:
        return dict(self.parameter_defaults)


class NotStatic(Exception):
    """The source does not describe a model completely."""


@dataclass
class SourceModule:
    """One parsed model module: its classes and the names it imports from other model modules."""

    path: Path
    classes: dict[str, ast.ClassDef]
    imports: dict[str, tuple[str, str]]  # local name → (module, name) for ``from mmsurv.models.X import Y``


class SourceIndex:
    """Every model module (and plugin) as parsed source, so a class, its bases and the attributes it
    takes from another class (``defaults = MMM.defaults``) are found across modules."""

    def __init__(self, paths: Iterable[Path]):
        self.modules: dict[str, SourceModule] = {}
        self.order: list[str] = []
        for path in paths:
            tree = ast.parse(path.read_text(), filename=str(path))
            imports = {}
            for node in tree.body:
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmsurv.models."):
                    for alias in node.names:
                        imports[alias.asname or alias.name] = (node.module.rsplit(".", 1)[1], alias.name)
            key = path.stem if path.parent == MODELS_DIR else str(path)
            self.modules[key] = SourceModule(path, {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)},
                                             imports)
            self.order.append(key)

    def find_class(self, module: str, name: str) -> tuple[str, ast.ClassDef] | None:
        source = self.modules.get(module)
        if source is None:
            return None
        if name in source.classes:
            return module, source.classes[name]
        if name in source.imports:
            other, original = source.imports[name]
            return self.find_class(other, original)
        return None

    def chain(self, module: str, node: ast.ClassDef) -> list[tuple[str, ast.ClassDef]]:
        """The class and its bases up to SurvivalModel (single inheritance, model modules only)."""
        chain = [(module, node)]
        while True:
            current_module, current = chain[-1]
            bases = [getattr(base, "id", getattr(base, "attr", None)) for base in current.bases]
            if bases == ["SurvivalModel"]:
                return chain
            found = self.find_class(current_module, bases[0]) if len(bases) == 1 else None
            if found is None:
                raise NotStatic(f"{self.modules[module].path.name}: {current.name} derives from {bases}")
            chain.append(found)

    def attributes(self, module: str, node: ast.ClassDef) -> dict[str, Any]:
        """``inputs``, ``batchable``, ``defaults`` of a class (its own values over its bases')."""
        values = dict(_BASE_DEFAULTS)
        for owner, cls in reversed(self.chain(module, node)):
            values.update(self._own_attributes(owner, cls))
        return values

    def _own_attributes(self, module: str, node: ast.ClassDef) -> dict[str, Any]:
        values = {}
        for statement in node.body:
            targets, value = [], None
            if isinstance(statement, ast.Assign):
                targets = [t.id for t in statement.targets if isinstance(t, ast.Name)]
                value = statement.value
            elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name) and statement.value:
                targets, value = [statement.target.id], statement.value
            for target in targets:
                if target in _BASE_DEFAULTS:
                    values[target] = self._value(module, value, f"{node.name}.{target}")
        return values

    def _value(self, module: str, node: ast.AST, what: str) -> Any:
        """A literal, or ``OtherClass.attribute`` of a model class (e.g. ``defaults = MMM.defaults``)."""
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr in _BASE_DEFAULTS:
            found = self.find_class(module, node.value.id)
            if found is not None:
                return self.attributes(*found)[node.attr]
        try:
            return ast.literal_eval(node)
        except ValueError:
            raise NotStatic(what) from None

    def parameters(self, module: str, node: ast.ClassDef) -> dict[str, Any]:
        for _, cls in self.chain(module, node):
            parameters = _init_parameters(cls)
            if parameters is not None:
                return parameters
        return {}

    def entries(self) -> list[ModelEntry]:
        entries = []
        for key in self.order:
            entries += self._file_entries(key, self.modules[key])
        return entries

    def _file_entries(self, key: str, source: SourceModule) -> list[ModelEntry]:
        tree = ast.parse(source.path.read_text(), filename=str(source.path))
        decorators = [d for node in ast.walk(tree) if isinstance(node, (ast.ClassDef, ast.FunctionDef))
                      for d in node.decorator_list if _registration(d)]
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", getattr(n.func, "attr", None)) == "register_model"]
        if len(calls) != len(decorators) or any(isinstance(node, ast.FunctionDef) and node.decorator_list and
                                                 any(_registration(d) for d in node.decorator_list)
                                                 for node in ast.walk(tree)):
            raise NotStatic(f"{source.path.name}: a model registered by a call or a builder function")
        entries = []
        for node in source.classes.values():
            registrations = [r for r in (_registration(d) for d in node.decorator_list) if r]
            if not registrations:
                continue
            attributes = self.attributes(key, node)
            parameters = self.parameters(key, node)
            doc = (ast.get_docstring(node) or "").strip().splitlines()
            for name, keywords in registrations:
                entries.append(ModelEntry(
                    name=name, inputs=tuple(attributes["inputs"]), batchable=bool(attributes["batchable"]),
                    defaults_literal=dict(attributes["defaults"] or {}),
                    parameter_defaults={**parameters, **(keywords.get("params") or {})},
                    display_name=keywords.get("display") or name,
                    citation=keywords.get("citation") or (doc[0] if doc else ""), source=str(source.path),
                    patch_score_kind=attributes["patch_score_kind"]))
        return entries


def _literal(node: ast.AST, what: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise NotStatic(what) from None


def _init_parameters(node: ast.ClassDef) -> dict[str, Any] | None:
    for statement in node.body:
        if isinstance(statement, ast.FunctionDef) and statement.name == "__init__":
            arguments = statement.args
            result = {}
            positional = arguments.posonlyargs + arguments.args
            for argument, default in zip(positional[len(positional) - len(arguments.defaults):], arguments.defaults):
                result[argument.arg] = _default_value(default)
            for argument, default in zip(arguments.kwonlyargs, arguments.kw_defaults):
                if default is not None:
                    result[argument.arg] = _default_value(default)
            return {k: v for k, v in result.items() if k not in SIZE_ARGUMENTS and k != "self"}
    return None


def _default_value(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)  # an expression: its text (only the names matter for checks)


def _registration(decorator: ast.AST) -> tuple[str, dict] | None:
    if not (isinstance(decorator, ast.Call) and getattr(decorator.func, "id", getattr(decorator.func, "attr", None))
            == "register_model"):
        return None
    if not decorator.args or not isinstance(decorator.args[0], ast.Constant):
        raise NotStatic("register_model without a literal name")
    if len(decorator.args) > 1:
        raise NotStatic("builder-style register_model")
    keywords = {k.arg: _literal(k.value, f"register_model {k.arg}") for k in decorator.keywords if k.arg}
    return str(decorator.args[0].value), keywords


def plugin_files(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Plugin files named in ``MMSURV_MODEL_PLUGINS`` and ``extra``."""
    named = [p for p in os.environ.get(PLUGINS_VARIABLE, "").split(os.pathsep) if p]
    return [Path(p).resolve() for p in [*named, *extra]]


def model_files(plugins: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Every model module of the package, then the plugin files."""
    own = sorted(p for p in MODELS_DIR.glob("*.py") if p.stem not in NOT_MODEL_MODULES and not p.stem.startswith("_"))
    return [*own, *plugin_files(plugins)]


# Shared by every model (their edits are covered by the training code's version, not per model).
SHARED_MODULES = {"base", "registry", "catalog", "flops", "inputs", "survival"}


def model_sources(path: str | os.PathLike, backbone_source: Callable[[str], str | os.PathLike] | None = None
                  ) -> list[Path]:
    """A model's source file and, transitively, the model modules it imports (``layers``, another
    model's blocks), without the modules shared by every model (:data:`SHARED_MODULES`): the files
    whose edit changes this model's numbers and no other model's (the train rules' inputs).
    ``backbone_source(name)`` finds the file of a model named as a ``backbone`` (late fusion: a
    registration's ``params={"backbone": ...}`` or a ``backbone="..."`` keyword default), followed
    the same way."""
    first = Path(path).resolve()
    found, queue = [first], [first]
    while queue:
        tree = ast.parse(queue.pop().read_text())
        for node in ast.walk(tree):
            names = []
            if backbone_source is not None:
                for backbone in _backbones(node):
                    other = Path(backbone_source(backbone)).resolve()
                    if other not in found:
                        found.append(other)
                        queue.append(other)
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module.startswith("mmsurv.models."):
                    names = [node.module.rsplit(".", 1)[1]]
                elif node.module == "mmsurv.models":
                    names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name.rsplit(".", 1)[1] for alias in node.names if alias.name.startswith("mmsurv.models.")]
            for name in names:
                module = MODELS_DIR / f"{name}.py"
                if name not in SHARED_MODULES and module.is_file() and module not in found:
                    found.append(module)
                    queue.append(module)
    return found


def _backbones(node: ast.AST) -> list[str]:
    """Model names a node gives as ``backbone``: a ``{"backbone": "..."}`` literal or a keyword default."""
    if isinstance(node, ast.Dict):
        return [v.value for k, v in zip(node.keys, node.values)
                if isinstance(k, ast.Constant) and k.value == "backbone"
                and isinstance(v, ast.Constant) and isinstance(v.value, str)]
    if isinstance(node, ast.arguments):
        positional = node.posonlyargs + node.args
        pairs = [*zip(positional[len(positional) - len(node.defaults):], node.defaults),
                 *zip(node.kwonlyargs, node.kw_defaults)]
        return [default.value for argument, default in pairs if argument.arg == "backbone"
                and isinstance(default, ast.Constant) and isinstance(default.value, str)]
    return []


@dataclass
class Catalog:
    """The registered models by name, read from source (``static``) or from the imported registry."""

    entries: dict[str, Any] = field(default_factory=dict)
    static: bool = True
    reason: str = ""

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str) -> Any:
        try:
            return self.entries[name]
        except KeyError:
            raise ValueError(f"unknown model {name!r} (available: {', '.join(self.names())})") from None


def read_catalog(plugins: Iterable[str | os.PathLike] = ()) -> Catalog:
    """Every registered model as its source describes it; :class:`NotStatic` (or a ``SyntaxError``,
    ``OSError``) when a file does not say everything (:func:`mmsurv.models.registry.known_models`
    then imports the modules instead)."""
    return Catalog({entry.name: entry for entry in SourceIndex(model_files(plugins)).entries()})


@dataclass(frozen=True)
class ResolvedModel:
    """A name of the config's ``models`` list: the registered model behind it and its settings."""

    name: str  # as listed (a registered name or a variant)
    spec: Any  # ModelSpec (registry) or ModelEntry (catalog)
    params: dict  # hyper-parameter overrides
    data: dict  # data overrides of this model (config)
    training: dict  # training overrides of this model (config)
    display_name: str


def resolve_model(name: str, models_config: Mapping | None, lookup: Callable[[str], Any],
                  registered: Callable[[], list[str]]) -> ResolvedModel:
    """Resolve ``name`` against the config's ``train.models`` section (variants included)."""
    section = dict((models_config or {}).get(name) or {})
    base = section.pop("model", None)
    display = section.pop("display", None)
    data = dict(section.pop("data", None) or {})
    training = dict(section.pop("training", None) or {})
    if base is None or base == name:
        spec = lookup(name)
    else:
        if name in registered():
            raise ValueError(f"train.models.{name}: a variant cannot take the name of registered model {name!r}")
        try:
            spec = lookup(base)
        except ValueError as error:
            raise ValueError(f"train.models.{name}.model: {error}") from None
    unknown = sorted(set(section) - set(spec.parameters()))
    if unknown:
        raise ValueError(f"train.models.{name}: unknown parameter(s) {', '.join(unknown)} of model {spec.name!r} "
                         f"(accepted: {', '.join(spec.parameters())}; and {', '.join(CONFIG_KEYS)})")
    if display is None:
        display = spec.display_name if base in (None, name) else f"{spec.display_name} [{name}]"
    return ResolvedModel(name=name, spec=spec, params=section, data=data, training=training, display_name=display)


SWEEP_KEYS = ("model", "param", "values")


def sweep_variant_name(sweep: str, value: Any) -> str:
    """The variant name of one value of a sweep: ``<sweep>_<value>`` (``.`` as ``p``, ``-`` as ``m``)."""
    text = str(value).lower().replace(".", "p").replace("-", "m")
    if not text.replace("_", "").isalnum():
        raise ValueError(f"train.sweeps.{sweep}: value {value!r} cannot name a variant (letters, digits, ., -, _)")
    return f"{sweep}_{text}"


def expand_sweeps(sweeps: Mapping | None) -> dict[str, dict[str, dict]]:
    """``train.sweeps`` as variants: sweep name → {variant name: variant section}.

    ``NAME: {model: BASE, param: P, values: [v1, v2, ...]}`` (optionally ``data``/``training``
    sections shared by its variants) is one variant ``NAME_<v>`` per value, ``{model: BASE, P: v}``:
    each its own table row and its own train jobs, looked up one by one as any variant, so editing
    one value reruns only that value's jobs."""
    expanded: dict[str, dict[str, dict]] = {}
    for name, sweep in (sweeps or {}).items():
        if not isinstance(sweep, Mapping) or not all(key in sweep for key in SWEEP_KEYS):
            raise ValueError(f"train.sweeps.{name}: needs {', '.join(SWEEP_KEYS)}")
        extra = sorted(set(sweep) - {*SWEEP_KEYS, "data", "training"})
        if extra:
            raise ValueError(f"train.sweeps.{name}: unknown key(s) {', '.join(extra)}")
        values = list(sweep["values"])
        if not values:
            raise ValueError(f"train.sweeps.{name}: no values")
        shared = {key: dict(sweep[key]) for key in ("data", "training") if sweep.get(key)}
        variants = {sweep_variant_name(name, value): {"model": sweep["model"], sweep["param"]: value, **shared}
                    for value in values}
        if len(variants) != len(values):
            raise ValueError(f"train.sweeps.{name}: two values give the same variant name")
        expanded[name] = variants
    return expanded


def with_sweeps(models: str | list[str], models_config: Mapping | None, sweeps: Mapping | None
                ) -> tuple[list[str], dict]:
    """The ``models`` list with each sweep name replaced by its variants, and ``train.models`` with the
    sweeps' variants added (an explicit ``train.models`` entry of the same name wins)."""
    expanded = expand_sweeps(sweeps)
    section = {variant: body for variants in expanded.values() for variant, body in variants.items()}
    clash = sorted(set(section) & set(models_config or {}))
    section.update(models_config or {})
    names = [models] if isinstance(models, str) else list(models)
    listed = [variant for name in names for variant in (expanded[name] if name in expanded else [name])]
    if clash:
        raise ValueError(f"train.sweeps: variant name(s) {', '.join(clash)} also defined in train.models")
    return listed, section


def inherit_base_sections(models_config: Mapping | None) -> dict:
    """``train.models`` where every variant (``{model: <base>, ...}``) lies over a copy of its base
    model's own section (without ``display``): the variant differs from its base in the settings it
    names and nothing else. The workflow applies it to demo runs, so that the demo's per-model
    departures (``demo_train.models``, a demo preset's ``train.models``) reach the ablation variants
    and sweep values of a paper preset; the variant's own keys win."""
    source = models_config or {}
    out = {name: deepcopy(body) for name, body in source.items()}
    for name, body in out.items():
        base = body.get("model") if isinstance(body, Mapping) else None
        if base in (None, name) or not isinstance(source.get(base), Mapping):
            continue
        merged = {key: deepcopy(value) for key, value in source[base].items() if key not in ("display", "model")}
        _deep_update(merged, body)
        out[name] = merged
    return out


def _deep_update(target: dict, source: Mapping) -> None:
    for key, value in source.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = deepcopy(value) if isinstance(value, (dict, list)) else value


def expand_models(models: str | list[str], models_config: Mapping | None, registered: list[str]) -> list[str]:
    """The config's ``models`` value as names: ``all`` is every registered model plus every variant
    defined in ``train.models``; a list may contain ``all`` beside further names."""
    names = [models] if isinstance(models, str) else list(models)
    result: list[str] = []
    for name in names:
        if name == "all":
            variants = [key for key, value in (models_config or {}).items()
                        if isinstance(value, Mapping) and value.get("model") not in (None, key)]
            result += list(registered) + sorted(variants)
        else:
            result.append(name)
    return list(dict.fromkeys(result))
