"""MeLoDy's diffusion sampler, the whole generation in one compiled ``lax.fori_loop``.

Each step (MeLoDy Sec. 3.2, ``magnet_jax.melody.diffusion``): at angle delta_t the DPD predicts
v on the conditional rows and on their null-conditioned copies in one batch, guidance gives
v = v_null + w (v_cond - v_null), and the angular update rotates the sample to
delta_{t-1} = delta_t - omega_t: x <- cos(omega_t) x - sin(omega_t) v. Starting from pure noise at
delta_T = pi/2, T steps reach delta_0 = 0.

Multi-chunk continuation (Sec. 3.3): the latent [T, C] is M chunks. With ``chunkwise=True`` the
chunks are generated one after another, one fori_loop over (chunk, step) pairs: while chunk m is
denoised, chunks before it are clean (angle 0, their values never written again), chunks after it
stay pure noise at angle pi/2, and only chunk m's frames are updated. A ``prefix`` of finished
chunks (e.g. the previous window of a long generation) starts the loop at chunk ``prefix_chunks``
and is returned unchanged. ``chunkwise=False`` denoises every frame together (one angle for all).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx, struct

from magnet_jax.melody import diffusion
from magnet_jax.melody.dpd import DPD


@dataclasses.dataclass(frozen=True)
class DiffusionSamplerConfig:
    """num_steps: T angular steps (per chunk when chunkwise); cfg_scale: w (paper: about 2.5;
    1.0 disables guidance and skips the null rows); chunkwise: multi-chunk generation."""
    num_steps: int = 20
    cfg_scale: float = 2.5
    chunkwise: bool = True

    def validate(self) -> None:
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"num_steps must be a positive int, got {self.num_steps!r}")
        if not math.isfinite(self.cfg_scale):
            raise ValueError(f"cfg_scale must be a finite number, got {self.cfg_scale}")


@struct.dataclass
class DiffusionState:
    """What one sampler step hands the next."""
    x: jax.Array        # float32 [B, T, C]: the current sample


def generate_latents(model: DPD, semantic: jax.Array, noise: jax.Array, prefix: jax.Array,
                     prefix_chunks: int, cfg: DiffusionSamplerConfig) -> jax.Array:
    """Latents [B, T, C] from ``noise`` [B, T, C] (eps at pi/2) under semantic tokens [B, L]; the
    first ``prefix_chunks`` chunks are taken from ``prefix`` [B, T, C] (chunkwise only)."""
    B, T, _ = noise.shape
    M, steps = model.cfg.num_chunks, cfg.num_steps
    path = jnp.asarray(diffusion.angle_path(steps), jnp.float32)          # [delta_0 .. delta_T]
    omegas = jnp.asarray(diffusion.step_angles(steps), jnp.float32)       # [omega_1 .. omega_T]
    chunk_of = jnp.asarray(diffusion.chunk_index(T, M))                   # [T]
    guided = cfg.cfg_scale != 1.0
    sem = jnp.concatenate([semantic, semantic]) if guided else semantic
    drop = jnp.arange(sem.shape[0]) >= B if guided else None

    def velocity(x, delta):
        xx = jnp.concatenate([x, x]) if guided else x
        dd = jnp.concatenate([delta, delta]) if guided else delta
        v = model(xx, dd, sem, drop)
        return diffusion.guided_velocity(v[:B], v[B:], cfg.cfg_scale) if guided else v

    def step(i, state: DiffusionState) -> DiffusionState:
        if cfg.chunkwise:
            m, j = i // steps, i % steps
        else:
            m, j = 0, i
        t = steps - j                                                      # t = T .. 1
        delta_t, omega_t = path[t], omegas[t - 1]
        if cfg.chunkwise:
            current = chunk_of == m                                        # [T]
            delta = jnp.where(chunk_of < m, 0.0, jnp.where(current, delta_t, diffusion.HALF_PI))
            delta = jnp.broadcast_to(delta, (B, T))
        else:
            current = jnp.ones((T,), bool)
            delta = jnp.full((B, T), delta_t)
        v = velocity(state.x, delta)
        x_new = diffusion.angular_step(state.x, v, omega_t)
        return state.replace(x=jnp.where(current[None, :, None], x_new, state.x))

    if cfg.chunkwise:
        done = (chunk_of < prefix_chunks)[None, :, None]
        x = jnp.where(done, prefix, noise)
        first, last = prefix_chunks * steps, M * steps
    else:
        x, first, last = noise, 0, steps
    return jax.lax.fori_loop(first, last, step, DiffusionState(x)).x


class DiffusionSampler:
    """Compiles ``generate_latents`` once per (config, shapes, prefix_chunks) over the model's
    (graphdef, state) with a plain ``jax.jit`` (no per-call NNX overhead)."""

    def __init__(self, model: DPD):
        self.cfg = model.cfg
        self.graphdef, self.state = nnx.split(model)
        self._compiled: dict = {}

    def _function(self, cfg: DiffusionSamplerConfig, prefix_chunks: int):
        sig = (cfg, prefix_chunks)
        if sig not in self._compiled:
            graphdef = self.graphdef

            def run(state, semantic, noise, prefix):
                return generate_latents(nnx.merge(graphdef, state), semantic, noise, prefix, prefix_chunks, cfg)

            self._compiled[sig] = jax.jit(run)
        return self._compiled[sig]

    def generate(self, key: jax.Array, semantic: jax.Array, *, frames: int,
                 prefix: jax.Array | None = None, prefix_chunks: int = 0,
                 config: DiffusionSamplerConfig = DiffusionSamplerConfig()) -> jax.Array:
        """Latents [B, frames, latent_dim] for semantic tokens [B, L] (int). ``prefix``
        [B, frames, latent_dim]: its first ``prefix_chunks`` chunks are kept as they are and the
        rest is generated (multi-chunk continuation; needs ``config.chunkwise``)."""
        config.validate()
        semantic = jnp.asarray(semantic, jnp.int32)
        if semantic.ndim != 2:
            raise ValueError(f"semantic tokens must be [batch, length], got shape {semantic.shape}")
        B, C, M = semantic.shape[0], self.cfg.latent_dim, self.cfg.num_chunks
        diffusion.chunk_index(frames, M)                                   # frames % M check
        if frames % self.cfg.segment_length:
            raise ValueError(f"frames {frames} is not divisible by segment_length {self.cfg.segment_length}")
        if not 0 <= prefix_chunks < M:
            raise ValueError(f"prefix_chunks must be in [0, {M}), got {prefix_chunks}")
        if prefix_chunks and not config.chunkwise:
            raise ValueError("a prefix needs chunkwise=True (multi-chunk continuation)")
        if prefix_chunks and prefix is None:
            raise ValueError(f"prefix_chunks={prefix_chunks} but no prefix latents were given")
        prefix = jnp.zeros((B, frames, C), jnp.float32) if prefix is None else jnp.asarray(prefix, jnp.float32)
        if prefix.shape != (B, frames, C):
            raise ValueError(f"prefix has shape {prefix.shape}; expected [{B}, {frames}, {C}]")
        noise = jax.random.normal(key, (B, frames, C), jnp.float32)
        return self._function(config, int(prefix_chunks))(self.state, semantic, noise, prefix)
