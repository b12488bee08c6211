"""Configuration: one JSON schema (config/schema.yaml), validated before anything runs.

The Snakefile validates with ``snakemake.utils.validate``; scripts and the CLI use
:func:`load_config`, which applies the same schema and fills in the same defaults.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and the fix."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _fill_defaults(cfg: dict, schema: Mapping) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in cfg and "default" in sub:
            cfg[key] = copy.deepcopy(sub["default"])
        if isinstance(cfg.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(cfg[key], sub)


def validate_config(cfg: Mapping[str, Any], source: str = "<config>") -> dict:
    """Return a validated copy of ``cfg`` with every default filled in.

    Raises ConfigError naming the offending key path, the bad value and what the schema allows.
    """
    cfg = copy.deepcopy(dict(cfg))
    schema = load_schema()
    _fill_defaults(cfg, schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(
            f"{source}: invalid value at '{where}': {e.message}. "
            f"Fix the value in {source} (allowed values are described in {SCHEMA_PATH})."
        )
    return cfg


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> dict:
    """Read a YAML config file, apply shallow ``overrides`` and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}. Pass --configfile with an existing YAML file.")
    cfg = yaml.safe_load(path.read_text()) or {}
    cfg.update(overrides or {})
    return validate_config(cfg, source=str(path))


def config_json(cfg: Mapping[str, Any]) -> str:
    """Canonical JSON of a config (stable key order), as recorded next to artifacts."""
    return json.dumps(cfg, sort_keys=True, default=str)


def section(cls, mapping: Mapping[str, Any]):
    """Build the frozen dataclass ``cls`` from a validated config section (unknown keys rejected)."""
    names = {f.name for f in fields(cls)}
    unknown = set(mapping) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} for {cls.__name__}; allowed: {sorted(names)}")
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in mapping.items()}
    return cls(**values)


@dataclass(frozen=True)
class EvalConfig:
    """PCK protocol; every choice is written next to the numbers."""

    alphas: tuple[float, ...] = (0.05, 0.1, 0.15)
    threshold: str = "bbox"
    direction: str = "source_to_target"
    split: str = "test"
    unseen: str = "auto"
