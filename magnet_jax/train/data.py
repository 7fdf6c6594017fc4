"""Training batches: the grain loader's host batches -> text states -> global device arrays.

Each process reads its slice of the global batch (``data_pipelines.loader``), encodes its
descriptions with the frozen text encoder (word / attribute dropout seeded by (seed, step,
process), so a resumed run draws the same), pads every condition to ``text.max_tokens`` (static
shapes, and the same S on every process), and the per-process pieces become one global array
sharded over the mesh's data axes (``jax.make_array_from_process_local_data``).

``write_token_dataset`` writes a tokenized dataset in the loader's format straight from code
arrays: the fixed small synthetic token sets of the tests and the benchmark.
"""
from __future__ import annotations

import dataclasses
import json
import queue
import random
import threading
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from magnet_jax.lm.config import LMConfig
from magnet_jax.train import sharding
from magnet_jax.train.config import DataConfig, TextConfig


def load_text_encoder(cfg: TextConfig):
    """The frozen encoder named by the config (None for unconditional training)."""
    if cfg.encoder == "none":
        return None
    from magnet_jax.text.encoder import TextEncoder
    if cfg.encoder == "minilm":
        return TextEncoder.minilm(cfg.path or None)
    if not cfg.path:
        raise ValueError("text.encoder=t5 needs text.path (a local T5 folder or a hub name)")
    return TextEncoder.t5(cfg.path)


def text_states(encoder, texts: Sequence[str], cfg: TextConfig, rng: random.Random | None,
                train: bool) -> tuple[np.ndarray, np.ndarray]:
    """(hidden [B, S, W], mask [B, S]) padded to ``max_tokens``; CFG dropout runs in the step."""
    from magnet_jax.text.dropout import cfg_dropout
    from magnet_jax.text.encoder import collate_hidden
    texts = [t or None for t in texts]
    if train and cfg.attribute_dropout > 0:
        texts = cfg_dropout(texts, cfg.attribute_dropout, rng)
    rows = encoder.hidden_states(texts, word_dropout_p=cfg.word_dropout if train else 0.0, rng=rng)
    rows = [None if r is None else r[:cfg.max_tokens] for r in rows]
    return collate_hidden(rows, min(encoder.null_length, cfg.max_tokens), encoder.width,
                          pad_to=cfg.max_tokens)


class Batches:
    """Global batches for the train or valid split (an iterator with grain's checkpoint state)."""

    def __init__(self, data: DataConfig, text: TextConfig, encoder, mesh: Mesh, *, batch_size: int,
                 frames: int, seed: int, split: str, train: bool, num_epochs: int | None = None,
                 prefetch: int = 0):
        from data_pipelines.loader import LoaderConfig, make_train_loader
        if not data.dir:
            raise ValueError("data.dir is empty: point it at a tokenized dataset "
                             "(magnet-jax tokenize ... --out DIR)")
        if not (Path(data.dir) / "dataset_info.json").exists():
            raise ValueError(f"data.dir {data.dir} is not a tokenized dataset (no dataset_info.json); "
                             f"make one with `magnet-jax tokenize SOURCE --out {data.dir}`")
        # grain computes batch elements on a thread pool; the first elements' lazy
        # tensorflow_datasets imports (etils lazy_imports) can deadlock on the import lock when
        # several threads race. Resolve them once here, in the main thread.
        from data_pipelines import records
        records.features_from_directory(Path(data.dir))
        self.cfg = LoaderConfig(batch_size=batch_size, frames=frames, seed=seed, shuffle=train,
                                num_epochs=num_epochs,
                                merge_text_p=data.merge_text_p if train else 0.0,
                                drop_desc_p=data.drop_desc_p if train else 0.0,
                                drop_other_p=data.drop_other_p if train else 0.0,
                                worker_count=data.worker_count if train else 0)
        self.directory, self.split = Path(data.dir), split
        self.iterator = make_train_loader(self.directory, self.cfg, split)
        self.text, self.encoder, self.mesh = text, encoder, mesh
        self.seed, self.train = seed, train
        self.sharding = {"codes": sharding.logical_sharding(mesh, "batch", None, None),
                         "padding_mask": sharding.logical_sharding(mesh, "batch", None),
                         "text_hidden": sharding.logical_sharding(mesh, "batch", None, None),
                         "text_mask": sharding.logical_sharding(mesh, "batch", None)}

        self.prefetch = prefetch
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.consumed_state = self.iterator.get_state()

    def restart(self) -> None:
        from data_pipelines.loader import make_train_loader
        self.close()
        self.iterator = make_train_loader(self.directory, self.cfg, self.split)
        self.consumed_state = self.iterator.get_state()

    def set_state(self, state: dict) -> None:
        """Continue from a checkpointed position (before the first ``next``)."""
        self.close()
        self.iterator.set_state(state)
        self.consumed_state = state

    # a background thread reads, parses, text-encodes and places batches on the devices ahead of
    # the step (device prefetch: ``next`` hands over arrays already on their devices); each
    # batch travels with the iterator position *after* it, which is what a checkpoint taken
    # once that batch is consumed must hold
    def _produce(self, step: int) -> None:
        try:
            while not self._stop.is_set():
                item = (self.to_global(self.host_batch(step)), self.iterator.get_state())
                while not self._stop.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                step += 1
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._queue.put(err)

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread, self._queue = None, None
            self._stop = threading.Event()

    def host_batch(self, step: int) -> dict[str, Any]:
        raw = next(self.iterator)
        batch = {"codes": np.asarray(raw["codes"], np.int32),
                 "padding_mask": np.asarray(raw["padding_mask"], bool),
                 "descriptions": list(raw["descriptions"])}
        if self.encoder is not None:
            rng = random.Random(f"{self.seed}/{step}/{jax.process_index()}") if self.train else None
            batch["text_hidden"], batch["text_mask"] = text_states(
                self.encoder, batch["descriptions"], self.text, rng, self.train)
        return batch

    def to_global(self, batch: dict[str, Any]) -> dict[str, jax.Array]:
        return {k: jax.make_array_from_process_local_data(self.sharding[k], v)
                for k, v in batch.items() if k in self.sharding}

    def next(self, step: int) -> dict[str, jax.Array]:
        if self.prefetch <= 0:
            batch = self.host_batch(step)
            self.consumed_state = self.iterator.get_state()
            return self.to_global(batch)
        if self._thread is None:
            self._queue = queue.Queue(maxsize=self.prefetch)
            self._thread = threading.Thread(target=self._produce, args=(step,), daemon=True)
            self._thread.start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        batch, self.consumed_state = item
        return batch


def dataset_codec(directory: str | Path) -> dict | None:
    """The codec a tokenized dataset was made with (its metadata.json: n_q, cardinality,
    frame_rate, ...), or None for a folder written without one."""
    path = Path(directory) / "metadata.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} cannot be read as JSON ({err}); rerun `magnet-jax tokenize` "
                         f"into a new --out folder") from None
    return meta if isinstance(meta, dict) else None


def check_model_matches_data(lm: LMConfig, data: DataConfig) -> None:
    """Refuse a model whose codebooks do not fit the dataset's tokens, naming the setting to change.

    Why before anything is built: a model with fewer codebooks fails in the first step with a
    shape error, and one whose ``card`` is below the codec's codebook size trains on token ids
    past its embedding table, which ends in NaN a long way from the cause."""
    meta = dataset_codec(data.dir) if data.dir else None
    if meta is None:
        return
    codec = meta.get("codec", "?")
    n_q, card, rate = meta.get("n_q"), meta.get("cardinality"), meta.get("frame_rate")
    if n_q is not None and int(n_q) != lm.n_q:
        raise ValueError(f"lm.n_q={lm.n_q} but {data.dir} holds {n_q} codebooks per frame (codec {codec}); "
                         f"set lm.n_q={n_q} (and train.stage_weights to {n_q} entries if set), or tokenize "
                         f"with a codec of {lm.n_q} codebooks")
    if card is not None and int(card) > lm.card:
        raise ValueError(f"lm.card={lm.card} is smaller than the codebook size {card} of {data.dir} "
                         f"(codec {codec}): its token ids would run past the model's embedding table; "
                         f"set lm.card={card}")
    if rate is not None and abs(float(rate) - lm.frame_rate) > 1e-6 * max(1.0, float(rate)):
        raise ValueError(f"lm.frame_rate={lm.frame_rate} but {data.dir} has {float(rate):g} frames per second "
                         f"(codec {codec}); set lm.frame_rate={float(rate):g} (lm.segment_duration stays in seconds)")


def split_exists(directory: str, split: str) -> bool:
    info = Path(directory) / "dataset_info.json"
    if not split or not info.exists():
        return False
    return any(s["name"] == split for s in json.loads(info.read_text()).get("splits", []))


# ---------------------------------------------------------------- synthetic token sets

@dataclasses.dataclass(frozen=True)
class _Clip:          # the fields data_pipelines.records.to_example reads from a manifest clip
    clip_id: str
    path: str
    caption: str
    genre: str = ""
    key: str = ""
    instrument: str = ""
    labels_json: str = ""
    aspects: tuple = ()
    moods: tuple = ()
    bpm: float = float("nan")


def write_token_dataset(out: str | Path, splits: dict[str, tuple[list[np.ndarray], list[str]]],
                        frame_rate: float = 50.0, card: int = 2048, clips_per_shard: int = 8) -> Path:
    """Write ``{split: (codes [K, T_i] list, captions)}`` as a tokenized dataset the loader reads."""
    from data_pipelines import records
    from data_pipelines.tfds_builder import write_dataset_info
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    codec = records.RecordCodec(records.features())
    lengths, nbytes, n_q = {}, {}, None
    for split, (codes_list, captions) in splits.items():
        if len(codes_list) != len(captions):
            raise ValueError(f"split {split}: {len(codes_list)} code arrays but {len(captions)} captions")
        payloads = []
        for i, (codes, caption) in enumerate(zip(codes_list, captions)):
            codes = np.asarray(codes)
            n_q = codes.shape[0]
            clip = _Clip(clip_id=f"{split}-{i:06d}", path=f"synthetic/{split}/{i}", caption=caption)
            payloads.append(codec.serialize(records.to_example(codes, clip, 0.0, codes.shape[1] / frame_rate)))
        n_shards = max(1, -(-len(payloads) // clips_per_shard))
        lengths[split], nbytes[split] = [], 0
        for s in range(n_shards):
            part = payloads[s * clips_per_shard:(s + 1) * clips_per_shard]
            records.write_shard(out / records.shard_name(split, s, n_shards), part)
            lengths[split].append(len(part))
            nbytes[split] += sum(len(p) for p in part)
    metadata = {"frame_rate": frame_rate, "n_q": n_q, "cardinality": card, "codec": "synthetic"}
    write_dataset_info(out, lengths, nbytes, metadata, False)
    return out


def pattern_codes(rng: np.random.Generator, n: int, n_q: int, T: int, card: int,
                  vocab: int = 16) -> tuple[list[np.ndarray], list[str]]:
    """Learnable synthetic clips: each codebook repeats a short random motif over a small
    vocabulary, shifted per codebook; the caption names the motif's first token."""
    codes, captions = [], []
    for _ in range(n):
        period = int(rng.integers(2, 6))
        motif = rng.integers(0, min(vocab, card), period)
        t = np.arange(T)
        clip = np.stack([(motif[(t + k) % period] + 3 * k) % card for k in range(n_q)])
        codes.append(clip.astype(np.int32))
        captions.append(f"pattern of period {period} starting at {int(motif[0])}.")
    return codes, captions
