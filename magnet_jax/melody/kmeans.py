"""k-means in JAX: the codebook that turns feature frames into MeLoDy's semantic tokens.

MeLoDy (arXiv 2305.15719, Sec. 3.1) takes its semantic tokens, like MusicLM, from k-means over the
frames of a self-supervised music model. ``kmeans_fit`` is k-means++ seeding (each next centre drawn
with probability proportional to the squared distance to the nearest chosen one) followed by Lloyd
iterations in one compiled ``lax.fori_loop``; a cluster that loses all its points keeps its
previous centre. ``kmeans_assign`` is the nearest centre by squared Euclidean distance.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _sq_dists(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """[N, K] squared distances, ||x||^2 - 2 x.c + ||c||^2 (clipped at 0)."""
    d = (jnp.sum(x * x, -1)[:, None] - 2.0 * x @ centroids.T + jnp.sum(centroids * centroids, -1)[None])
    return jnp.maximum(d, 0.0)


def kmeans_assign(x: jax.Array, centroids: jax.Array) -> jax.Array:
    """Nearest centre of every row of x [N, D] -> int32 [N]."""
    if x.ndim != 2 or centroids.ndim != 2 or x.shape[1] != centroids.shape[1]:
        raise ValueError(f"kmeans_assign needs x [N, D] and centroids [K, D], got {x.shape} and {centroids.shape}")
    return jnp.argmin(_sq_dists(x.astype(jnp.float32), centroids.astype(jnp.float32)), axis=-1).astype(jnp.int32)


def _plus_plus(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
    n = x.shape[0]
    first = x[jax.random.randint(jax.random.fold_in(key, 0), (), 0, n)]
    cents = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    d = jnp.sum(jnp.square(x - first), -1)

    def body(i, carry):
        cents, d = carry
        p = d / jnp.maximum(d.sum(), 1e-30)
        idx = jax.random.choice(jax.random.fold_in(key, i), n, p=p)
        c = x[idx]
        return cents.at[i].set(c), jnp.minimum(d, jnp.sum(jnp.square(x - c), -1))

    return jax.lax.fori_loop(1, k, body, (cents, d))[0]


def kmeans_fit(key: jax.Array, x: jax.Array, num_clusters: int, iters: int = 50) -> jax.Array:
    """Centres [K, D] (float32) of the rows of x [N, D]: k-means++ seeding, then ``iters`` Lloyd steps."""
    if x.ndim != 2:
        raise ValueError(f"k-means needs frames as rows [N, D], got shape {x.shape}")
    if not 1 <= num_clusters <= x.shape[0]:
        raise ValueError(f"num_clusters must be in [1, {x.shape[0]}] (the number of frames), got {num_clusters}")
    if iters < 0:
        raise ValueError(f"iters must be >= 0, got {iters}")
    return _fit(key, x.astype(jnp.float32), num_clusters, iters)


@jax.jit(static_argnums=(2, 3))
def _fit(key, x, k, iters):
    cents = _plus_plus(key, x, k)

    def lloyd(_, cents):
        onehot = jax.nn.one_hot(jnp.argmin(_sq_dists(x, cents), -1), k, dtype=x.dtype)   # [N, K]
        counts = onehot.sum(0)
        sums = onehot.T @ x
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], cents)

    return jax.lax.fori_loop(0, iters, lloyd, cents)
