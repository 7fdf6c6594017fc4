"""An encoder that reads only STFT magnitudes: the same latent for a held note whatever its phase.

Why: SEANet's waveform encoder sees the phase of every partial, so while one note is held its
first-codebook tokens cycle with the pitch period (the tiny codec repeated the previous frame's
token only 13.9 % of the time, and the LM could not predict a masked token from all the others:
held-out accuracy 15 % with 95 % of the tokens visible). A masked model samples many tokens at
once, and with tokens that carry phase a sample is noise. Reading log magnitudes, the encoder
cannot see phase, so a held note is a run of one token (71.2 % repeats); its partner, the
oscillator decoder (``oscillator_decoder``), supplies the phase from fixed running oscillators.
For our own small codecs only: the released EnCodec checkpoints all use ``encoder="seanet"``.
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

# Two resolutions: a window of WINDOW_HOPS hops for timing, and one of BASS_WINDOW_HOPS hops, kept
# below BASS_MAX_HZ, for pitch. At 16 kHz and hop 320 the short window's bins are 12.5 Hz apart,
# wider than the semitones of bass notes (4 to 7 Hz between 65 and 123 Hz); with only that window
# the codec lost the bass and chords, and with them the key (key agreement 17 % against 80 % for
# the originals after 3000 steps, the melody above it intact).
WINDOW_HOPS = 4
BASS_WINDOW_HOPS = 16
BASS_MAX_HZ = 1000.0

# The floor under the magnitudes before the log: about -70 dB against a full-scale sine (whose
# peak magnitude with a Hann window is n_fft / 4), so silence does not dominate the input scale.
MAGNITUDE_FLOOR = 1e-3


def frame_starts(num_frames: int, hop: int) -> np.ndarray:
    """Sample index where frame t's window starts, in audio left-padded by ``(n_fft - hop) // 2``:
    ``t * hop``, which centres frame t's window on the middle of its hop ``[t*hop, (t+1)*hop)``."""
    return np.arange(num_frames) * hop


def log_magnitudes(x: jax.Array, hop: int, n_fft: int, num_bins: int | None = None) -> jax.Array:
    """Audio ``[B, N, C]`` -> log STFT magnitudes ``[B, ceil(N / hop), C * num_bins]`` (the lowest
    ``num_bins`` bins; all ``n_fft // 2 + 1`` by default).

    Frame t covers the Hann window of ``n_fft`` samples centred on its hop, zeros outside the
    clip: the frame count and alignment are those of SEANet's strided convs (``ceil(N / hop)``).
    """
    batch, n, channels = x.shape
    frames = -(-n // hop)
    left = (n_fft - hop) // 2
    padded = jnp.pad(x, ((0, 0), (left, frames * hop - n + (n_fft - hop) - left), (0, 0)))
    index = frame_starts(frames, hop)[:, None] + np.arange(n_fft)[None, :]
    windows = padded[:, index] * jnp.asarray(np.hanning(n_fft + 1)[:-1], x.dtype)[None, None, :, None]
    num_bins = n_fft // 2 + 1 if num_bins is None else num_bins
    magnitude = jnp.abs(jnp.fft.rfft(windows, axis=2))[:, :, :num_bins]   # [B, T, bins, C]
    logmag = jnp.log(magnitude + MAGNITUDE_FLOOR)
    return jnp.swapaxes(logmag, 2, 3).reshape(batch, frames, channels * num_bins)


def bass_bins(hop: int, sample_rate: int) -> int:
    """How many bins of the long window lie below BASS_MAX_HZ."""
    return int(BASS_MAX_HZ * BASS_WINDOW_HOPS * hop / sample_rate) + 1


def encoder_features(x: jax.Array, hop: int, sample_rate: int) -> jax.Array:
    """Audio ``[B, N, C]`` -> both resolutions' log magnitudes side by side ``[B, T, features]``."""
    return jnp.concatenate([log_magnitudes(x, hop, WINDOW_HOPS * hop),
                            log_magnitudes(x, hop, BASS_WINDOW_HOPS * hop, bass_bins(hop, sample_rate))], axis=-1)


class SpectrogramEncoder(nnx.Module):
    """Audio ``[B, N, channels]`` -> latent ``[B, ceil(N / hop), dimension]`` from log magnitudes.

    Log magnitudes at two resolutions (``encoder_features``), a kernel-3 conv to SEANet's bottleneck width,
    ``2 * n_residual_layers`` residual units, the LSTM and the output conv: SEANet's bottleneck
    without its strided (phase-reading) front end.
    """

    def __init__(self, cfg: EncodecConfig, *, rngs: nnx.Rngs):
        self.alpha = cfg.elu_alpha
        self.hop, self.sample_rate = cfg.hop_length, cfg.sample_rate
        features = cfg.channels * (WINDOW_HOPS * self.hop // 2 + 1 + bass_bins(self.hop, self.sample_rate))
        width = cfg.bottleneck_width
        conv = dict(causal=cfg.causal, pad_mode=cfg.pad_mode, norm=cfg.norm, rngs=rngs)
        self.conv_in = StreamableConv1d(features, width, 3, **conv)
        self.residuals = residual_stack(cfg, width, rngs)
        self.lstm = StreamableLSTM(width, cfg.lstm, rngs=rngs) if cfg.lstm else None
        self.conv_out = StreamableConv1d(width, cfg.dimension, cfg.last_kernel_size, **conv)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.conv_in(encoder_features(x, self.hop, self.sample_rate))
        for unit in self.residuals:
            h = unit(h)
        if self.lstm is not None:
            h = self.lstm(h)
        return self.conv_out(jax.nn.elu(h, self.alpha))
