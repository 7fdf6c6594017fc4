"""Decode, check, convert and cut audio for the codec.

Why these choices: soundfile (libsndfile >= 1.1) decodes wav, flac, ogg and mp3 without ffmpeg;
soxr resamples with a proper anti-alias filter and no numba start-up cost; channel conversion
follows audiocraft's ``convert_audio_channels`` (mean to mono, replicate mono, keep the first
channels). Every check that fails raises :class:`~data_pipelines.rejects.Rejected` with a reason
code and the evidence, so the tokenizer can skip the file and say why.
"""
from __future__ import annotations

import dataclasses
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from data_pipelines.loudness import normalize_loudness
from data_pipelines.rejects import Rejected

SUPPORTED_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
SILENCE_DBFS = -80.0            # a peak below this is digital silence or a dead channel
TRUNCATION_TOLERANCE = 0.01     # mp3 frame estimates may be off by a little; 1 % is not a cut


@dataclasses.dataclass(frozen=True)
class AudioSettings:
    """How decoded audio is turned into codec input."""
    sample_rate: int                 # the codec's rate
    channels: int                    # the codec's channels (1 mono, 2 stereo)
    segment_duration: float          # seconds per record
    min_segment_ratio: float = 0.5   # audiocraft's default: keep a tail of at least half a segment
    normalize: bool = False          # audiocraft's normalize_loudness
    loudness_headroom_db: float = 14.0
    loudness_compressor: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.segment_duration < float("inf"):
            raise ValueError(f"segment_duration must be a finite number > 0, got {self.segment_duration}")
        if not 0 < self.min_segment_ratio <= 1:
            raise ValueError(f"min_segment_ratio must be in (0, 1], got {self.min_segment_ratio}")

    @property
    def segment_samples(self) -> int:
        return int(round(self.segment_duration * self.sample_rate))

    @property
    def min_samples(self) -> int:
        return max(1, int(np.ceil(self.min_segment_ratio * self.segment_samples)))


@dataclasses.dataclass(frozen=True)
class Segment:
    """A piece of one clip, ready for the codec: ``wav`` [C, n] with n <= segment_samples."""
    wav: np.ndarray
    offset_s: float                  # start within the source file, seconds


def _wav_declared_frames(path: Path, block_align: int) -> int | None:
    """Frames the RIFF ``data`` chunk header declares, or None when it is not a plain RIFF
    WAV or the size is a streaming placeholder. libsndfile silently clamps a truncated WAV to
    what is on disk, so this is the only way to notice the cut."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                return None if size in (0, 0xFFFFFFFF) else size // max(1, block_align)
            f.seek(size + (size & 1), os.SEEK_CUR)


def _check_file(path: Path) -> sf._SoundFileInfo:
    if not path.exists():
        raise Rejected("missing", f"no file at {path}")
    if path.stat().st_size == 0:
        raise Rejected("empty", "zero-byte file")
    try:
        info = sf.info(str(path))
    except Exception as err:  # libsndfile raises several types for undecodable input
        raise Rejected("unreadable", f"{type(err).__name__}: {err}") from None
    if info.frames <= 0:
        raise Rejected("empty", "the file holds no audio frames")
    if info.format == "WAV" or path.suffix.lower() == ".wav":
        width = {"PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4, "DOUBLE": 8, "PCM_U8": 1}
        declared = _wav_declared_frames(path, width.get(info.subtype, 0) * info.channels)
        if declared is not None and declared > info.frames:
            raise Rejected("truncated", f"header declares {declared} frames, file holds {info.frames}")
    return info


def read_window(path: Path, start_s: float = 0.0, end_s: float | None = None
                ) -> tuple[np.ndarray, int]:
    """Decode [start_s, end_s) of a file as float32 [C, N] at its own rate, after checks."""
    path = Path(path)
    info = _check_file(path)
    sr = info.samplerate
    start = int(round(start_s * sr))
    stop = info.frames if end_s is None else min(info.frames, int(round(end_s * sr)))
    if start < 0 or start >= info.frames or (end_s is not None and end_s <= start_s):
        raise Rejected("bad_window", f"window [{start_s}, {end_s}] s vs audio length "
                                     f"{info.frames / sr:.3f} s")
    try:
        wav, _ = sf.read(str(path), start=start, frames=stop - start, dtype="float32",
                         always_2d=True)
    except Exception as err:
        raise Rejected("unreadable", f"decoding failed: {type(err).__name__}: {err}") from None
    if wav.shape[0] < (stop - start) * (1 - TRUNCATION_TOLERANCE):
        raise Rejected("truncated", f"expected {stop - start} frames from the header, decoded "
                                    f"{wav.shape[0]}")
    return np.ascontiguousarray(wav.T), sr


def check_samples(wav: np.ndarray) -> None:
    """Reject NaN/inf and digital silence (both would poison or waste a training batch)."""
    bad = int(np.size(wav) - np.count_nonzero(np.isfinite(wav)))
    if bad:
        raise Rejected("non_finite", f"{bad} NaN/inf samples of {wav.size}")
    peak = float(np.max(np.abs(wav))) if wav.size else 0.0
    peak_db = 20 * np.log10(peak) if peak > 0 else -np.inf
    if peak_db < SILENCE_DBFS:
        raise Rejected("silent", f"peak {peak_db:.1f} dBFS < {SILENCE_DBFS:.0f} dBFS")


def convert_channels(wav: np.ndarray, channels: int) -> np.ndarray:
    """audiocraft's ``convert_audio_channels`` on [C, N]."""
    src = wav.shape[0]
    if src == channels:
        return wav
    if channels == 1:
        return wav.mean(axis=0, keepdims=True)
    if src == 1:
        return np.repeat(wav, channels, axis=0)
    if src > channels:
        return wav[:channels]
    raise Rejected("unreadable", f"{src} channels cannot become {channels} (not mono)")


def resample(wav: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """soxr high-quality resampling of [C, N]."""
    if from_rate == to_rate:
        return wav
    out = soxr.resample(np.ascontiguousarray(wav.T), from_rate, to_rate, quality="HQ")
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).reshape(-1, wav.shape[0]).T)


def load_clip(path: Path, settings: AudioSettings, start_s: float = 0.0,
              end_s: float | None = None) -> np.ndarray:
    """Decode, check, convert to the codec's channels and rate, optionally normalise."""
    wav, sr = read_window(path, start_s, end_s)
    check_samples(wav)
    wav = resample(convert_channels(wav, settings.channels), sr, settings.sample_rate)
    if wav.shape[-1] < settings.min_samples:
        raise Rejected("too_short", f"{wav.shape[-1] / settings.sample_rate:.4f} s < "
                                    f"{settings.min_samples / settings.sample_rate:.4f} s "
                                    f"(min_segment_ratio {settings.min_segment_ratio} x "
                                    f"segment {settings.segment_duration} s)")
    if settings.normalize:
        wav = normalize_loudness(wav, settings.sample_rate, settings.loudness_headroom_db,
                                 settings.loudness_compressor)
    return wav


def cut_segments(wav: np.ndarray, settings: AudioSettings, start_s: float = 0.0
                 ) -> tuple[list[Segment], float]:
    """Consecutive segments of ``segment_duration``; a shorter tail is kept when it reaches
    ``min_segment_ratio`` of a segment (audiocraft's rule). Returns the segments and the
    seconds of tail that were too short to keep, so the summary can account for them."""
    seg, n = settings.segment_samples, wav.shape[-1]
    out = []
    for offset in range(0, n, seg):
        piece = wav[:, offset:offset + seg]
        if piece.shape[-1] >= settings.min_samples:
            out.append(Segment(piece, start_s + offset / settings.sample_rate))
    kept = sum(s.wav.shape[-1] for s in out)
    return out, (n - kept) / settings.sample_rate
