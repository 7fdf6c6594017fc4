"""Blocked local attention equals dense attention under the band bias; sinusoid by closed form."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from magnet_jax.modules.attention import LocalBand, band_bias, band_window_attention, dot_product_attention
from magnet_jax.modules.embedding import sinusoidal_embedding


@pytest.mark.parametrize("T,context,block", [(480, 5, 32), (50, 5, 32), (7, 5, 32), (97, 3, 16), (64, 0, 8)])
def test_band_window_equals_dense_band(T, context, block):
    rng = np.random.default_rng(T)
    q, k, v = (jnp.asarray(rng.normal(size=(2, T, 3, 8)), jnp.float32) for _ in range(3))
    with jax.default_matmul_precision("highest"):
        dense = dot_product_attention(q, k, v, band_bias(T, context))
        local = band_window_attention(q, k, v, LocalBand(context, block))
    np.testing.assert_allclose(np.asarray(local), np.asarray(dense), atol=2e-6)


def test_sinusoid_closed_form():
    """phase_i = pos / 10000 ** (i / (half - 1)), [cos | sin] halves (audiocraft's layout)."""
    emb = np.asarray(sinusoidal_embedding(jnp.arange(5), 8))
    pos, i = 3, 2
    phase = pos / 10000 ** (i / 3)
    assert abs(emb[pos, i] - math.cos(phase)) < 1e-6 and abs(emb[pos, 4 + i] - math.sin(phase)) < 1e-6
    assert emb[0, :4].tolist() == [1, 1, 1, 1] and emb[0, 4:].tolist() == [0, 0, 0, 0]


def test_rotary_embedding_closed_form():
    """Hand-computed: with head dim 2 the frequency is 1, so the pair (1, 0) at position t becomes
    (cos t, sin t); scale 0 is the identity; a rotated q.k depends only on the position difference."""
    from magnet_jax.modules.embedding import rotary_embedding
    x = jnp.zeros((1, 4, 1, 2)).at[..., 0].set(1.0)
    got = np.asarray(rotary_embedding(x))[0, :, 0]
    t = np.arange(4)
    np.testing.assert_allclose(got, np.stack([np.cos(t), np.sin(t)], -1), atol=1e-6)
    np.testing.assert_allclose(np.asarray(rotary_embedding(x, scale=0.0)), np.asarray(x))

    rng = np.random.default_rng(0)
    q1, k1 = rng.normal(size=(2, 8)).astype(np.float32)
    seq = lambda v: jnp.asarray(np.tile(v, (1, 40, 1, 1)))           # same vector at every position
    q, k = np.asarray(rotary_embedding(seq(q1))), np.asarray(rotary_embedding(seq(k1)))
    dot = lambda i, j: float(q[0, i, 0] @ k[0, j, 0])
    assert abs(dot(5, 2) - dot(30, 27)) < 1e-4 and abs(dot(5, 2) - dot(5, 3)) > 1e-3


def _hand_attention(q, k, v, bias):
    """softmax(q k^T / sqrt(d) + bias) v, row by row in float64 numpy."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    out = np.zeros_like(q)
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            s = q[b, :, h] @ k[b, :, h].T / math.sqrt(q.shape[-1])
            if bias is not None:
                s = s + np.broadcast_to(np.asarray(bias, np.float64), (q.shape[0], q.shape[2], *s.shape))[b, h]
            w = np.exp(s - s.max(-1, keepdims=True))
            out[b, :, h] = (w / w.sum(-1, keepdims=True)) @ v[b, :, h]
    return out


@pytest.mark.parametrize("impl", ["einsum", "xla"])
@pytest.mark.parametrize("bias_kind", ["none", "causal", "key_padding"])
def test_each_attention_impl_equals_the_hand_computed_softmax(impl, bias_kind):
    """lm.attention_impl: ours and jax.nn.dot_product_attention's XLA path give the same
    attention, with each bias the models use (none, a causal decode over a KV cache, a row's text
    padding), against a float64 loop."""
    from magnet_jax.modules.attention import causal_bias, key_padding_bias
    kq, kk, kv = jax.random.split(jax.random.key(3), 3)
    q, k, v = (jax.random.normal(key, shape) for key, shape in
               ((kq, (2, 5, 3, 4)), (kk, (2, 7, 3, 4)), (kv, (2, 7, 3, 4))))
    bias = {"none": None, "causal": causal_bias(2, 5, 7), "key_padding": key_padding_bias(jnp.array([4, 7]), 7)}[bias_kind]
    with jax.default_matmul_precision("highest"):
        got = np.asarray(dot_product_attention(q, k, v, bias, impl))
    np.testing.assert_allclose(got, _hand_attention(q, k, v, bias), atol=2e-6)


def test_unknown_or_unavailable_attention_impl_is_a_clear_error():
    from magnet_jax.lm.config import LMConfig
    from magnet_jax.modules.attention import SelfAttention
    with pytest.raises(ValueError, match=r"attention_impl 'flash': use one of \('einsum', 'xla', 'cudnn'\)"):
        LMConfig(attention_impl="flash")
    if jax.default_backend() != "gpu":
        from flax import nnx
        with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
            SelfAttention(8, 2, depth=None, rngs=nnx.Rngs(0), impl="cudnn")


def test_cross_attention_rope_places_keys_at_the_centres_of_their_frames():
    """Hand-computed: head dim 2 (RoPE frequency 1), q = k = (1, 0), so the score of query t and
    key j is cos(t - r_j) / sqrt(2) with r_j = (j + 1/2) T / S - 1/2, the centre of the frames key
    j covers (T = 6 queries, S = 2 keys: r = 1, 4). Values are the keys' own numbers; the output
    is their softmax-weighted mean, computed here in float64 numpy."""
    from flax import nnx
    from magnet_jax.modules.attention import CrossAttention, Rope
    attn = CrossAttention(2, 1, depth=None, rngs=nnx.Rngs(0), rope=Rope())
    attn.q_proj[...] = jnp.eye(2)[:, None, :]                             # q = x
    kv = np.zeros((2, 2, 1, 2), np.float32)
    kv[0, 0, 0, 0] = 1.0                                                  # k = (c0, 0)
    kv[1, 1, 0, 0] = 1.0                                                  # v = (c1, 0)
    attn.kv_proj[...] = jnp.asarray(kv)
    attn.out_proj[...] = jnp.eye(2)[None]
    T, values = 6, np.array([2.0, -3.0])
    x = jnp.zeros((1, T, 2)).at[..., 0].set(1.0)
    cond = jnp.asarray(np.stack([np.ones(2), values], -1)[None], jnp.float32)      # [1, S=2, 2]
    with jax.default_matmul_precision("highest"):
        got = np.asarray(attn(x, attn.project_kv(cond)))[0]
    r = np.array([1.0, 4.0])
    s = np.cos(np.arange(T)[:, None] - r[None]) / math.sqrt(2)
    w = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    np.testing.assert_allclose(got[:, 0], w @ values, atol=1e-5)
    np.testing.assert_allclose(got[:, 1], 0.0, atol=1e-6)
    # without rope every query sees the same scores: the plain mean of the values
    plain = CrossAttention(2, 1, depth=None, rngs=nnx.Rngs(0))
    for name in ("q_proj", "kv_proj", "out_proj"):
        getattr(plain, name)[...] = getattr(attn, name)[...]
    np.testing.assert_allclose(np.asarray(plain(x, plain.project_kv(cond)))[0, :, 0], values.mean(), atol=1e-5)
