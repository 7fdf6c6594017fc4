"""MeLoDy's dual-path diffusion (DPD) network: predicts the velocity v of a noisy VAE latent.

MeLoDy Sec. 3.3 (after dual-path RNNs for speech separation): the latent sequence [T, C] is cut
into K = T / S segments of S frames; every block runs a transformer layer *within* each segment
(local: a [B*K, S] sequence) and then *across* segments (global: frame j of every segment, a
[B*S, K] sequence). Each path is short (S or K instead of T), so attention costs O(T (S + K))
instead of O(T^2), while two hops connect any two frames.

Conditioning. The paper's abstract: the DPD incorporates the semantic information "into segments
of latents effectively via cross-attention at each denoising step". Two ways, ``conditioning``:
- ``"cross"`` (the paper's, the default): every dual-path block begins with a cross-attention from
  the latent frames to the embedded semantic tokens [B, L, D], with RoPE on both sides on one time
  axis (token l sits at the centre of the frames it covers), so each frame can find the tokens
  near it without being told the alignment;
- ``"add"`` (this project's first version; model folders and runs written before the option have
  no ``conditioning`` field and mean it): tokens aligned to the latent rate by nearest-index
  upsampling (frame t takes token floor(t * L / T)), embedded and added to every block's input.
  The tiny MeLoDy trained this way followed the key only and wrote one timbre (docs/melody.md).
Either way the noise angle delta is per frame (multi-chunk training gives chunks different
angles), embedded with a sinusoid of delta scaled to [0, 1000] and an MLP, and added to the input
of every block. Classifier-free guidance: a dropped condition uses the extra ``null`` row of the
semantic table (id ``semantic_vocab``) for every token.
Positions come from RoPE in both paths (within-segment offset, segment index).

Parameters carry logical axis names from ``magnet_jax.train.sharding``'s table (``embed``,
``heads``, ``mlp``, ``channels`` for the latent width, ``emb_vocab`` for the semantic table).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.modules.attention import CrossAttention, Rope, SelfAttention
from magnet_jax.modules.embedding import sinusoidal_embedding
from magnet_jax.modules.layers import LayerNorm, gaussian_std, param, truncated_normal
from magnet_jax.modules.transformer import FeedForward

CONDITIONINGS = ("cross", "add")       # how the semantic tokens reach the latents (module docstring)


@dataclasses.dataclass(frozen=True)
class DPDConfig:
    """Shape of a DPD network and its diffusion settings.

    latent_dim: the VAE latent width C.  segment_length: S frames per segment (T % S == 0).
    num_blocks: dual-path blocks (each = one local + one global layer).  semantic_vocab: k-means
    codebook size of the semantic tokens (id semantic_vocab is the CFG null).  num_chunks: M of
    multi-chunk velocity prediction.  cond_dropout: probability a training row's condition is
    replaced by the null (for CFG).  conditioning: ``"cross"`` or ``"add"`` (module docstring).
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
    conditioning: str = "cross"

    def __post_init__(self):
        for name in ("latent_dim", "dim", "num_heads", "ffn_dim", "num_blocks", "segment_length",
                     "semantic_vocab", "num_chunks"):
            if getattr(self, name) < 1:
                raise ValueError(f"DPDConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"DPDConfig.dim {self.dim} must split into {self.num_heads} heads of even size")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"DPDConfig.cond_dropout must be in [0, 1), got {self.cond_dropout}")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"DPDConfig.conditioning {self.conditioning!r}: use one of {CONDITIONINGS}")


# What a DPD config written before a field existed meant by its absence (config.json of a
# train-dpd run, meta.json of a model folder): the semantic tokens were added, not cross-attended.
LEGACY_DEFAULTS = {"conditioning": "add"}


def dpd_config_from_json(fields: dict) -> DPDConfig:
    """A DPDConfig from the JSON a run or a model folder saved, older ones included."""
    return DPDConfig(**{**LEGACY_DEFAULTS, **fields})


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


class SemanticCrossLayer(nnx.Module):
    """Pre-norm cross-attention of the latent frames [B, T, D] to the semantic embeddings [B, L, D],
    both rotated on one time axis (CrossAttention's ``rope``)."""

    def __init__(self, cfg: DPDConfig, *, rngs: nnx.Rngs):
        self.norm = LayerNorm(cfg.dim, cfg.norm_eps)
        self.attn = CrossAttention(cfg.dim, cfg.num_heads, depth=None, rngs=rngs, rope=Rope())

    def __call__(self, x: jax.Array, semantic: jax.Array) -> jax.Array:
        return x + self.attn(self.norm(x), self.attn.project_kv(semantic))


class DualPathBlock(nnx.Module):
    """(With ``conditioning="cross"``) every frame attends to the semantic tokens, then local
    (within-segment) and global (across-segment) modelling of [B, K, S, D]. The cross-attention
    comes first so that even the last block's paths mix what it brought in with the latents."""

    def __init__(self, cfg: DPDConfig, *, rngs: nnx.Rngs):
        self.local = PathLayer(cfg, rngs=rngs)
        self.globl = PathLayer(cfg, rngs=rngs)
        self.cross = SemanticCrossLayer(cfg, rngs=rngs) if cfg.conditioning == "cross" else None

    def __call__(self, x: jax.Array, semantic: jax.Array | None = None) -> jax.Array:
        B, K, S, D = x.shape
        if self.cross is not None:
            x = self.cross(x.reshape(B, K * S, D), semantic).reshape(B, K, S, D)
        x = self.local(x.reshape(B * K, S, D)).reshape(B, K, S, D)
        x = x.transpose(0, 2, 1, 3).reshape(B * S, K, D)
        return self.globl(x).reshape(B, S, K, D).transpose(0, 2, 1, 3)


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

    def semantic_embedding(self, semantic: jax.Array, drop: jax.Array | None) -> jax.Array:
        """[B, L] tokens -> [B, L, D]; a dropped row (CFG) takes the null row for every token."""
        if drop is not None:
            semantic = jnp.where(drop[:, None], self.cfg.semantic_vocab, semantic)
        return jnp.take(self.semantic_emb[...], semantic, axis=0)

    def condition(self, delta: jax.Array, sem: jax.Array, length: int) -> jax.Array:
        """Per-frame conditioning [B, T, D]: the angle embedding, plus (``"add"``) the semantic
        embeddings [B, L, D] aligned to the frames by nearest-index upsampling."""
        phase = sinusoidal_embedding(delta * (1000.0 / (jnp.pi / 2)), self.cfg.dim)  # [B, T, D]
        h = jax.nn.gelu(jnp.einsum("btd,de->bte", phase, self.angle_mlp1[...]), approximate=False)
        cond = jnp.einsum("bte,ed->btd", h, self.angle_mlp2[...])
        if self.cfg.conditioning == "add":
            cond = cond + sem[:, (jnp.arange(length) * sem.shape[1]) // length]
        return cond

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
        sem = self.semantic_embedding(semantic, drop)
        cond = self.condition(delta, sem, T)
        x = jnp.einsum("btc,cd->btd", x_t, self.in_proj[...])
        K, S = T // cfg.segment_length, cfg.segment_length
        cond = cond.reshape(B, K, S, cfg.dim)
        x = x.reshape(B, K, S, cfg.dim)
        for block in self.blocks:
            x = block(x + cond, sem)
        x = self.out_norm(x.reshape(B, T, cfg.dim))
        return jnp.einsum("btd,dc->btc", x, self.out_proj[...])
