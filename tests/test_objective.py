"""The training objective: the span LUT against the reference, hand-computed cases, statistics."""
from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
from magnet_jax.lm.objective import mask_codes, masked_cross_entropy, span_count_lut, span_mask


@pytest.mark.parametrize("T", [480, 500, 1500])
@pytest.mark.parametrize("span_len", [1, 2, 3, 5])
def test_lut_equals_reference(T, span_len):
    solver = reference.require("audiocraft.solvers.magnet")
    fake = types.SimpleNamespace(cfg=types.SimpleNamespace(masking=types.SimpleNamespace(span_len=span_len)))
    want = solver.MagnetSolver._calc_mean_maskrate_to_u_LUT(fake, T)
    np.testing.assert_array_equal(span_count_lut(T, span_len), want)


def test_lut_known_values():
    """REFERENCE.md's figures for T=500, L=3; and L=1 is the identity up to rounding."""
    lut = span_count_lut(500, 3)
    assert (lut[10], lut[50], lut[100]) == (18, 103, 498)
    # closed form: with one span start, E[masked] = L / T
    assert span_count_lut(100, 5)[5] == 1


def test_hand_computed_masking_and_loss():
    """stage 1 of 4 codebooks: rows 0 untouched, row 1 masked where the span mask says, rows
    2-3 fully masked; the loss counts only row 1's masked positions."""
    codes = jnp.arange(24).reshape(1, 4, 6) % 5
    batch = mask_codes(jax.random.key(0), codes, jnp.int32(1), span_len=2,
                       lut=jnp.asarray(span_count_lut(6, 2)), mask_id=99)
    m = np.asarray(batch.loss_mask[0])
    x = np.asarray(batch.inputs[0])
    np.testing.assert_array_equal(x[0], np.asarray(codes[0, 0]))
    np.testing.assert_array_equal(x[1], np.where(m, 99, np.asarray(codes[0, 1])))
    assert (x[2:] == 99).all() and m.any()

    # cross-entropy by hand: logits favour class 0 by log(3) -> p(0) = 3 / (3 + 2) = 0.6
    logits = jnp.zeros((1, 3, 3)).at[..., 0].set(math.log(3.0))
    targets = jnp.array([[0, 1, 2]])
    loss_mask = jnp.array([[True, False, True]])   # position 1 must not count
    loss, acc = masked_cross_entropy(logits, targets, loss_mask)
    want = (-math.log(0.6) - math.log(0.2)) / 2
    assert abs(float(loss) - want) < 1e-6 and abs(float(acc) - 0.5) < 1e-6


def test_loss_equals_reference_cross_entropy():
    torch = reference.require("torch")
    solver = reference.require("audiocraft.solvers.magnet")
    rng = np.random.default_rng(0)
    B, K, T, card, stage = 3, 4, 30, 17, 2
    logits = rng.normal(size=(B, K, T, card)).astype(np.float32)
    targets = rng.integers(0, card, (B, K, T))
    mask = np.zeros((B, K, T), bool)
    mask[:, stage] = rng.random((B, T)) < 0.4
    want = solver.MagnetSolver._compute_cross_entropy_magnet(
        None, torch.as_tensor(logits), torch.as_tensor(targets), torch.as_tensor(mask), torch.tensor([stage]))
    got, _ = masked_cross_entropy(jnp.asarray(logits[:, stage]), jnp.asarray(targets[:, stage]),
                                  jnp.asarray(mask[:, stage]))
    assert abs(float(got) - float(want)) < 1e-5


@pytest.mark.parametrize("span_len", [1, 3])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masked_fraction_tracks_rate(span_len, p):
    """E[masked fraction] = p: the LUT inverts the span-overlap expectation."""
    T, B = 500, 4000
    lut = jnp.asarray(span_count_lut(T, span_len))
    mask = span_mask(jax.random.key(1), jnp.full((B,), p), T, span_len, lut)
    frac = float(mask.mean())
    assert abs(frac - p) < 0.01, (frac, p)
    if span_len > 1:  # spans: every masked run is at least span_len long, except at the end
        row = np.asarray(mask[0]).astype(int)
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], row, [0]]))))[::2]
        assert (runs[:-1] >= span_len).all()


def test_masked_fraction_follows_cosine_schedule():
    """With t ~ U(0,1) and p = cos(pi t / 2), E[p] = 2/pi, and the fraction's quantiles follow
    the cosine law: P(p <= x) = 1 - (2/pi) arccos(x)."""
    T, B = 500, 4000
    codes = jnp.zeros((B, 4, T), jnp.int32)
    batch = mask_codes(jax.random.key(2), codes, jnp.int32(0), span_len=3,
                       lut=jnp.asarray(span_count_lut(T, 3)), mask_id=2048)
    frac = np.asarray(batch.loss_mask.mean(-1))
    assert abs(frac.mean() - 2 / math.pi) < 0.01
    for x in (0.25, 0.5, 0.75):
        assert abs((frac <= x).mean() - (1 - 2 / math.pi * math.acos(x))) < 0.03


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_fixed_mask_rate_replaces_the_cosine_draw(rate):
    """``mask_rate`` (the caption probe's diagnostic): every sample masked at that rate; at 1.0
    the codebooks above the stage are all mask ids and random span placement leaves at most a
    frame or two of the stage visible (as in the reference, where the span count comes from the LUT)."""
    T, B = 500, 400
    codes = jnp.ones((B, 4, T), jnp.int32)
    batch = mask_codes(jax.random.key(3), codes, jnp.int32(1), span_len=3,
                       lut=jnp.asarray(span_count_lut(T, 3)), mask_id=2048, mask_rate=rate)
    frac = np.asarray(batch.loss_mask.mean(-1))
    assert abs(frac.mean() - rate) < 0.01 and frac.std() < 0.06          # no spread from a cosine draw
    if rate == 1.0:
        assert frac.min() >= 0.99
        inputs = np.asarray(batch.inputs)
        assert (inputs[:, 2:] == 2048).all() and (inputs[:, 0] == 1).all()
        assert ((inputs[:, 1] == 2048) == np.asarray(batch.loss_mask)).all()


def test_draw_stage_follows_the_stage_weights_and_defaults_to_uniform():
    """Over 4000 draws the stage frequencies match the weights (binomial sd <= 0.008, so 0.03 is
    well over 3 sd); without weights the stages are uniform, as in MAGNeT."""
    from magnet_jax.lm.objective import draw_stage
    keys = jax.random.split(jax.random.key(0), 4000)
    weighted = jax.vmap(lambda k: draw_stage(k, 4, jnp.asarray([0.55, 0.15, 0.15, 0.15])))(keys)
    uniform = jax.vmap(lambda k: draw_stage(k, 4))(keys)
    assert np.abs(np.bincount(np.asarray(weighted), minlength=4) / 4000 - [0.55, 0.15, 0.15, 0.15]).max() < 0.03
    assert np.abs(np.bincount(np.asarray(uniform), minlength=4) / 4000 - 0.25).max() < 0.03


def test_stage_weights_must_name_every_stage():
    import dataclasses
    from magnet_jax.config_loader import load_config
    from magnet_jax.train.config import TrainConfig, check_config
    cfg = load_config("configs/tiny_lm.py")
    cfg["train"] = dataclasses.replace(cfg["train"], stage_weights=(2.0, 1.0))
    with pytest.raises(ValueError, match="one weight per stage"):
        check_config(cfg)
    with pytest.raises(ValueError, match="positive sum"):
        TrainConfig(stage_weights=(0.0, 0.0))


def test_stage_weights_override_keeps_fractions():
    from magnet_jax.config_loader import load_config
    cfg = load_config("configs/tiny_lm.py", ["train.stage_weights=0.5,0.25,0.25,0", "train.inject_nan_steps=3,7"])
    assert cfg["train"].stage_weights == (0.5, 0.25, 0.25, 0)
    assert cfg["train"].inject_nan_steps == (3, 7)
