"""Residual vector quantizer (RVQ) inference: sequential nearest neighbour on the running residual.

Codebook ``k`` quantizes what codebooks ``0..k-1`` left over; decoding sums the chosen code
vectors. Each codebook keeps the reference's parameter name (``embed [bins, dim]``) so checkpoints
map 1:1. The distance is computed with the reference's own expansion
``-(|x|^2 - 2 x.e + |e|^2)`` and ``argmax`` (first index on ties), so codes match bit for bit
whenever the latents do. Latents are channels-last ``[B, T, dim]``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.modules.layers import host_random


class EuclideanCodebook(nnx.Module):
    """One codebook of ``bins`` vectors of size ``dim``."""

    def __init__(self, bins: int, dim: int, *, rngs: nnx.Rngs):
        embed = host_random(rngs, lambda g: g.standard_normal((bins, dim)).astype(np.float32),
                            lambda key: jax.random.normal(key, (bins, dim), jnp.float32))
        self.embed = nnx.Param(embed, out_sharding=(None, "channels"), eager_sharding=False)

    def encode(self, x: jax.Array) -> jax.Array:
        """Nearest code index for each vector of ``x [..., dim]``."""
        embed = self.embed[...].astype(x.dtype)
        dist = -(jnp.sum(x * x, axis=-1, keepdims=True) - 2.0 * (x @ embed.T)
                 + jnp.sum(embed * embed, axis=-1))
        return jnp.argmax(dist, axis=-1).astype(jnp.int32)

    def decode(self, codes: jax.Array) -> jax.Array:
        return jnp.take(self.embed[...], codes, axis=0)


class ResidualVectorQuantizer(nnx.Module):
    """``n_q`` codebooks applied to successive residuals; any leading subset can be used."""

    def __init__(self, n_q: int, bins: int, dim: int, *, rngs: nnx.Rngs):
        self.n_q, self.bins, self.dim = n_q, bins, dim
        self.layers = nnx.List([EuclideanCodebook(bins, dim, rngs=rngs) for _ in range(n_q)])

    def _check_n_q(self, n_q: int) -> None:
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q={n_q}: this quantizer has {self.n_q} codebooks; use 1..{self.n_q}")

    def encode(self, x: jax.Array, n_q: int | None = None) -> jax.Array:
        """Latent ``[B, T, dim]`` -> codes ``[B, n_q, T]`` (int32)."""
        n_q = self.n_q if n_q is None else int(n_q)
        self._check_n_q(n_q)
        residual, codes = x, []
        for layer in self.layers[:n_q]:
            idx = layer.encode(residual)
            residual = residual - layer.decode(idx).astype(residual.dtype)
            codes.append(idx)
        return jnp.stack(codes, axis=1)

    def decode(self, codes: jax.Array) -> jax.Array:
        """Codes ``[B, K, T]`` with ``K <= n_q`` -> latent ``[B, T, dim]`` (sum of code vectors)."""
        self._check_n_q(codes.shape[1])
        out = self.layers[0].decode(codes[:, 0])
        for k in range(1, codes.shape[1]):
            out = out + self.layers[k].decode(codes[:, k])
        return out
