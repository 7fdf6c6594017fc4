"""The segment encoder the tokenizer is parameterised by, and the real one built on EnCodec.

Why a protocol: tokenization (decode, cut, batch, write, resume) does not care which codec makes
the tokens; it needs a callable from a float32 batch [B, C, N] to int codes [B, K, ceil(N/hop)]
plus the codec's sample_rate / channels / hop / n_q / cardinality, and a fingerprint that says
whether two runs used the same weights (a resumed job must not mix codecs).

:class:`CodecEncoder` is the real one: ``magnet_jax.codec.Encodec`` split with ``nnx.split`` and
encoded under one ``jax.jit`` whose batch axis is sharded over the process's local devices
(logical axis ``batch`` of ``magnet_jax.train.sharding``), the hot-path convention of the project.
"""
from __future__ import annotations

import hashlib
from typing import Protocol

import jax
import numpy as np


class SegmentEncoder(Protocol):
    """What tokenization needs from a codec."""
    sample_rate: int
    channels: int
    hop_length: int
    n_q: int
    cardinality: int
    batch_size: int       # segments per call; the tokenizer pads the last batch to this
    fingerprint: str      # identifies architecture + weights, for resume safety

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """float32 [batch_size, C, N] -> int codes [batch_size, K, ceil(N / hop)]."""


def params_fingerprint(state) -> str:
    """sha256 over every parameter's bytes, in tree order: equal iff the weights are equal."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(state):
        arr = np.asarray(leaf)
        h.update(str(arr.shape).encode() + str(arr.dtype).encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


class CodecEncoder:
    """EnCodec encode, jitted once, batch sharded over this process's devices."""

    def __init__(self, model, batch_size: int, devices: list | None = None, name: str = "encodec"):
        from flax import nnx

        from magnet_jax.train.sharding import check_batch_divides, logical_sharding, make_mesh

        devices = list(devices if devices is not None else jax.local_devices())
        self.mesh = make_mesh(data=len(devices), devices=devices)
        check_batch_divides(batch_size, self.mesh)
        self.batch_size = batch_size
        self.sample_rate, self.channels = int(model.sample_rate), int(model.channels)
        self.hop_length, self.n_q = int(model.hop_length), int(model.n_q)
        self.cardinality, self.frame_rate = int(model.cardinality), float(model.frame_rate)
        graphdef, state = nnx.split(model)
        self.fingerprint = f"{name}:{params_fingerprint(state)}"
        batch_sharding = logical_sharding(self.mesh, "batch", "channels", "time")
        self._batch_sharding = batch_sharding
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        self._state = jax.device_put(state, replicated)

        def encode(state, audio):
            return nnx.merge(graphdef, state).encode(audio)

        self._encode = jax.jit(encode, in_shardings=(replicated, batch_sharding),
                               out_shardings=logical_sharding(self.mesh, "batch", "codebooks", "time"))

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        if audio.shape[0] != self.batch_size:
            raise ValueError(f"batch of {audio.shape[0]} segments; this encoder was built for "
                             f"{self.batch_size} (pad the batch)")
        # placed first: under jax.distributed a jit refuses host arrays with a sharding, even one
        # over this process's own devices
        batch = jax.device_put(np.asarray(audio, np.float32), self._batch_sharding)
        return np.asarray(self._encode(self._state, batch))

    @classmethod
    def from_name(cls, codec: str, batch_size: int, *, weights: str | None = None, seed: int = 0,
                  overrides: dict | None = None) -> "CodecEncoder":
        """A released architecture by name with random weights (``seed``), or a converted
        checkpoint when ``weights`` is a path (audiocraft export or Hugging Face folder)."""
        from flax import nnx

        from magnet_jax.codec import Encodec, codec_config

        if weights:
            from magnet_jax.models import load_codec_weights as load_codec

            _, model = load_codec(weights)
            name = f"{weights}"
        else:
            model = Encodec(codec_config(codec, **(overrides or {})), rngs=nnx.Rngs(seed))
            name = f"{codec}{overrides or ''}/random-seed{seed}"
        return cls(model, batch_size, name=name)


class SemanticEncoder:
    """MeLoDy's semantic tokens through the same tokenization job: a fitted
    ``magnet_jax.melody.semantic.SemanticTokenizer`` (built-in log-mel + chroma extractor) as a
    one-codebook "codec" of ``num_tokens`` entries at ``sample_rate / hop`` frames per second.
    ``magnet-jax tokenize --semantic-tokenizer FILE`` writes these records; a one-codebook MusicGen
    (MeLoDy's semantic LM) trains on them with ``magnet-jax train``."""

    def __init__(self, tokenizer, batch_size: int, name: str = "semantic"):
        e = tokenizer.extractor
        self.tokenizer, self.batch_size = tokenizer, batch_size
        self.sample_rate, self.channels, self.hop_length = int(e.sample_rate), 1, int(e.hop_length)
        self.n_q, self.cardinality = 1, tokenizer.num_tokens
        self.frame_rate = self.sample_rate / self.hop_length
        self.fingerprint = f"{name}:{params_fingerprint([tokenizer.centroids, tokenizer.mean, tokenizer.std])}"

    @classmethod
    def from_file(cls, path: str, batch_size: int) -> "SemanticEncoder":
        from magnet_jax.melody.semantic import SemanticTokenizer
        return cls(SemanticTokenizer.load(path), batch_size, name=f"semantic:{path}")

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        """float32 [batch, 1, N] -> tokens [batch, 1, ceil(N / hop)]."""
        if audio.shape[1] != 1:
            raise ValueError(f"semantic tokens are made from mono audio, got {audio.shape[1]} channels")
        return np.asarray(self.tokenizer.encode_aligned(audio[:, 0]))[:, None, :].astype(np.int32)
