"""The Gaussian bottleneck that turns a SEANet autoencoder into MeLoDy's audio VAE(-GAN).

MeLoDy (arXiv 2305.15719, Sec. 3.4) diffuses in the continuous latent space of an audio VAE-GAN
instead of over discrete codec tokens. Here the encoder's ``dimension``-wide output h goes through a
1x1 projection to a mean and a log-variance of width ``latent_dim``; training samples
z = mean + exp(logvar / 2) * eps (the reparameterisation trick, so gradients reach the encoder
through mean and logvar) and the decoder sees a 1x1 projection of z back to ``dimension``. The
KL term pulls q(z | x) = N(mean, diag exp(logvar)) towards N(0, I), which keeps the latent scale
near 1 (what the diffusion's variance-preserving angle schedule assumes):

    KL(N(m, s^2) || N(0, 1)) = 0.5 * (m^2 + s^2 - 1 - log s^2)          per latent value.

``kl_divergence`` returns it in nats per latent value (mean over batch, frames and channels), so
the loss weight does not depend on the clip length or latent width.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from magnet_jax.modules.layers import gaussian_std, param, truncated_normal

LOGVAR_RANGE = (-30.0, 20.0)     # clip: exp(logvar / 2) stays finite in float32


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """Mean over all elements of KL(N(mean, exp(logvar)) || N(0, 1)), in nats (scalar float32)."""
    if mean.shape != logvar.shape:
        raise ValueError(f"mean {mean.shape} and logvar {logvar.shape} must have the same shape")
    return jnp.mean(0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar))


def reparameterize(key: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I)."""
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)


class GaussianBottleneck(nnx.Module):
    """h [B, T, dimension] -> (mean, logvar) [B, T, latent_dim]; z [B, T, latent_dim] -> [B, T, dimension]."""

    def __init__(self, dimension: int, latent_dim: int, *, rngs: nnx.Rngs):
        self.latent_dim = latent_dim
        self.to_moments = param(rngs, truncated_normal(gaussian_std(dimension)), (dimension, 2, latent_dim),
                                ("channels", None, "channels"))
        self.moments_bias = nnx.Param(jnp.zeros((2, latent_dim), jnp.float32), out_sharding=(None, "channels"),
                                      eager_sharding=False)
        self.from_latent = param(rngs, truncated_normal(gaussian_std(latent_dim)), (latent_dim, dimension),
                                 ("channels", "channels"))
        self.latent_bias = nnx.Param(jnp.zeros((dimension,), jnp.float32), out_sharding=("channels",),
                                     eager_sharding=False)

    def moments(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(mean, logvar) of q(z | x), logvar clipped to ``LOGVAR_RANGE``."""
        out = jnp.einsum("btd,dkc->kbtc", h, self.to_moments[...]) + self.moments_bias[...][:, None, None]
        return out[0], jnp.clip(out[1], *LOGVAR_RANGE)

    def expand(self, z: jax.Array) -> jax.Array:
        """The decoder's input [B, T, dimension] from a latent z [B, T, latent_dim]."""
        if z.ndim != 3 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"VAE latents must be [batch, frames, {self.latent_dim}], got shape {tuple(z.shape)}")
        return jnp.einsum("btc,cd->btd", z, self.from_latent[...]) + self.latent_bias[...]
