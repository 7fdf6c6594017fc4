"""Parameters with logical axis names, LayerNorm, and the initialisers audiocraft uses.

Every parameter carries its logical axis names as ``out_sharding`` metadata; the rules table in
``magnet_jax.train.sharding`` turns them into mesh placements. Eager sharding is off so a model
can be built with or without a mesh and placed explicitly afterwards.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Initializer = Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]


def param(rngs: nnx.Rngs, init: Initializer, shape: Sequence[int],
          names: Sequence[str | None]) -> nnx.Param:
    """A float32 Param with logical axis names (one per dimension)."""
    if len(names) != len(shape):
        raise ValueError(f"{len(names)} axis names {tuple(names)} for a {len(shape)}-d shape {tuple(shape)}")
    value = init(rngs.params(), tuple(shape), jnp.float32)
    return nnx.Param(value, out_sharding=tuple(names), eager_sharding=False)


def truncated_normal(std: float) -> Initializer:
    """audiocraft's 'gaussian' init: N(0, std) truncated at +-3 std."""
    def init(key, shape, dtype):
        return std * jax.random.truncated_normal(key, -3.0, 3.0, shape, dtype)
    return init


def uniform(bound: float) -> Initializer:
    """U(-bound, bound): torch's default Linear init, which audiocraft keeps for in_proj."""
    def init(key, shape, dtype):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def gaussian_std(fan_in: int, depth: jax.Array | int | None = None) -> jax.Array | float:
    """std = 1/sqrt(fan_in), divided by sqrt(2 * depth) for depthwise ('current') init.

    ``depth`` may be a traced scalar: layers are created under ``nnx.vmap`` with their depth
    (1-based layer index) as the mapped input.
    """
    std = 1.0 / math.sqrt(fan_in)
    return std if depth is None else std / jnp.sqrt(2.0 * depth)


class LayerNorm(nnx.Module):
    """LayerNorm with scale and bias, computed in float32 whatever the compute dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        self.eps = eps
        self.weight = nnx.Param(jnp.ones((dim,), jnp.float32), out_sharding=(None,), eager_sharding=False)
        self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32), out_sharding=(None,), eager_sharding=False)

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = jnp.square(x32 - mean).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps)
        return (y * self.weight[...] + self.bias[...]).astype(x.dtype)


def host_random(rngs: nnx.Rngs, draw: Callable[[np.random.Generator], np.ndarray],
                fallback: Callable[[jax.Array], jax.Array]) -> jax.Array | np.ndarray:
    """Draw initial values on the host from a numpy generator seeded by the next params key.

    Eager ``jax.random`` compiles one small XLA program per distinct shape: a 32 kHz SEANet has
    ~55 of them, which made building a random codec take 25-55 s. numpy draws cost nothing to
    compile. Under tracing (``nnx.eval_shape`` in the converters, ``jax.jit``) the key is abstract,
    so ``fallback(key)`` draws with jax.random instead.
    """
    key = rngs.params()
    if isinstance(key, jax.core.Tracer):
        return fallback(key)
    return draw(np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist()))
