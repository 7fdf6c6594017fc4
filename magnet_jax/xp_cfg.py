"""Reading an audiocraft experiment's ``xp.cfg``: the one place that parses it.

Every audiocraft export carries ``xp.cfg``: the YAML dump of the hydra configuration its training
run was composed from (``OmegaConf.to_yaml``, interpolations left unresolved, e.g.
``sample_rate: ${sample_rate}`` in the codec's sections or ``${oc.env:USER}`` in ``dora.dir``).
The LM, codec and text converters all read their settings through ``setting``, which resolves a
plain ``${a.b}`` reference on the value it reads, and only there: a training config's other
sections may use resolvers (``${oc.env:...}``) that cannot be evaluated here and that no model
setting depends on. Why not omegaconf itself: ``OmegaConf.to_container(resolve=True)`` fails on
the first unresolvable resolver anywhere in the tree, and converting should not need the
reference's libraries beyond torch's pickle reader.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

_INTERPOLATION = re.compile(r"\$\{([^}]+)\}")
_MISSING = object()


class XpCfgError(ValueError):
    """An ``xp.cfg`` that cannot be read: not YAML, not a mapping, a broken interpolation."""


def parse(xp: str | Mapping) -> dict:
    """The YAML text of an export (or an already parsed mapping) as a nested dict."""
    if isinstance(xp, Mapping):
        return dict(xp)
    import yaml
    try:
        tree = yaml.safe_load(xp)
    except yaml.YAMLError as err:
        raise XpCfgError(f"xp.cfg is not valid YAML ({err})") from err
    if not isinstance(tree, Mapping):
        raise XpCfgError(f"xp.cfg is not a mapping (got {type(tree).__name__})")
    return dict(tree)


def _lookup(root: Mapping, dotted: str) -> Any:
    if ":" in dotted:
        raise XpCfgError(f"xp.cfg uses the resolver ${{{dotted}}} in a model setting; replace it with its value")
    node: Any = root
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise XpCfgError(f"xp.cfg interpolation ${{{dotted}}} refers to a missing key")
        node = node[part]
    return node


def resolve(node: Any, root: Mapping, depth: int = 0) -> Any:
    """``node`` with OmegaConf-style ``${a.b}`` references into ``root`` replaced by their values."""
    if depth > 20:
        raise XpCfgError("xp.cfg interpolations are circular")
    if isinstance(node, Mapping):
        return {k: resolve(v, root, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, root, depth) for v in node]
    if isinstance(node, str):
        whole = _INTERPOLATION.fullmatch(node.strip())
        if whole:
            return resolve(_lookup(root, whole.group(1)), root, depth + 1)
        return _INTERPOLATION.sub(lambda m: str(resolve(_lookup(root, m.group(1)), root, depth + 1)), node)
    return node


def has(xp: Mapping, dotted: str) -> bool:
    """Whether ``xp`` holds the key ``a.b.c`` (a null value counts as present)."""
    return _raw(xp, dotted) is not _MISSING


def setting(xp: Mapping, dotted: str, default: Any = None) -> Any:
    """The value at ``a.b.c`` with its interpolations resolved, or ``default`` when absent."""
    node = _raw(xp, dotted)
    return default if node is _MISSING else resolve(node, xp)


def _raw(xp: Mapping, dotted: str) -> Any:
    node: Any = xp
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node
