"""Small pieces shared by the T5 and BERT encoders: annotated parameters, norms, activations,
masked multi-head attention.

Every parameter carries logical axis names (`out_sharding`, resolved by
`magnet_jax.train.sharding.LOGICAL_AXIS_RULES`) with eager sharding off, so a model can be
built outside a mesh and placed later with `state_shardings`.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Axes = tuple[str | None, ...]


def param(value: jax.Array | np.ndarray, axes: Axes) -> nnx.Param:
    """A parameter annotated with logical axis names (one per dimension)."""
    if len(axes) != np.ndim(value):
        raise ValueError(f"{len(axes)} axis names {axes} for a parameter of shape {np.shape(value)}")
    return nnx.Param(jnp.asarray(value), out_sharding=axes, eager_sharding=False)


def normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float) -> jax.Array:
    return std * jax.random.normal(rngs.params(), shape, jnp.float32)


def uniform(rngs: nnx.Rngs, shape: tuple[int, ...], bound: float) -> jax.Array:
    return jax.random.uniform(rngs.params(), shape, jnp.float32, -bound, bound)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """T5's layer norm: scale only, no mean subtraction, no bias (statistics in float32)."""
    x32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    return (scale * (x32 * jax.lax.rsqrt(variance + eps))).astype(x.dtype)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """BERT's layer norm: mean and variance over the last axis, then scale and bias."""
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(variance + eps) * scale + bias).astype(x.dtype)


class RMSNorm(nnx.Module):
    """`rms_norm` with its scale parameter (T5's final norm)."""

    def __init__(self, dim: int, eps: float):
        self.scale = param(jnp.ones((dim,)), ("cond_embed",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        return rms_norm(x, self.scale[...], self.eps)


class LayerNorm(nnx.Module):
    """`layer_norm` with its scale and bias parameters (BERT's embedding norm)."""

    def __init__(self, dim: int, eps: float):
        self.scale = param(jnp.ones((dim,)), ("cond_embed",))
        self.bias = param(jnp.zeros((dim,)), ("cond_embed",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        return layer_norm(x, self.scale[...], self.bias[...], self.eps)


def layer_param(value: jax.Array, axes: Axes) -> nnx.Param:
    """A parameter of every layer at once: `value` has a leading layer axis, scanned over.

    Scanning compiles one layer instead of the unrolled stack (t5-large has 24), which keeps
    each shape bucket's compile short. The layer axis has no rule of its own and stays whole.
    """
    return param(value, (None, *axes))


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),           # erf form (HF "gelu")
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),        # tanh form (T5 v1.1, flan)
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def key_padding_bias(mask: jax.Array, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """[B, S] 0/1 mask -> additive [B, 1, 1, S] bias: 0 on tokens, the dtype's minimum on pads.

    A finite minimum (not -inf) is what Hugging Face adds; a row whose mask is all zero (the
    reference passes the null condition's zeroed mask to the encoder) then gets a uniform
    softmax instead of NaN, and its output is multiplied by 0 later.
    """
    return jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(dtype).min).astype(dtype)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, bias: jax.Array) -> jax.Array:
    """softmax(q k^T + bias) v for q, k, v [B, S, H, Dh]; bias broadcasts to [B, H, S, S].

    No 1/sqrt(Dh) here: T5 folds it into its weights, BERT scales q before calling.
    """
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) + bias
    weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)
