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
