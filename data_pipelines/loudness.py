"""ITU-R BS.1770-4 integrated loudness and audiocraft's loudness normalisation.

Why here and not a dependency: audiocraft normalises with torchaudio's ``Loudness`` transform
(``audiocraft.data.audio_utils.normalize_loudness``), which this project cannot load; the
measurement is short to write exactly from the recommendation: K-weighting (a high shelf then a
high pass), 400 ms blocks with 75 % overlap, an absolute gate at -70 LKFS and a relative gate
10 LU below the ungated mean.
"""
from __future__ import annotations

import numpy as np
from scipy import signal

ABSOLUTE_GATE_LKFS = -70.0
RELATIVE_GATE_LU = -10.0


def k_weighting_filters(rate: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(b, a) of the two K-weighting stages at ``rate``.

    The recommendation lists coefficients for 48 kHz only; these analog prototypes (the
    derivation used by libebur128) reproduce them to 1e-8 and extend them to any rate.
    """
    # stage 1: high shelf, +4 dB above ~1.7 kHz (the acoustic effect of the head)
    k = np.tan(np.pi * 1681.974450955533 / rate)
    q, vh = 0.7071752369554196, 10.0 ** (3.999843853973347 / 20.0)
    vb = vh ** 0.4996667741545416
    a0 = 1.0 + k / q + k * k
    shelf = (np.array([vh + vb * k / q + k * k, 2.0 * (k * k - vh), vh - vb * k / q + k * k]) / a0,
             np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]))
    # stage 2: RLB high pass at ~38 Hz
    k = np.tan(np.pi * 38.13547087602444 / rate)
    q = 0.5003270373238773
    a0 = 1.0 + k / q + k * k
    high_pass = (np.array([1.0, -2.0, 1.0]),
                 np.array([1.0, 2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0]))
    return shelf, high_pass


def k_weight(wav: np.ndarray, rate: int) -> np.ndarray:
    """Apply the two K-weighting stages along the last axis."""
    (b1, a1), (b2, a2) = k_weighting_filters(rate)
    return signal.lfilter(b2, a2, signal.lfilter(b1, a1, wav, axis=-1), axis=-1)


def integrated_loudness(wav: np.ndarray, rate: int) -> float:
    """Gated integrated loudness in LKFS of ``wav`` [C, N] (all channels weighted 1, as for
    L, R and C in the recommendation). Returns -inf for digital silence."""
    wav = np.atleast_2d(np.asarray(wav, dtype=np.float64))
    y = k_weight(wav, rate)
    block, hop = int(round(0.4 * rate)), int(round(0.1 * rate))
    if y.shape[-1] < block:                      # shorter than one gating block: ungated mean
        z = np.mean(y ** 2, axis=-1, keepdims=True)
    else:
        starts = np.arange(0, y.shape[-1] - block + 1, hop)
        csum = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(y ** 2, axis=-1)], axis=-1)
        z = (csum[:, starts + block] - csum[:, starts]) / block          # [C, blocks]
    power = z.sum(axis=0)
    with np.errstate(divide="ignore"):
        block_lk = -0.691 + 10 * np.log10(power)
    gated = block_lk > ABSOLUTE_GATE_LKFS
    if not gated.any():
        return float("-inf")
    relative = -0.691 + 10 * np.log10(power[gated].mean()) + RELATIVE_GATE_LU
    gated &= block_lk > relative
    return float(-0.691 + 10 * np.log10(power[gated].mean()))


def normalize_loudness(wav: np.ndarray, rate: int, headroom_db: float = 14.0,
                       compressor: bool = False, energy_floor: float = 2e-3) -> np.ndarray:
    """audiocraft's ``normalize_loudness``: scale to -headroom_db LUFS; signals whose RMS is
    below ``energy_floor`` are returned unchanged (amplifying near-silence only adds noise);
    ``compressor`` soft-clips with tanh."""
    if np.sqrt(np.mean(np.square(wav, dtype=np.float64))) < energy_floor:
        return wav
    gain = 10.0 ** ((-headroom_db - integrated_loudness(wav, rate)) / 20.0)
    out = gain * wav
    if compressor:
        out = np.tanh(out)
    return out.astype(wav.dtype)
