"""EnCodec: SEANet encoder, residual vector quantizer, SEANet decoder (Défossez et al., 2022).

``Encodec.encode`` maps audio ``[B, C, N]`` to int32 codes ``[B, K, T]`` with
``T = ceil(N / hop)``: every strided conv pads its input so its last window is full, exactly as
audiocraft does, so any length works and codes match the reference's. ``Encodec.decode`` maps
codes back to ``T * hop`` samples (the caller trims to its own ``N``). Both are pure functions of
the parameters and the input, safe to ``jax.jit`` (see ``magnet_jax.codec.runner``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.codec.config import EncodecConfig
from magnet_jax.codec.quantizer import ResidualVectorQuantizer
from magnet_jax.codec.seanet import SEANetDecoder, SEANetEncoder
from magnet_jax.codec.oscillator_decoder import OscillatorDecoder
from magnet_jax.codec.spectrogram_encoder import SpectrogramEncoder
from magnet_jax.codec.vae import GaussianBottleneck


def _is_concrete(x) -> bool:
    """True for host / device arrays whose values can be inspected (not inside a jit trace)."""
    return not isinstance(x, getattr(jax.core, "Tracer", ()))


class Encodec(nnx.Module):
    """The neural audio codec MusicGen and MAGNeT tokenize audio with."""

    def __init__(self, cfg: EncodecConfig, *, rngs: nnx.Rngs):
        if not isinstance(cfg, EncodecConfig):
            raise TypeError(f"Encodec needs an EncodecConfig (see magnet_jax.codec.codec_config), got {type(cfg)}")
        self.cfg = cfg
        encoder = SpectrogramEncoder if cfg.encoder == "spectrogram" else SEANetEncoder
        self.encoder = encoder(cfg, rngs=rngs)
        self.decoder = (OscillatorDecoder if cfg.decoder == "oscillators" else SEANetDecoder)(cfg, rngs=rngs)
        if cfg.bottleneck == "vae":
            self.bottleneck = GaussianBottleneck(cfg.dimension, cfg.vae_latent_dim, rngs=rngs)
        else:
            self.quantizer = ResidualVectorQuantizer(cfg.n_q, cfg.bins, cfg.dimension, rngs=rngs)

    # --- the reference's CompressionModel properties ---------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.cfg.sample_rate

    @property
    def channels(self) -> int:
        return self.cfg.channels

    @property
    def hop_length(self) -> int:
        return self.cfg.hop_length

    @property
    def frame_rate(self) -> float:
        return self.cfg.frame_rate

    @property
    def n_q(self) -> int:
        return self.cfg.n_q

    @property
    def cardinality(self) -> int:
        return self.cfg.bins

    def num_frames(self, num_samples: int) -> int:
        """Frames ``encode`` returns for ``num_samples`` samples: ``ceil(num_samples / hop)``."""
        return -(-int(num_samples) // self.hop_length)

    # --- validation --------------------------------------------------------------------------
    def _check_audio(self, audio: jax.Array) -> None:
        if audio.ndim != 3:
            raise ValueError(f"audio must be [batch, channels, samples], got shape {tuple(audio.shape)}; "
                             f"add a batch axis with audio[None] or a channel axis with audio[:, None]")
        if audio.shape[1] != self.channels:
            raise ValueError(f"audio has {audio.shape[1]} channels but this codec takes {self.channels}; "
                             f"mix down or pick a {audio.shape[1]}-channel codec")
        if audio.shape[2] < 1:
            raise ValueError("audio has no samples")
        if not jnp.issubdtype(audio.dtype, jnp.floating):
            raise TypeError(f"audio must be floating point in [-1, 1], got dtype {audio.dtype}")

    def _check_codes(self, codes: jax.Array) -> None:
        if codes.ndim != 3:
            raise ValueError(f"codes must be [batch, codebooks, frames], got shape {tuple(codes.shape)}")
        if not 1 <= codes.shape[1] <= self.n_q:
            raise ValueError(f"codes have {codes.shape[1]} codebooks; this codec decodes 1..{self.n_q}")
        if codes.shape[2] < 1:
            raise ValueError("codes have no frames")
        if not jnp.issubdtype(codes.dtype, jnp.integer):
            raise TypeError(f"codes must be integers, got dtype {codes.dtype}")
        if _is_concrete(codes):
            lo, hi = int(np.min(codes)), int(np.max(codes))
            if lo < 0 or hi >= self.cardinality:
                raise ValueError(f"codes must lie in [0, {self.cardinality}), got values in [{lo}, {hi}] "
                                 f"(a mask or padding id must be replaced before decoding)")

    # --- codec -------------------------------------------------------------------------------
    def encode_latent(self, audio: jax.Array) -> jax.Array:
        """Audio ``[B, C, N]`` -> continuous latent ``[B, T, dimension]`` (channels-last)."""
        self._check_audio(audio)
        return self.encoder(jnp.swapaxes(audio, 1, 2))

    def _need_rvq(self, what: str) -> None:
        if self.cfg.bottleneck != "rvq":
            raise ValueError(f"{what} needs codebooks, but this codec has a VAE bottleneck: use "
                             f"encode_moments / decode_vae for its continuous latents")

    def _need_vae(self, what: str) -> None:
        if self.cfg.bottleneck != "vae":
            raise ValueError(f"{what} needs a VAE codec (codec.bottleneck='vae'); this one quantizes with RVQ")

    def encode_moments(self, audio: jax.Array) -> tuple[jax.Array, jax.Array]:
        """VAE codecs: audio ``[B, C, N]`` -> (mean, logvar) of q(z | x), each ``[B, T, latent_dim]``.
        The mean is the latent MeLoDy's diffusion models."""
        self._need_vae("encode_moments")
        return self.bottleneck.moments(self.encode_latent(audio))

    def decode_vae(self, z: jax.Array) -> jax.Array:
        """VAE codecs: latents ``[B, T, latent_dim]`` -> audio ``[B, C, T * hop]`` (float32)."""
        self._need_vae("decode_vae")
        return jnp.swapaxes(self.decoder(self.bottleneck.expand(z)), 1, 2)

    def encode(self, audio: jax.Array, n_q: int | None = None) -> jax.Array:
        """Audio ``[B, C, N]`` (float) -> codes ``[B, n_q, ceil(N / hop)]`` (int32)."""
        self._need_rvq("encode")
        if n_q is not None and not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q={n_q}: this codec has {self.n_q} codebooks; use 1..{self.n_q}")
        return self.quantizer.encode(self.encode_latent(audio), n_q)

    def decode_latent(self, codes: jax.Array) -> jax.Array:
        """Codes ``[B, K, T]`` -> quantized latent ``[B, T, dimension]``."""
        self._need_rvq("decode")
        self._check_codes(codes)
        return self.quantizer.decode(codes)

    def decode(self, codes: jax.Array) -> jax.Array:
        """Codes ``[B, K, T]`` (``K <= n_q``) -> audio ``[B, C, T * hop]`` (float32)."""
        return jnp.swapaxes(self.decoder(self.decode_latent(codes)), 1, 2)
