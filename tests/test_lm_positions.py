"""``LMConfig.sin_scale``: the added sinusoid's own scale under "sin_rope", apart from RoPE's blend.

Checked against a sinusoid written out here in numpy (cos | sin of t / max_period ** (i / (half - 1)),
audiocraft's layout) and against the "rope" model with the same weights (sin_scale 0 must be it).
"""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from magnet_jax.config_loader import load_config
from magnet_jax.lm.config import LMConfig
from magnet_jax.lm.model import MagnetLM

BASE = LMConfig(dim=32, num_heads=2, num_layers=2, ffn_dim=64, n_q=2, card=16, frame_rate=10,
                segment_duration=1.2, positional_embedding="sin_rope")


def numpy_sinusoid(length: int, dim: int, max_period: float = 10_000.0) -> np.ndarray:
    half = dim // 2
    phase = np.arange(length)[:, None] / max_period ** (np.arange(half) / (half - 1))
    return np.concatenate([np.cos(phase), np.sin(phase)], axis=1)


def model(**changes) -> MagnetLM:
    return MagnetLM(dataclasses.replace(BASE, **changes), rngs=nnx.Rngs(0))      # same seed: same weights


def test_sin_scale_multiplies_the_sinusoid_only():
    codes = jnp.asarray(np.random.default_rng(0).integers(0, 16, (2, 2, 12)), jnp.int32)
    tokens_only = np.asarray(model(positional_embedding="rope").embed(codes))
    for scale in (0.15, 2.0):
        got = np.asarray(model(sin_scale=scale).embed(codes))
        np.testing.assert_allclose(got - tokens_only, np.broadcast_to(scale * numpy_sinusoid(12, 32), got.shape),
                                   atol=1e-5)
    unset = np.asarray(model(positional_scale=0.5).embed(codes))       # audiocraft: one scale for both
    np.testing.assert_allclose(unset - tokens_only, np.broadcast_to(0.5 * numpy_sinusoid(12, 32), unset.shape),
                               atol=1e-5)


def test_sin_scale_zero_is_the_rope_model():
    """RoPE keeps positional_scale whatever sin_scale is: with no sinusoid the logits are RoPE's."""
    codes = jnp.asarray(np.random.default_rng(1).integers(0, 17, (2, 2, 12)), jnp.int32)
    rope = np.asarray(model(positional_embedding="rope")(codes, 0))
    np.testing.assert_allclose(np.asarray(model(sin_scale=0.0)(codes, 0)), rope, atol=1e-5)
    assert np.abs(np.asarray(model(sin_scale=0.15)(codes, 0)) - rope).max() > 1e-3


def test_sin_scale_needs_sin_rope():
    for embedding in ("sin", "rope"):
        with pytest.raises(ValueError, match="sin_scale=0.1 sets the sinusoid's scale apart from RoPE's"):
            dataclasses.replace(BASE, positional_embedding=embedding, sin_scale=0.1)


def test_an_unset_optional_field_takes_a_literal_override():
    cfg = load_config("configs/default_model.py", ["lm.positional_embedding=sin_rope", "lm.sin_scale=0.15"])
    assert cfg["lm"].sin_scale == 0.15 and cfg["lm"].sinusoid_scale == 0.15
    assert load_config("configs/default_model.py", ["lm.sin_scale=None"])["lm"].sin_scale is None
