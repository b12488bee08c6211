"""Configuration: one JSON schema (config/schema.yaml), validated before anything runs.

The Snakefile validates with ``snakemake.utils.validate``; scripts and the CLI use
:func:`load_config`, which applies the same schema and fills in the same defaults.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import asdict, fields, is_dataclass
from pathlib import Path
from typing import Any, Mapping

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "config" / "schema.yaml"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and the fix."""


@functools.cache
def _schema() -> dict:
    """The parsed schema, read once per process (never modified: callers get copies)."""
    return read_yaml(SCHEMA_PATH.read_text())


def read_yaml(text: str):
    """``yaml.safe_load`` through libyaml when PyYAML was built with it (7x faster on the schema: every job
    reads it at start)."""
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_schema() -> dict:
    """The config schema (a fresh copy: callers may modify it)."""
    return copy.deepcopy(_schema())


def schema_default(*path: str):
    """The schema's default of the key at ``path`` (e.g. ``"hpf", "beam_width"``), lists as tuples: a
    settings dataclass takes its defaults from here, so the schema is the one place they are written."""
    node = _schema()
    for key in path:
        node = node["properties"][key]
    if "default" not in node:
        raise KeyError(f"{SCHEMA_PATH}: no default for {'.'.join(path)}")
    value = copy.deepcopy(node["default"])
    return tuple(value) if isinstance(value, list) else value


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
    cfg = read_yaml(path.read_text()) or {}
    cfg.update(overrides or {})
    return validate_config(cfg, source=str(path))


def config_json(cfg: Mapping[str, Any]) -> str:
    """Canonical JSON of a config (stable key order), as recorded next to artifacts."""
    return json.dumps(cfg, sort_keys=True, default=str)


def section(cls, mapping: Mapping[str, Any]):
    """Build the frozen dataclass ``cls`` from a validated config section (unknown keys rejected; lists
    become tuples; a field whose default is a dataclass is built from its nested mapping)."""
    by_name = {f.name: f for f in fields(cls)}
    unknown = set(mapping) - set(by_name)
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(unknown)} for {cls.__name__}; allowed: {sorted(by_name)}")
    values = {}
    for k, v in mapping.items():
        nested = by_name[k].default_factory
        if isinstance(v, Mapping) and is_dataclass(nested):
            v = section(nested, v)
        values[k] = tuple(v) if isinstance(v, list) else v
    return cls(**values)


def plain(settings) -> dict:
    """A settings dataclass as the plain JSON types of its config section (tuples as lists), e.g. for a
    checkpoint's metadata or a fingerprint."""
    return json.loads(json.dumps(asdict(settings)))
