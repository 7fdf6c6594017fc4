"""Jitted, optionally sharded, batch encode / decode for an ``Encodec``, and a chunked mode for long audio.

Why a runner: ``nnx.jit`` re-walks the module graph in Python on every call. Here the model is
split once (``nnx.split``) and plain ``jax.jit`` functions take ``(state, input)`` with the graph
definition closed over, so a call costs one XLA dispatch. Compiled programs are cached per input
shape; ``bucket_frames`` pads lengths up to a multiple so that a corpus of varied lengths compiles
a handful of programs, and the chunked mode with ``windows_per_call`` set compiles one program
whatever the audio length.

With a mesh, the batch is sharded over the ``batch`` logical axis (``magnet_jax.train.sharding``)
and the parameters follow their own logical names (replicated under the current rules); a batch
the mesh's data axes do not divide is a clear error.

Chunked mode (``encode_chunked`` / ``decode_chunked``): long signals are cut into windows of
``chunk_frames`` plus ``context_frames`` on each side, all windows of the same size and aligned to
frame boundaries, processed as one batch (or in fixed-size groups to bound memory), and each window
keeps only the frames it owns. The audio is first zero-padded to whole frames; the first window
starts at the signal's start and the last ends at its (padded) end, so the edges see exactly the
padding whole-signal processing of that padded signal sees; at the seams the
context hides the convolutions' finite receptive field and lets the LSTM state converge. The
remaining seam error is measured against whole-signal processing in tests/test_codec_runner.py.
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from magnet_jax.codec.encodec import Encodec
from magnet_jax.train.sharding import check_batch_divides, logical_sharding, state_shardings


class Window(NamedTuple):
    """One chunked-mode window, in frames: it spans ``[start, start + size)`` and owns ``[own_from, own_to)``."""

    start: int
    own_from: int
    own_to: int


def plan_windows(n_frames: int, chunk_frames: int, context_frames: int) -> tuple[int, list[Window]]:
    """Frame-aligned windows of one size covering ``n_frames``; returns (window size, windows).

    Window ``i`` owns frames ``[i * chunk, (i + 1) * chunk)``; its start is ``i * chunk - context``
    clipped into the signal, so the first window starts at 0 and the last ends at ``n_frames``.
    """
    if chunk_frames < 1 or context_frames < 0:
        raise ValueError(f"chunk_frames={chunk_frames} must be >= 1 and context_frames={context_frames} >= 0")
    size = chunk_frames + 2 * context_frames
    if n_frames <= size:
        return n_frames, [Window(0, 0, n_frames)]
    windows = []
    for i in range(math.ceil(n_frames / chunk_frames)):
        own_from, own_to = i * chunk_frames, min((i + 1) * chunk_frames, n_frames)
        start = min(max(own_from - context_frames, 0), n_frames - size)
        windows.append(Window(start, own_from, own_to))
    return size, windows


def _encode(graphdef: nnx.GraphDef, state: nnx.State, audio: jax.Array, n_q: int | None) -> jax.Array:
    return nnx.merge(graphdef, state).encode(audio, n_q)


def _decode(graphdef: nnx.GraphDef, state: nnx.State, codes: jax.Array) -> jax.Array:
    return nnx.merge(graphdef, state).decode(codes)


@functools.lru_cache(maxsize=32)
def _compiled(graphdef: nnx.GraphDef, mesh: Mesh | None):
    """Jitted encode / decode for one architecture (and mesh), shared by every runner that uses it.

    Two checkpoints of one architecture have equal graph definitions, so they share compiled programs.
    """
    enc = functools.partial(_encode, graphdef)
    dec = functools.partial(_decode, graphdef)
    if mesh is None:
        return jax.jit(enc, static_argnums=(2,)), jax.jit(dec)
    # parameters keep the shardings CodecRunner placed them with (None: taken from the argument)
    params = None
    audio = logical_sharding(mesh, "batch", None, "time")
    codes = logical_sharding(mesh, "batch", "codebooks", "time")
    return (jax.jit(enc, static_argnums=(2,), in_shardings=(params, audio), out_shardings=codes),
            jax.jit(dec, in_shardings=(params, codes), out_shardings=audio))


class CodecRunner:
    """Batched, jitted ``encode`` / ``decode`` (and their chunked versions) for one codec.

    ``CodecRunner(model)`` runs on the default device; ``CodecRunner(model, mesh=make_mesh())``
    shards the batch over the mesh's data axes.
    """

    def __init__(self, model: Encodec, mesh: Mesh | None = None):
        if not isinstance(model, Encodec):
            raise TypeError(f"CodecRunner needs an Encodec, got {type(model).__name__}")
        self.model = model
        self.cfg = model.cfg
        self.mesh = mesh
        graphdef, state = nnx.split(model)
        if mesh is None:
            self.state = state
            self._encode, self._decode = _compiled(graphdef, None)
        else:
            self.state = jax.device_put(state, state_shardings(state, mesh))
            self._encode, self._decode = _compiled(graphdef, mesh)

    # ------------------------------------------------------------------------------------------
    def _check_batch(self, batch: int) -> None:
        if self.mesh is not None:
            check_batch_divides(batch, self.mesh)

    def num_frames(self, num_samples: int) -> int:
        """Frames ``encode`` returns for ``num_samples`` samples: ``ceil(num_samples / hop)``."""
        return self.model.num_frames(num_samples)

    def encode(self, audio: jax.Array, n_q: int | None = None, bucket_frames: int | None = None) -> jax.Array:
        """Audio ``[B, C, N]`` -> codes ``[B, n_q, ceil(N / hop)]``, jitted (one compile per shape).

        ``bucket_frames`` zero-pads ``N`` up to a multiple of ``bucket_frames * hop`` before encoding (fewer
        compiles for varied lengths) and trims the codes back to ``ceil(N / hop)`` frames; the last few
        frames can then differ from unpadded encoding, as the encoder is non-causal.
        """
        audio = jnp.asarray(audio)
        self.model._check_audio(audio)
        self._check_batch(audio.shape[0])
        n_frames = self.num_frames(audio.shape[-1])
        if bucket_frames:
            padded = math.ceil(n_frames / bucket_frames) * bucket_frames * self.cfg.hop_length
            audio = jnp.pad(audio, ((0, 0), (0, 0), (0, padded - audio.shape[-1])))
        codes = self._encode(self.state, audio, n_q)
        return codes[:, :, :n_frames] if bucket_frames else codes

    def decode(self, codes: jax.Array) -> jax.Array:
        """Codes ``[B, K, T]`` -> audio ``[B, C, T * hop]``, jitted."""
        codes = jnp.asarray(codes)
        self.model._check_codes(codes)
        self._check_batch(codes.shape[0])
        return self._decode(self.state, codes.astype(jnp.int32))

    # ------------------------------------------------------------------------------------------
    def _grouped(self, fn, windows: jax.Array, group: int | None) -> jax.Array:
        """Apply ``fn`` to ``windows [W, B, ...]`` in groups of ``group`` windows (fixed shape: one compile)."""
        count = windows.shape[0]
        group = count if not group else min(group, count)
        pad = (-count) % group
        if pad:
            windows = jnp.concatenate([windows, jnp.repeat(windows[-1:], pad, axis=0)])
        outs = []
        for g in range(0, windows.shape[0], group):
            part = windows[g:g + group]
            flat = part.reshape((-1,) + part.shape[2:])
            out = fn(flat)
            outs.append(out.reshape(part.shape[:2] + out.shape[1:]))
        return jnp.concatenate(outs)[:count]

    def encode_chunked(self, audio: jax.Array, chunk_frames: int = 500, context_frames: int = 50,
                       n_q: int | None = None, windows_per_call: int | None = None) -> jax.Array:
        """Encode long audio ``[B, C, N]`` window by window; returns codes ``[B, n_q, ceil(N / hop)]``.

        The audio is zero-padded to whole frames first (as ``encode`` effectively does). ``windows_per_call``
        bounds memory by encoding that many windows per jitted call.
        """
        audio = jnp.asarray(audio)
        self.model._check_audio(audio)
        hop = self.cfg.hop_length
        n_frames = self.num_frames(audio.shape[-1])
        audio = jnp.pad(audio, ((0, 0), (0, 0), (0, n_frames * hop - audio.shape[-1])))
        size, windows = plan_windows(n_frames, chunk_frames, context_frames)
        stacked = jnp.stack([audio[:, :, w.start * hop:(w.start + size) * hop] for w in windows])
        if self.mesh is not None:
            check_batch_divides(min(windows_per_call or len(windows), len(windows)) * audio.shape[0], self.mesh)
        codes = self._grouped(lambda x: self._encode(self.state, x, n_q), stacked, windows_per_call)
        return jnp.concatenate([codes[i, :, :, w.own_from - w.start:w.own_to - w.start]
                                for i, w in enumerate(windows)], axis=-1)

    def decode_chunked(self, codes: jax.Array, chunk_frames: int = 500, context_frames: int = 50,
                       windows_per_call: int | None = None) -> jax.Array:
        """Decode long codes ``[B, K, T]`` window by window; returns audio ``[B, C, T * hop]``."""
        codes = jnp.asarray(codes)
        self.model._check_codes(codes)
        hop = self.cfg.hop_length
        size, windows = plan_windows(codes.shape[-1], chunk_frames, context_frames)
        stacked = jnp.stack([codes[:, :, w.start:w.start + size] for w in windows]).astype(jnp.int32)
        if self.mesh is not None:
            check_batch_divides(min(windows_per_call or len(windows), len(windows)) * codes.shape[0], self.mesh)
        audio = self._grouped(lambda c: self._decode(self.state, c), stacked, windows_per_call)
        return jnp.concatenate([audio[i, :, :, (w.own_from - w.start) * hop:(w.own_to - w.start) * hop]
                                for i, w in enumerate(windows)], axis=-1)
