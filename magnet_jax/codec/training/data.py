"""Audio for codec training: random crops of audio files through a checkpointable grain pipeline.

The LM loader (``data_pipelines.loader``) serves codec *tokens*; the codec itself trains on
waveforms, so this module serves crops of decoded audio:

    sorted audio files -> train / valid split by a stable hash of the path -> this process's slice
    -> seeded shuffle (new permutation each epoch) -> repeat -> random crop of ``segment`` seconds
    (decoded with ``data_pipelines.audio``: soundfile, channel conversion, soxr resampling to the
    codec's rate; shorter files zero-padded) -> batch ``{"audio": float32 [B, C, N]}``

As with the LM loader, every element is a pure function of (seed, index), so the iterator state
is a position and a resumed run reads the same crops. The split is a hash of each file's path
relative to the folder, so adding files never moves an old file between splits.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import grain
import numpy as np
import soundfile as sf

from data_pipelines.audio import SUPPORTED_EXTENSIONS, convert_channels, read_window, resample


def list_audio(directory: str | Path) -> list[str]:
    """Every audio file under ``directory`` (recursively), as sorted relative paths."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"data.dir {directory} is not a folder of audio files "
                                f"(make one with `magnet-jax synth-corpus --out DIR --clips N`)")
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                   if p.suffix.lower() in SUPPORTED_EXTENSIONS and p.is_file())
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(SUPPORTED_EXTENSIONS)}) under {directory}")
    return files


def in_valid_split(relpath: str, valid_percent: float) -> bool:
    return zlib.crc32(relpath.encode()) % 10000 < round(valid_percent * 100)


def split_files(directory: str | Path, valid_percent: float) -> dict[str, list[str]]:
    files = list_audio(directory)
    valid = [f for f in files if in_valid_split(f, valid_percent)]
    train = [f for f in files if not in_valid_split(f, valid_percent)]
    if not train:
        raise ValueError(f"{directory}: all {len(files)} files fell in the held-out split; lower data.valid_percent")
    return {"train": train, "valid": valid}


def read_crop(path: Path, start_s: float, duration: float, sample_rate: int, channels: int) -> np.ndarray:
    """``duration`` seconds from ``start_s`` at the codec's rate and channels, zero-padded if the file ends."""
    wav, sr = read_window(path, start_s, start_s + duration)
    wav = resample(convert_channels(wav, channels), sr, sample_rate)
    n = int(round(duration * sample_rate))
    out = np.zeros((channels, n), np.float32)
    out[:, :min(n, wav.shape[-1])] = wav[:, :n]
    return out


class _RandomCrop(grain.transforms.RandomMap):
    """A uniformly placed crop of ``duration`` seconds of one file (seeded by grain per element)."""

    def __init__(self, directory: str, duration: float, sample_rate: int, channels: int):
        self.directory, self.duration = directory, duration
        self.sample_rate, self.channels = sample_rate, channels

    def random_map(self, relpath: str, rng: np.random.Generator) -> np.ndarray:
        path = Path(self.directory) / relpath
        info = sf.info(str(path))
        seg = int(math.ceil(self.duration * info.samplerate))
        start = int(rng.integers(0, max(info.frames - seg, 0) + 1))
        return read_crop(path, start / info.samplerate, self.duration, self.sample_rate, self.channels)


def _collate(crops: list[np.ndarray]) -> dict:
    return {"audio": np.stack(crops)}


def make_audio_loader(directory: str | Path, files: list[str], *, batch_size: int, duration: float,
                      sample_rate: int, channels: int, seed: int, shuffle: bool = True,
                      process_index: int = 0, process_count: int = 1, worker_count: int = 0
                      ) -> grain.DatasetIterator:
    """A checkpointable iterator of ``{"audio": [batch_size / process_count, C, N]}`` random crops."""
    if batch_size % process_count:
        raise ValueError(f"global batch {batch_size} is not divisible by {process_count} processes")
    mine = files[process_index::process_count]
    per_process = batch_size // process_count
    if len(mine) < 1:
        raise ValueError(f"process {process_index} has no audio files ({len(files)} files for "
                         f"{process_count} processes)")
    ds = grain.MapDataset.source(mine).seed(seed)
    if shuffle:
        ds = ds.shuffle()
    ds = ds.repeat(None).random_map(_RandomCrop(str(directory), duration, sample_rate, channels))
    it = ds.batch(per_process, drop_remainder=True, batch_fn=_collate).to_iter_dataset()
    if worker_count > 0:
        from data_pipelines.loader import _mark_absl_flags_parsed
        _mark_absl_flags_parsed(0, worker_count)
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count),
                            worker_init_fn=_mark_absl_flags_parsed)
    return iter(it)


def load_clips(directory: str | Path, files: list[str], duration: float, sample_rate: int, channels: int
               ) -> np.ndarray:
    """Held-out clips from their start, ``[n, C, N]`` (``duration`` 0 = the shortest whole file)."""
    if not files:
        raise ValueError(f"{directory}: the held-out split is empty; raise data.valid_percent or add files")
    if duration <= 0:
        duration = min(sf.info(str(Path(directory) / f)).duration for f in files)
    return np.stack([read_crop(Path(directory) / f, 0.0, duration, sample_rate, channels) for f in files])


def read_labels(directory: str | Path) -> dict[str, dict]:
    """``labels.jsonl`` of a synthetic corpus, by file stem (empty for other folders)."""
    path = Path(directory) / "labels.jsonl"
    if not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["ytid"]: r for r in rows if "ytid" in r}
