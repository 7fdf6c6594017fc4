"""The grain training loader over tokenized shards.

Why grain's dataset API: every step is a pure function of (seed, global index), so the iterator
state is just a position, ``get_state()``/``set_state()`` restore it exactly, and
``grain.checkpoint.CheckpointSave(iterator)`` stores it in the same orbax checkpoint as the
model. The pipeline:

    ArrayRecordDataSource(shards) -> this process's slice -> seeded shuffle (a new permutation
    each epoch) -> repeat -> parse + random crop to ``frames`` + audiocraft text augmentation
    (seeded per element) -> batch -> [worker processes]

Batches are dicts: ``codes`` int32 [B, K, frames], ``padding_mask`` bool [B, frames] (False on
frames padded after a clip shorter than ``frames``), ``descriptions`` list of B str ('' is the
null text), and ``clip_id`` list of B str. ``B`` is the per-process batch (global / processes).
"""
from __future__ import annotations

import dataclasses
import math
import random
import threading
from pathlib import Path
from typing import Any

import grain
import numpy as np

from data_pipelines import records

# audiocraft's MusicInfo dataclass fields, in order. The reference draws one random number per
# field while choosing which metadata to merge, so reproducing its random stream needs them all.
MUSIC_INFO_FIELDS: tuple[str, ...] = (
    "meta", "seek_time", "n_frames", "total_frames", "sample_rate", "channels", "audio_tokens",
    "title", "artist", "key", "bpm", "genre", "moods", "keywords", "description", "name",
    "instrument", "self_wav", "joint_embed")
# the fields it may merge -> where our record keeps them (audiocraft's keywords are our aspects)
MERGE_FIELDS: dict[str, str] = {"key": "key", "bpm": "bpm", "genre": "genre", "moods": "moods",
                                "keywords": "aspects", "instrument": "instrument"}


@dataclasses.dataclass(frozen=True)
class LoaderConfig:
    """What the training loop asks of its data."""
    batch_size: int                 # global batch, split evenly over processes
    frames: int                     # training length in codec frames (10 s at 50 Hz = 500)
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None   # None: repeat forever
    merge_text_p: float = 0.0       # audiocraft MusicDataset text augmentation
    drop_desc_p: float = 0.0
    drop_other_p: float = 0.0
    worker_count: int = 0           # grain worker processes (0: decode in the main process)
    worker_buffer_size: int = 2

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.frames < 1:
            raise ValueError(f"batch_size and frames must be >= 1, got {self.batch_size}, {self.frames}")
        for name in ("merge_text_p", "drop_desc_p", "drop_other_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")


# ---------------------------------------------------------------- text augmentation

def _merge_value(value: Any) -> str | None:
    """audiocraft's field cleaning + ``process_value``: None for missing; bpm printed as the
    float it was parsed from; lists comma-joined."""
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else str(np.float32(value))
    if isinstance(value, (list, tuple)):
        return ", ".join(value) if value else None
    return value or None


def augment_description(rec: dict, rng: random.Random, merge_text_p: float,
                        drop_desc_p: float, drop_other_p: float) -> str:
    """audiocraft ``augment_music_info_description``, draw for draw.

    With probability ``merge_text_p`` the metadata fields are written as "name: value" pairs in
    random order and appended to the description, which is itself dropped with probability
    ``drop_desc_p``. Note the reference *keeps* each field with probability ``drop_other_p``
    (``keep_field = uniform < drop_other_p``); this reproduces the code, not its docstring.
    Given a ``random.Random`` in the same state as the reference's global ``random``, the output
    is identical. Returns '' where the reference returns None (the null text).
    """
    description = rec["caption"] or None
    metadata_text = ""
    if rng.uniform(0, 1) < merge_text_p:
        pairs = []
        for name in MUSIC_INFO_FIELDS:
            keep = rng.uniform(0, 1) < drop_other_p          # drawn for every field, as there
            value = _merge_value(rec[MERGE_FIELDS[name]]) if name in MERGE_FIELDS else None
            if keep and value is not None:
                pairs.append(f"{name}: {value}")
        rng.shuffle(pairs)
        metadata_text = ". ".join(pairs)
        description = description if not rng.uniform(0, 1) < drop_desc_p else None
    if description is None:
        description = metadata_text if len(metadata_text) > 1 else None
    else:
        description = ". ".join([description.rstrip("."), metadata_text])
    return description.strip() if description else ""


# ---------------------------------------------------------------- crop and batch

def random_crop(codes: np.ndarray, frames: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray]:
    """A uniformly placed window of ``frames``; shorter codes are right-padded with 0 and
    masked out (``padding_mask`` False), as audiocraft pads short segments."""
    k, t = codes.shape
    if t >= frames:
        start = int(rng.integers(0, t - frames + 1))
        return codes[:, start:start + frames].astype(np.int32), np.ones(frames, bool)
    out = np.zeros((k, frames), np.int32)
    out[:, :t] = codes
    mask = np.zeros(frames, bool)
    mask[:t] = True
    return out, mask


# grain maps the first elements on several threads at once; building the record parser imports
# tensorflow_datasets modules lazily, and concurrent first imports can deadlock on Python's import
# lock. One lock per process serialises the (one-time) build.
_CODEC_BUILD_LOCK = threading.Lock()


class _ToTrainingExample(grain.transforms.RandomMap):
    """Parse one serialized record, crop it, augment its text (seeded by grain per element)."""

    def __init__(self, directory: str, cfg: LoaderConfig):
        self.directory, self.cfg = directory, cfg
        self._codec: records.RecordCodec | None = None
        records.features_from_directory(Path(directory))  # do tfds's lazy imports on this thread now

    def _record_codec(self) -> records.RecordCodec:
        if self._codec is None:           # built lazily: worker processes each build their own
            with _CODEC_BUILD_LOCK:
                if self._codec is None:
                    self._codec = records.RecordCodec(records.features_from_directory(Path(self.directory)))
        return self._codec

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_codec": None}  # workers rebuild the parser

    def random_map(self, element: bytes, rng: np.random.Generator) -> dict:
        rec = self._record_codec().parse(element)
        codes, mask = random_crop(rec["codes"], self.cfg.frames, rng)
        text = augment_description(rec, random.Random(int(rng.integers(2 ** 63))),
                                   self.cfg.merge_text_p,
                                   self.cfg.drop_desc_p, self.cfg.drop_other_p)
        return {"codes": codes, "padding_mask": mask, "description": text, "clip_id": rec["clip_id"]}


def collate(examples: list[dict]) -> dict:
    """Stack arrays; keep strings as Python lists (they feed a tokenizer, not a device)."""
    return {"codes": np.stack([e["codes"] for e in examples]),
            "padding_mask": np.stack([e["padding_mask"] for e in examples]),
            "descriptions": [e["description"] for e in examples],
            "clip_id": [e["clip_id"] for e in examples]}


def _mark_absl_flags_parsed(worker_index: int, worker_count: int) -> None:
    """grain workers import absl-using modules; outside an absl app their flags are unparsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


# ---------------------------------------------------------------- the shards

class ShardSource:
    """The shards of one split as one random-access grain source that names the shard a read
    fails in (grain's own ArrayRecordDataSource raises riegeli's message without the file).

    Opening checks the record counts against dataset_info.json, so a truncated shard (which
    ArrayRecord opens as an empty one) is named before training starts; a shard damaged in the
    middle is named at the first record read from the damaged chunk."""

    def __init__(self, directory: Path, split: str):
        self.paths = [str(p) for p in records.shard_paths(directory, split)]
        self.ends = np.cumsum(records.shard_lengths(directory, split))
        try:
            self._source = grain.sources.ArrayRecordDataSource(self.paths)
        except Exception:  # noqa: BLE001 - riegeli raises RuntimeError without naming the file
            self._source = None
        if self._source is None or len(self._source) != int(self.ends[-1] if len(self.ends) else 0):
            self._name_damaged_shard()

    def _name_damaged_shard(self) -> None:
        """Raise DamagedShardError for the first shard that cannot be opened or holds another
        number of records than dataset_info.json lists."""
        starts = np.concatenate([[0], self.ends[:-1]])
        for path, start, end in zip(self.paths, starts, self.ends):
            count = records.count_records(Path(path))
            if count != end - start:
                raise records.DamagedShardError(
                    f"{path} holds {count} records, dataset_info.json lists {end - start} (truncated?); "
                    f"{records.REDO_HINT}")
        raise records.DamagedShardError(f"the shards of {Path(self.paths[0]).parent} cannot be opened together; "
                                        f"{records.REDO_HINT}")

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> bytes:
        try:
            return self._source[index]
        except Exception as err:  # noqa: BLE001 - riegeli's RuntimeError for a damaged chunk
            shard = int(np.searchsorted(self.ends, index, side="right"))
            first = int(self.ends[shard - 1]) if shard else 0
            raise records.DamagedShardError(
                f"{self.paths[shard]}: record {index - first} cannot be read ({records.one_line(err)}); "
                f"{records.REDO_HINT}") from None

    def __repr__(self) -> str:
        return f"ShardSource({len(self.paths)} shards of {Path(self.paths[0]).parent})"


# ---------------------------------------------------------------- the loader

def _process_info(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        return jax.process_index(), jax.process_count()
    return process_index, process_count


def make_dataset(directory: Path, cfg: LoaderConfig, split: str = "train",
                 process_index: int | None = None, process_count: int | None = None
                 ) -> grain.IterDataset:
    """The loader as a grain IterDataset (iterate it, or ``iter()`` for a checkpointable
    iterator)."""
    pi, pc = _process_info(process_index, process_count)
    if cfg.batch_size % pc:
        raise ValueError(f"global batch {cfg.batch_size} is not divisible by {pc} processes; "
                         f"use a multiple of {pc}")
    source = ShardSource(Path(directory), split)
    if len(source) < pc:
        raise ValueError(f"{directory} split {split!r} has {len(source)} records, fewer than "
                         f"the {pc} processes that must each get some")
    ds = grain.MapDataset.source(source)[pi::pc]
    per_process = cfg.batch_size // pc
    if len(ds) < per_process:
        raise ValueError(f"process {pi} has {len(ds)} records, fewer than its batch of "
                         f"{per_process}; tokenize more data or lower the batch size")
    ds = ds.seed(cfg.seed)
    if cfg.shuffle:
        ds = ds.shuffle()
    ds = ds.repeat(cfg.num_epochs)
    ds = ds.random_map(_ToTrainingExample(str(directory), cfg))
    ds = ds.batch(per_process, drop_remainder=True, batch_fn=collate)
    it = ds.to_iter_dataset()
    if cfg.worker_count > 0:
        _mark_absl_flags_parsed(0, cfg.worker_count)      # grain reads its flags here too
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count,
                                                         per_worker_buffer_size=cfg.worker_buffer_size),
                            worker_init_fn=_mark_absl_flags_parsed)
    return it


def make_train_loader(directory: Path, cfg: LoaderConfig, split: str = "train",
                      process_index: int | None = None, process_count: int | None = None
                      ) -> grain.DatasetIterator:
    """A checkpointable iterator of training batches (see the module docstring).

    Save its position with ``it.get_state()`` or in orbax with
    ``grain.checkpoint.CheckpointSave(it)``; ``it.set_state(state)`` continues with the
    identical batches."""
    return iter(make_dataset(directory, cfg, split, process_index, process_count))
