"""Short-time Fourier transforms and mel spectrograms in JAX, as audiocraft's losses compute them.

Audiocraft builds its reconstruction loss and its discriminator on ``torchaudio.transforms``
(``MelSpectrogram``, ``Spectrogram``). Both are reproduced here from their definitions so the
losses are differentiable JAX functions:

- frames are taken with ``center=False`` (the caller pads), a periodic Hann window
  (``torch.hann_window``), one-sided ``rfft``;
- ``normalized=True`` divides the complex spectrum by ``sqrt(sum(window ** 2))`` (torchaudio's
  "window" normalisation);
- mel filters are torchaudio's ``melscale_fbanks`` with the HTK mel scale and no area
  normalisation: triangles between ``n_mels + 2`` points equally spaced in mel, evaluated on the
  linear grid ``linspace(0, sample_rate // 2, n_fft // 2 + 1)``.

Frames are gathered with one strided index array and transformed with one batched ``rfft``;
on CPU and GPU this is faster than expressing the STFT as a convolution with a DFT kernel.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.modules.conv import extra_padding_for_conv1d


@functools.lru_cache(maxsize=64)
def hann_window(length: int) -> np.ndarray:
    """``torch.hann_window(length)`` (periodic): ``0.5 - 0.5 cos(2 pi n / length)``."""
    n = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)).astype(np.float32)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=64)
def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    """torchaudio ``melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sr, None, 'htk')``: [F, n_mels]."""
    f_max = float(sample_rate // 2) if not f_max else float(f_max)
    if not 0.0 <= f_min < f_max:
        raise ValueError(f"mel filterbank: need 0 <= f_min < f_max, got f_min={f_min}, f_max={f_max}")
    all_freqs = np.linspace(0.0, sample_rate // 2, n_fft // 2 + 1)
    m_pts = np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    f_pts = _mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]                     # [F, n_mels + 2]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


def frame_signal(x: jax.Array, n_fft: int, hop: int) -> jax.Array:
    """``[..., N]`` -> ``[..., n_frames, n_fft]`` with ``n_frames = (N - n_fft) // hop + 1`` (no padding)."""
    n = x.shape[-1]
    if n < n_fft:
        raise ValueError(f"signal of {n} samples is shorter than the FFT size {n_fft}")
    n_frames = (n - n_fft) // hop + 1
    index = np.arange(n_frames)[:, None] * hop + np.arange(n_fft)[None, :]
    return x[..., index]


def stft(x: jax.Array, n_fft: int, hop: int, normalized: bool = False) -> jax.Array:
    """Complex one-sided STFT of ``[..., N]`` -> ``[..., n_frames, n_fft // 2 + 1]`` (center=False)."""
    window = jnp.asarray(hann_window(n_fft))
    spec = jnp.fft.rfft(frame_signal(x, n_fft, hop) * window, axis=-1)
    if normalized:
        spec = spec / math.sqrt(float(np.sum(hann_window(n_fft).astype(np.float64) ** 2)))
    return spec


def mel_spectrogram(x: jax.Array, sample_rate: int, n_fft: int, hop: int, n_mels: int,
                    f_min: float = 0.0, f_max: float | None = None, normalized: bool = False,
                    log: bool = True, floor_level: float = 1e-5, power: int = 2) -> jax.Array:
    """audiocraft ``MelSpectrogramWrapper`` on ``[B, C, N]`` -> ``[B, C * n_mels, frames]``.

    Reflect-pads ``(n_fft - hop) // 2`` on both sides, then zero-pads on the right so every frame
    is full (``pad_for_conv1d``): ``ceil(N / hop)`` frames. Power spectrum (torchaudio's
    default ``power=2``; ``power=1`` projects magnitudes instead, as DAC's mel loss does), mel
    projection, then ``log10(floor + mel)`` when ``log``.
    """
    if x.ndim == 2:
        x = x[:, None]
    p = (n_fft - hop) // 2
    if x.shape[-1] <= p:
        raise ValueError(f"mel spectrogram with n_fft={n_fft}: the signal ({x.shape[-1]} samples) must be "
                         f"longer than the reflect padding {p}")
    x = jnp.pad(x, ((0, 0), (0, 0), (p, p)), mode="reflect")
    extra = extra_padding_for_conv1d(x.shape[-1], n_fft, hop, 0)
    x = jnp.pad(x, ((0, 0), (0, 0), (0, extra)))
    spec = stft(x, n_fft, hop, normalized)
    spec = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2                      # [B, C, frames, F]
    if power == 1:
        spec = jnp.sqrt(spec + 1e-12)      # the offset keeps sqrt's gradient finite at silence
    elif power != 2:
        raise ValueError(f"mel_spectrogram: power must be 1 (magnitude) or 2 (power), got {power}")
    fb = jnp.asarray(mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max))
    mel = jnp.einsum("bctf,fm->bcmt", spec, fb, precision=jax.lax.Precision.HIGHEST)
    if log:
        mel = jnp.log10(floor_level + mel)
    b, c, m, t = mel.shape
    return mel.reshape(b, c * m, t)
