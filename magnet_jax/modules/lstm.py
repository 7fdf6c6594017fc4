"""Multi-layer LSTM with a skip connection, as SEANet uses between its convs and its latent.

Why our own module: the released codecs store torch ``nn.LSTM`` weights
(``weight_ih_l{n} [4H, I]``, ``weight_hh_l{n} [4H, H]``, ``bias_ih_l{n}``, ``bias_hh_l{n}``,
gate order i, f, g, o). Each layer keeps exactly those four parameters (names without the
``_l{n}`` suffix, inside ``layers[n]``), so checkpoints map 1:1.

Speed: the input projection ``x @ W_ih^T + b_ih + b_hh`` is one large matmul over every time
step; only ``h @ W_hh^T`` stays inside the ``lax.scan`` recurrence, with the transposed
``W_hh`` formed once per call. Inputs are channels-last ``[B, T, C]``; the scan runs over time.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.modules.layers import host_random


def _param(value: jax.Array, names: tuple[str | None, ...]) -> nnx.Param:
    return nnx.Param(value, out_sharding=names, eager_sharding=False)


class LSTMLayer(nnx.Module):
    """One torch-compatible LSTM layer: ``[B, T, I] -> [B, T, H]`` from zero initial state."""

    def __init__(self, input_size: int, hidden_size: int, *, rngs: nnx.Rngs):
        bound = 1.0 / math.sqrt(hidden_size)
        def init(*shape):
            return host_random(rngs, lambda g: g.uniform(-bound, bound, shape).astype(np.float32),
                               lambda key: jax.random.uniform(key, shape, jnp.float32, -bound, bound))
        self.hidden_size = hidden_size
        self.weight_ih = _param(init(4 * hidden_size, input_size), ("channels", None))
        self.weight_hh = _param(init(4 * hidden_size, hidden_size), ("channels", None))
        self.bias_ih = _param(init(4 * hidden_size), ("channels",))
        self.bias_hh = _param(init(4 * hidden_size), ("channels",))

    def __call__(self, x: jax.Array) -> jax.Array:
        batch = x.shape[0]
        dtype = x.dtype
        inputs = x @ self.weight_ih[...].T.astype(dtype) + (self.bias_ih[...] + self.bias_hh[...]).astype(dtype)
        w_hh = self.weight_hh[...].T.astype(dtype)  # [H, 4H], formed once outside the recurrence

        def step(carry, gates_x):
            h, c = carry
            gates = gates_x + h @ w_hh
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        zeros = jnp.zeros((batch, self.hidden_size), dtype)
        _, hs = jax.lax.scan(step, (zeros, zeros), inputs.swapaxes(0, 1))
        return hs.swapaxes(0, 1)


class StreamableLSTM(nnx.Module):
    """Stacked LSTM over ``[B, T, C]`` with ``y = lstm(x) + x`` when ``skip`` (SEANet's usage)."""

    def __init__(self, dimension: int, num_layers: int = 2, *, skip: bool = True, rngs: nnx.Rngs):
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers}: an LSTM needs at least one layer")
        self.skip = skip
        self.layers = nnx.List([LSTMLayer(dimension, dimension, rngs=rngs) for _ in range(num_layers)])

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x
        for layer in self.layers:
            y = layer(y)
        return y + x if self.skip else y
