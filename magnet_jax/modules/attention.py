"""Multi-head self- and cross-attention without biases, laid out like audiocraft's custom MHA.

audiocraft packs q|k|v into one ``in_proj_weight`` [3D, D] whose rows are q, k, v, each head-major
(h d). We keep the same numbers in a layout that names every axis: self-attention ``in_proj``
[D, 3, H, Dh] (embed, qkv, heads, kv) and ``out_proj`` [H, Dh, D]. Cross-attention uses the q rows
on the sequence and the k, v rows on the text condition, so it stores ``q_proj`` [D, H, Dh] and
``kv_proj`` [D, 2, H, Dh] separately: k and v of the condition are projected once per generation,
not once per decoding step.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.modules.embedding import rotary_embedding
from magnet_jax.modules.layers import param, truncated_normal, uniform, gaussian_std


@dataclasses.dataclass(frozen=True)
class Rope:
    """Static RoPE settings of a self-attention (``LMConfig.max_period``, ``positional_scale``,
    ``rope_frequencies``: the checkpoint's own frequencies, or None to compute them)."""
    max_period: float = 10_000.0
    scale: float = 1.0
    frequencies: tuple[float, ...] | None = None


def band_bias(length: int, context: int, dtype=jnp.float32) -> jax.Array:
    """Additive attention bias [T, T]: 0 where |i - j| <= context, -inf elsewhere.

    This is MAGNeT's restricted context for stages > 0: a codebook above the first only looks
    at ``subcodes_context`` frames on each side (the reference's ``restricted_context_attn_mask``).
    """
    pos = jnp.arange(length)
    valid = jnp.abs(pos[:, None] - pos[None, :]) <= context
    return jnp.where(valid, 0.0, -jnp.inf).astype(dtype)


def causal_bias(start: int | jax.Array, n_queries: int, n_keys: int) -> jax.Array:
    """Additive bias [n_queries, n_keys]: query i (at position start + i) sees keys 0..start + i.
    With start = 0 and n_queries = n_keys it is the causal mask of a full sequence; a decoding
    step uses it over a KV cache whose later slots are not written yet."""
    visible = jnp.arange(n_keys)[None, :] <= (start + jnp.arange(n_queries))[:, None]
    return jnp.where(visible, 0.0, -jnp.inf).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class LocalBand:
    """Static marker: attend only to keys within ``context`` frames of the query.

    Used when the stage is a Python int (the sampler): queries are cut into blocks of ``block``
    frames and each block attends to its own window of ``block + 2 * context`` keys, so the
    cost is O(T * window) instead of O(T^2). Numerically it is the band-masked softmax (the
    masked-out keys have weight exactly 0 either way), up to summation order.
    """
    context: int
    block: int = 32


def band_window_attention(q: jax.Array, k: jax.Array, v: jax.Array, band: LocalBand) -> jax.Array:
    """Blocked local attention, q/k/v [B, T, H, Dh] -> [B, T, H, Dh]."""
    B, T, H, Dh = q.shape
    c, blk = band.context, min(band.block, T)
    n_blocks = -(-T // blk)
    Tp = n_blocks * blk
    window = blk + 2 * c
    q = jnp.pad(q, ((0, 0), (0, Tp - T), (0, 0), (0, 0))).reshape(B, n_blocks, blk, H, Dh)
    pad = ((0, 0), (c, Tp - T + c), (0, 0), (0, 0))
    kp, vp = jnp.pad(k, pad), jnp.pad(v, pad)
    starts = [i * blk for i in range(n_blocks)]
    kw = jnp.stack([kp[:, s:s + window] for s in starts], axis=1)   # [B, nb, W, H, Dh]
    vw = jnp.stack([vp[:, s:s + window] for s in starts], axis=1)
    # key position of window slot j for block i: i*blk + j - c; valid if in [0, T) and |dq| <= c
    qpos = np.arange(Tp).reshape(n_blocks, blk, 1)
    kpos = (np.arange(n_blocks)[:, None, None] * blk + np.arange(window)[None, None, :] - c)
    valid = (np.abs(qpos - kpos) <= c) & (kpos >= 0) & (kpos < T)
    # padding queries (past T, sliced off below) see every slot: an all -inf row would be NaN,
    # and 0 x NaN poisons the backward pass (training differentiates through this)
    valid |= qpos >= T
    bias = jnp.asarray(np.where(valid, 0.0, -np.inf), jnp.float32)  # [nb, blk, W]
    q = q * jnp.asarray(1.0 / math.sqrt(Dh), q.dtype)
    scores = jnp.einsum("bnqhd,bnkhd->bnhqk", q, kw, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(scores + bias[None, :, None], axis=-1).astype(v.dtype)
    out = jnp.einsum("bnhqk,bnkhd->bnqhd", weights, vw)
    return out.reshape(B, Tp, H, Dh)[:, :T]


def key_padding_bias(lengths: jax.Array, num_keys: int) -> jax.Array:
    """Additive bias [B, 1, 1, S] from each row's count of valid keys: 0 before it, -inf at and
    past it (the row's own text padding). Broadcasts over heads and queries in
    ``dot_product_attention``."""
    valid = jnp.arange(num_keys)[None, :] < jnp.asarray(lengths)[:, None]
    return jnp.where(valid, 0.0, -jnp.inf).astype(jnp.float32)[:, None, None, :]


ATTENTION_IMPLS = ("einsum", "xla", "cudnn")


def check_attention_impl(impl: str) -> None:
    """A clear error for an unknown implementation, or for cuDNN on a backend without it."""
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl {impl!r}: use one of {ATTENTION_IMPLS}")
    if impl == "cudnn" and jax.default_backend() != "gpu":
        raise ValueError(f"attention_impl='cudnn' needs an NVIDIA GPU (this backend is {jax.default_backend()}): "
                         "use 'xla' or 'einsum'")


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array | None = None,
                          impl: str = "einsum", kv_heads_first: bool = False) -> jax.Array:
    """softmax(q k^T / sqrt(Dh) + bias) v with q [B,T,H,Dh], k/v [B,S,H,Dh] (or [B,H,S,Dh] with
    ``kv_heads_first``: a KV cache's layout, see ``SelfAttention.decode``); softmax in float32.

    ``impl``: "einsum" is ours (q scaled before the product, as the reference does; the parity
    path and the default); "xla" and "cudnn" hand the same math to ``jax.nn.dot_product_attention``
    with that ``implementation`` (cuDNN's fused flash attention on NVIDIA GPUs, in bfloat16 or
    float16). Why not always jax's: its XLA path scales the logits after the product, which is a
    rounding away from the reference, and it is no faster on CPU (bench/bench_train.py)."""
    if impl != "einsum":
        if kv_heads_first:
            k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        return jax.nn.dot_product_attention(q, k, v, bias=None if bias is None else bias.astype(q.dtype),
                                            implementation=impl)
    kv = "bhsd" if kv_heads_first else "bshd"
    q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), q.dtype)
    scores = jnp.einsum(f"bthd,{kv}->bhts", q, k, preferred_element_type=jnp.float32)
    if bias is not None:
        scores = scores + bias
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum(f"bhts,{kv}->bthd", weights, v)


class SelfAttention(nnx.Module):
    """Self-attention with one packed q|k|v projection and no biases."""

    def __init__(self, dim: int, num_heads: int, *, depth: int | None, rngs: nnx.Rngs,
                 rope: Rope | None = None, impl: str = "einsum"):
        check_attention_impl(impl)
        head_dim = dim // num_heads
        self.rope, self.impl = rope, impl
        # audiocraft leaves in_proj at torch's Linear default (it is not an nn.Linear child).
        self.in_proj = param(rngs, uniform(1.0 / math.sqrt(dim)), (dim, 3, num_heads, head_dim),
                             ("embed", "qkv", "heads", "kv"))
        self.out_proj = param(rngs, truncated_normal(gaussian_std(dim, depth)), (num_heads, head_dim, dim),
                              ("heads", "kv", "embed"))

    def _qkv(self, x: jax.Array, offset: int | jax.Array = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
        q, k, v = jnp.einsum("btd,dchk->cbthk", x, self.in_proj[...].astype(x.dtype))
        if self.rope is not None:
            q, k = (rotary_embedding(t, self.rope.max_period, self.rope.scale, self.rope.frequencies, offset)
                    for t in (q, k))
        return q, k, v

    def __call__(self, x: jax.Array, bias: "jax.Array | LocalBand | None") -> jax.Array:
        q, k, v = self._qkv(x)
        if isinstance(bias, LocalBand):
            out = band_window_attention(q, k, v, bias)
        else:
            out = dot_product_attention(q, k, v, bias, self.impl)
        return jnp.einsum("bthk,hkd->btd", out, self.out_proj[...].astype(x.dtype))

    def decode(self, x: jax.Array, cache: tuple[jax.Array, jax.Array], start: int | jax.Array
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        """Causal self-attention of the n frames x [B, n, D] at positions start..start+n-1 over a KV
        cache (keys, values), each [B, H, S, Dh], holding the earlier frames: their keys / values
        are written into it, and each frame attends to the cache up to itself. n = 1 is one
        decoding step; a prompt is written in one call (a prefill).

        Why not ``_qkv`` and a [B, S, H, Dh] cache: with the cache laid out heads before positions
        and q|k|v projected with the frames first ("btd,dchk->btchk"), XLA:CPU reads the cache and
        the packed projection in place; the training path's layout and "cbthk" projection made it
        transpose the whole cache and the q|k|v weights at every step."""
        qkv = jnp.einsum("btd,dchk->btchk", x, self.in_proj[...].astype(x.dtype))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]           # [B, n, H, Dh]
        if self.rope is not None:
            q, k = (rotary_embedding(t, self.rope.max_period, self.rope.scale, self.rope.frequencies, start)
                    for t in (q, k))
        keys, values = (jax.lax.dynamic_update_slice_in_dim(c, t.transpose(0, 2, 1, 3).astype(c.dtype), start, axis=2)
                        for c, t in zip(cache, (k, v)))
        bias = causal_bias(start, x.shape[1], keys.shape[2])
        out = dot_product_attention(q, keys.astype(x.dtype), values.astype(x.dtype), bias, self.impl,
                                    kv_heads_first=True)
        return jnp.einsum("bthk,hkd->btd", out, self.out_proj[...].astype(x.dtype)), (keys, values)


class CrossAttention(nnx.Module):
    """Attention from the token sequence to the text condition.

    By default there is no key padding mask: padded condition positions are zero vectors that
    still take softmax mass, as in the reference, so a row's output depends on how far its batch
    padded the text. ``lengths`` [B] (ours, for serving batches of unrelated requests) gives each
    row its own count of valid keys; keys at or past it get -inf, so a row attends to exactly the
    keys it has when it is tokenized alone (padded to its own length).

    ``rope`` (ours, for MeLoDy's DPD, whose condition is a sequence in time, not a caption): the T
    queries and the S keys are rotated as if on one time axis, the queries at 0..T-1 and key j at
    the centre of the j-th of S equal parts of that span, (j + 1/2) T / S - 1/2, so attention
    sees how far a key is from a query whatever the two rates.
    """

    def __init__(self, dim: int, num_heads: int, *, depth: int | None, rngs: nnx.Rngs, impl: str = "einsum",
                 rope: Rope | None = None):
        check_attention_impl(impl)
        head_dim = dim // num_heads
        self.impl, self.rope = impl, rope
        bound = 1.0 / math.sqrt(dim)
        self.q_proj = param(rngs, uniform(bound), (dim, num_heads, head_dim), ("embed", "heads", "kv"))
        self.kv_proj = param(rngs, uniform(bound), (dim, 2, num_heads, head_dim),
                             ("embed", "qkv", "heads", "kv"))
        self.out_proj = param(rngs, truncated_normal(gaussian_std(dim, depth)), (num_heads, head_dim, dim),
                              ("heads", "kv", "embed"))

    def project_kv(self, cond: jax.Array) -> jax.Array:
        """cond [B, S, D] -> stacked keys and values [2, B, S, H, Dh]; done once per condition."""
        return jnp.einsum("bsd,dchk->cbshk", cond, self.kv_proj[...].astype(cond.dtype))

    def __call__(self, x: jax.Array, kv: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        q = jnp.einsum("btd,dhk->bthk", x, self.q_proj[...].astype(x.dtype))
        k = kv[0].astype(x.dtype)
        if self.rope is not None:
            step = x.shape[1] / kv.shape[2]
            rotate = functools.partial(rotary_embedding, max_period=self.rope.max_period, scale=self.rope.scale,
                                       frequencies=self.rope.frequencies)
            q, k = rotate(q), rotate(k, offset=(step - 1.0) / 2.0, step=step)
        bias = None if lengths is None else key_padding_bias(lengths, kv.shape[2])
        out = dot_product_attention(q, k, kv[1].astype(x.dtype), bias, self.impl)
        return jnp.einsum("bthk,hkd->btd", out, self.out_proj[...].astype(x.dtype))
