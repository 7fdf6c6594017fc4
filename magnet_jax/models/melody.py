"""Text condition -> semantic tokens -> VAE latents -> audio: the MeLoDy pipeline (arXiv 2305.15719).

    from magnet_jax.models.melody import MeLoDy
    pipe = MeLoDy(semantic_lm, dpd, vae_codec)                     # built or trained components
    out = pipe.generate(jax.random.key(0), duration=2.0, cond=cond)   # audio [B, C, N]
    out = pipe.generate_long(jax.random.key(0), duration=2.0, extra_chunks=3, cond=cond)

Stages (Fig. 1 of the paper): the semantic LM (``magnet_jax.melody.semantic_lm``: MusicGen's LM
with one codebook and its compiled KV-cache sampler) writes semantic tokens under the text
condition; the dual-path diffusion (``magnet_jax.melody.dpd`` + ``sampler``) turns them into VAE
latents with the paper's angle schedule and CFG on v; the VAE-GAN decoder (``Encodec`` with
``bottleneck='vae'``) renders audio. ``generate_long`` is MeLoDy's multi-chunk extension: after
the first window of M chunks, each further chunk is generated with the window's last M - 1
chunks as a clean prefix (kept bit-exact), so audio grows one chunk at a time.

Components are passed in (no released MeLoDy weights exist); ``cond`` is the semantic LM's
projected text condition [B, S, dim] (e.g. from ``magnet_jax.text``), or None.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from magnet_jax.codec.encodec import Encodec
from magnet_jax.lm.ar_sampler import ARSamplerConfig, MusicGenSampler
from magnet_jax.lm.musicgen import MusicGenLM
from magnet_jax.melody.dpd import DPD
from magnet_jax.melody.sampler import DiffusionSampler, DiffusionSamplerConfig
from magnet_jax.melody.semantic_lm import generate_semantic_tokens


class MeLoDy:
    """The three MeLoDy stages behind one ``generate``; ``latent_scale`` multiplies the DPD's
    output before the VAE decoder (the VAE latents' std, if the DPD was trained on latents / std)."""

    def __init__(self, semantic_lm: MusicGenLM, dpd: DPD, codec: Encodec, *, latent_scale: float = 1.0):
        if codec.cfg.bottleneck != "vae":
            raise ValueError("MeLoDy decodes VAE latents: the codec needs codec.bottleneck='vae'")
        if dpd.cfg.latent_dim != codec.cfg.vae_latent_dim:
            raise ValueError(f"DPD latent_dim {dpd.cfg.latent_dim} != the VAE's latent width {codec.cfg.vae_latent_dim}")
        if dpd.cfg.semantic_vocab != semantic_lm.cfg.card:
            raise ValueError(f"DPD semantic_vocab {dpd.cfg.semantic_vocab} != the semantic LM's card "
                             f"{semantic_lm.cfg.card}")
        if semantic_lm.cfg.n_q != 1:
            raise ValueError(f"the semantic LM must have one codebook, got n_q={semantic_lm.cfg.n_q}")
        self.codec, self.latent_scale = codec, float(latent_scale)
        self.dpd_cfg = dpd.cfg
        self.lm_sampler = MusicGenSampler(semantic_lm)
        self.diffusion = DiffusionSampler(dpd)
        self._decode = jax.jit(lambda z: codec.decode_vae(z))

    @property
    def window_multiple(self) -> int:
        """Latent lengths are multiples of lcm(num_chunks, segment_length)."""
        return math.lcm(self.dpd_cfg.num_chunks, self.dpd_cfg.segment_length)

    def latent_frames(self, duration: float) -> int:
        """VAE frames of a ``duration``-second window, rounded up to ``window_multiple``."""
        if not duration > 0:
            raise ValueError(f"duration must be positive, got {duration}")
        n = math.ceil(duration * self.codec.frame_rate)
        return -(-n // self.window_multiple) * self.window_multiple

    def semantic_frames(self, duration: float) -> int:
        return max(1, math.ceil(duration * self.lm_sampler.cfg.frame_rate))

    def _semantic(self, key, duration, cond, num_samples, config):
        return generate_semantic_tokens(self.lm_sampler, key, frames=self.semantic_frames(duration), cond=cond,
                                        num_samples=None if cond is not None else num_samples, config=config)

    def generate(self, key: jax.Array, *, duration: float, cond: jax.Array | None = None, num_samples: int = 1,
                 semantic_config: ARSamplerConfig = ARSamplerConfig(),
                 diffusion_config: DiffusionSamplerConfig = DiffusionSamplerConfig()) -> dict:
        """{'audio' [B, C, N], 'semantic' [B, Ts], 'latents' [B, T, latent_dim]} for one window."""
        k_lm, k_dif = jax.random.split(key)
        tokens = self._semantic(k_lm, duration, cond, num_samples, semantic_config)
        latents = self.diffusion.generate(k_dif, tokens, frames=self.latent_frames(duration), config=diffusion_config)
        return self._finish(tokens, latents, duration)

    def generate_long(self, key: jax.Array, *, duration: float, extra_chunks: int, cond: jax.Array | None = None,
                      num_samples: int = 1, semantic_config: ARSamplerConfig = ARSamplerConfig(),
                      diffusion_config: DiffusionSamplerConfig = DiffusionSamplerConfig()) -> dict:
        """A first window of ``duration`` seconds, then ``extra_chunks`` more chunks, each generated
        with the previous M - 1 chunks as a clean prefix (multi-chunk continuation, Sec. 3.3).
        The semantic tokens for the whole length come from the LM in one pass."""
        if extra_chunks < 0:
            raise ValueError(f"extra_chunks must be >= 0, got {extra_chunks}")
        if extra_chunks and not diffusion_config.chunkwise:
            raise ValueError("generate_long needs diffusion_config.chunkwise=True")
        T, M = self.latent_frames(duration), self.dpd_cfg.num_chunks
        chunk = T // M
        total_T = T + extra_chunks * chunk
        total_s = total_T / self.codec.frame_rate
        k_lm, k_dif = jax.random.split(key)
        tokens = self._semantic(k_lm, total_s, cond, num_samples, semantic_config)
        Ts = tokens.shape[1]

        def window_tokens(start_frame):            # the semantic tokens aligned to latent frames start..start+T
            lo = (start_frame * Ts) // total_T
            n = max(1, (T * Ts) // total_T)
            return jax.lax.dynamic_slice_in_dim(tokens, min(lo, Ts - n), n, axis=1)

        keys = jax.random.split(k_dif, extra_chunks + 1)
        latents = self.diffusion.generate(keys[0], window_tokens(0), frames=T, config=diffusion_config)
        out = [latents]
        for i in range(1, extra_chunks + 1):
            prefix = jnp.concatenate([latents[:, chunk:], jnp.zeros_like(latents[:, :chunk])], axis=1)
            latents = self.diffusion.generate(keys[i], window_tokens(i * chunk), frames=T, prefix=prefix,
                                              prefix_chunks=M - 1, config=diffusion_config)
            out.append(latents[:, -chunk:])
        return self._finish(tokens, jnp.concatenate(out, axis=1), total_s)

    def _finish(self, tokens, latents, duration) -> dict:
        audio = self._decode(latents * self.latent_scale)
        n = int(round(duration * self.codec.sample_rate))
        return {"audio": audio[..., :n], "semantic": tokens, "latents": latents}
