"""big_vision-style configs: a Python file with ``get_config(variant: str = "")`` returning a dict
of typed (dataclass) configs; ``path.py:variant`` selects a variant, and ``key=value`` overrides
reach into the dataclasses by dotted name (``lm.num_layers=4``, ``sampler.decoding_steps=20,10,10,10``).
"""
from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
from typing import Any


def load_config(spec: str, overrides: list[str] | None = None) -> dict[str, Any]:
    path, _, variant = spec.partition(":")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} does not exist (see configs/ for the available ones)")
    module_spec = importlib.util.spec_from_file_location(f"_magnet_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path} has no get_config(variant) function")
    config = module.get_config(variant) if variant else module.get_config()
    for item in overrides or []:
        config = apply_override(config, item)
    return config


def sections_from_json(data: dict[str, Any], types: dict[str, type]) -> dict[str, Any]:
    """Rebuild the dataclass sections a run wrote to its config.json (``dataclasses.asdict``):
    lists become tuples again; a field the JSON lacks (added to the code later) keeps its default."""
    out = {}
    for name, kind in types.items():
        if name not in data:
            raise ValueError(f"saved config has no section {name!r}")
        fields = {f.name for f in dataclasses.fields(kind)}
        out[name] = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in data[name].items() if k in fields})
    return out


def _parse(text: str, like: Any) -> Any:
    if isinstance(like, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true/false, got {text!r}")
        return text.lower() in ("true", "1")
    if isinstance(like, tuple):   # an empty default says nothing of the type: read literals
        return tuple(_parse(t, like[0]) if like else _literal(t) for t in text.split(",") if t)
    if isinstance(like, (int, float)) and not isinstance(like, bool):
        return type(like)(ast.literal_eval(text))
    if like is None:              # an optional field left unset: read a literal (a number, None)
        return _literal(text)
    return text


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_override(config: dict[str, Any], item: str) -> dict[str, Any]:
    """Return config with one ``dotted.key=value`` applied (values parsed like the current one)."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value (e.g. lm.num_layers=4)")
    key, value = item.split("=", 1)
    head, *rest = key.split(".")
    if head not in config:
        raise KeyError(f"override {item!r}: no config entry {head!r} (have {sorted(config)})")
    config = dict(config)
    if not rest:
        config[head] = _parse(value, config[head])
        return config
    node = config[head]
    if not dataclasses.is_dataclass(node) or len(rest) != 1:
        raise KeyError(f"override {item!r}: {head} is not a config with field {'.'.join(rest)!r}")
    fields = {f.name for f in dataclasses.fields(node)}
    if rest[0] not in fields:
        raise KeyError(f"override {item!r}: {head} has no field {rest[0]!r} (fields: {sorted(fields)})")
    config[head] = dataclasses.replace(node, **{rest[0]: _parse(value, getattr(node, rest[0]))})
    return config
