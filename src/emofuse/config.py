"""Typed configuration: every component owns a pydantic ``Config`` with ``extra="forbid"``.

A typo in a config is an error that names the key and the file. ``fingerprint`` gives a stable
hash of any config, used to key the feature store.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from emofuse.errors import ConfigError, InputError


class Config(BaseModel):
    """Base class of every component config: unknown keys are errors, values are validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


C = TypeVar("C", bound=BaseModel)


def validate_config(cls: type[C], data: dict[str, Any] | None, source: str = "config") -> C:
    """Build ``cls`` from ``data``; raise :class:`ConfigError` naming each bad key and ``source``."""
    try:
        return cls.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def format_validation_error(err: ValidationError, source: str) -> str:
    """Render a pydantic error as ``source: key: problem; …`` (one clause per bad key)."""
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key {key!r}")
        else:
            parts.append(f"{key}: {e['msg']}")
    return f"{source}: " + "; ".join(parts)


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML or JSON mapping from ``path``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "config file does not exist")
    try:
        text = p.read_text(encoding="utf-8")
        data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (UnicodeDecodeError, json.JSONDecodeError, yaml.YAMLError) as err:
        raise InputError(
            p, f"not a valid {'JSON' if p.suffix == '.json' else 'YAML'} file ({err})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(p, f"expected a mapping at the top level, found {type(data).__name__}")
    return data


def load_config(cls: type[C], path: str | os.PathLike[str]) -> C:
    """Read and validate a config file; errors name the file and the key."""
    return validate_config(cls, read_config_file(path), source=os.fspath(path))


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """Turn ``["a=1", "b.c=x"]`` into ``{"a": 1, "b": {"c": "x"}}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"option {pair!r} must look like key=value")
        key, raw = pair.split("=", 1)
        value = yaml.safe_load(raw) if raw else ""
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def deep_merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``new``, nested mappings merged key by key (``base`` is changed)."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = deep_merge(dict(base[k]), v)
        else:
            base[k] = v
    return base


def merge_config(
    cls: type[C], file: str | os.PathLike[str] | None, options: list[str] | None, **extra: Any
) -> C:
    """A config from a file, then ``key=value`` options, then keyword values (highest last).

    ``None`` keywords are ignored. The file is validated alone first, so its errors name it; then the options alone.
    """
    data: dict[str, Any] = {}
    if file is not None:
        data = read_config_file(file)
        validate_config(cls, data, source=os.fspath(file))
    overrides = parse_overrides(options)
    if overrides:
        validate_config(cls, deep_merge({}, overrides), source="--option")
    merged = deep_merge(
        deep_merge(dict(data), overrides), {k: v for k, v in extra.items() if v is not None}
    )
    return validate_config(
        cls, merged, source=os.fspath(file) if file and not overrides else "configuration"
    )


def fingerprint(*parts: Any, length: int = 16) -> str:
    """Stable hex digest of JSON-serialisable parts (pydantic models are dumped first)."""
    payload = [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def config_schema_table(cls: type[BaseModel]) -> list[tuple[str, str, str, str]]:
    """``(name, type, default, description)`` rows for documentation and ``emofuse config``."""
    rows = []
    for name, field in cls.model_fields.items():
        ann = getattr(field.annotation, "__name__", None) or str(field.annotation).replace(
            "typing.", ""
        )
        default = (
            "required"
            if field.is_required()
            else json.dumps(field.get_default(call_default_factory=True), default=str)
        )
        rows.append((name, ann, default, field.description or ""))
    return rows
