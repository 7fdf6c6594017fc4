"""Tokenization job: manifest -> decoded segments -> codec tokens -> ArrayRecord shards.

Why shaped this way:
- Shards are fixed slices of the manifest (``clips_per_shard`` clips each), so the work is known
  before it starts, process ``p`` of ``P`` takes shards ``p, p+P, ...`` and never coordinates.
- A shard is written atomically and then marked done (``_tokenize/<split>/shard-XXXXX.json``
  holds its record count, bytes, SHA-256, rejects and audio seconds). A resumed job verifies each
  done shard (size and SHA-256 against its marker), skips the intact ones and redoes the damaged
  ones and any other, so killing the job mid-way, or damaging a shard, and resuming gives the
  same shards.
- Batches never cross a shard boundary and are padded to a fixed batch size, so a shard's bytes
  depend only on its clips, the settings and the codec weights: deterministic.
- Every skipped input becomes a :class:`~data_pipelines.rejects.Reject`; when the last shard is
  done the job writes the TFDS metadata, ``rejects-<split>.tsv`` and ``summary-<split>.json``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from data_pipelines import records
from data_pipelines.audio import AudioSettings, Segment, cut_segments, load_clip
from data_pipelines.encoder import SegmentEncoder
from data_pipelines.manifests import ClipSpec, Manifest
from data_pipelines.rejects import Reject, Rejected, count_reasons, write_report

STATE_DIR = "_tokenize"
# captions -> one float [L, D] array per caption; optional precomputed text-encoder states
TextEmbedder = Callable[[list[str]], list[np.ndarray]]


def text_embedder(encoder) -> TextEmbedder:
    """Wrap a ``magnet_jax.text.TextEncoder``: its unpadded hidden states [L, width] per caption.
    An empty caption is the null text (the encoder returns no states); it is stored as one
    zero row, because TFDS cannot parse an empty tensor, and ``caption == ''`` marks it."""
    def embed(texts: list[str]) -> list[np.ndarray]:
        rows = encoder.hidden_states(list(texts))
        return [np.zeros((1, encoder.width), np.float32) if r is None else np.asarray(r) for r in rows]
    return embed


@dataclasses.dataclass(frozen=True)
class TokenizeOptions:
    """Job layout that does not change the tokens themselves."""
    split: str = "train"
    clips_per_shard: int = 64
    decode_workers: int = 2          # threads decoding audio (soundfile and soxr release the GIL)
    process_index: int = 0
    process_count: int = 1
    max_shards: int | None = None    # stop after this many new shards (time-sliced jobs)
    progress: bool = True
    finalize: bool = True            # write the split's metadata here once every shard is done
                                     # (a jax.distributed job: only process 0, after a barrier)

    def __post_init__(self) -> None:
        if self.clips_per_shard < 1:
            raise ValueError(f"clips_per_shard must be >= 1, got {self.clips_per_shard}")
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index {self.process_index} not in [0, {self.process_count})")


@dataclasses.dataclass
class ShardResult:
    """What one finished shard contributed (persisted as its done marker)."""
    index: int
    records: int
    num_bytes: int
    clips_ok: int
    audio_seconds: float
    tail_seconds: float
    rejects: list[Reject]
    sha256: str = ""                 # of the shard file; "" in markers of older versions

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["rejects"] = [r.to_json() for r in self.rejects]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ShardResult":
        d = dict(d)
        d["rejects"] = [Reject(**r) for r in d["rejects"]]
        return cls(**d)


# ---------------------------------------------------------------- paths and fingerprint

def state_dir(out: Path, split: str) -> Path:
    return Path(out) / STATE_DIR / split


def marker_path(out: Path, split: str, index: int) -> Path:
    return state_dir(out, split) / f"shard-{index:05d}.json"


def job_fingerprint(manifest: Manifest, encoder: SegmentEncoder, settings: AudioSettings,
                    opts: TokenizeOptions, text_embedding: bool) -> dict:
    """Everything that determines the shards' bytes; a resume with a different one is refused."""
    clips = json.dumps([dataclasses.asdict(c) for c in manifest.clips], sort_keys=True, default=str)
    return {
        "manifest_sha256": hashlib.sha256(clips.encode()).hexdigest()[:16],
        "clips": len(manifest.clips),
        "codec": encoder.fingerprint,
        "batch_size": encoder.batch_size,
        "settings": dataclasses.asdict(settings),
        "clips_per_shard": opts.clips_per_shard,
        "text_embedding": text_embedding,
    }


def _check_or_write_fingerprint(out: Path, split: str, fp: dict) -> None:
    """Refuse to resume a split tokenized with other inputs; a job that finished no shard (it
    failed on its first, e.g. on a bad setting) holds nothing to keep, so it takes the new one."""
    path = state_dir(out, split) / "job.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old == fp:
            return
        diff = sorted(k for k in set(old) | set(fp) if old.get(k) != fp.get(k))
        if any(state_dir(out, split).glob("shard-*.json")):
            raise ValueError(f"{out} holds split {split!r} tokenized with different {diff}; "
                             f"resume with the same inputs, or tokenize into a new --out folder")
        print(f"tokenize: no shard of split {split!r} in {out} was finished; starting it over with the "
              f"new {', '.join(diff)}", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")      # one per process: several may start at once
    tmp.write_text(json.dumps(fp, indent=1, sort_keys=True))
    tmp.replace(path)


# ---------------------------------------------------------------- one shard

def _load(clip: ClipSpec, settings: AudioSettings) -> tuple[list[Segment], float] | Reject:
    try:
        wav = load_clip(Path(clip.path), settings, clip.start_s, clip.end_s)
        return cut_segments(wav, settings, clip.start_s)
    except Rejected as rej:
        return rej.to_reject(clip.path, clip.clip_id)
    except Exception as err:  # noqa: BLE001 - one bad file must never stop the job
        return Reject(clip.path, "error", f"{type(err).__name__}: {err}", clip.clip_id)


def _batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def encode_segments(segments: list[Segment], encoder: SegmentEncoder,
                    settings: AudioSettings) -> list[np.ndarray]:
    """Codes [K, ceil(n/hop)] per segment: zero-pad each batch to full segments and batch size,
    encode, keep the frames that cover real samples (audiocraft pads short segments with zeros
    before encoding too)."""
    out = []
    full = settings.segment_samples
    for batch in _batches(segments, encoder.batch_size):
        audio = np.zeros((encoder.batch_size, settings.channels, full), np.float32)
        for i, seg in enumerate(batch):
            audio[i, :, :seg.wav.shape[-1]] = seg.wav
        codes = encoder(audio)
        for i, seg in enumerate(batch):
            out.append(codes[i, :, :math.ceil(seg.wav.shape[-1] / encoder.hop_length)])
    return out


def tokenize_shard(clips: list[ClipSpec], index: int, encoder: SegmentEncoder,
                   settings: AudioSettings, codec: records.RecordCodec, shard_path: Path,
                   pool: ThreadPoolExecutor, text_embedder: TextEmbedder | None,
                   on_clip: Callable[[], None]) -> ShardResult:
    """Decode, encode and write one shard; returns its done-marker content."""
    rejects, owners, segments, tail = [], [], [], 0.0
    for clip, loaded in zip(clips, pool.map(lambda c: _load(c, settings), clips)):
        on_clip()
        if isinstance(loaded, Reject):
            rejects.append(loaded)
            continue
        segs, clip_tail = loaded
        tail += clip_tail
        owners.extend([clip] * len(segs))
        segments.extend(segs)
    codes = encode_segments(segments, encoder, settings)
    embeddings = _embed(text_embedder, [c.caption for c in owners])
    payloads = []
    for j, (clip, seg, c) in enumerate(zip(owners, segments, codes)):
        ex = records.to_example(c, clip, seg.offset_s, seg.wav.shape[-1] / settings.sample_rate,
                                embeddings[j] if embeddings else None)
        payloads.append(codec.serialize(ex))
    records.write_shard(shard_path, payloads)
    return ShardResult(index=index, records=len(payloads), num_bytes=shard_path.stat().st_size,
                       clips_ok=len({id(c) for c in owners}),
                       audio_seconds=sum(s.wav.shape[-1] for s in segments) / settings.sample_rate,
                       tail_seconds=tail, rejects=rejects, sha256=records.file_sha256(shard_path))


def _embed(embedder: TextEmbedder | None, texts: list[str]) -> list[np.ndarray] | None:
    if embedder is None or not texts:
        return None
    return embedder(texts)


def read_marker(out: Path, split: str, index: int) -> ShardResult:
    """A done marker; an unreadable one is a ValueError that names it."""
    path = marker_path(out, split, index)
    try:
        return ShardResult.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ValueError(f"{path} cannot be read ({err}); delete it and rerun tokenize to redo that shard") from None


def shard_problem(out: Path, split: str, index: int, n_shards: int) -> str | None:
    """Why the done shard ``index`` cannot be kept (None when its file matches its marker).

    Size first (free), then the SHA-256 the marker recorded; a marker from a version that
    recorded none is checked by its record count instead."""
    try:
        done = read_marker(out, split, index)
    except ValueError:
        return f"its marker {marker_path(out, split, index).name} cannot be read"
    path = Path(out) / records.shard_name(split, index, n_shards)
    if not path.is_file():
        return "the file is missing"
    size = path.stat().st_size
    if size != done.num_bytes:
        return f"{size} bytes, its marker recorded {done.num_bytes}"
    if done.sha256:
        return None if records.file_sha256(path) == done.sha256 else "its SHA-256 differs from its marker's"
    try:
        count = records.count_records(path)
    except records.DamagedShardError:
        return "it cannot be read"
    return None if count == done.records else f"{count} records, its marker recorded {done.records}"


def _write_marker(out: Path, split: str, result: ShardResult) -> None:
    path = marker_path(out, split, result.index)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result.to_json(), sort_keys=True))
    tmp.replace(path)


# ---------------------------------------------------------------- the job

def tokenize(manifest: Manifest, encoder: SegmentEncoder, settings: AudioSettings, out: Path,
             opts: TokenizeOptions = TokenizeOptions(),
             text_embedder: TextEmbedder | None = None) -> dict:
    """Tokenize this process's shards of ``manifest`` into ``out``; finalize when all are done.

    Returns this run's summary (the split's totals once finalized)."""
    if (settings.sample_rate, settings.channels) != (encoder.sample_rate, encoder.channels):
        raise ValueError(f"audio settings {settings.sample_rate} Hz x {settings.channels} ch do not "
                         f"match the codec's {encoder.sample_rate} Hz x {encoder.channels} ch")
    if not manifest.clips:
        raise ValueError(f"{manifest.source}: no usable clips ({len(manifest.rejects)} rejected: "
                         f"{count_reasons(manifest.rejects)}); check the source path and format")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_or_write_fingerprint(out, opts.split,
                                job_fingerprint(manifest, encoder, settings, opts, text_embedder is not None))
    n_shards = math.ceil(len(manifest.clips) / opts.clips_per_shard)
    mine = list(range(opts.process_index, n_shards, opts.process_count))
    codec = records.RecordCodec(records.features(text_embedder is not None))
    written, skipped, redone, audio_s, t0 = 0, 0, 0, 0.0, time.perf_counter()
    total_clips = sum(len(_shard_clips(manifest, i, opts)) for i in mine)
    with tqdm(total=total_clips, desc=f"tokenize {opts.split}", unit="clip",
              disable=not opts.progress) as bar, ThreadPoolExecutor(opts.decode_workers) as pool:
        for i in mine:
            clips = _shard_clips(manifest, i, opts)
            if marker_path(out, opts.split, i).exists():
                problem = shard_problem(out, opts.split, i, n_shards)
                if problem is None:
                    skipped += 1
                    bar.update(len(clips))
                    continue
                tqdm.write(f"tokenize: shard {records.shard_name(opts.split, i, n_shards)} is damaged "
                           f"({problem}); redoing it", file=sys.stderr)
                marker_path(out, opts.split, i).unlink()
                redone += 1
            if opts.max_shards is not None and written >= opts.max_shards:
                break
            result = tokenize_shard(clips, i, encoder, settings, codec,
                                    out / records.shard_name(opts.split, i, n_shards), pool,
                                    text_embedder, lambda: bar.update(1))
            _write_marker(out, opts.split, result)
            written += 1
            audio_s += result.audio_seconds
    wall = time.perf_counter() - t0
    this_run = {"process_index": opts.process_index, "shards_written": written,
                "shards_skipped": skipped, "shards_redone": redone, "audio_seconds": round(audio_s, 3),
                "wall_seconds": round(wall, 3),
                "audio_seconds_per_second": round(audio_s / wall, 3) if wall > 0 else None}
    return finish(out, manifest, encoder, opts, this_run, text_embedder is not None)


def finish(out: Path, manifest: Manifest, encoder: SegmentEncoder, opts: TokenizeOptions, this_run: dict,
           text_embedding: bool) -> dict:
    """The split's totals when every shard is done and ``opts.finalize`` (writing the metadata),
    else how far the split is."""
    n_shards = math.ceil(len(manifest.clips) / opts.clips_per_shard)
    done = [marker_path(out, opts.split, i).exists() for i in range(n_shards)]
    if all(done) and opts.finalize:
        return finalize(Path(out), manifest, encoder, opts.split, n_shards, this_run, text_embedding)
    return {"split": opts.split, "finished": False, "shards_done": sum(done),
            "shards_total": n_shards, "this_run": this_run}


def _shard_clips(manifest: Manifest, index: int, opts: TokenizeOptions) -> list[ClipSpec]:
    return manifest.clips[index * opts.clips_per_shard:(index + 1) * opts.clips_per_shard]


def finalize(out: Path, manifest: Manifest, encoder: SegmentEncoder, split: str, n_shards: int,
             this_run: dict, text_embedding: bool) -> dict:
    """All shards of ``split`` are done: write TFDS metadata, the rejects report, the summary."""
    from data_pipelines.tfds_builder import write_dataset_info

    results = [read_marker(out, split, i) for i in range(n_shards)]
    lengths, nbytes = _all_splits(out)
    metadata = {"sample_rate": encoder.sample_rate, "channels": encoder.channels,
                "hop_length": encoder.hop_length, "frame_rate": encoder.sample_rate / encoder.hop_length,
                "n_q": encoder.n_q, "cardinality": encoder.cardinality, "codec": encoder.fingerprint}
    write_dataset_info(out, lengths, nbytes, metadata, text_embedding)
    rejects = manifest.rejects + [r for res in results for r in res.rejects]
    write_report(out / f"rejects-{split}.tsv", rejects)
    audio_s = sum(r.audio_seconds for r in results)
    summary = {
        "split": split, "finished": True, "source": manifest.source, "format": manifest.format,
        "clips_listed": len(manifest.clips) + len(manifest.rejects),
        "clips": sum(r.clips_ok for r in results), "records": sum(r.records for r in results),
        "hours": round(audio_s / 3600, 6), "audio_seconds": round(audio_s, 3),
        "tail_seconds_dropped": round(sum(r.tail_seconds for r in results), 3),
        "uncaptioned_clips": manifest.uncaptioned,
        "rejects": len(rejects), "rejects_by_reason": count_reasons(rejects),
        "rejects_report": str(out / f"rejects-{split}.tsv"),
        "shards": n_shards, "bytes": sum(r.num_bytes for r in results),
        "codec": metadata, "this_run": this_run,
    }
    path = out / f"summary-{split}.json"
    path.with_suffix(".tmp").write_text(json.dumps(summary, indent=1))
    path.with_suffix(".tmp").replace(path)
    return summary


def _all_splits(out: Path) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Shard lengths and bytes of every fully tokenized split in ``out`` (TFDS lists them all)."""
    lengths, nbytes = {}, {}
    for split_dir in sorted((Path(out) / STATE_DIR).iterdir()):
        job = json.loads((split_dir / "job.json").read_text())
        n = math.ceil(job["clips"] / job["clips_per_shard"])
        markers = [split_dir / f"shard-{i:05d}.json" for i in range(n)]
        if all(m.exists() for m in markers):
            res = [json.loads(m.read_text()) for m in markers]
            lengths[split_dir.name] = [r["records"] for r in res]
            nbytes[split_dir.name] = sum(r["num_bytes"] for r in res)
    return lengths, nbytes
