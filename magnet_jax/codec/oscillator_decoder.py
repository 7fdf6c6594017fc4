"""A decoder that synthesises: per-frame gains for a fixed bank of sinusoids and noise bands.

Why: with a phase-blind encoder (``spectrogram_encoder``) the latent of a held note is constant
from frame to frame, and a convolutional upsampler fed a constant input repeats itself every hop,
so SEANet's decoder, trained on spectral losses only, renders every note as a comb of hop-rate
harmonics (held-out chroma cosine 0.44 after 400 steps). Here the phase lives in the basis
instead: oscillators run continuously on an equal-tempered grid (A = 440 Hz; quarter semitones or
semitones, ``EncodecConfig.oscillators_per_semitone``)
from ``LOWEST_MIDI`` to just under Nyquist, beside ``NOISE_BANDS`` bands of a fixed noise, and the
network only predicts their gains. A constant latent is then a steady tone, and every gain is a
smooth function of the spectrum, which a spectral loss teaches quickly. This is a DDSP-style
additive synthesiser (Engel et al. 2020) without the f0 tracker, so it stays polyphonic. It suits
tonal, equal-tempered material such as the synthetic corpus; it is for our own small codecs.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.codec.config import EncodecConfig
from magnet_jax.codec.seanet import residual_stack
from magnet_jax.modules.conv import StreamableConv1d
from magnet_jax.modules.lstm import StreamableLSTM

LOWEST_MIDI = 28.0                   # 41.2 Hz: below the corpus' lowest bass note and kick sweep
NOISE_BANDS = 24
NOISE_PERIOD_S = 2.0                 # the fixed noise repeats after this long
MAX_GAIN = 2.0
INITIAL_GAIN_BIAS = -3.0             # exp_sigmoid(-3) = 0.0018: start near silence, not a wall of tones


def exp_sigmoid(x: jax.Array) -> jax.Array:
    """DDSP's gain nonlinearity ``MAX_GAIN * sigmoid(x) ** ln(10) + 1e-7``: for small gains it is
    ``exp(2.3 x)``, so a gradient step changes a gain by a ratio (as the log-mel loss measures it),
    where softplus near zero passes almost no gradient. Fitting one clip's gains directly, it
    reached chroma cosine 0.95 in 60 Adam steps where softplus reached 0.91."""
    return MAX_GAIN * jax.nn.sigmoid(x) ** np.log(10.0) + 1e-7


def oscillator_frequencies(sample_rate: int, per_semitone: int = 4) -> np.ndarray:
    """Hz of every oscillator: ``per_semitone`` steps a semitone from LOWEST_MIDI up to 0.95 * Nyquist."""
    top = 69 + 12 * np.log2(0.95 * sample_rate / 2 / 440.0)
    midi = np.arange(LOWEST_MIDI, top, 1.0 / per_semitone)
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def noise_band_edges(sample_rate: int) -> np.ndarray:
    """``NOISE_BANDS + 1`` log-spaced edges from 60 Hz to Nyquist."""
    return np.geomspace(60.0, sample_rate / 2, NOISE_BANDS + 1)


def oscillator_phases(count: int) -> np.ndarray:
    """Fixed starting phases (golden-ratio spaced), so that the oscillators do not all peak at sample 0."""
    return 2 * np.pi * ((np.arange(count) * 0.6180339887) % 1.0)


def band_noise(sample_rate: int) -> jax.Array:
    """``[NOISE_PERIOD_S * sample_rate, NOISE_BANDS]``: one fixed white noise split into bands by
    FFT masks and scaled to unit RMS, so that a gain of g is a band at RMS g."""
    length = int(NOISE_PERIOD_S * sample_rate)
    spectrum = jnp.fft.rfft(jax.random.normal(jax.random.key(0), (length,)))
    freqs = np.fft.rfftfreq(length, 1.0 / sample_rate)
    edges = noise_band_edges(sample_rate)
    masks = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in zip(edges[:-1], edges[1:])], axis=1)
    bands = jnp.fft.irfft(spectrum[:, None] * jnp.asarray(masks, jnp.float32), n=length, axis=0)
    return bands / jnp.sqrt(jnp.mean(bands ** 2, axis=0, keepdims=True))


def basis(num_frames: int, hop: int, sample_rate: int, per_semitone: int = 4) -> jax.Array:
    """``[num_frames, hop, oscillators + NOISE_BANDS]``: every basis signal, cut into frames.

    Each oscillator's phase at a frame start is reduced modulo one cycle in float64 on the host
    (the shapes are static), so a long clip keeps phases exact where float32 sample counts would
    drift by degrees after tens of seconds.
    """
    freqs = oscillator_frequencies(sample_rate, per_semitone)
    cycles_at_frame = np.mod(np.outer(np.arange(num_frames) * hop, freqs) / sample_rate, 1.0)   # [T, K]
    cycles_in_frame = np.mod(np.outer(np.arange(hop), freqs) / sample_rate, 1.0)                # [hop, K]
    start = (2 * np.pi * cycles_at_frame + oscillator_phases(freqs.size)).astype(np.float32)
    tones = jnp.sin(jnp.asarray(start)[:, None, :] + jnp.asarray(2 * np.pi * cycles_in_frame, jnp.float32)[None])
    noise = band_noise(sample_rate)
    noise = noise[np.arange(num_frames * hop) % noise.shape[0]].reshape(num_frames, hop, NOISE_BANDS)
    return jnp.concatenate([tones, noise], axis=2)


def synthesise(gains: jax.Array, hop: int, sample_rate: int, per_semitone: int = 4) -> jax.Array:
    """Gains ``[B, T, channels, bases]`` -> audio ``[B, T * hop, channels]`` (bases as ``basis``).

    Frame t's gains hold at the centre of its hop; between centres they are interpolated
    linearly (and held flat before the first and after the last), so a gain change is a ramp
    over one hop rather than a click.
    """
    b, t, c, k = gains.shape
    frac = (np.arange(hop) + 0.5) / hop - 0.5                  # position relative to the hop centre
    prev = jnp.concatenate([gains[:, :1], gains[:, :-1]], axis=1)
    nxt = jnp.concatenate([gains[:, 1:], gains[:, -1:]], axis=1)
    left = jnp.asarray(np.clip(-frac, 0, None), gains.dtype)     # weight of the previous frame
    right = jnp.asarray(np.clip(frac, 0, None), gains.dtype)     # weight of the next frame
    frames = basis(t, hop, sample_rate, per_semitone)            # [T, hop, K]
    # the weights depend on the sample within the hop only, so they scale each frame's sum of
    # bases after the einsum rather than three weighted copies of the basis before it
    def on_bases(g: jax.Array) -> jax.Array:                     # [B, T, C, K] -> [B, T, hop, C]
        return jnp.einsum("btck,tjk->btjc", g, frames)
    y = ((1 - left - right)[:, None] * on_bases(gains) + left[:, None] * on_bases(prev)
         + right[:, None] * on_bases(nxt))
    return y.reshape(b, t * hop, c)


class OscillatorDecoder(nnx.Module):
    """Latent ``[B, T, dimension]`` -> audio ``[B, T * hop, channels]`` by additive synthesis.

    A kernel-3 conv to SEANet's bottleneck width, the LSTM, ``2 * n_residual_layers`` residual
    units, and a conv to non-negative (``exp_sigmoid``) gains for every oscillator and noise band.
    """

    def __init__(self, cfg: EncodecConfig, *, rngs: nnx.Rngs):
        self.alpha, self.hop, self.sample_rate, self.channels = cfg.elu_alpha, cfg.hop_length, cfg.sample_rate, cfg.channels
        self.per_semitone = cfg.oscillators_per_semitone
        self.num_bases = oscillator_frequencies(cfg.sample_rate, self.per_semitone).size + NOISE_BANDS
        width = cfg.bottleneck_width
        conv = dict(causal=cfg.causal, pad_mode=cfg.pad_mode, norm=cfg.norm, rngs=rngs)
        self.conv_in = StreamableConv1d(cfg.dimension, width, 3, **conv)
        self.lstm = StreamableLSTM(width, cfg.lstm, rngs=rngs) if cfg.lstm else None
        self.residuals = residual_stack(cfg, width, rngs)
        self.conv_out = StreamableConv1d(width, cfg.channels * self.num_bases, 3, **conv)
        self.conv_out.bias[...] = jnp.full_like(self.conv_out.bias[...], INITIAL_GAIN_BIAS)

    def gains(self, z: jax.Array) -> jax.Array:
        """Latent ``[B, T, dimension]`` -> gains ``[B, T, channels, bases]`` (>= 0)."""
        h = self.conv_in(z)
        if self.lstm is not None:
            h = self.lstm(h)
        for unit in self.residuals:
            h = unit(h)
        g = exp_sigmoid(self.conv_out(jax.nn.elu(h, self.alpha)))
        return g.reshape(*g.shape[:2], self.channels, self.num_bases)

    def __call__(self, z: jax.Array) -> jax.Array:
        return synthesise(self.gains(z), self.hop, self.sample_rate, self.per_semitone)
