"""MeLoDy's dual-path diffusion (DPD) network: predicts the velocity v of a noisy VAE latent.

MeLoDy Sec. 3.3 (after dual-path RNNs for speech separation): the latent sequence [T, C] is cut
into K = T / S segments of S frames; every block runs a transformer layer *within* each segment
(local: a [B*K, S] sequence) and then *across* segments (global: frame j of every segment, a
[B*S, K] sequence). Each path is short (S or K instead of T), so attention costs O(T (S + K))
instead of O(T^2), while two hops connect any two frames.

Conditioning (what this implementation does). The paper's abstract says the DPD incorporates the
semantic information "into segments of latents effectively via cross-attention at each denoising
step"; here the tokens are aligned to the latent frames and added instead (a known difference:
cheaper, and on the tiny models trained here the alignment need not be learned):
- semantic tokens [B, L] (from the semantic LM) are embedded and aligned to the latent rate by
  nearest-index upsampling (frame t takes token floor(t * L / T));
- the noise angle delta is per frame (multi-chunk training gives chunks different angles), embedded
  with a sinusoid of delta scaled to [0, 1000] and an MLP;
- their sum is added to the input of every block. Classifier-free guidance: a dropped condition
  uses the extra ``null`` row of the semantic table (id ``semantic_vocab``) for all frames.
Positions come from RoPE in both paths (within-segment offset, segment index).

Parameters carry logical axis names from ``magnet_jax.train.sharding``'s table (``embed``,
``heads``, ``mlp``, ``channels`` for the latent width, ``emb_vocab`` for the semantic table).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.modules.attention import Rope, SelfAttention
from magnet_jax.modules.embedding import sinusoidal_embedding
from magnet_jax.modules.layers import LayerNorm, gaussian_std, param, truncated_normal
from magnet_jax.modules.transformer import FeedForward


@dataclasses.dataclass(frozen=True)
class DPDConfig:
    """Shape of a DPD network and its diffusion settings.

    latent_dim: the VAE latent width C.  segment_length: S frames per segment (T % S == 0).
    num_blocks: dual-path blocks (each = one local + one global layer).  semantic_vocab: k-means
    codebook size of the semantic tokens (id semantic_vocab is the CFG null).  num_chunks: M of
    multi-chunk velocity prediction.  cond_dropout: probability a training row's condition is
    replaced by the null (for CFG).
    """
    latent_dim: int = 8
    dim: int = 64
    num_heads: int = 4
    ffn_dim: int = 256
    num_blocks: int = 2
    segment_length: int = 4
    semantic_vocab: int = 16
    num_chunks: int = 4
    cond_dropout: float = 0.1
    norm_eps: float = 1e-5

    def __post_init__(self):
        for name in ("latent_dim", "dim", "num_heads", "ffn_dim", "num_blocks", "segment_length",
                     "semantic_vocab", "num_chunks"):
            if getattr(self, name) < 1:
                raise ValueError(f"DPDConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"DPDConfig.dim {self.dim} must split into {self.num_heads} heads of even size")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"DPDConfig.cond_dropout must be in [0, 1), got {self.cond_dropout}")


class PathLayer(nnx.Module):
    """One pre-norm transformer layer (self-attention with RoPE, then GELU FFN) over [N, L, D]."""

    def __init__(self, cfg: DPDConfig, *, rngs: nnx.Rngs):
        self.norm1 = LayerNorm(cfg.dim, cfg.norm_eps)
        self.self_attn = SelfAttention(cfg.dim, cfg.num_heads, depth=None, rngs=rngs, rope=Rope())
        self.norm2 = LayerNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg.dim, cfg.ffn_dim, depth=None, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.norm1(x), None)
        return x + self.ffn(self.norm2(x))


class DualPathBlock(nnx.Module):
    """Local (within-segment) then global (across-segment) modelling of [B, K, S, D]."""

    def __init__(self, cfg: DPDConfig, *, rngs: nnx.Rngs):
        self.local = PathLayer(cfg, rngs=rngs)
        self.globl = PathLayer(cfg, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        B, K, S, D = x.shape
        x = self.local(x.reshape(B * K, S, D)).reshape(B, K, S, D)
        x = x.transpose(0, 2, 1, 3).reshape(B * S, K, D)
        x = self.globl(x).reshape(B, S, K, D).transpose(0, 2, 1, 3)
        return x


class DPD(nnx.Module):
    """v_hat = DPD(x_delta, delta, semantic tokens); see the module docstring."""

    def __init__(self, cfg: DPDConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        D, C = cfg.dim, cfg.latent_dim
        self.in_proj = param(rngs, truncated_normal(gaussian_std(C)), (C, D), ("channels", "embed"))
        self.semantic_emb = param(rngs, truncated_normal(1.0), (cfg.semantic_vocab + 1, D), ("emb_vocab", "embed"))
        self.angle_mlp1 = param(rngs, truncated_normal(gaussian_std(D)), (D, D), ("embed", "mlp"))
        self.angle_mlp2 = param(rngs, truncated_normal(gaussian_std(D)), (D, D), ("mlp", "embed"))
        self.blocks = nnx.List([DualPathBlock(cfg, rngs=rngs) for _ in range(cfg.num_blocks)])
        self.out_norm = LayerNorm(D, cfg.norm_eps)
        self.out_proj = param(rngs, truncated_normal(gaussian_std(D)), (D, C), ("embed", "channels"))

    def condition(self, delta: jax.Array, semantic: jax.Array, drop: jax.Array | None, length: int) -> jax.Array:
        """Per-frame conditioning [B, T, D]: angle embedding + aligned semantic embedding."""
        B, L = semantic.shape
        if drop is not None:
            semantic = jnp.where(drop[:, None], self.cfg.semantic_vocab, semantic)
        idx = (jnp.arange(length) * L) // length                                   # nearest-index upsampling
        sem = jnp.take(self.semantic_emb[...], semantic[:, idx], axis=0)           # [B, T, D]
        phase = sinusoidal_embedding(delta * (1000.0 / (jnp.pi / 2)), self.cfg.dim)  # [B, T, D]
        h = jax.nn.gelu(jnp.einsum("btd,de->bte", phase, self.angle_mlp1[...]), approximate=False)
        return sem + jnp.einsum("bte,ed->btd", h, self.angle_mlp2[...])

    def __call__(self, x_t: jax.Array, delta: jax.Array, semantic: jax.Array,
                 drop: jax.Array | None = None) -> jax.Array:
        """x_t [B, T, C] noisy latents; delta [B, T] (or [B]) angles; semantic [B, L] int tokens in
        [0, semantic_vocab); drop [B] bool: use the null condition (CFG). Returns v_hat [B, T, C]."""
        cfg = self.cfg
        if x_t.ndim != 3 or x_t.shape[-1] != cfg.latent_dim:
            raise ValueError(f"latents must be [batch, frames, {cfg.latent_dim}], got shape {x_t.shape}")
        B, T, _ = x_t.shape
        if T % cfg.segment_length:
            raise ValueError(f"latent length {T} is not divisible by segment_length {cfg.segment_length}")
        if semantic.ndim != 2 or semantic.shape[0] != B:
            raise ValueError(f"semantic tokens must be [batch={B}, length], got shape {semantic.shape}")
        delta = jnp.asarray(delta, jnp.float32)
        if delta.ndim == 1:
            delta = jnp.broadcast_to(delta[:, None], (B, T))
        if delta.shape != (B, T):
            raise ValueError(f"angles must be [batch] or [batch, frames] = [{B}, {T}], got shape {delta.shape}")
        cond = self.condition(delta, semantic, drop, T)
        x = jnp.einsum("btc,cd->btd", x_t, self.in_proj[...])
        K, S = T // cfg.segment_length, cfg.segment_length
        cond = cond.reshape(B, K, S, cfg.dim)
        x = x.reshape(B, K, S, cfg.dim)
        for block in self.blocks:
            x = block(x + cond)
        x = self.out_norm(x.reshape(B, T, cfg.dim))
        return jnp.einsum("btd,dc->btc", x, self.out_proj[...])
