"""Fréchet distance between two sets of audio embeddings, with pluggable embedders.

The Fréchet (2-Wasserstein) distance between Gaussians fitted to two embedding sets,
``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, is what FAD (Kilgour et al., 2019)
reports with VGGish embeddings. Here the embedding is pluggable:

- ``CodecLatents`` (built in, always reported): the codec's continuous encoder output before
  quantization, **frame-level** (every latent frame of every clip is one embedding, 50 per second
  for the released codecs), so that even a few prompts give thousands of vectors for a
  well-conditioned covariance; time-averaging would leave 40 vectors for 128 dimensions.
- the standard FAD embeddings from the user's local weights (no package ships them, and nothing
  is downloaded): ``vggish=PATH`` (torchvggish's state dict, run by our JAX port,
  ``eval/vggish.py``), ``clap=PATH`` and ``passt=PATH`` (LAION-CLAP and PaSST checkpoints, run by
  their own PyTorch packages, ``eval/torch_embedders.py``);
- any object following the ``Embedder`` protocol, loaded from ``module:function`` (a callable
  returning an Embedder).

``load_embedder`` reads both forms (``magnet-jax eval --embedding``).
"""
from __future__ import annotations

import importlib
from typing import Callable, Protocol, runtime_checkable

import numpy as np
from scipy import linalg

MIN_EMBEDDINGS = 2
# name -> (module, loader(path) -> Embedder, what PATH is)
BUILTIN_EMBEDDINGS = {
    "vggish": ("magnet_jax.eval.vggish", "load", "a torchvggish state dict such as vggish-10086976.pth"),
    "clap": ("magnet_jax.eval.torch_embedders", "load_clap",
             "a LAION-CLAP checkpoint such as 630k-audioset-best.pt"),
    "passt": ("magnet_jax.eval.torch_embedders", "load_passt",
              "a PaSST state dict such as passt-s-f128-p16-s10-ap.476-swa.pt"),
}


@runtime_checkable
class Embedder(Protocol):
    """Maps mono audio ``[N, samples]`` at ``sample_rate`` to embeddings ``[M, D]`` (M may differ
    from N: one row per frame, per window, or per clip)."""
    name: str
    sample_rate: int

    def __call__(self, audio: np.ndarray) -> np.ndarray: ...


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of embeddings ``[M, D]``; needs M >= 2 finite rows."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be [M, D], got shape {x.shape}")
    if x.shape[0] < MIN_EMBEDDINGS:
        raise ValueError(f"need at least {MIN_EMBEDDINGS} embeddings for a covariance, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError("embeddings contain NaN or infinity")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def frechet_from_stats(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray,
                       eps: float = 1e-6) -> float:
    """The Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b).

    ``sqrtm`` of a product of near-singular covariances (fewer embeddings than dimensions) can
    come back non-finite; then both covariances get ``eps`` on the diagonal, as pytorch-fid does.
    Round-off leaves a tiny imaginary part, which is dropped."""
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape:
        raise ValueError(f"embedding sizes differ: {mu_a.shape} vs {mu_b.shape}")
    covmean = linalg.sqrtm(cov_a @ cov_b)
    if not np.all(np.isfinite(covmean)):
        offset = eps * np.eye(cov_a.shape[0])
        covmean = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covmean = np.real(covmean)
    diff = mu_a - mu_b
    return float(max(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean), 0.0))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between embedding sets ``a [M, D]`` and ``b [K, D]``."""
    return frechet_from_stats(*gaussian_stats(a), *gaussian_stats(b))


def embed(embedder: Embedder, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resample mono ``audio [N, samples]`` to the embedder's rate, then embed it."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 2:
        raise ValueError(f"audio must be mono [N, samples], got shape {audio.shape}")
    if int(sample_rate) != int(embedder.sample_rate):
        import soxr
        audio = np.stack([soxr.resample(x, int(sample_rate), int(embedder.sample_rate)) for x in audio])
    out = np.asarray(embedder(audio.astype(np.float32)))
    if out.ndim != 2:
        raise ValueError(f"embedder {embedder.name!r} returned shape {out.shape}; expected [M, D]")
    return out


class CodecLatents:
    """Frame-level latents of an ``Encodec``'s encoder (before quantization): ``[N * T, dimension]``.

    The encoder runs as one jitted program per batch shape, in fixed-size batches (the last one
    padded with silence and its rows dropped), so a prompt set compiles it once."""

    def __init__(self, codec, batch_size: int = 8, name: str = "codec_latents"):
        import jax
        from flax import nnx
        self.name = name
        self.sample_rate = int(codec.cfg.sample_rate)
        self.channels = int(codec.cfg.channels)
        self.batch_size = int(batch_size)
        graphdef, self._state = nnx.split(codec)
        self._encode = jax.jit(lambda state, x: nnx.merge(graphdef, state).encode_latent(x))

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        import jax.numpy as jnp
        x = np.repeat(np.asarray(audio, np.float32)[:, None, :], self.channels, axis=1)
        rows = []
        for start in range(0, len(x), self.batch_size):
            chunk = x[start:start + self.batch_size]
            pad = self.batch_size - len(chunk)
            if pad:
                chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], np.float32)])
            rows.append(np.asarray(self._encode(self._state, jnp.asarray(chunk)))[:len(chunk) - pad])
        latents = np.concatenate(rows)                   # [N, T, D]
        return latents.reshape(-1, latents.shape[-1])


def load_embedder(spec: str) -> Embedder:
    """``NAME=PATH`` (a built-in embedding from local weights) or ``module:function`` (a callable
    returning an Embedder). Raises ValueError with what went wrong and what to pass instead."""
    name, eq, path = spec.partition("=")
    name = name.strip().lower()
    if name in BUILTIN_EMBEDDINGS:
        module_name, attr, what = BUILTIN_EMBEDDINGS[name]
        if not eq or not path.strip():
            raise ValueError(f"--embedding {spec!r}: the {name} embedding needs its weights, which no package "
                             f"ships and nothing downloads: pass --embedding {name}=PATH with PATH {what}")
        loader = getattr(importlib.import_module(module_name), attr)
        return _checked(spec, loader(path.strip()))
    if eq:
        raise ValueError(f"--embedding {spec!r}: unknown built-in embedding {name!r} "
                         f"(known: {', '.join(BUILTIN_EMBEDDINGS)}); or pass module:function")
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--embedding {spec!r}: expected NAME=PATH ({', '.join(BUILTIN_EMBEDDINGS)}) or "
                         "module:function (a callable returning an Embedder)")
    try:
        factory: Callable = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"--embedding {spec!r}: cannot import it ({type(err).__name__}: {err})") from err
    return _checked(spec, factory())


def _checked(spec: str, embedder: object) -> Embedder:
    if not isinstance(embedder, Embedder) or not callable(embedder):
        raise ValueError(f"--embedding {spec!r}: got {type(embedder).__name__}, which lacks "
                         "name, sample_rate or __call__(audio [N, samples]) -> [M, D]")
    return embedder
