"""MeLoDy's diffusion maths: the angle parameterisation, velocity, the sampler's step angles, the
angular (DDIM-style) update, classifier-free guidance on v, and multi-chunk noising.

Everything here is closed-form and model-free (MeLoDy, arXiv 2305.15719, Sec. 3.2 and 3.3):

- Angle parameterisation: a noise level is an angle delta in [0, pi/2] with alpha = cos(delta),
  sigma = sin(delta), so alpha^2 + sigma^2 = 1 (variance preserving) and
  ``x_delta = alpha * x0 + sigma * eps``. delta = 0 is clean data, delta = pi/2 pure noise.
- Velocity: ``v = alpha * eps - sigma * x0`` (= d x_delta / d delta). The network predicts v; since
  (x_delta, v) is a rotation of (x0, eps) by delta, both are recovered exactly:
  ``x0 = alpha * x_delta - sigma * v`` and ``eps = sigma * x_delta + alpha * v``.
- Angular update: rotating the pair back by an angle omega gives the sample at delta - omega,
  ``x_{delta - omega} = cos(omega) * x_delta - sin(omega) * v`` (exact when v is exact: the
  deterministic DDIM step written in angles).
- Step angles (the paper's sampler schedule): for T steps,
  ``omega_t = pi / (6T) + 2 pi t / (3T (T + 1))``, t = 1..T. They sum to
  T * pi/(6T) + (2 pi / (3T(T+1))) * T(T+1)/2 = pi/6 + pi/3 = pi/2, so T steps go from pure noise
  to clean data. Indexing (as in the paper's sampler, which counts t down from T to 1): the angle
  before step t is delta_t, with delta_T = pi/2 and delta_{t-1} = delta_t - omega_t, so
  delta_0 = 0. omega_t grows with t: the first steps (high noise, t near T) are the largest and the
  last steps (near clean, t near 1) the smallest, where detail is decided.
- Classifier-free guidance on v: ``v = v_null + w * (v_cond - v_null)``, w about 2.5 in the paper.
- Multi-chunk velocity prediction (Sec. 3.3): the latent sequence is cut into M (= 4) chunks; in
  training every chunk draws its own angle, so the model learns to denoise one chunk while others
  are cleaner or noisier. Generation then extends audio chunk by chunk: finished chunks stay clean
  (angle 0, values unchanged) and condition the chunk being denoised.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

HALF_PI = math.pi / 2


def alpha_sigma(delta: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(alpha, sigma) = (cos delta, sin delta)."""
    return jnp.cos(delta), jnp.sin(delta)


def _frames(delta: jax.Array, x: jax.Array) -> jax.Array:
    """delta broadcast against x: scalars, [B], or [B, T] per-frame angles over x [B, T, C]."""
    delta = jnp.asarray(delta, jnp.float32)
    if delta.ndim == 0:
        return delta
    if delta.ndim > x.ndim:
        raise ValueError(f"angles of shape {delta.shape} do not fit a sample of shape {x.shape}")
    return delta.reshape(delta.shape + (1,) * (x.ndim - delta.ndim))


def diffuse(x0: jax.Array, eps: jax.Array, delta: jax.Array) -> jax.Array:
    """x_delta = cos(delta) x0 + sin(delta) eps."""
    a, s = alpha_sigma(_frames(delta, x0))
    return a * x0 + s * eps


def velocity(x0: jax.Array, eps: jax.Array, delta: jax.Array) -> jax.Array:
    """The training target v = cos(delta) eps - sin(delta) x0."""
    a, s = alpha_sigma(_frames(delta, x0))
    return a * eps - s * x0


def predict_x0(x_t: jax.Array, v: jax.Array, delta: jax.Array) -> jax.Array:
    """x0 = cos(delta) x_delta - sin(delta) v (inverse rotation)."""
    a, s = alpha_sigma(_frames(delta, x_t))
    return a * x_t - s * v


def predict_eps(x_t: jax.Array, v: jax.Array, delta: jax.Array) -> jax.Array:
    """eps = sin(delta) x_delta + cos(delta) v (inverse rotation)."""
    a, s = alpha_sigma(_frames(delta, x_t))
    return s * x_t + a * v


def angular_step(x_t: jax.Array, v: jax.Array, omega: jax.Array) -> jax.Array:
    """x_{delta - omega} = cos(omega) x_delta - sin(omega) v (omega scalar or per frame)."""
    omega = _frames(omega, x_t)
    return jnp.cos(omega) * x_t - jnp.sin(omega) * v


def step_angles(num_steps: int) -> np.ndarray:
    """[omega_1, ..., omega_T] (float64), omega_t = pi/(6T) + 2 pi t / (3T(T+1)); sum = pi/2."""
    if not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int, got {num_steps!r}")
    T = int(num_steps)
    t = np.arange(1, T + 1, dtype=np.float64)
    return math.pi / (6 * T) + 2 * math.pi * t / (3 * T * (T + 1))


def angle_path(num_steps: int) -> np.ndarray:
    """[delta_0, ..., delta_T] (float64): delta_T = pi/2, delta_{t-1} = delta_t - omega_t, so
    delta_t = sum_{s <= t} omega_s and delta_0 = 0. Sampling visits delta_T, ..., delta_1."""
    return np.concatenate([[0.0], np.cumsum(step_angles(num_steps))])


def guided_velocity(v_cond: jax.Array, v_null: jax.Array, cfg_scale: float | jax.Array) -> jax.Array:
    """Classifier-free guidance on the velocity: v_null + w (v_cond - v_null)."""
    return v_null + cfg_scale * (v_cond - v_null)


def chunk_index(length: int, num_chunks: int) -> np.ndarray:
    """[T] int32: the chunk of every frame; chunks are contiguous and equal (T % M == 0)."""
    if num_chunks < 1:
        raise ValueError(f"num_chunks must be >= 1, got {num_chunks}")
    if length % num_chunks:
        raise ValueError(f"latent length {length} is not divisible by num_chunks {num_chunks}")
    return np.repeat(np.arange(num_chunks, dtype=np.int32), length // num_chunks)


def chunk_angles(key: jax.Array, batch: int, num_chunks: int) -> jax.Array:
    """[B, M] angles, each chunk of each sample drawn independently from U(0, pi/2)."""
    return jax.random.uniform(key, (batch, num_chunks), jnp.float32, 0.0, HALF_PI)


def frame_angles(angles: jax.Array, length: int) -> jax.Array:
    """Per-chunk angles [B, M] -> per-frame angles [B, T]."""
    return angles[:, jnp.asarray(chunk_index(length, angles.shape[1]))]


def multichunk_noising(key: jax.Array, x0: jax.Array, num_chunks: int
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A multi-chunk training example from clean latents x0 [B, T, C].

    Returns (x_t, v_target, delta) with delta [B, T] per frame: every chunk of every sample gets its
    own angle (MeLoDy Sec. 3.3), one eps ~ N(0, I) for the whole sequence."""
    if x0.ndim != 3:
        raise ValueError(f"latents must be [batch, frames, channels], got shape {x0.shape}")
    k_angle, k_eps = jax.random.split(key)
    delta = frame_angles(chunk_angles(k_angle, x0.shape[0], num_chunks), x0.shape[1])
    eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
    return diffuse(x0, eps, delta), velocity(x0, eps, delta), delta
