"""Positional embeddings, exactly as audiocraft's: the sinusoid added to the input
(``create_sin_embedding``) and rotary embeddings of self-attention queries and keys
(``RotaryEmbedding``, without xPos).

Sinusoid: note the ``half - 1`` in the exponent (not ``half``): phase_i = pos / max_period **
(i / (half - 1)). The layout is [cos(phase), sin(phase)] concatenated, not interleaved.

RoPE: channel pairs are *interleaved* (2i, 2i+1), read as the complex number x_2i + j x_2i+1 and
multiplied by scale * exp(j pos / max_period ** (2i / head_dim)) + (1 - scale), so
positional_scale 0 turns it off and 1 is a pure rotation. A query-key product then depends on
positions only through their difference: the property that lets a small model copy from a fixed
offset (e.g. one pitch period earlier in the token stream).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def sinusoidal_embedding(positions: np.ndarray | jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """positions [..., T] (integers) -> embedding [..., T, dim] in float32.

    Static (numpy) positions, as every model forward has, give a table computed on the host: the
    reference's float32 phase (IEEE division, which XLA's CPU division is not: it differed from
    torch's phase by 6e-5 at position 1500) and its correctly rounded cos / sin. That matches
    audiocraft's ``create_sin_embedding`` to 1e-7 where the traced path was off by 1e-4, enough to
    flip a greedy token at real sequence lengths. Traced positions take the traced path."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    half = dim // 2
    if isinstance(positions, np.ndarray):
        exponent = np.arange(half, dtype=np.float32) / np.float32(half - 1)
        period = (np.float64(max_period) ** exponent.astype(np.float64)).astype(np.float32)
        phase = (positions.astype(np.float32)[..., None] / period).astype(np.float64)
        return jnp.asarray(np.concatenate([np.cos(phase), np.sin(phase)], axis=-1).astype(np.float32))
    i = jnp.arange(half, dtype=jnp.float32)
    phase = positions.astype(jnp.float32)[..., None] / (jnp.float32(max_period) ** (i / (half - 1)))
    return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)], axis=-1)


def rope_frequencies(head_dim: int, max_period: float = 10_000.0) -> np.ndarray:
    """RoPE's angular frequency of each channel pair: 1 / max_period ** (2i / head_dim) (float64;
    audiocraft saves these as a buffer, which the converter checks against this)."""
    return 1.0 / (max_period ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))


def rotary_embedding(x: jax.Array, max_period: float = 10_000.0, scale: float = 1.0,
                     frequencies: Sequence[float] | None = None, offset: int | float | jax.Array = 0,
                     step: float = 1.0) -> jax.Array:
    """Rotate queries or keys x [B, T, H, Dh] by their positions offset + step * (0..T-1) (computed
    in float32, returned in x's dtype; ``offset``: a decoding step's position, with a KV cache;
    ``step`` != 1: a sequence at another rate placed on the same time axis, as MeLoDy's DPD places
    semantic tokens among latent frames).
    ``frequencies``: the Dh/2 pair frequencies as a checkpoint saved them (an fp16 export rounds
    them, and audiocraft rotates with the rounded values); None computes them from ``max_period``."""
    B, T, H, Dh = x.shape
    if Dh % 2:
        raise ValueError(f"RoPE needs an even head dim, got {Dh}")
    if frequencies is None:
        frequencies = rope_frequencies(Dh, max_period)
    freqs = jnp.asarray(np.asarray(frequencies, np.float64), jnp.float32)
    positions = jnp.arange(T, dtype=jnp.float32) * step + jnp.asarray(offset, jnp.float32)
    angles = positions[:, None] * freqs                                          # [T, Dh/2]
    cos = scale * jnp.cos(angles)[None, :, None] + (1.0 - scale)
    sin = scale * jnp.sin(angles)[None, :, None]
    pairs = x.astype(jnp.float32).reshape(B, T, H, Dh // 2, 2)
    re, im = pairs[..., 0], pairs[..., 1]
    out = jnp.stack([re * cos - im * sin, re * sin + im * cos], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)
