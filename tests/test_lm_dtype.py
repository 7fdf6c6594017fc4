"""The dtype policy: float32 parameters always; bfloat16 compute stays close to float32."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.lm.config import LMConfig
from magnet_jax.lm.model import MagnetLM
from magnet_jax.lm.sampler import MagnetSampler, SamplerConfig


def test_bfloat16_compute_close_to_float32():
    cfg = LMConfig(dim=64, num_heads=4, num_layers=2, ffn_dim=256, card=64, frame_rate=24, segment_duration=2)
    f32 = MagnetLM(cfg, rngs=nnx.Rngs(0))
    bf16 = MagnetLM(cfg.replace(compute_dtype="bfloat16"), rngs=nnx.Rngs(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(bf16, nnx.Param)))
    rng = np.random.default_rng(0)
    codes = rng.integers(0, cfg.card + 1, (2, 4, cfg.sequence_len))
    cond = jnp.asarray(rng.normal(size=(2, 3, cfg.dim)), jnp.float32)
    for stage in (0, 2):
        a, b = np.asarray(f32(codes, stage, cond)), np.asarray(bf16(codes, stage, cond))
        assert b.dtype == np.float32
        rel = np.abs(a - b).max() / np.abs(a).max()
        assert 0 < rel < 0.05, rel   # bf16 rounding is visible but small
    tokens = MagnetSampler(bf16).generate(jax.random.key(0), cond=cond, config=SamplerConfig(decoding_steps=(2, 1, 1, 1)))
    assert tokens.shape == (2, 4, cfg.sequence_len) and int(tokens.max()) < cfg.card
