"""The DPD training objective: velocity MSE under multi-chunk noising with CFG dropout.

MeLoDy Sec. 3.3: from clean VAE latents x0, every one of the M chunks gets its own angle
delta ~ U(0, pi/2) (``diffusion.multichunk_noising``), x_delta = cos(delta) x0 + sin(delta) eps, and
the DPD regresses v = cos(delta) eps - sin(delta) x0 with a mean squared error. Each row's semantic
condition is replaced by the null with probability ``cond_dropout`` so one network gives both
halves of classifier-free guidance.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from magnet_jax.melody import diffusion
from magnet_jax.melody.dpd import DPD


def velocity_loss(model: DPD, key: jax.Array, x0: jax.Array, semantic: jax.Array) -> jax.Array:
    """Mean squared error of the predicted velocity, scalar float32."""
    k_noise, k_drop = jax.random.split(key)
    x_t, v_target, delta = diffusion.multichunk_noising(k_noise, x0, model.cfg.num_chunks)
    drop = jax.random.bernoulli(k_drop, model.cfg.cond_dropout, (x0.shape[0],))
    v_hat = model(x_t, delta, semantic, drop)
    return jnp.mean(jnp.square(v_hat - v_target))
