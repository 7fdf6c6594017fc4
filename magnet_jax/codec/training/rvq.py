"""Learning the residual vector quantizer: straight-through forward, EMA codebooks, k-means init,
dead-code replacement, quantizer dropout.

The codebooks are the model's own ``quantizer.layers.{k}.embed`` parameters (so a trained codec
is an ordinary ``Encodec``), but no optimizer touches them: as in audiocraft
(``quantization/core_vq.py``) each codebook is the ratio of two exponential moving averages kept
in the train state (``VQState``):

    cluster_size <- decay * cluster_size + (1 - decay) * counts            (vectors per code)
    embed_avg    <- decay * embed_avg    + (1 - decay) * sum of its vectors
    embed        =  embed_avg / laplace(cluster_size)   with laplace(n) = (n + eps) / (sum n + bins eps) * sum n

Statistics are sums over the global batch (in a sharded ``jit`` the sum is the all-reduce), so
every device applies the same update.

Forward (training): codebook k quantizes the residual left by codebooks 0..k-1 with the codebook
as it was before this step's update (the reference computes codes, then updates); the
commitment loss of layer k is ``mean((stop(q_k) - r_k)^2)``; the output passed to the decoder is
``x + stop(sum q_k - x)`` (straight-through, the reference's fix for RVQ + STE). Only the first
``n_active`` codebooks take part (quantizer dropout draws ``n_active ~ U{1..n_q}`` per batch);
the others neither quantize nor update.

Dead codes (EMA cluster size below ``threshold_ema_dead_code`` before the update) are replaced
by random vectors of this batch's residual for that layer. A deliberate divergence: audiocraft
writes the replacement into ``embed`` and then overwrites ``embed`` with ``embed_avg /
cluster_size`` in the same forward, so its replacement never takes effect. Here a replaced code
gets ``embed = sample``, ``embed_avg = sample * threshold`` and ``cluster_size = threshold`` (the
reset used by vector-quantize-pytorch), so it survives the next normalisation.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from magnet_jax.codec.training.config import QuantizerTrainConfig


class VQState(NamedTuple):
    cluster_size: jax.Array     # [K, bins]
    embed_avg: jax.Array        # [K, bins, D]
    inited: jax.Array           # bool scalar: codebooks initialised (k-means done or not wanted)


class ForwardStats(NamedTuple):
    codes: jax.Array            # [B, K, T] int32 (meaningful for the first n_active codebooks)
    commit: jax.Array           # scalar: mean commitment loss over the active codebooks
    counts: jax.Array           # [K, bins] vectors assigned per code (0 for inactive layers)
    embed_sum: jax.Array        # [K, bins, D] sum of the vectors assigned per code
    residuals: jax.Array        # [K, B*T, D] each layer's input (dead-code replacements come from it)


# ---------------------------------------------------------------- codebooks <-> params

def get_codebooks(params: dict) -> jax.Array:
    """The model's codebooks ``[K, bins, D]`` from its pure-dict parameters."""
    layers = params["quantizer"]["layers"]
    return jnp.stack([layers[k]["embed"] for k in sorted(layers)])


def set_codebooks(params: dict, embeds: jax.Array) -> dict:
    """A copy of ``params`` with ``quantizer.layers.{k}.embed = embeds[k]``."""
    layers = params["quantizer"]["layers"]
    new_layers = {k: {**layers[k], "embed": embeds[i].astype(layers[k]["embed"].dtype)}
                  for i, k in enumerate(sorted(layers))}
    return {**params, "quantizer": {**params["quantizer"], "layers": new_layers}}


def init_state(embeds: jax.Array, kmeans_init: bool) -> VQState:
    """Fresh EMA state with ``cluster_size = 1`` and ``embed_avg = embed``, so ``embed_avg /
    cluster_size`` is the current codebook (the reference starts from ``cluster_size = 0``, whose
    first update divides ``decay * embed`` by a near-zero size for every unused code)."""
    k, bins, _ = embeds.shape
    return VQState(jnp.ones((k, bins), jnp.float32), jnp.asarray(embeds, jnp.float32),
                   jnp.asarray(not kmeans_init))


# ---------------------------------------------------------------- forward

def nearest(x: jax.Array, embed: jax.Array) -> jax.Array:
    """Index of the nearest code for each row of ``x [N, D]`` (the reference's distance and argmax)."""
    dist = -(jnp.sum(x * x, axis=-1, keepdims=True) - 2.0 * (x @ embed.T) + jnp.sum(embed * embed, axis=-1))
    return jnp.argmax(dist, axis=-1).astype(jnp.int32)


def quantize(embeds: jax.Array, x: jax.Array, n_active: jax.Array) -> tuple[jax.Array, ForwardStats]:
    """Training forward of the RVQ on latents ``x [B, T, D]``; returns (straight-through output, stats)."""
    embeds = jax.lax.stop_gradient(embeds)
    n_q, bins, dim = embeds.shape
    batch, frames, _ = x.shape
    residual, total = x, jnp.zeros_like(x)
    codes, commits, counts, sums, inputs = [], [], [], [], []
    for k in range(n_q):
        active = (k < n_active).astype(x.dtype)
        flat = residual.reshape(-1, dim)
        idx = nearest(jax.lax.stop_gradient(flat), embeds[k])
        q = jax.lax.stop_gradient(jnp.take(embeds[k], idx, axis=0).reshape(residual.shape))
        commits.append(jnp.mean(jnp.square(q - residual)) * active)
        onehot = jax.nn.one_hot(idx, bins, dtype=jnp.float32) * active
        counts.append(jnp.sum(onehot, axis=0))
        sums.append(onehot.T @ jax.lax.stop_gradient(flat).astype(jnp.float32))
        inputs.append(jax.lax.stop_gradient(flat))
        codes.append(idx.reshape(batch, frames))
        residual = residual - q * active
        total = total + q * active
    out = x + jax.lax.stop_gradient(total - x)
    commit = sum(commits) / n_active.astype(x.dtype)
    return out, ForwardStats(jnp.stack(codes, 1), commit, jnp.stack(counts), jnp.stack(sums), jnp.stack(inputs))


# ---------------------------------------------------------------- EMA update and dead codes

def laplace_smoothing(x: jax.Array, n_categories: int, epsilon: float) -> jax.Array:
    return (x + epsilon) / (jnp.sum(x, axis=-1, keepdims=True) + n_categories * epsilon)


def sample_vectors(key: jax.Array, samples: jax.Array, num: int) -> jax.Array:
    """``num`` rows of ``samples``: without replacement when there are enough, else with (the reference's rule)."""
    n = samples.shape[0]
    if n >= num:
        idx = jax.random.permutation(key, n)[:num]
    else:
        idx = jax.random.randint(key, (num,), 0, n)
    return samples[idx]


def ema_update(embeds: jax.Array, state: VQState, stats: ForwardStats, n_active: jax.Array, key: jax.Array,
               cfg: QuantizerTrainConfig) -> tuple[jax.Array, VQState, dict]:
    """One EMA step of every active codebook, then dead-code replacement; returns (embeds, state, metrics)."""
    n_q, bins, _ = embeds.shape
    active = (jnp.arange(n_q) < n_active)[:, None]                              # [K, 1]
    expired = (state.cluster_size < cfg.threshold_ema_dead_code) & active        # before the update
    d = cfg.decay
    cluster = jnp.where(active, state.cluster_size * d + stats.counts * (1 - d), state.cluster_size)
    embed_avg = jnp.where(active[..., None], state.embed_avg * d + stats.embed_sum * (1 - d), state.embed_avg)
    smoothed = laplace_smoothing(cluster, bins, cfg.epsilon) * jnp.sum(cluster, axis=-1, keepdims=True)
    new_embeds = jnp.where(active[..., None], embed_avg / smoothed[..., None], embeds)
    if cfg.threshold_ema_dead_code > 0:
        keys = jax.random.split(key, n_q)
        samples = jax.vmap(lambda k, r: sample_vectors(k, r, bins))(keys, stats.residuals).astype(embeds.dtype)
        reset = cfg.threshold_ema_dead_code
        new_embeds = jnp.where(expired[..., None], samples, new_embeds)
        embed_avg = jnp.where(expired[..., None], samples * reset, embed_avg)
        cluster = jnp.where(expired, reset, cluster)
    probs = stats.counts / jnp.maximum(jnp.sum(stats.counts, axis=-1, keepdims=True), 1.0)
    perplexity = jnp.exp(-jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-12)), axis=-1))
    metrics = {"dead_codes": jnp.sum(expired, axis=-1), "perplexity": perplexity}
    return new_embeds, VQState(cluster, embed_avg, state.inited), metrics


# ---------------------------------------------------------------- k-means initialisation

def kmeans(samples: jax.Array, num_clusters: int, num_iters: int, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Lloyd's algorithm from ``num_clusters`` random samples (audiocraft ``kmeans``): (means, counts).

    A cluster that loses all its points keeps its previous mean, as in the reference.
    """
    samples = samples.astype(jnp.float32)
    means = sample_vectors(key, samples, num_clusters)

    def assign(means):
        idx = nearest(samples, means)
        onehot = jax.nn.one_hot(idx, num_clusters, dtype=jnp.float32)
        return onehot, jnp.sum(onehot, axis=0)

    def body(_, means):
        onehot, bins = assign(means)
        new = (onehot.T @ samples) / jnp.maximum(bins, 1.0)[:, None]
        return jnp.where((bins == 0)[:, None], means, new)

    means = jax.lax.fori_loop(0, num_iters, body, means)
    return means, assign(means)[1]


def kmeans_init(embeds: jax.Array, latents: jax.Array, key: jax.Array, cfg: QuantizerTrainConfig
                ) -> tuple[jax.Array, VQState]:
    """Initialise every codebook by k-means on its residual: codebook k clusters what codebooks
    0..k-1 (already initialised) leave of ``latents [N, D]``. ``cluster_size`` becomes the cluster
    counts, as in the reference's ``init_embed_``, and ``embed_avg`` the means times the counts
    (the reference stores the bare means, so its first EMA step divides means by counts; here
    ``embed_avg / cluster_size`` is the k-means codebook, the invariant every later step keeps)."""
    n_q, bins, _ = embeds.shape
    residual = latents.astype(jnp.float32)
    means_all, counts_all = [], []
    for k in range(n_q):
        means, counts = kmeans(residual, bins, cfg.kmeans_iters, jax.random.fold_in(key, k))
        residual = residual - means[nearest(residual, means)]
        means_all.append(means)
        counts_all.append(counts)
    means = jnp.stack(means_all).astype(embeds.dtype)
    counts = jnp.stack(counts_all)
    return means, VQState(counts, means.astype(jnp.float32) * counts[..., None], jnp.asarray(True))
