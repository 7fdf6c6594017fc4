"""What is trained and what a checkpoint holds.

``TrainModel`` = the token LM (``MagnetLM`` for an ``LMConfig``, ``MusicGenLM`` for a
``MusicGenConfig``: ``lm.convert.model_class``) plus, when text-conditioned, the ``TextConditioner``
(output_proj), trained jointly as audiocraft trains ``condition_provider``'s projection; the text
encoder itself stays frozen outside. The train state is a plain pytree of arrays:

    params      pure dict of float32 parameters ({"lm": ..., "text": ...})
    opt_state   optax state over params
    ema         EMA copy of params (absent when optim.ema_decay = 0), ema_count its ModuleDictEMA count
    step        int32, steps taken (skipped non-finite steps included)
    rng         uint32[2] base key; step keys are fold_in(rng, step), so a resumed run draws the same
    nonfinite_total / nonfinite_run   skipped steps in all / in a row

Shardings come from the parameters' logical axis names through the one rules table
(``train/sharding.py``); optimizer and EMA leaves shaped like a parameter take its sharding.
"""
from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from magnet_jax.seeds import seed_key
from magnet_jax.lm.config import TokenLMConfig
from magnet_jax.lm.convert import model_class
from magnet_jax.lm.model import CodebookLM
from magnet_jax.text.conditioner import TextConditioner
from magnet_jax.train import sharding


class TrainModel(nnx.Module):
    """The trained modules: ``lm`` and ``text`` (output_proj; None when unconditional)."""

    def __init__(self, lm: CodebookLM, text: TextConditioner | None):
        self.lm = lm
        self.text = text


def build_model(lm_cfg: TokenLMConfig, text_width: int | None, seed: int) -> TrainModel:
    """The config's family of LM (and the text projection when ``text_width``), freshly initialised."""
    rngs = nnx.Rngs(seed)
    lm = model_class(lm_cfg)(lm_cfg, rngs=rngs)
    text = TextConditioner(text_width, lm_cfg.dim, rngs) if text_width else None
    return TrainModel(lm, text)


# ---------------------------------------------------------------- shardings

def param_shardings(model: TrainModel, mesh: Mesh) -> dict:
    """NamedSharding per parameter (pure-dict tree) from the logical names."""
    return nnx.to_pure_dict(sharding.state_shardings(nnx.state(model, nnx.Param), mesh))


def _flat(tree: Any) -> dict[tuple, Any]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path): v
            for path, v in leaves}


def like_param_shardings(tree: Any, params: dict, param_sh: dict, mesh: Mesh) -> Any:
    """Shardings for an optimizer/EMA tree: a leaf whose path ends with a parameter's path and
    whose shape equals it takes that parameter's sharding; anything else (counts, scalars) is
    replicated."""
    by_path = {path: (np.shape(v), _flat(param_sh)[path]) for path, v in _flat(params).items()}
    replicated = NamedSharding(mesh, PartitionSpec())

    def pick(path, leaf):
        keys = tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)
        for start in range(len(keys)):
            hit = by_path.get(keys[start:])
            if hit is not None and tuple(hit[0]) == tuple(np.shape(leaf)):
                return hit[1]
        return replicated
    return jax.tree_util.tree_map_with_path(pick, tree)


# ---------------------------------------------------------------- freezing

_LAYER_RANGE = re.compile(r"^layers:(\d+)(?:-(\d+))?$")


def trainable_mask(params: dict, freeze: str, num_layers: int) -> dict:
    """float32 multipliers (1 = trained, 0 = frozen) broadcastable to each parameter.

    Layers are stacked on a leading ``layers`` axis, so ``layers:A-B`` freezes a slice of every
    stacked parameter with a [L, 1, ...] mask rather than whole arrays.
    """
    parts = [p.strip() for p in freeze.split(",") if p.strip()]
    top = {"emb", "linears", "out_norm"}
    layer_keep = np.ones(num_layers, np.float32)
    frozen_top, frozen_text = set(), False
    for part in parts:
        m = _LAYER_RANGE.match(part)
        if part in top:
            frozen_top.add(part)
        elif part == "text":
            frozen_text = True
        elif part == "layers":
            layer_keep[:] = 0
        elif m:
            a = int(m.group(1))
            b = int(m.group(2)) if m.group(2) is not None else a
            if not 0 <= a <= b < num_layers:
                raise ValueError(f"finetune.freeze {part!r}: the model has layers 0-{num_layers - 1}")
            layer_keep[a:b + 1] = 0
        else:
            raise ValueError(f"finetune.freeze: unknown part {part!r}; use emb, linears, out_norm, "
                             f"text, layers, layers:A-B or layers:I (comma-separated)")
    if frozen_text and "text" not in params:
        raise ValueError("finetune.freeze names 'text' but the model has no text conditioner")

    def mask(path, leaf):
        keys = [getattr(k, "key", k) for k in path]
        if keys[0] == "text":
            return np.float32(0.0 if frozen_text else 1.0)
        if keys[1] in top:
            return np.float32(0.0 if keys[1] in frozen_top else 1.0)
        # transformer/layers/...: leading axis = layers
        return layer_keep.reshape((num_layers,) + (1,) * (np.ndim(leaf) - 1))
    return jax.tree_util.tree_map_with_path(mask, params)


# ---------------------------------------------------------------- the state

def key_data(seed: int) -> jax.Array:
    """The raw uint32 data of the run's base key (traceable; stored in checkpoints)."""
    return jax.random.key_data(seed_key(seed))


def init_state(params: dict, tx, ema: bool, seed: int) -> dict:
    """A fresh train state (host or device arrays, as params are)."""
    state = {"params": params, "opt_state": tx.init(params), "step": jnp.zeros([], jnp.int32),
             "rng": jnp.asarray(key_data(seed)), "nonfinite_total": jnp.zeros([], jnp.int32),
             "nonfinite_run": jnp.zeros([], jnp.int32)}
    if ema:
        state["ema"] = jax.tree.map(jnp.copy, params)
        state["ema_count"] = jnp.zeros([], jnp.float32)
    return state


def state_shardings(abstract_state: dict, param_sh: dict, mesh: Mesh) -> dict:
    params = abstract_state["params"]
    out = {}
    for name, sub in abstract_state.items():
        out[name] = param_sh if name in ("params", "ema") else like_param_shardings(sub, params, param_sh, mesh)
    return out


def commit_if_finite(state: dict, new: dict, finite: jax.Array) -> dict:
    """``state`` with ``new``'s entries taken where the step was finite (else the old ones kept),
    the step counted, and the non-finite counters (in all / in a row) updated: the skip rule
    of every train step (LM, codec, DPD)."""
    out = dict(state)
    for name, value in new.items():
        out[name] = jax.tree.map(lambda a, b: jnp.where(finite, a, b), value, state[name])
    out["step"] = state["step"] + 1
    out["nonfinite_total"] = state["nonfinite_total"] + (~finite).astype(jnp.int32)
    out["nonfinite_run"] = jnp.where(finite, 0, state["nonfinite_run"] + 1)
    return out
