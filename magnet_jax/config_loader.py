"""big_vision-style configs: a Python file with ``get_config(variant: str = "")`` returning a dict
of typed (dataclass) configs; ``path.py:variant`` selects a variant, and ``key=value`` overrides
reach into the dataclasses by dotted name (``lm.num_layers=4``, ``sampler.decoding_steps=20,10,10,10``).

An override is parsed from the field's declared TYPE (read with ``typing.get_type_hints``), not
from its current value: ``lm.num_layers=2.5`` is refused instead of truncated to 2, an unset
``Optional[float]`` still takes only numbers or ``none``, a ``Literal`` only its listed values, and
no float field ever takes NaN or an infinity. The syntax:

    int      4, -1, 1_000              float   3e-4, 0.5, 2         bool   true/false/1/0/yes/no
    str      any text                  tuple   1,2,3 (or (1, 2, 3); empty text = ())
    Optional none / null for None, else the inner type             Literal  one of the listed values
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import importlib.util
import math
import os
import types
import typing
from typing import Any

_NONE_WORDS = ("none", "null")
_TRUE_WORDS, _FALSE_WORDS = ("true", "1", "yes"), ("false", "0", "no")


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


def is_override(token: str) -> bool:
    """Whether a command-line token is a ``key=value`` override (not an option or a path)."""
    key, eq, _ = token.partition("=")
    return bool(eq) and bool(key) and not token.startswith("-") and "/" not in key


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


def check_sections(config: dict[str, Any], types: dict[str, type], what: str) -> None:
    """Exactly these sections, each of its dataclass type (a config file's top-level dict)."""
    unknown, missing = sorted(set(config) - set(types)), sorted(set(types) - set(config))
    if unknown or missing:
        raise ValueError(f"{what} config: unknown sections {unknown}, missing sections {missing} "
                         f"(a {what} config has {list(types)})")
    for name, kind in types.items():
        if not isinstance(config[name], kind):
            raise ValueError(f"config[{name!r}] is a {type(config[name]).__name__}, expected {kind.__name__}")


def check_finite(config: Any, section: str) -> None:
    """Refuse NaN and infinities in every float (or tuple-of-float) field of a config dataclass:
    no setting of ours means anything at NaN, and a NaN compares False with every range check."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, tuple) else (value,)
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                raise ValueError(f"{section}.{f.name} must be a finite number, got {value}")


# ---------------------------------------------------------------- typed parsing

@functools.lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """The declared type of each field of a dataclass (string annotations resolved)."""
    return typing.get_type_hints(cls)


def parse_typed(text: str, kind: Any, where: str) -> Any:
    """``text`` as a value of the type ``kind`` (int, float, bool, str, tuple[...], Optional[...],
    Literal[...]); a ValueError names ``where`` (the dotted key) and the type it wanted."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return _parse_union(text, args, where)
    if origin is typing.Literal:
        return _parse_literal(text, args, where)
    if origin is tuple:
        return _parse_tuple(text, args, where)
    if kind is bool:
        return _parse_bool(text, where)
    if kind is int:
        return _parse_int(text, where)
    if kind is float:
        return _parse_float(text, where)
    if kind is str:
        return text
    return _literal(text)            # a type we do not know (Any, dict...): a Python literal


def describe(kind: Any) -> str:
    """A type as an error message names it: 'an integer', 'a tuple of numbers', ..."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [describe(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or none" if type(None) in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin is tuple:
        item = args[0] if args else Any
        plural = {"an integer": "integers", "a number": "numbers", "true/false": "true/false values",
                  "text": "texts"}.get(describe(item), "values")
        return f"a comma-separated tuple of {plural}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "text"}.get(kind, "a Python literal")


def _wanted(text: str, kind: Any, where: str) -> ValueError:
    return ValueError(f"{where} expects {describe(kind)}, got {text!r}")


def _parse_bool(text: str, where: str) -> bool:
    word = text.strip().lower()
    if word not in _TRUE_WORDS + _FALSE_WORDS:
        raise _wanted(text, bool, where)
    return word in _TRUE_WORDS


def _parse_int(text: str, where: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise _wanted(text, int, where) from None


def _parse_float(text: str, where: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise _wanted(text, float, where) from None
    if not math.isfinite(value):
        raise ValueError(f"{where} expects a finite number, got {text!r}")
    return value


def _parse_union(text: str, args: tuple, where: str) -> Any:
    optional = type(None) in args
    if optional and text.strip().lower() in _NONE_WORDS:
        return None
    inner = [a for a in args if a is not type(None)]
    for kind in inner:
        try:
            return parse_typed(text, kind, where)
        except ValueError:
            continue
    kind = typing.Union[tuple(args)] if len(args) > 1 else args[0]
    raise _wanted(text, kind, where)


def _parse_literal(text: str, choices: tuple, where: str) -> Any:
    for choice in choices:
        if str(choice) == text.strip():
            return choice
    raise _wanted(text, typing.Literal[choices], where)


def _parse_tuple(text: str, args: tuple, where: str) -> tuple:
    body = text.strip()
    if body[:1] in "([" and body[-1:] in ")]":
        body = body[1:-1]
    parts = [p.strip() for p in body.split(",") if p.strip()]
    if len(args) == 2 and args[1] is Ellipsis:
        item_types = [args[0]] * len(parts)
    elif args:
        if len(parts) != len(args):
            raise ValueError(f"{where} expects {len(args)} comma-separated values, got {text!r}")
        item_types = list(args)
    else:
        return tuple(_literal(p) for p in parts)
    out = []
    for part, kind in zip(parts, item_types):
        try:
            out.append(parse_typed(part, kind, where))
        except ValueError:
            raise ValueError(f"{where} expects {describe(tuple[args])}, got {text!r} "
                             f"({part!r} is not {describe(kind)})") from None
    return tuple(out)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse(text: str, like: Any) -> Any:
    """``text`` parsed like the example value ``like`` (for entries without a declared type,
    such as a config's top-level ``num_samples``)."""
    if like is None:              # nothing says what type: read a literal (a number, None)
        return _literal(text)
    if isinstance(like, tuple):
        return parse_typed(text, tuple[type(like[0]), ...] if like else tuple, "value")
    return parse_typed(text, type(like), "value")


# ---------------------------------------------------------------- applying an override

def apply_override(config: dict[str, Any], item: str) -> dict[str, Any]:
    """Return config with one ``dotted.key=value`` applied, the value parsed from the field's type."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value (e.g. lm.num_layers=4)")
    key, value = item.split("=", 1)
    head, *rest = key.split(".")
    if head not in config:
        raise KeyError(f"override {item!r}: no config entry {head!r} (have {sorted(config)})")
    config = dict(config)
    node = config[head]
    if not rest:
        if dataclasses.is_dataclass(node):
            raise KeyError(f"override {item!r}: {head} is a config section; set one of its fields "
                           f"({head}.FIELD=VALUE)")
        config[head] = _parse_entry(value, node, head)
        return config
    if not dataclasses.is_dataclass(node) or len(rest) != 1:
        raise KeyError(f"override {item!r}: {head} is not a config with field {'.'.join(rest)!r}")
    kinds = field_types(type(node))
    fields = {f.name for f in dataclasses.fields(node)}
    if rest[0] not in fields:
        raise KeyError(f"override {item!r}: {head} has no field {rest[0]!r} (fields: {sorted(fields)})")
    parsed = parse_typed(value, kinds[rest[0]], key)
    config[head] = dataclasses.replace(node, **{rest[0]: parsed})
    return config


def _parse_entry(text: str, like: Any, where: str) -> Any:
    """A top-level entry (no dataclass around it) parsed like its current value, named ``where``."""
    try:
        return _parse(text, like)
    except ValueError as err:
        raise ValueError(str(err).replace("value expects", f"{where} expects", 1)) from None
