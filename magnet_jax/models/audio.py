"""Audio given by a user, brought to a model's rate and channels."""
from __future__ import annotations

import numpy as np

from magnet_jax.models.errors import PipelineError

# -- audio helpers -----------------------------------------------------------------------------------
def convert_audio(wav: np.ndarray, from_rate: int, to_rate: int, channels: int) -> np.ndarray:
    """[B, C, N] float32 at ``from_rate`` -> [B, channels, M] at ``to_rate`` (audiocraft's
    convert_audio: resample, then mix down to mono, repeat mono, or keep the first channels).
    Resampling uses soxr (audiocraft uses julius: the two differ slightly)."""
    if from_rate != to_rate:
        import soxr
        wav = np.stack([soxr.resample(x.T, from_rate, to_rate).T for x in wav]).astype(np.float32)
    src = wav.shape[1]
    if src == channels:
        return wav
    if channels == 1:
        return wav.mean(axis=1, keepdims=True)
    if src == 1:
        return np.repeat(wav, channels, axis=1)
    if src > channels:
        return wav[:, :channels]
    raise PipelineError(f"the prompt audio has {src} channels; the model takes {channels}")
