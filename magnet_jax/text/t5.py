"""The T5 encoder in Flax NNX: original T5 (ReLU FFN) and v1.1 / flan-T5 (gated GELU).

Released MAGNeT checkpoints condition on the last hidden state of t5-base (music) or t5-large
(audio). The architecture, as Hugging Face's `T5EncoderModel` computes it:

    h = shared_embedding[ids]
    for each block:  h += Attn(RMSNorm(h)) ;  h += FFN(RMSNorm(h))
    out = RMSNorm(h)

- attention has no 1/sqrt(d) scale (folded into the weights at training time) and adds a
  learned bias per head indexed by a *relative position bucket*; only block 0 owns the bias
  table and every block reuses it.
- FFN: `wo(act(wi(x)))` for T5, `wo(act(wi_0(x)) * wi_1(x))` for the gated v1.1 / flan family.
- RMSNorm (T5's "layer norm") scales only; no mean, no bias.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.text.files import (check_all_used, load_weights, read_json,
                                   resolve_model_folder, take)
from magnet_jax.text.layers import (RMSNorm, activation, attend, key_padding_bias, layer_param,
                                    normal, param, rms_norm)


@dataclass(frozen=True)
class T5Config:
    """The encoder-relevant fields of a Hugging Face T5 config.json."""
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"

    @property
    def is_gated(self) -> bool:
        return self.feed_forward_proj.split("-")[0] == "gated"

    @property
    def act(self) -> str:
        # "gated-gelu" means the tanh GELU for backward compatibility (as in transformers).
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    @classmethod
    def from_json(cls, cfg: dict) -> "T5Config":
        parts = cfg.get("feed_forward_proj", "relu").split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(f"feed_forward_proj {cfg['feed_forward_proj']!r} is not 'ACT' or 'gated-ACT'")
        fields = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads",
                  "relative_attention_num_buckets", "relative_attention_max_distance",
                  "layer_norm_epsilon", "feed_forward_proj")
        missing = [f for f in fields[:6] if f not in cfg]
        if missing:
            raise ValueError(f"config.json lacks T5 fields {missing}; is this a T5 folder?")
        return cls(**{f: cfg[f] for f in fields if f in cfg})


def relative_position_bucket(relative_position: np.ndarray, num_buckets: int,
                             max_distance: int) -> np.ndarray:
    """T5's bidirectional bucketing of `key_pos - query_pos` (Mesh TensorFlow's scheme).

    Half the buckets hold the sign; within a half, distances below `num_buckets // 4` get a
    bucket each and larger ones share log-spaced buckets up to `max_distance`. Computed on the
    host in float32 exactly as transformers does, so boundary distances (e.g. 64 with 32 buckets)
    round the same way.
    """
    half = num_buckets // 2
    buckets = (relative_position > 0).astype(np.int64) * half
    distance = np.abs(relative_position)
    max_exact = half // 2
    with np.errstate(divide="ignore"):
        scaled = (np.log(distance.astype(np.float32) / np.float32(max_exact))
                  / np.float32(math.log(max_distance / max_exact))
                  * np.float32(half - max_exact))
    large = max_exact + np.where(np.isfinite(scaled), scaled, 0).astype(np.int64)
    large = np.minimum(large, half - 1)
    return buckets + np.where(distance < max_exact, distance, large)


def position_buckets(length: int, config: T5Config) -> np.ndarray:
    """[S, S] bucket index for query i, key j (static per length; a constant under jit)."""
    positions = np.arange(length)
    return relative_position_bucket(positions[None, :] - positions[:, None],
                                    config.relative_attention_num_buckets,
                                    config.relative_attention_max_distance)


class T5Blocks(nnx.Module):
    """All encoder blocks, weights stacked on a leading layer axis and run with `lax.scan`.

    Per block: `h += o(attn(q, k, v of RMSNorm(h)))`, then `h += wo(act(wi RMSNorm(h)))`
    (gated: `wo(act(wi_0 x) * wi_1 x)`). Attention kernels are [d, heads, d_kv] and o is
    [heads, d_kv, d]; there is no scale and no bias.
    """

    def __init__(self, config: T5Config, rngs: nnx.Rngs):
        n, d, h, k, f = (config.num_layers, config.d_model, config.num_heads, config.d_kv,
                         config.d_ff)
        self.eps = config.layer_norm_epsilon
        self.act = activation(config.act)
        self.is_gated = config.is_gated
        to_heads, from_heads = ("cond_embed", "heads", "kv"), ("heads", "kv", "cond_embed")
        self.attn_norm = layer_param(jnp.ones((n, d)), ("cond_embed",))
        self.q = layer_param(normal(rngs, (n, d, h, k), (d * k) ** -0.5), to_heads)
        self.k = layer_param(normal(rngs, (n, d, h, k), d ** -0.5), to_heads)
        self.v = layer_param(normal(rngs, (n, d, h, k), d ** -0.5), to_heads)
        self.o = layer_param(normal(rngs, (n, h, k, d), (h * k) ** -0.5), from_heads)
        self.ffn_norm = layer_param(jnp.ones((n, d)), ("cond_embed",))
        for name in self.ffn_in_names:
            setattr(self, name, layer_param(normal(rngs, (n, d, f), d ** -0.5), ("cond_embed", "mlp")))
        self.wo = layer_param(normal(rngs, (n, f, d), f ** -0.5), ("mlp", "cond_embed"))

    @property
    def ffn_in_names(self) -> tuple[str, ...]:
        return ("wi_0", "wi_1") if self.is_gated else ("wi",)

    def block(self, x: jax.Array, p: dict[str, jax.Array], bias: jax.Array) -> jax.Array:
        """One block with that block's weights `p` (slices of the stacked parameters)."""
        y = rms_norm(x, p["attn_norm"], self.eps)
        q, k, v = (jnp.einsum("bsd,dhk->bshk", y, p[n]) for n in ("q", "k", "v"))
        x = x + jnp.einsum("bshk,hkd->bsd", attend(q, k, v, bias), p["o"])
        y = rms_norm(x, p["ffn_norm"], self.eps)
        if self.is_gated:
            hidden = self.act(y @ p["wi_0"]) * (y @ p["wi_1"])
        else:
            hidden = self.act(y @ p["wi"])
        return x + hidden @ p["wo"]

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        names = ("attn_norm", "q", "k", "v", "o", "ffn_norm", *self.ffn_in_names, "wo")
        weights = {n: getattr(self, n)[...] for n in names}
        x, _ = jax.lax.scan(lambda h, p: (self.block(h, p, bias), None), x, weights)
        return x


class T5Encoder(nnx.Module):
    """T5 encoder stack: ids [B, S] and mask [B, S] -> last hidden state [B, S, d_model]."""

    def __init__(self, config: T5Config, rngs: nnx.Rngs):
        self.config = config
        self.shared = param(normal(rngs, (config.vocab_size, config.d_model), 1.0),
                            ("emb_vocab", "cond_embed"))
        # The bucket axis has no rule of its own; it is small and stays replicated.
        self.relative_bias = param(
            normal(rngs, (config.relative_attention_num_buckets, config.num_heads), 1.0),
            (None, "heads"))
        self.blocks = T5Blocks(config, rngs)
        self.final_norm = RMSNorm(config.d_model, config.layer_norm_epsilon)

    @property
    def width(self) -> int:
        return self.config.d_model

    def position_bias(self, length: int) -> jax.Array:
        """[1, H, S, S] learned bias for every (query, key) pair, shared by all blocks."""
        buckets = jnp.asarray(position_buckets(length, self.config))
        return jnp.transpose(self.relative_bias[...][buckets], (2, 0, 1))[None]

    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        x = jnp.take(self.shared[...], ids, axis=0)
        bias = self.position_bias(ids.shape[1]) + key_padding_bias(mask)
        return self.final_norm(self.blocks(x, bias))


def t5_from_state_dict(config: T5Config, sd: dict[str, np.ndarray]) -> T5Encoder:
    """Build a T5Encoder from a Hugging Face state dict (torch layout, numpy arrays).

    Linear weights are [out, in] in torch; q/k/v become [d, heads, d_kv] and o [heads, d_kv, d].
    Every encoder tensor must be consumed; decoder / lm_head tensors of a full T5 are ignored.
    """
    model = nnx.eval_shape(lambda: T5Encoder(config, nnx.Rngs(0)))
    used: set[str] = set()
    d, h, k, f = config.d_model, config.num_heads, config.d_kv, config.d_ff
    emb_key = "shared.weight" if "shared.weight" in sd else "encoder.embed_tokens.weight"
    model.shared.set_value(jnp.asarray(take(sd, emb_key, (config.vocab_size, d), used)))
    used.update({"shared.weight", "encoder.embed_tokens.weight"} & sd.keys())  # tied copies
    pre = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    model.relative_bias.set_value(jnp.asarray(
        take(sd, pre, (config.relative_attention_num_buckets, h), used)))
    names = {"attn_norm": ("0.layer_norm", (d,), None), "ffn_norm": ("1.layer_norm", (d,), None),
             "o": ("0.SelfAttention.o", (d, h * k), (h, k, d)),
             "wo": ("1.DenseReluDense.wo", (d, f), (f, d))}
    names.update({n: (f"0.SelfAttention.{n}", (h * k, d), (d, h, k)) for n in ("q", "k", "v")})
    names.update({n: (f"1.DenseReluDense.{n}", (f, d), (d, f)) for n in model.blocks.ffn_in_names})
    for name, (key, shape, ours) in names.items():
        # torch Linear weights are [out, in]: transpose, then split heads where needed
        per_layer = [take(sd, f"encoder.block.{i}.layer.{key}.weight", shape, used)
                     for i in range(config.num_layers)]
        per_layer = [w if ours is None else w.T.reshape(ours) for w in per_layer]
        getattr(model.blocks, name).set_value(jnp.asarray(np.stack(per_layer)))
    model.final_norm.scale.set_value(
        jnp.asarray(take(sd, "encoder.final_layer_norm.weight", (d,), used)))
    check_all_used(sd, used, ignore=("decoder.", "lm_head."))
    return model


def _is_encoder_key(key: str) -> bool:
    return key.startswith(("encoder.", "shared."))


def load_t5(name_or_path: str | os.PathLike) -> tuple[T5Encoder, Path]:
    """Load a T5 encoder from a Hugging Face folder or hub name; returns (model, folder)."""
    folder = resolve_model_folder(name_or_path)
    cfg = read_json(folder / "config.json")
    if cfg.get("model_type", "t5") not in ("t5", "mt5"):
        raise ValueError(f"{folder}/config.json has model_type {cfg.get('model_type')!r}, not a T5")
    config = T5Config.from_json(cfg)
    return t5_from_state_dict(config, load_weights(folder, keep=_is_encoder_key)), folder
