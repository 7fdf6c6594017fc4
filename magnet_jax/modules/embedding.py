"""Sinusoidal positional embedding, exactly as audiocraft's ``create_sin_embedding``.

Note the ``half - 1`` in the exponent (not ``half``): phase_i = pos / max_period ** (i / (half - 1)).
The layout is [cos(phase), sin(phase)] concatenated, not interleaved.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sinusoidal_embedding(positions: jax.Array, dim: int, max_period: float = 10_000.0) -> jax.Array:
    """positions [..., T] (integers) -> embedding [..., T, dim] in float32."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even dim, got {dim}")
    half = dim // 2
    i = jnp.arange(half, dtype=jnp.float32)
    phase = positions.astype(jnp.float32)[..., None] / (jnp.float32(max_period) ** (i / (half - 1)))
    return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)], axis=-1)
