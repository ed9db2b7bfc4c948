"""Workflow configuration checks: every schema violation reported at once, by its key path.

Used by the Snakefile before any job runs (and usable on its own), so a misspelt key or a wrong
value stops the run with a message such as ``cohorts.blca.spltis: unexpected key``.
"""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """The configuration does not follow the schema; the message lists each bad key."""


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(part) for part in error.absolute_path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        unexpected = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        prefix = _key_path(error)
        keys = [key if prefix == "(top level)" else f"{prefix}.{key}" for key in unexpected]
        return "; ".join(f"{key}: unexpected key (misspelt, or not a setting of this version)" for key in keys)
    return f"{_key_path(error)}: {error.message}"


def config_errors(config: dict, schema: dict) -> list[str]:
    """Every violation of ``schema`` in ``config`` as ``key.path: problem`` lines, sorted."""
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(_describe(error) for error in validator.iter_errors(config))


def check_config(config: dict, schema_path: str | os.PathLike, source: str = "config") -> None:
    """Raise :class:`ConfigError` listing every problem of ``config`` against the YAML schema file."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = config_errors(config, schema)
    if errors:
        raise ConfigError(f"{source} is invalid:\n" + "\n".join(f"  - {line}" for line in errors))
