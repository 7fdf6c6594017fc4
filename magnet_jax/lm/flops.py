"""FLOP counts for the MAGNeT LM (multiply-add = 2 FLOPs; matmuls and attention only —
LayerNorm, softmax, GELU and sampling are not counted).

Per forward over R rows of T frames with an S-token text condition, per layer:

    self-attention   2RT·D·3D (q|k|v) + 2RT·D·D (out) + 2·2RT·T·D (scores, weights·values)
    cross-attention  2Rc·T·D·D (q) + 2Rc·T·D·D (out) + 2·2Rc·T·S·D + 2Rc·S·D·2D (k|v of condition)
    feed-forward     2·2RT·D·F
    output heads     2RT·D·card per head computed

Rc is the number of rows that run cross-attention. The reference runs every row through
cross-attention, projects the condition's k|v at every step and computes all n_q heads; this
project skips the null-condition rows (their output is exactly zero), projects k|v once per
generation and computes only the active stage's head. ``sampler_flops`` counts either way.
"""
from __future__ import annotations

from magnet_jax.lm.config import LMConfig


def forward_flops(cfg: LMConfig, rows: int, T: int, S: int, cross_rows: int, heads: int,
                  condition_kv: bool = True, keys: int | None = None) -> float:
    D, F, L = cfg.dim, cfg.ffn_dim, cfg.num_layers
    keys = T if keys is None else keys
    self_attn = 2 * rows * T * D * 4 * D + 4 * rows * T * keys * D
    cross = 0.0
    if cfg.cross_attention and cross_rows:
        cross = 4 * cross_rows * T * D * D + 4 * cross_rows * T * S * D
        cross += 4 * cross_rows * S * D * D if condition_kv else 0.0
    ffn = 4 * rows * T * D * F
    return L * (self_attn + cross + ffn) + 2 * rows * T * D * cfg.card * heads


def sampler_flops(cfg: LMConfig, batch: int, T: int, S: int, decoding_steps, cfg_guidance: bool = True,
                  as_reference: bool = False) -> float:
    """FLOPs of one whole generation (all stages and steps)."""
    from magnet_jax.modules.attention import LocalBand
    rows = 2 * batch if cfg_guidance else batch
    if as_reference:
        return sum(decoding_steps) * forward_flops(cfg, rows, T, S, cross_rows=rows, heads=cfg.n_q)
    total = cfg.num_layers * 4 * batch * S * cfg.dim * cfg.dim if cfg_guidance else 0.0  # k|v once
    for stage, steps in enumerate(decoding_steps):
        band = stage > 0 and cfg.subcodes_context >= 0
        keys = min(LocalBand(cfg.subcodes_context).block, T) + 2 * cfg.subcodes_context if band else T
        total += steps * forward_flops(cfg, rows, T, S, cross_rows=batch if cfg_guidance else 0, heads=1,
                                       condition_kv=False, keys=keys)
    return total
