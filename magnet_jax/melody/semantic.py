"""Semantic tokens for MeLoDy: frames of a feature extractor, quantised by k-means.

MeLoDy (arXiv 2305.15719, Sec. 3.1) uses k-means tokens of a self-supervised music model (MERT-like,
in-house). No such weights can be downloaded here, so the built-in extractor is one that needs no
weights at all: ``LogMelChroma``, per frame the log mel spectrum (timbre, loudness) next to a
12-bin chroma (pitch class, the melody/harmony content the semantic LM should carry). Any other
extractor plugs in through the ``FeatureExtractor`` protocol, e.g. ``TransformersExtractor`` for a
MERT / wav2vec2 / HuBERT checkpoint in a local folder (hidden states of one layer).

``SemanticTokenizer`` standardises the frames (per-dimension mean / std of the fitting data, so
no feature dominates the Euclidean distance) and fits ``magnet_jax.melody.kmeans``; ``encode``
maps audio to int32 tokens [B, T] at the extractor's frame rate.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.melody.kmeans import kmeans_assign, kmeans_fit

TOP_DB = 50.0


@runtime_checkable
class FeatureExtractor(Protocol):
    """audio [B, N] float (mono, at ``sample_rate``) -> features [B, T, D] at ``frame_rate`` Hz."""
    sample_rate: int
    frame_rate: float

    def __call__(self, audio: np.ndarray | jax.Array) -> jax.Array: ...


class LogMelChroma:
    """Built-in, weight-free extractor: [log mel (n_mels) | chroma (12)] per STFT frame.

    STFT: Hann window ``n_fft``, hop ``hop_length``, only windows fully inside the clip (padding
    would add broadband frames at the edges that k-means spends tokens on), power spectrum. Mel and chroma filterbanks are librosa's (``filters.mel``, ``filters.chroma``); log
    mel is ln(mel), floored ``TOP_DB`` (50 dB) under the frame's loudest band; chroma is normalised to sum 1 per frame (loudness lives in the mels)."""

    def __init__(self, sample_rate: int = 16000, hop_length: int = 640, n_fft: int = 2048, n_mels: int = 32):
        import librosa
        if min(sample_rate, hop_length, n_fft, n_mels) < 1:
            raise ValueError("LogMelChroma: sample_rate, hop_length, n_fft and n_mels must be >= 1")
        self.sample_rate, self.hop_length, self.n_fft = sample_rate, hop_length, n_fft
        self.frame_rate = sample_rate / hop_length
        self.mel = jnp.asarray(librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels), jnp.float32)
        self.chroma = jnp.asarray(librosa.filters.chroma(sr=sample_rate, n_fft=n_fft), jnp.float32)
        self.window = jnp.asarray(np.hanning(n_fft + 1)[:-1], jnp.float32)     # periodic Hann
        self.dim = n_mels + 12

    def num_frames(self, num_samples: int) -> int:
        """Frames of a clip: windows fully inside it, 1 + (N - n_fft) // hop."""
        return 1 + (num_samples - self.n_fft) // self.hop_length

    def __call__(self, audio: np.ndarray | jax.Array) -> jax.Array:
        audio = jnp.asarray(audio, jnp.float32)
        if audio.ndim != 2:
            raise ValueError(f"audio must be mono [batch, samples], got shape {audio.shape}")
        if audio.shape[1] < self.n_fft:
            raise ValueError(f"audio of {audio.shape[1]} samples is too short for n_fft={self.n_fft}")
        return _log_mel_chroma(audio, self.window, self.mel, self.chroma, self.hop_length)


@jax.jit(static_argnums=(4,))
def _log_mel_chroma(audio, window, mel, chroma, hop):
    n_fft = window.shape[0]
    x = audio
    n_frames = 1 + (x.shape[1] - n_fft) // hop
    idx = jnp.arange(n_frames)[:, None] * hop + jnp.arange(n_fft)[None]
    power = jnp.square(jnp.abs(jnp.fft.rfft(x[:, idx] * window, axis=-1)))       # [B, T, F]
    log_mel = jnp.log(power @ mel.T + 1e-10)
    # a dynamic range of TOP_DB under the frame's loudest band: bands far below it (window leakage,
    # numerical noise) all read the same floor instead of carrying noise into the distances
    log_mel = jnp.maximum(log_mel, log_mel.max(-1, keepdims=True) - TOP_DB * math.log(10.0) / 10.0)
    c = power @ chroma.T
    c = c / jnp.maximum(c.sum(-1, keepdims=True), 1e-10)
    return jnp.concatenate([log_mel, c], axis=-1)


class TransformersExtractor:
    """A user's self-supervised model from a local folder (Hugging Face format: MERT, wav2vec2,
    HuBERT...): the hidden states of ``layer`` as features. Needs torch and transformers; nothing is
    downloaded (``local_files_only``). ``frame_rate`` is read off the model's output length."""

    def __init__(self, folder: str | Path, layer: int, sample_rate: int):
        import torch
        from transformers import AutoModel
        if not Path(folder).is_dir():
            raise ValueError(f"feature model folder {folder} does not exist")
        self.torch = torch
        self.model = AutoModel.from_pretrained(str(folder), local_files_only=True,
                                               trust_remote_code=True).eval()
        self.layer, self.sample_rate = layer, sample_rate
        with torch.no_grad():
            n = self.model(torch.zeros(1, sample_rate), output_hidden_states=True).hidden_states
        if not -len(n) <= layer < len(n):
            raise ValueError(f"layer {layer} out of range: the model has {len(n)} hidden-state outputs")
        self.frame_rate = float(n[layer].shape[1])

    def __call__(self, audio: np.ndarray | jax.Array) -> jax.Array:
        with self.torch.no_grad():
            out = self.model(self.torch.as_tensor(np.asarray(audio, np.float32)), output_hidden_states=True)
        return jnp.asarray(out.hidden_states[self.layer].numpy())


class SemanticTokenizer:
    """k-means tokens of standardised feature frames: ``fit`` once on a corpus, then ``encode``."""

    def __init__(self, extractor: FeatureExtractor, centroids: np.ndarray, mean: np.ndarray, std: np.ndarray):
        if not isinstance(extractor, FeatureExtractor):
            raise ValueError("extractor must be callable with sample_rate and frame_rate attributes")
        self.extractor = extractor
        self.centroids = jnp.asarray(centroids, jnp.float32)
        self.mean, self.std = jnp.asarray(mean, jnp.float32), jnp.asarray(std, jnp.float32)

    @property
    def num_tokens(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def frame_rate(self) -> float:
        return self.extractor.frame_rate

    @classmethod
    def fit(cls, key: jax.Array, extractor: FeatureExtractor, audio: np.ndarray | jax.Array, num_tokens: int,
            iters: int = 50) -> "SemanticTokenizer":
        """Fit k-means with ``num_tokens`` centres on every frame of ``audio`` [B, N]."""
        feats = jnp.asarray(extractor(audio), jnp.float32)
        frames = feats.reshape(-1, feats.shape[-1])
        mean, std = frames.mean(0), frames.std(0) + 1e-6
        return cls(extractor, kmeans_fit(key, (frames - mean) / std, num_tokens, iters), mean, std)

    def encode(self, audio: np.ndarray | jax.Array) -> jax.Array:
        """Audio [B, N] -> int32 tokens [B, T]."""
        feats = jnp.asarray(self.extractor(audio), jnp.float32)
        if feats.shape[-1] != self.centroids.shape[1]:
            raise ValueError(f"extractor gives {feats.shape[-1]}-dim frames; the codebook is {self.centroids.shape[1]}-dim")
        B, T, D = feats.shape
        return kmeans_assign(((feats - self.mean) / self.std).reshape(-1, D), self.centroids).reshape(B, T)

    def save(self, path: str | Path) -> None:
        """centroids, mean, std, and the built-in extractor's settings (so ``load`` rebuilds it)."""
        extra = {}
        if isinstance(self.extractor, LogMelChroma):
            e = self.extractor
            extra["log_mel_chroma"] = np.array([e.sample_rate, e.hop_length, e.n_fft, e.dim - 12], np.int64)
        with open(path, "wb") as f:         # exactly this name (np.savez would append .npz to a bare path)
            np.savez(f, centroids=np.asarray(self.centroids), mean=np.asarray(self.mean), std=np.asarray(self.std),
                     **extra)

    @classmethod
    def load(cls, path: str | Path, extractor: FeatureExtractor | None = None) -> "SemanticTokenizer":
        """A saved tokenizer; ``extractor`` may be left out when it was the built-in LogMelChroma."""
        with np.load(path) as data:
            if extractor is None:
                if "log_mel_chroma" not in data:
                    raise ValueError(f"{path} was fitted on a user's feature extractor: pass the same extractor")
                sr, hop, n_fft, n_mels = (int(v) for v in data["log_mel_chroma"])
                extractor = LogMelChroma(sr, hop, n_fft, n_mels)
            return cls(extractor, data["centroids"], data["mean"], data["std"])

    def encode_aligned(self, audio: np.ndarray | jax.Array) -> jax.Array:
        """Audio [B, N] -> tokens [B, ceil(N / hop)], one per hop like a codec's frames: the clip is
        zero-padded by (n_fft - hop) / 2 on the left (so frame t's window is centred on hop t) and
        enough on the right; built-in extractor only (its hop is a whole number of samples)."""
        e = self.extractor
        if not isinstance(e, LogMelChroma):
            raise ValueError("encode_aligned needs the built-in LogMelChroma extractor (a whole-sample hop)")
        audio = jnp.asarray(audio, jnp.float32)
        frames = -(-audio.shape[1] // e.hop_length)
        left = (e.n_fft - e.hop_length) // 2
        right = max(0, (frames - 1) * e.hop_length + e.n_fft - left - audio.shape[1])
        return self.encode(jnp.pad(audio, ((0, 0), (left, right))))[:, :frames]
