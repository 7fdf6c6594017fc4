"""The tokenized record: its schema, its bytes, and the ArrayRecord shards that hold it.

Why TFDS features as the schema: the same bytes must be readable by our grain loader (through
``grain.sources.ArrayRecordDataSource``) and by ``tfds.data_source`` /
``tfds.builder_from_directory`` without TensorFlow. TFDS's ``FeaturesDict`` serialises to the
``tf.train.Example`` wire format in pure Python and parses it back with numpy, so writing with
it makes the tokenizer's output a prepared TFDS dataset with no copy.

One record = one segment of one clip:
    codes        int16 [K, T]   codec tokens (T = ceil(segment samples / hop))
    caption      text           the description (MusicCaps caption, sidecar description, .txt)
    aspects      [text]         MusicCaps aspect_list / audiocraft keywords
    genre, key, instrument  text;  moods [text];  bpm float32 (NaN when unknown)
    labels       text           JSON of ground-truth attributes (synthetic corpus), or ''
    source       text           the audio file
    clip_id      text           ytid / manifest id / relative path
    offset_s     float32        segment start within the source file
    duration_s   float32        audio seconds the segment holds
    text_embedding  float16 [L, D]  optional precomputed text embedding (only when requested)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

DATASET_NAME = "magnet_tokens"
TEXT_FIELDS = ("caption", "genre", "key", "instrument", "labels", "source", "clip_id")
LIST_FIELDS = ("aspects", "moods")
FLOAT_FIELDS = ("bpm", "offset_s", "duration_s")


def features(text_embedding: bool = False):
    """The TFDS FeaturesDict of one record (imported lazily: tfds is slow to import)."""
    import tensorflow_datasets as tfds

    spec: dict[str, Any] = {
        "codes": tfds.features.Tensor(shape=(None, None), dtype=np.int16, encoding="bytes"),
        **{name: tfds.features.Text() for name in TEXT_FIELDS},
        **{name: tfds.features.Sequence(tfds.features.Text()) for name in LIST_FIELDS},
        **{name: np.float32 for name in FLOAT_FIELDS},
    }
    if text_embedding:
        spec["text_embedding"] = tfds.features.Tensor(shape=(None, None), dtype=np.float16,
                                                      encoding="bytes")
    return tfds.features.FeaturesDict(spec)


def features_from_directory(directory: Path):
    """The FeaturesDict a tokenized directory was written with (its features.json)."""
    import tensorflow_datasets as tfds

    return tfds.features.FeatureConnector.from_config(str(directory))


def shard_name(split: str, index: int, count: int) -> str:
    """TFDS's shard naming, so ``tfds.builder_from_directory`` finds the files."""
    return f"{DATASET_NAME}-{split}.array_record-{index:05d}-of-{count:05d}"


class DamagedShardError(ValueError):
    """A shard that cannot be read (truncated, overwritten, missing): the message names the file
    and how to redo it."""


REDO_HINT = ("rerun `magnet-jax tokenize` with the same arguments and --out: it verifies finished "
             "shards and redoes damaged ones")


def shard_lengths(directory: Path, split: str = "train") -> list[int]:
    """Records per shard of a split, as dataset_info.json lists them."""
    info = json.loads((Path(directory) / "dataset_info.json").read_text())
    for s in info.get("splits", []):
        if s["name"] == split:
            return [int(n) for n in s["shardLengths"]]
    names = [s["name"] for s in info.get("splits", [])]
    raise ValueError(f"{directory} has no split {split!r}; it has {names}")


def shard_paths(directory: Path, split: str = "train") -> list[Path]:
    """The finished shards of a split, in order."""
    count = len(shard_lengths(directory, split))
    return [Path(directory) / shard_name(split, i, count) for i in range(count)]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in chunks (shards can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def count_records(path: Path) -> int:
    """Records in one shard; a truncated or overwritten file raises DamagedShardError naming it.

    Why not just ``num_records()``: a truncated ArrayRecord file opens and reports 0 records,
    and only ``close()`` raises (sometimes with an empty message)."""
    from array_record.python.array_record_module import ArrayRecordReader

    if not Path(path).is_file():
        raise DamagedShardError(f"{path} is missing; {REDO_HINT}")
    try:
        reader = ArrayRecordReader(str(path))
        count = reader.num_records()
        reader.close()
    except Exception as err:  # noqa: BLE001 - the reader raises RuntimeError for any damage
        detail = one_line(err) or "truncated or not an ArrayRecord file"
        raise DamagedShardError(f"{path} cannot be read ({detail}); {REDO_HINT}") from None
    return count


def one_line(err: BaseException) -> str:
    """The first line of an exception's message (riegeli's run over several)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def to_example(codes: np.ndarray, clip: Any, offset_s: float, duration_s: float,
               text_embedding: np.ndarray | None = None) -> dict:
    """The record dict for one encoded segment of a manifest clip (a ``ClipSpec``)."""
    if codes.min() < 0 or codes.max() > np.iinfo(np.int16).max:
        raise ValueError(f"codes in [{codes.min()}, {codes.max()}] do not fit int16")
    ex = {
        "codes": codes.astype(np.int16),
        "caption": clip.caption, "genre": clip.genre, "key": clip.key,
        "instrument": clip.instrument, "labels": clip.labels_json, "source": clip.path,
        "clip_id": clip.clip_id,
        "aspects": list(clip.aspects), "moods": list(clip.moods),
        "bpm": clip.bpm, "offset_s": offset_s, "duration_s": duration_s,
    }
    if text_embedding is not None:
        ex["text_embedding"] = text_embedding.astype(np.float16)
    return ex


def decode_record(raw: dict) -> dict:
    """TFDS's numpy parse (bytes for text) -> Python strings and lists of strings."""
    out = dict(raw)
    for name in TEXT_FIELDS:
        out[name] = raw[name].decode("utf-8")
    for name in LIST_FIELDS:
        out[name] = [v.decode("utf-8") for v in raw[name]]
    for name in FLOAT_FIELDS:          # float32 scalars: their str() is the shortest repr
        out[name] = np.float32(raw[name])
    return out


class RecordCodec:
    """Serialise / parse records with one FeaturesDict (cached: building it costs ~ms)."""

    def __init__(self, feats) -> None:
        from tensorflow_datasets.core.example_serializer import ExampleSerializer

        self.features = feats
        self._serializer = ExampleSerializer(feats.get_serialized_info())

    def serialize(self, example: dict) -> bytes:
        """``FeaturesDict.serialize_example`` with deterministic proto map order: the default
        order follows the string hash seed, so two processes would write different bytes."""
        proto = self._serializer.get_tf_example(self.features.encode_example(example))
        return proto.SerializeToString(deterministic=True)

    def parse(self, data: bytes) -> dict:
        return decode_record(self.features.deserialize_example_np(data))


def write_shard(path: Path, payloads: list[bytes]) -> None:
    """Write serialized records to ``path`` atomically (tmp file, then rename): a killed job
    leaves either a complete shard or a ``.tmp`` that the next run rewrites."""
    from array_record.python.array_record_module import ArrayRecordWriter

    tmp = Path(str(path) + ".tmp")
    writer = ArrayRecordWriter(str(tmp), "group_size:1")   # group_size 1: cheap random access
    for p in payloads:
        writer.write(p)
    writer.close()
    tmp.replace(path)


def read_shard(path: Path) -> Iterator[bytes]:
    """Every serialized record of one shard, in order."""
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path))
    try:
        for i in range(reader.num_records()):
            yield reader.read([i])[0]
    finally:
        reader.close()
