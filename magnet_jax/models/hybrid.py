"""Hybrid-MAGNeT (arXiv 2401.04577, "Hybrid-MAGNeT"): the first seconds of a clip generated
autoregressively by a MusicGen, the rest decoded in parallel by MAGNeT continuing from those
tokens as its prompt (its ordinary continuation path: the prompt's tokens are pinned at every
step and its spans are never re-masked).

    from magnet_jax.models import MAGNeT, MusicGen, HybridMAGNeT
    hybrid = HybridMAGNeT(MAGNeT.from_pretrained("facebook/magnet-small-10secs"),
                          MusicGen.from_pretrained("facebook/musicgen-small"))
    out = hybrid.generate(["80s synth pop"], prefix_seconds=3.0, seed=0)   # 3 s AR, 7 s parallel

The two models must read the same codec tokens (checked: codebooks, card, frame rate, sample
rate, channels). The clip is MAGNeT's (its segment, trimmed to whole spans by 'nonoverlap');
``prefix_seconds`` is rounded to whole frames and must lie in [0, clip length]. Its two ends
are the models themselves: 0 is exactly ``MAGNeT.generate``; the whole clip is exactly the AR
model's own ``generate`` for that duration.

Randomness: the AR prefix of batch i draws from ``fold_in(key, i)``, as ``MusicGen.generate``
does; MAGNeT's row r draws from ``prompt_key(fold_in(key, MAGNET_STREAM), r)``, a stream of
its own, so no key is consumed by both models (at P = 0 MAGNeT alone runs, with its own keys).
Each model uses its own text encoder, its own sampler parameters and its own CFG. A rescorer set
on the MAGNeT (``MAGNeT.set_rescorer``) also rescores the parallel part.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.lm.ar_sampler import ARSamplerConfig
from magnet_jax.lm.sampler import SamplerConfig
from magnet_jax.models.errors import PipelineError
from magnet_jax.models.magnet import (MAGNeT, Generation, _descriptions, check_shared_codec, generate_in_batches,
                                      prompt_key)
from magnet_jax.models.musicgen import MusicGen
from magnet_jax.seeds import seed_key

MAGNET_STREAM = 2**31 - 1   # folded into the call's key for MAGNeT's rows (the AR batches use 0, 1, ...)


class HybridMAGNeT:
    """A MAGNeT and an autoregressive MusicGen sharing its codec: AR prefix, parallel rest."""

    def __init__(self, magnet: MAGNeT, ar_model: MusicGen):
        check_shared_codec(magnet, ar_model, "AR model")
        self.magnet, self.ar_model = magnet, ar_model

    @property
    def sample_rate(self) -> int:
        return self.magnet.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.magnet.frame_rate

    def prefix_frames(self, prefix_seconds: float, config: SamplerConfig) -> int:
        """Frames the AR model generates: ``prefix_seconds`` rounded to whole frames, checked
        against the clip MAGNeT makes."""
        clip = self.magnet.output_frames(config)
        seconds = clip / self.frame_rate
        if not (math.isfinite(prefix_seconds) and 0.0 <= prefix_seconds <= seconds + 0.5 / self.frame_rate):
            raise PipelineError(f"hybrid prefix {prefix_seconds} s: must be in [0, {seconds:g}] s, the clip "
                                f"length of {self.magnet.name or 'this MAGNeT'} ({clip} frames); 0 is plain MAGNeT")
        return min(int(round(prefix_seconds * self.frame_rate)), clip)

    def generate(self, descriptions: Sequence[str | None] | str, *, prefix_seconds: float, seed: int = 0,
                 key: jax.Array | None = None, batch_size: int | None = None, progress: bool = False,
                 duration: float | None = None, ar_params: Mapping[str, Any] | None = None,
                 **params: Any) -> Generation:
        """Audio and tokens of the clip: the first ``prefix_seconds`` by the AR model, the rest by
        MAGNeT. ``params``: MAGNeT's sampler parameters (SamplerConfig fields); ``ar_params``:
        the AR model's (ARSamplerConfig fields; default: its own generation parameters);
        ``duration``: checked against MAGNeT's clip, as ``MAGNeT.generate`` checks it."""
        descriptions = _descriptions(descriptions)
        self.magnet._check_duration(duration)
        config = self.magnet.sampler_config(params)
        frames = self.prefix_frames(float(prefix_seconds), config)
        if frames == 0:
            return self.magnet.generate(descriptions, seed=seed, key=key, batch_size=batch_size,
                                        progress=progress, **params)
        ar_config = self.ar_model.sampler_config(dict(ar_params or {}))
        key = _base_key(seed, key)
        n = len(descriptions)
        batch = self.magnet._batch_size(batch_size, n)

        def run_batch(i: int, rows: list[int]) -> tuple[jax.Array, np.ndarray]:
            codes = self.generate_tokens(key, i, rows, [descriptions[r] for r in rows], frames, config, ar_config)
            return codes, self.magnet.decode(codes)

        return generate_in_batches(n, batch, progress, self.sample_rate, run_batch)

    def generate_tokens(self, key: jax.Array, batch_index: int, rows: Sequence[int],
                        descriptions: Sequence[str | None], frames: int, config: SamplerConfig,
                        ar_config: ARSamplerConfig) -> jax.Array:
        """One batch: the AR model's first ``frames`` frames, then MAGNeT continuing them."""
        prefix = self.ar_prefix(jax.random.fold_in(key, batch_index), descriptions, frames, ar_config)
        if frames >= self.magnet.output_frames(config):
            return prefix
        magnet_key = jax.random.fold_in(key, MAGNET_STREAM)
        keys = jnp.stack([prompt_key(magnet_key, r) for r in rows])
        return self.magnet.generate_tokens(keys, descriptions, prefix, config)

    def ar_prefix(self, key: jax.Array, descriptions: Sequence[str | None], frames: int,
                  ar_config: ARSamplerConfig) -> jax.Array:
        """The AR model's codes [B, K, frames], as its ``generate`` makes them for this duration
        (windowed past its trained segment)."""
        ar = self.ar_model
        if frames <= ar.lm_cfg.sequence_len:
            try:
                return ar.sampler.generate(key, frames=frames, cond=ar.conditions(descriptions),
                                           num_samples=len(descriptions), config=ar_config)
            except ValueError as err:
                raise PipelineError(str(err)) from err
        codes = ar.generate_tokens(key, descriptions, None, ar_config, (frames + 0.5) / self.frame_rate,
                                   ar.extend_stride)
        return codes[..., :frames]


def _base_key(seed: int, key: jax.Array | None) -> jax.Array:
    if key is not None:
        return key
    try:
        return seed_key(seed)
    except ValueError as err:
        raise PipelineError(str(err)) from None
