"""The TFDS builder over tokenized records (file_format array_record, no TensorFlow).

Why: TFDS is how many JAX codebases find and version datasets. ``magnet-jax tokenize`` writes
its shards with TFDS's naming and serialisation and then calls :func:`write_dataset_info`, so its
output folder *is* a prepared ``magnet_tokens`` dataset:

    tfds.builder_from_directory("OUT")                   # any folder
    tfds.data_source("magnet_tokens", data_dir="ROOT")   # when OUT is ROOT/magnet_tokens/1.0.0

The :class:`MagnetTokens` builder class is registered on import; its ``download_and_prepare``
rebuilds a dataset from existing tokenized folders given as ``manual_dir`` (to merge the output
of several tokenize runs or reshard it), reading the same records back.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import tensorflow_datasets as tfds

from data_pipelines import records

DATASET_VERSION = "1.0.0"


class MagnetTokens(tfds.core.GeneratorBasedBuilder):
    """Codec tokens of captioned music, one record per segment (see data_pipelines.records)."""

    VERSION = tfds.core.Version(DATASET_VERSION)
    RELEASE_NOTES = {DATASET_VERSION: "codes int16 [K, T], caption, aspects, metadata, source, offsets"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = ("Run `magnet-jax tokenize` first; pass its output folder "
                                    "(or a folder of such folders) as manual_dir.")

    def _info(self) -> tfds.core.DatasetInfo:
        # a prepared folder knows its own features (with or without text embeddings)
        on_disk = Path(self.data_dir) / "features.json"
        feats = records.features_from_directory(on_disk.parent) if on_disk.exists() \
            else records.features()
        return tfds.core.DatasetInfo(builder=self, description=__doc__.splitlines()[0],
                                     features=feats, homepage="https://arxiv.org/abs/2401.04577")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        sources = _tokenized_folders(Path(dl_manager.manual_dir))
        splits = sorted({s for src in sources for s in _split_names(src)})
        return {split: self._generate_examples(sources, split) for split in splits}

    def _generate_examples(self, sources: list[Path], split: str) -> Iterator[tuple[str, dict]]:
        for src in sources:
            if split not in _split_names(src):
                continue
            codec = records.RecordCodec(records.features_from_directory(src))
            for shard in records.shard_paths(src, split):
                for i, raw in enumerate(records.read_shard(shard)):
                    ex = codec.features.deserialize_example_np(raw)
                    yield f"{src.name}/{shard.name}/{i}", ex


def _split_names(folder: Path) -> list[str]:
    info = json.loads((folder / "dataset_info.json").read_text())
    return [s["name"] for s in info.get("splits", [])]


def _tokenized_folders(root: Path) -> list[Path]:
    found = sorted(p.parent for p in root.rglob("dataset_info.json"))
    if not found:
        raise FileNotFoundError(f"no tokenized dataset (dataset_info.json) under {root}; "
                                f"run `magnet-jax tokenize --out {root}/...` first")
    return found


def write_dataset_info(directory: Path, shard_lengths: dict[str, list[int]],
                       num_bytes: dict[str, int], metadata: dict, text_embedding: bool) -> None:
    """Write dataset_info.json and features.json for shards already in ``directory``."""
    directory = Path(directory)
    builder = MagnetTokens(data_dir=str(directory.parent), file_format="array_record")
    feats = records.features(text_embedding)
    info = tfds.core.DatasetInfo(builder=builder, description=MagnetTokens.__doc__,
                                 features=feats, metadata=tfds.core.MetadataDict(metadata),
                                 homepage="https://arxiv.org/abs/2401.04577")
    info.set_file_format("array_record")
    split_infos = []
    for split, lengths in sorted(shard_lengths.items()):
        template = tfds.core.ShardedFileTemplate(data_dir=directory, dataset_name=records.DATASET_NAME,
                                                 split=split, filetype_suffix="array_record")
        split_infos.append(tfds.core.SplitInfo(name=split, shard_lengths=list(lengths),
                                               num_bytes=int(num_bytes[split]),
                                               filename_template=template))
    info.set_splits(tfds.core.SplitDict(split_infos))
    info.write_to_directory(directory)
