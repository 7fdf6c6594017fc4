"""The pre-norm transformer MAGNeT uses, with layers stacked for ``lax.scan``.

One layer (audiocraft's ``StreamingTransformerLayer`` with norm_first=True, no biases, no dropout):

    x += SelfAttn(norm1(x), band)          # stages > 0: only +-subcodes_context frames; q, k
                                           # rotated when positional_embedding uses RoPE
    x += CrossAttn(norm_cross(x), condition)      # rows with the null condition skip this
    x += linear2(gelu_exact(linear1(norm2(x))))

The layers' parameters are stacked along a leading ``layers`` axis (created with ``nnx.vmap``)
and applied with ``lax.scan``: compile time stays flat in depth, which matters for the 48-layer
medium model inside a sampler that calls the transformer from four stages. Decoding with a KV
cache (MusicGen, one step at a time) is the exception: there the layers are unrolled, each with
its own cache buffer (``Transformer.decode``), which costs compile time (about 24 s for 48 layers
against 2 s scanned) and saves a copy of every weight at every step.

Cross-attention and CFG: the null condition is all-zero vectors, and attention has no biases, so
its keys and values are zero and its cross-attention output is exactly zero. A batch whose last
rows are null-conditioned therefore only runs cross-attention on its first ``n_cond`` rows
(``cross_kv`` carries those rows only). This is exact, not an approximation.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.lm.config import TokenLMConfig
from magnet_jax.modules.attention import CrossAttention, Rope, SelfAttention
from magnet_jax.modules.layers import LayerNorm, gaussian_std, param, truncated_normal
from magnet_jax.train.sharding import constrain


def _ffn_forward(x: jax.Array, w1: jax.Array, w2: jax.Array) -> tuple[jax.Array, jax.Array]:
    h = constrain(jnp.einsum("btd,df->btf", x, w1), "batch", "length", "act_mlp")
    return jnp.einsum("btf,fd->btd", jax.nn.gelu(h, approximate=False), w2), h


@jax.custom_vjp
def feed_forward(x: jax.Array, w1: jax.Array, w2: jax.Array) -> jax.Array:
    """linear2(gelu(linear1(x))) with exact GELU; x [B, T, D], w1 [D, F], w2 [F, D].

    The hand-written backward is the same math as autodiff's, arranged for XLA: the GELU
    derivative times the incoming gradient (dh [B, T, F]) is computed once and kept (an
    optimisation barrier) for both of its consumers (dx and dw1). Left to itself XLA:CPU
    fused the erf derivative into each consumer, once in a transposed layout (a tenth of a
    train step at dim 512)."""
    return _ffn_forward(x, w1, w2)[0]


def _ffn_fwd(x, w1, w2):
    y, h = _ffn_forward(x, w1, w2)
    return y, (x, h, w1, w2)


def _ffn_bwd(res, dy):
    x, h, w1, w2 = res
    cdf = 0.5 * (1.0 + jax.lax.erf(h * np.float32(1 / np.sqrt(2))).astype(h.dtype))   # Phi(h)
    pdf = jnp.exp(-0.5 * h * h) * np.float32(1 / np.sqrt(2 * np.pi))                 # phi(h)
    g = h * cdf                                                                        # gelu(h)
    dg = jnp.einsum("btd,fd->btf", dy, w2)
    dh = jax.lax.optimization_barrier(constrain((dg * (cdf + h * pdf)).astype(h.dtype),
                                                "batch", "length", "act_mlp"))
    dx = jnp.einsum("btf,df->btd", dh, w1)
    dw1 = jnp.einsum("btd,btf->df", x, dh)
    dw2 = jnp.einsum("btf,btd->fd", g.astype(dy.dtype), dy)
    return dx, dw1, dw2


feed_forward.defvjp(_ffn_fwd, _ffn_bwd)


class FeedForward(nnx.Module):
    """linear2(gelu(linear1(x))), exact (erf) GELU, no biases (``feed_forward``)."""

    def __init__(self, dim: int, ffn_dim: int, *, depth, rngs: nnx.Rngs):
        self.linear1 = param(rngs, truncated_normal(gaussian_std(dim, depth)), (dim, ffn_dim), ("embed", "mlp"))
        self.linear2 = param(rngs, truncated_normal(gaussian_std(ffn_dim, depth)), (ffn_dim, dim), ("mlp", "embed"))

    def __call__(self, x: jax.Array) -> jax.Array:
        return feed_forward(x, self.linear1[...].astype(x.dtype), self.linear2[...].astype(x.dtype))


class TransformerLayer(nnx.Module):
    def __init__(self, cfg: TokenLMConfig, *, depth, rngs: nnx.Rngs):
        self.norm1 = LayerNorm(cfg.dim, cfg.norm_eps)
        rope = Rope(cfg.max_period, cfg.positional_scale, cfg.rope_frequencies) if cfg.uses_rope else None
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, depth=depth, rngs=rngs, rope=rope,
                                      impl=cfg.attention_impl)
        if cfg.cross_attention:
            self.norm_cross = LayerNorm(cfg.dim, cfg.norm_eps)
            self.cross_attention = CrossAttention(cfg.dim, cfg.num_heads, depth=depth, rngs=rngs,
                                                  impl=cfg.attention_impl)
        self.norm2 = LayerNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg.dim, cfg.ffn_dim, depth=depth, rngs=rngs)

    def __call__(self, x: jax.Array, bias: jax.Array | None, cross_kv: jax.Array | None,
                 cond_lengths: jax.Array | None = None) -> jax.Array:
        x = x + self.self_attn(self.norm1(x), bias)
        return self._after_self_attention(x, cross_kv, cond_lengths)

    def decode(self, x: jax.Array, cache: tuple[jax.Array, jax.Array], start: int | jax.Array,
               cross_kv: jax.Array | None) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """The layer on frames at start.. with its self-attention KV cache (causal models)."""
        h, cache = self.self_attn.decode(self.norm1(x), cache, start)
        return self._after_self_attention(x + h, cross_kv), cache

    def _after_self_attention(self, x: jax.Array, cross_kv: jax.Array | None,
                              cond_lengths: jax.Array | None = None) -> jax.Array:
        if cross_kv is not None:
            n_cond = cross_kv.shape[1]
            h = self.cross_attention(self.norm_cross(x[:n_cond]), cross_kv, cond_lengths)
            x = x + h if n_cond == x.shape[0] else x.at[:n_cond].add(h)
        return x + self.ffn(self.norm2(x))


KVCache = tuple[tuple[jax.Array, jax.Array], ...]   # per layer: keys, values [B, H, S, Dh]


class Transformer(nnx.Module):
    """``num_layers`` TransformerLayers with stacked parameters, applied with ``lax.scan``."""

    def __init__(self, cfg: TokenLMConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg

        @nnx.split_rngs(splits=cfg.num_layers)
        @nnx.vmap(in_axes=(0, 0), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def create(rngs: nnx.Rngs, depth: jax.Array) -> TransformerLayer:
            return TransformerLayer(cfg, depth=depth, rngs=rngs)

        # audiocraft's depthwise_init='current': layer i (0-based) is initialised at depth i + 1.
        self.layers = create(rngs, jnp.arange(1, cfg.num_layers + 1, dtype=jnp.float32))

    def project_cross_kv(self, cond: jax.Array) -> jax.Array:
        """cond [B, S, D] -> every layer's cross-attention keys/values [L, 2, B, S, H, Dh]."""
        graphdef, state = nnx.split(self.layers)
        return jax.vmap(lambda s: nnx.merge(graphdef, s).cross_attention.project_kv(cond))(state)

    def __call__(self, x: jax.Array, bias: jax.Array | None, cross_kv: jax.Array | None,
                 remat: bool = False, cond_lengths: jax.Array | None = None) -> jax.Array:
        """``cond_lengths`` [n_cond]: each conditioned row's valid text positions (see
        ``CrossAttention``); None keeps audiocraft's unmasked cross-attention."""
        graphdef, state = nnx.split(self.layers)

        def body(h, layer_inputs):
            layer_state, kv = layer_inputs
            h = nnx.merge(graphdef, layer_state)(h, bias, kv, cond_lengths)
            return constrain(h, "batch", "length", "act_embed"), None

        if remat:
            body = jax.checkpoint(body)
        x, _ = jax.lax.scan(body, x, (state, cross_kv))
        return x

    def init_cache(self, batch: int, length: int) -> KVCache:
        """An empty self-attention KV cache (compute dtype) for ``decode``: per layer, keys and
        values [B, H, S, Dh] (heads before positions: the layout the attention products read)."""
        cfg = self.cfg
        shape = (batch, cfg.num_heads, length, cfg.head_dim)
        return tuple((jnp.zeros(shape, cfg.dtype), jnp.zeros(shape, cfg.dtype)) for _ in range(cfg.num_layers))

    def unstack(self) -> list[TransformerLayer]:
        """The layers as separate modules, their parameters sliced out of the stack (for a
        decoding loop: slice once, outside it; see ``MusicGenLM.decode_weights``)."""
        graphdef, state = nnx.split(self.layers)
        return [nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(self.cfg.num_layers)]

    def decode(self, x: jax.Array, cache: KVCache, start: int | jax.Array, cross_kv: jax.Array | None,
               layers: list[TransformerLayer] | None = None) -> tuple[jax.Array, KVCache]:
        """Frames x [B, n, D] at positions start.. through every layer, reading and writing the KV
        cache (``init_cache``). The layers are a Python loop, not a scan: each layer's cache is
        its own buffer, updated in place (a scan stacked them into a new [L, ...] array at every
        step). ``layers``: ``unstack()``, taken once outside a decoding loop."""
        layers = self.unstack() if layers is None else layers
        out = []
        for i, layer in enumerate(layers):
            x, c = layer.decode(x, cache[i], start, None if cross_kv is None else cross_kv[i])
            x = constrain(x, "batch", "length", "act_embed")
            out.append(c)
        return x, tuple(out)
