"""MAGNeT's training objective (audiocraft ``solvers/magnet.py``) as pure, jittable functions.

Per batch: one stage s ~ U{0..K-1}. Per sample: t ~ U(0, 1), mask rate p = cos(pi/2 t).
Codebook s is masked with spans of ``span_len`` frames so that the expected masked fraction is p
(the number of span starts comes from a look-up table inverting that expectation); codebooks
below s keep the ground truth and codebooks above s are fully masked. The loss is cross-entropy
on codebook s at masked positions only. CFG dropout nulls the whole batch's text condition with
one draw per batch.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.lm.model import MagnetLM


def span_count_lut(T: int, span_len: int) -> np.ndarray:
    """LUT[m] = number of span starts u whose expected masked fraction first reaches m/100.

    With u starts drawn without replacement among T positions, each covering ``span_len``
    frames, a frame stays unmasked with probability C(T-L, u) / C(T, u), computed as the running
    product of (T-L-j)/(T-j) (no overflow). Same float64 arithmetic as the reference, so the
    table is identical.
    """
    if T < 1:
        raise ValueError(f"sequence length {T} must be positive")
    u2mean = [0.0]
    v = (T - span_len) / float(T)
    for u in range(1, T):
        u2mean.append(1 - v)
        v *= (T - span_len - u) / (T - u)
    return np.array([int(np.searchsorted(u2mean, m / 100.0)) for m in range(101)], np.int32)


def _random_subset(key: jax.Array, batch: int, T: int, counts: jax.Array) -> jax.Array:
    """bool [B, T]: for each row, ``counts[b]`` positions chosen uniformly without replacement."""
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(key, (batch, T)), axis=-1), axis=-1)
    return ranks < counts[:, None]


def span_mask(key: jax.Array, mask_probs: jax.Array, T: int, span_len: int, lut: jax.Array) -> jax.Array:
    """bool [B, T] with masked fraction ~ mask_probs per row (the reference's _get_mask)."""
    B = mask_probs.shape[0]
    if span_len <= 1:  # uniform single tokens: round(T * p), at least one
        counts = jnp.maximum(jnp.round(T * mask_probs), 1).astype(jnp.int32)
        return _random_subset(key, B, T, counts)
    counts = jnp.maximum(lut[jnp.round(100 * mask_probs).astype(jnp.int32)], 1)
    starts = _random_subset(key, B, T, counts)
    mask = starts
    for shift in range(1, span_len):  # each start covers span_len frames to its right
        mask = mask | jnp.pad(starts, ((0, 0), (shift, 0)))[:, :T]
    return mask


class MaskedBatch(NamedTuple):
    inputs: jax.Array      # int32 [B, K, T]: what the LM sees
    loss_mask: jax.Array   # bool [B, T]: codebook `stage` positions the loss counts
    stage: jax.Array       # int32 scalar


def mask_codes(key: jax.Array, codes: jax.Array, stage: jax.Array, *, span_len: int, lut: jax.Array,
               mask_id: int, padding_mask: jax.Array | None = None, mask_rate: float | None = None) -> MaskedBatch:
    """Apply MAGNeT's stage masking to ground-truth codes [B, K, T].

    ``mask_rate`` fixes every sample's mask rate instead of drawing it from the cosine schedule
    (diagnostics: at 1.0 the LM sees almost no code of the stage, so the text is nearly all it
    has; random span placement may leave a frame or two visible, as in the reference)."""
    B, K, T = codes.shape
    k_time, k_mask = jax.random.split(key)
    if mask_rate is None:
        mask_probs = jnp.cos(jax.random.uniform(k_time, (B,)) * (math.pi * 0.5))
    else:
        mask_probs = jnp.full((B,), mask_rate, jnp.float32)
    stage_mask = span_mask(k_mask, mask_probs, T, span_len, lut)            # [B, T]
    k = jnp.arange(K)[None, :, None]
    masked = (k > stage) | ((k == stage) & stage_mask[:, None, :])
    inputs = jnp.where(masked, mask_id, codes).astype(jnp.int32)
    loss_mask = stage_mask if padding_mask is None else stage_mask & padding_mask
    return MaskedBatch(inputs, loss_mask, stage)


def masked_cross_entropy(logits: jax.Array, targets: jax.Array, loss_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy and accuracy over positions where loss_mask is True.

    logits [B, T, card] (float32), targets [B, T]. A batch without masked positions gives 0
    (the reference would give NaN there; with at least one span start per row it cannot happen
    unless padding removes everything).
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    weight = loss_mask.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
    return (nll * weight).sum() / count, (correct * weight).sum() / count


def draw_stage(key: jax.Array, n_q: int, stage_probs: jax.Array | None = None) -> jax.Array:
    """The stage (codebook) one training step works on: uniform as in MAGNeT, or drawn with
    ``stage_probs`` ``[n_q]`` (summing to 1)."""
    if stage_probs is None:
        return jax.random.randint(key, (), 0, n_q)
    return jax.random.choice(key, n_q, p=stage_probs).astype(jnp.int32)


class LossOutput(NamedTuple):
    loss: jax.Array
    accuracy: jax.Array
    stage: jax.Array
    masked_fraction: jax.Array


def loss_stage(key: jax.Array, n_q: int, stage_probs: jax.Array | None = None) -> jax.Array:
    """The stage ``magnet_loss`` draws from ``key`` (same split, same draw), for a caller that must
    know it before the loss runs (``restricted_stage``)."""
    return draw_stage(jax.random.split(key, 3)[0], n_q, stage_probs)


def restricted_stage(cfg, key: jax.Array, stage_probs: jax.Array | None = None) -> jax.Array | None:
    """Traced bool: whether the stage ``magnet_loss`` draws from ``key`` restricts self-attention to
    the band (stage > 0 with subcodes_context >= 0); None when no stage does. The train step
    branches on it (``lax.cond``) and calls ``magnet_loss(..., restricted=True/False)`` in each
    branch, so a band stage computes only the band (``LocalBand``) instead of T x T scores
    under an additive -inf bias; the loss is the same function either way."""
    if cfg.subcodes_context < 0:
        return None
    return loss_stage(key, cfg.n_q, stage_probs) > 0


def magnet_loss(model: MagnetLM, codes: jax.Array, cond: jax.Array | None, key: jax.Array, *,
                lut: jax.Array, cfg_dropout: float = 0.3, padding_mask: jax.Array | None = None,
                stage: jax.Array | None = None, remat: bool = False,
                stage_probs: jax.Array | None = None, mask_rate: float | None = None,
                restricted: bool | None = None) -> LossOutput:
    """One MAGNeT training loss on ground-truth codes [B, K, T] and text condition [B, S, D].

    ``stage`` may be given (e.g. per-stage validation); otherwise it is drawn by ``draw_stage``.
    ``mask_rate`` (diagnostics) replaces the cosine draw, see ``mask_codes``.
    ``restricted`` (static): the caller knows whether the stage is band-restricted
    (``restricted_stage``): True computes the band only (``LocalBand``), False full attention;
    None selects an additive band bias by the traced stage (T x T scores either way).
    """
    cfg = model.cfg
    _, k_mask, k_cfg = jax.random.split(key, 3)
    if stage is None:
        stage = loss_stage(key, cfg.n_q, stage_probs)     # the one definition restricted_stage reads too
    batch = mask_codes(k_mask, codes, stage, span_len=cfg.span_len, lut=lut, mask_id=cfg.mask_id,
                       padding_mask=padding_mask, mask_rate=mask_rate)
    cross_kv = None
    if cond is not None:
        keep = (jax.random.uniform(k_cfg) >= cfg_dropout).astype(cond.dtype)  # one draw per batch
        cross_kv = model.project_condition(cond * keep)
    hidden = model.hidden(batch.inputs, stage, cross_kv, remat=remat, restricted=restricted)
    logits = model.stage_logits(hidden, stage)
    targets = jnp.take_along_axis(codes, jnp.full((codes.shape[0], 1, codes.shape[2]), stage), axis=1)[:, 0]
    loss, acc = masked_cross_entropy(logits, targets, batch.loss_mask)
    return LossOutput(loss, acc, stage, batch.loss_mask.mean())
