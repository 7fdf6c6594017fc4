"""MusicGen's training objective (audiocraft ``solvers/musicgen.py`` ``run_step`` on
``LMModel.compute_predictions``) as pure, jittable functions.

Codes [B, K, T] are laid out by the delay pattern up to its last fully defined step, as
``compute_predictions`` does (``keep_only_valid_steps=True``): T + 1 steps, the first all special
tokens, step s holding codebook k of frame s - 1 - delays[k] (the special token before frame 0).
So the last delays[k] frames of codebook k are never targets: the steps that would hold them are
cut off, exactly as in audiocraft. The causal LM reads steps 0..T-1; its logits at step s predict
step s + 1. Cross-entropy is taken per codebook over the targets that hold a code (the pattern's
mask) of a frame the clip has (the padding mask), then averaged over the codebooks
(``_compute_cross_entropy``). CFG dropout nulls the whole batch's text condition with one draw
per batch, as ``magnet_loss`` does (the condition arrives already projected and masked, so
nulling it is multiplying it by zero: audiocraft's null text is all zeros too).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from magnet_jax.lm.musicgen import MusicGenLM
from magnet_jax.lm.pattern import DelayPattern


class ARLossOutput(NamedTuple):
    loss: jax.Array                    # mean over codebooks of ce_per_codebook (the trained loss)
    accuracy: jax.Array                # mean over codebooks of accuracy_per_codebook
    ce_per_codebook: jax.Array         # float32 [K]
    accuracy_per_codebook: jax.Array   # float32 [K]


def valid_sequence(codes: jax.Array, pattern: DelayPattern, special: int) -> jax.Array:
    """codes [B, K, T] -> the pattern sequence [B, K, T + 1] up to its last fully defined step
    (audiocraft's ``build_pattern_sequence(..., keep_only_valid_steps=True)``)."""
    T = codes.shape[-1]
    return pattern.build(codes, T, special)[..., :T + 1]


def target_weights(pattern: DelayPattern, padding_mask: jax.Array) -> jax.Array:
    """bool [B, K, T]: whether the logits of step s (< T) have a target, i.e. step s + 1 holds a
    code of a frame the clip has. ``padding_mask`` [B, T] marks the frames a clip has.

    The padding mask is laid out by the pattern like the codes are (out-of-range frames become
    False), so one gather gives the pattern's mask and the padding mask together: audiocraft's
    ``padding_mask & model_output.mask``, in sequence order instead of frame order (the same
    positions, so the same means)."""
    B, T = padding_mask.shape
    frames = jnp.broadcast_to(padding_mask[:, None, :], (B, pattern.n_q, T)).astype(jnp.int32)
    return valid_sequence(frames, pattern, special=0)[..., 1:].astype(bool)


def codebook_cross_entropy(logits: jax.Array, targets: jax.Array, weights: jax.Array
                           ) -> tuple[jax.Array, jax.Array]:
    """Per codebook, mean cross-entropy and accuracy over the weighted positions.

    logits [B, K, T, card], targets [B, K, T], weights bool [B, K, T] -> (ce [K], accuracy [K]).
    A codebook without any target gives 0 (audiocraft's ``F.cross_entropy`` gives NaN there; it
    happens only when padding leaves a batch fewer frames than the codebook's delay)."""
    logits = logits.astype(jnp.float32)
    targets = jnp.where(weights, targets, 0).astype(jnp.int32)    # the special token has no logit
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    nll = jnp.where(weights, jax.nn.logsumexp(logits, axis=-1) - picked, 0.0)
    count = jnp.maximum(weights.sum(axis=(0, 2)).astype(jnp.float32), 1.0)
    correct = weights & (jnp.argmax(logits, axis=-1) == targets)
    return nll.sum(axis=(0, 2)) / count, correct.sum(axis=(0, 2)) / count


def musicgen_loss(model: MusicGenLM, codes: jax.Array, cond: jax.Array | None, key: jax.Array, *,
                  cfg_dropout: float = 0.3, padding_mask: jax.Array | None = None,
                  remat: bool = False) -> ARLossOutput:
    """MusicGen's next-step cross-entropy on ground-truth codes [B, K, T] under a text condition
    [B, S, D] (projected and masked; None for an unconditional LM).

    ``key`` draws the CFG dropout (one uniform for the whole batch); ``padding_mask`` [B, T]
    (None: every frame is real) keeps the frames a clip does not have out of the loss."""
    cfg = model.cfg
    B, K, T = codes.shape
    if K != cfg.n_q:
        raise ValueError(f"codes have {K} codebooks, the model expects n_q={cfg.n_q}")
    if padding_mask is None:
        padding_mask = jnp.ones((B, T), bool)
    elif padding_mask.shape != (B, T):
        raise ValueError(f"padding_mask has shape {padding_mask.shape}, expected (batch, frames) = {(B, T)}")
    sequence = valid_sequence(codes, cfg.pattern, cfg.mask_id)          # [B, K, T + 1]
    cross_kv = None
    if cond is not None:
        keep = (jax.random.uniform(key) >= cfg_dropout).astype(cond.dtype)  # one draw per batch
        cross_kv = model.project_condition(cond * keep)
    # causal: steps 0..T-1 give the logits of steps 1..T; the last step predicts nothing
    logits = model.all_logits(model.hidden(sequence[..., :T], cross_kv, remat=remat))
    ce, acc = codebook_cross_entropy(logits, sequence[..., 1:], target_weights(cfg.pattern, padding_mask))
    return ARLossOutput(ce.mean(), acc.mean(), ce, acc)
