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
