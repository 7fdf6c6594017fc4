"""MeLoDy's semantic LM: the existing MusicGen LM over one stream of semantic tokens.

MeLoDy (arXiv 2305.15719, Sec. 3.1) generates semantic tokens (k-means ids of a self-supervised
music model's frames, ``magnet_jax.melody.semantic``) with a decoder-only transformer conditioned
on the text, then hands them to the dual-path diffusion. That LM is MusicGen's with a single
codebook: ``n_q = 1``, ``delays = (0,)`` (the delay pattern degenerates to plain next-token
prediction), ``card`` = the k-means codebook size, ``frame_rate`` = the tokenizer's frame rate. So
training reuses ``musicgen_loss`` (next-token cross-entropy, CFG dropout of the text) and
generation reuses the compiled KV-cache sampler ``MusicGenSampler``; this module only maps
between token arrays [B, T] and the LM's [B, 1, T] codes.
"""
from __future__ import annotations

import jax
from flax import nnx

from magnet_jax.lm.ar_objective import ARLossOutput, musicgen_loss
from magnet_jax.lm.ar_sampler import ARSamplerConfig, MusicGenSampler
from magnet_jax.lm.musicgen import MusicGenConfig, MusicGenLM


def semantic_lm_config(num_tokens: int, *, frame_rate: int, segment_duration: float, dim: int = 512,
                       num_heads: int = 8, num_layers: int = 8, ffn_dim: int | None = None,
                       cross_attention: bool = True, positional_embedding: str = "rope") -> MusicGenConfig:
    """A one-codebook MusicGen config over ``num_tokens`` semantic tokens at ``frame_rate`` Hz."""
    if num_tokens < 2:
        raise ValueError(f"num_tokens must be >= 2 (the k-means codebook size), got {num_tokens}")
    return MusicGenConfig(dim=dim, num_heads=num_heads, num_layers=num_layers, ffn_dim=ffn_dim or 4 * dim,
                          n_q=1, card=num_tokens, delays=(0,), frame_rate=frame_rate,
                          segment_duration=segment_duration, positional_embedding=positional_embedding,
                          cross_attention=cross_attention)


def _check(cfg: MusicGenConfig) -> None:
    if cfg.n_q != 1 or cfg.delays != (0,):
        raise ValueError(f"a semantic LM has one token stream (n_q=1, delays=(0,)), got n_q={cfg.n_q}, "
                         f"delays={cfg.delays}")


def semantic_lm(cfg: MusicGenConfig, *, rngs: nnx.Rngs) -> MusicGenLM:
    _check(cfg)
    return MusicGenLM(cfg, rngs=rngs)


def semantic_loss(model: MusicGenLM, tokens: jax.Array, cond: jax.Array | None, key: jax.Array, *,
                  cfg_dropout: float = 0.1) -> ARLossOutput:
    """Next-token cross-entropy on semantic tokens [B, T] (int, in [0, card))."""
    _check(model.cfg)
    if tokens.ndim != 2:
        raise ValueError(f"semantic tokens must be [batch, frames], got shape {tokens.shape}")
    return musicgen_loss(model, tokens[:, None, :], cond, key, cfg_dropout=cfg_dropout)


def generate_semantic_tokens(sampler: MusicGenSampler, key: jax.Array, *, frames: int,
                             cond: jax.Array | None = None, prompt: jax.Array | None = None,
                             num_samples: int | None = None,
                             config: ARSamplerConfig = ARSamplerConfig()) -> jax.Array:
    """Semantic tokens [B, frames] from the compiled KV-cache sampler; ``prompt`` [B, P] tokens to
    continue, ``cond`` the projected text condition [B, S, dim] (None: unconditional)."""
    _check(sampler.cfg)
    if prompt is not None:
        if prompt.ndim != 2:
            raise ValueError(f"a semantic prompt must be [batch, frames], got shape {prompt.shape}")
        prompt = prompt[:, None, :]
    return sampler.generate(key, frames=frames, cond=cond, prompt=prompt, num_samples=num_samples,
                            config=config)[:, 0, :]
