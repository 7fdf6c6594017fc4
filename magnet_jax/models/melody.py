"""Text condition -> semantic tokens -> VAE latents -> audio: the MeLoDy pipeline (arXiv 2305.15719).

    from magnet_jax.models.melody import MeLoDy
    pipe = MeLoDy(semantic_lm, dpd, vae_codec)                     # built or trained components
    out = pipe.generate_window(jax.random.key(0), duration=2.0, cond=cond)   # audio [B, C, N]
    out = pipe.generate_long(jax.random.key(0), duration=2.0, extra_chunks=3, cond=cond)

Stages (Fig. 1 of the paper): the semantic LM (``magnet_jax.melody.semantic_lm``: MusicGen's LM
with one codebook and its compiled KV-cache sampler) writes semantic tokens under the text
condition; the dual-path diffusion (``magnet_jax.melody.dpd`` + ``sampler``) turns them into VAE
latents with the paper's angle schedule and CFG on v; the VAE-GAN decoder (``Encodec`` with
``bottleneck='vae'``) renders audio. ``generate_long`` is MeLoDy's multi-chunk extension: after
the first window of M chunks, each further chunk is generated with the window's last M - 1
chunks as a clean prefix (kept bit-exact), so audio grows one chunk at a time.

Components are passed in (no released MeLoDy weights exist); ``cond`` is the semantic LM's
projected text condition [B, S, dim] (e.g. from ``magnet_jax.text``), or None. With a
``conditioner`` (MiniLM or T5 + the trained projection), ``generate`` takes captions as MAGNeT's
and MusicGen's do (seed, batch_size, duration), so the CLI and ``magnet-jax eval``
treat the three families alike.

A MeLoDy model folder is the converted layout of the other families (``magnet.json`` with
``kind: melody``, ``integrity.json`` over every file): ``lm/`` the semantic LM, ``codec/`` the
VAE-GAN, ``dpd/`` the diffusion network, ``text/`` the text projection (when conditioned). Its
``magnet.json`` also holds the DPD's config, the sampler defaults, ``latent_scale`` and
``window_seconds``. ``MeLoDy.save`` writes one, ``MeLoDy.load_converted`` (and
``magnet_jax.models.load_model``, hence ``magnet-jax generate --model DIR``) reads it.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from magnet_jax.codec.encodec import Encodec
from magnet_jax.lm.ar_sampler import ARSamplerConfig, MusicGenSampler
from magnet_jax.lm.musicgen import MusicGenLM
from magnet_jax.melody.dpd import DPD, DPDConfig, dpd_config_from_json
from magnet_jax.melody.sampler import DiffusionSampler, DiffusionSamplerConfig
from magnet_jax.melody.semantic_lm import generate_semantic_tokens
from magnet_jax.models.errors import PipelineError
from magnet_jax.models.magnet import Generation, _descriptions, generate_in_batches
from magnet_jax.seeds import seed_key
from magnet_jax.text import Conditioner
from magnet_jax.text.conditioner import TextSettings


class MeLoDy:
    """The three MeLoDy stages behind one ``generate``; ``latent_scale`` multiplies the DPD's
    output before the VAE decoder (the VAE latents' std, if the DPD was trained on latents / std).

    ``conditioner`` + ``text_settings``: the text path of ``generate`` (None: unconditional);
    ``diffusion`` / ``semantic_sampling``: the sampler defaults; ``window_seconds``: the window
    the DPD was trained on (default: the semantic LM's segment)."""

    def __init__(self, semantic_lm: MusicGenLM, dpd: DPD, codec: Encodec, *, latent_scale: float = 1.0,
                 conditioner: Conditioner | None = None, text_settings: TextSettings | None = None,
                 diffusion: DiffusionSamplerConfig = DiffusionSamplerConfig(),
                 semantic_sampling: ARSamplerConfig = ARSamplerConfig(), window_seconds: float | None = None,
                 name: str = ""):
        if codec.cfg.bottleneck != "vae":
            raise ValueError("MeLoDy decodes VAE latents: the codec needs codec.bottleneck='vae'")
        if dpd.cfg.latent_dim != codec.cfg.vae_latent_dim:
            raise ValueError(f"DPD latent_dim {dpd.cfg.latent_dim} != the VAE's latent width {codec.cfg.vae_latent_dim}")
        if dpd.cfg.semantic_vocab != semantic_lm.cfg.card:
            raise ValueError(f"DPD semantic_vocab {dpd.cfg.semantic_vocab} != the semantic LM's card "
                             f"{semantic_lm.cfg.card}")
        if semantic_lm.cfg.n_q != 1:
            raise ValueError(f"the semantic LM must have one codebook, got n_q={semantic_lm.cfg.n_q}")
        if (conditioner is None) != (text_settings is None):
            raise ValueError("give the conditioner and its text_settings together (or neither)")
        if conditioner is not None and not semantic_lm.cfg.cross_attention:
            raise ValueError("a text conditioner needs a semantic LM with cross_attention=True")
        if conditioner is not None and conditioner.dim != semantic_lm.cfg.dim:
            raise ValueError(f"the conditioner projects to {conditioner.dim}, the semantic LM is {semantic_lm.cfg.dim} wide")
        self.codec, self.latent_scale = codec, float(latent_scale)
        self.semantic_lm, self.dpd = semantic_lm, dpd
        self.conditioner, self.text_settings = conditioner, text_settings
        self.diffusion_config, self.semantic_config = diffusion, semantic_sampling
        self.window_seconds = float(window_seconds or semantic_lm.cfg.segment_duration)
        self.name, self.checkpoint_dir, self.mesh = name, None, None
        self.dpd_cfg = dpd.cfg
        self.lm_sampler = MusicGenSampler(semantic_lm)
        self.diffusion = DiffusionSampler(dpd)
        self._decode = jax.jit(lambda z: codec.decode_vae(z))
        self._reconstruct = jax.jit(lambda wav: codec.decode_vae(codec.encode_moments(wav)[0]))

    @property
    def window_multiple(self) -> int:
        """Latent lengths are multiples of lcm(num_chunks, segment_length)."""
        return math.lcm(self.dpd_cfg.num_chunks, self.dpd_cfg.segment_length)

    def latent_frames(self, duration: float) -> int:
        """VAE frames of a ``duration``-second window, rounded up to ``window_multiple``."""
        if not duration > 0:
            raise ValueError(f"duration must be positive, got {duration}")
        n = math.ceil(duration * self.codec.frame_rate)
        return -(-n // self.window_multiple) * self.window_multiple

    def semantic_frames(self, duration: float) -> int:
        return max(1, math.ceil(duration * self.lm_sampler.cfg.frame_rate))

    def _semantic(self, key, duration, cond, num_samples, config):
        return generate_semantic_tokens(self.lm_sampler, key, frames=self.semantic_frames(duration), cond=cond,
                                        num_samples=None if cond is not None else num_samples, config=config)

    def generate_window(self, key: jax.Array, *, duration: float, cond: jax.Array | None = None,
                        num_samples: int = 1, semantic_config: ARSamplerConfig = ARSamplerConfig(),
                        diffusion_config: DiffusionSamplerConfig = DiffusionSamplerConfig()) -> dict:
        """{'audio' [B, C, N], 'semantic' [B, Ts], 'latents' [B, T, latent_dim]} for one window."""
        k_lm, k_dif = jax.random.split(key)
        tokens = self._semantic(k_lm, duration, cond, num_samples, semantic_config)
        latents = self.diffusion.generate(k_dif, tokens, frames=self.latent_frames(duration), config=diffusion_config)
        return self._finish(tokens, latents, duration)

    def generate_long(self, key: jax.Array, *, duration: float, extra_chunks: int, cond: jax.Array | None = None,
                      num_samples: int = 1, semantic_config: ARSamplerConfig = ARSamplerConfig(),
                      diffusion_config: DiffusionSamplerConfig = DiffusionSamplerConfig()) -> dict:
        """A first window of ``duration`` seconds, then ``extra_chunks`` more chunks, each generated
        with the previous M - 1 chunks as a clean prefix (multi-chunk continuation, Sec. 3.3).
        The semantic tokens for the whole length come from the LM in one pass."""
        if extra_chunks < 0:
            raise ValueError(f"extra_chunks must be >= 0, got {extra_chunks}")
        if extra_chunks and not diffusion_config.chunkwise:
            raise ValueError("generate_long needs diffusion_config.chunkwise=True")
        T, M = self.latent_frames(duration), self.dpd_cfg.num_chunks
        chunk = T // M
        total_T = T + extra_chunks * chunk
        total_s = total_T / self.codec.frame_rate
        k_lm, k_dif = jax.random.split(key)
        tokens = self._semantic(k_lm, total_s, cond, num_samples, semantic_config)
        Ts = tokens.shape[1]

        def window_tokens(start_frame):            # the semantic tokens aligned to latent frames start..start+T
            lo = (start_frame * Ts) // total_T
            n = max(1, (T * Ts) // total_T)
            return jax.lax.dynamic_slice_in_dim(tokens, min(lo, Ts - n), n, axis=1)

        keys = jax.random.split(k_dif, extra_chunks + 1)
        latents = self.diffusion.generate(keys[0], window_tokens(0), frames=T, config=diffusion_config)
        out = [latents]
        for i in range(1, extra_chunks + 1):
            prefix = jnp.concatenate([latents[:, chunk:], jnp.zeros_like(latents[:, :chunk])], axis=1)
            latents = self.diffusion.generate(keys[i], window_tokens(i * chunk), frames=T, prefix=prefix,
                                              prefix_chunks=M - 1, config=diffusion_config)
            out.append(latents[:, -chunk:])
        return self._finish(tokens, jnp.concatenate(out, axis=1), total_s)

    def _finish(self, tokens, latents, duration) -> dict:
        audio = self._decode(latents * self.latent_scale)
        n = int(round(duration * self.codec.sample_rate))
        return {"audio": audio[..., :n], "semantic": tokens, "latents": latents}

    # -- captions in, audio out (the CLI's path) ------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.codec.cfg.sample_rate

    def reconstruct(self, wav: np.ndarray | jax.Array) -> np.ndarray:
        """Audio [B, C, N] through the VAE-GAN (posterior mean, decoded): the best the DPD can
        render, which ``magnet-jax eval`` reports as the codec ceiling."""
        return np.asarray(self._reconstruct(jnp.asarray(wav, jnp.float32)))

    def generate(self, descriptions: Sequence[str | None] | str, *, seed: int = 0, key: jax.Array | None = None,
                 batch_size: int | None = None, progress: bool = False, duration: float | None = None,
                 diffusion_steps: int | None = None, diffusion_cfg: float | None = None,
                 **semantic: float | int | bool) -> Generation:
        """One clip per caption ("" or None: the null condition, needs no conditioner) of
        ``duration`` seconds (default ``window_seconds``; longer ones by multi-chunk
        continuation), as MAGNeT's and MusicGen's ``generate``: fixed-size batches of
        ``batch_size`` (default: all at once), batch ``i`` drawn with ``fold_in(key, i)``.
        ``semantic``: the semantic LM's ``ARSamplerConfig`` fields (temperature, top_k, top_p,
        cfg_coef, use_sampling). Returns audio [B, C, N] and the semantic tokens [B, 1, Ts]."""
        texts = [d or None for d in _descriptions(descriptions)]
        if not texts:
            raise PipelineError("no captions given")
        if self.conditioner is None and any(texts):
            raise PipelineError("this MeLoDy has no text conditioning (its semantic LM has no cross-attention): "
                                "generate with empty prompts (--unconditional N)")
        diffusion = dataclasses.replace(self.diffusion_config, **{k: v for k, v in
                                        (("num_steps", diffusion_steps), ("cfg_scale", diffusion_cfg)) if v is not None})
        try:
            config = dataclasses.replace(self.semantic_config, **semantic)
            diffusion.validate()
            config.validate()
            key = seed_key(seed) if key is None else key
        except (TypeError, ValueError) as err:
            raise PipelineError(str(err)) from None
        duration = self.window_seconds if duration is None else float(duration)
        if not (math.isfinite(duration) and duration > 0):
            raise PipelineError(f"duration must be a positive number of seconds, got {duration}")
        n = len(texts)
        batch = min(int(batch_size or n), n)
        if batch < 1:
            raise PipelineError(f"batch_size={batch_size}: must be >= 1")
        samples = int(round(duration * self.sample_rate))

        def run_batch(i: int, rows: list[int]) -> tuple[jax.Array, jax.Array]:
            rows_text = [texts[r] for r in rows]
            cond = None if self.conditioner is None else self.conditioner.encode(rows_text).cond
            out = self._clip(jax.random.fold_in(key, i), duration, cond, len(rows), config, diffusion)
            return out["semantic"][:, None], out["audio"][..., :samples]

        return generate_in_batches(n, batch, progress, self.sample_rate, run_batch)

    def _windows(self, duration: float) -> tuple[float, int]:
        """(seconds of the first window, extra chunks after it) of a ``duration``-second clip."""
        window = min(duration, self.window_seconds)
        window_frames = self.latent_frames(window)
        chunk_s = window_frames // self.dpd_cfg.num_chunks / self.codec.frame_rate
        extra = max(0, math.ceil((duration - window_frames / self.codec.frame_rate) / chunk_s - 1e-9))
        return window, extra

    def forward_passes(self, duration: float | None = None, diffusion_steps: int | None = None) -> dict[str, int]:
        """Network forward passes of one batch of ``duration``-second clips (CFG's conditional and
        null rows share a pass): one semantic LM pass per token, ``diffusion_steps`` DPD passes per
        window and per extra chunk, one VAE decode; the paper's cost measure."""
        duration = self.window_seconds if duration is None else float(duration)
        window, extra = self._windows(duration)
        steps = self.diffusion_config.num_steps if diffusion_steps is None else int(diffusion_steps)
        frames = self.latent_frames(window)
        total_s = (frames + extra * (frames // self.dpd_cfg.num_chunks)) / self.codec.frame_rate if extra else window
        passes = {"semantic_lm": self.semantic_frames(total_s), "dpd": steps * (1 + extra), "vae_decoder": 1}
        return {**passes, "total": sum(passes.values())}

    def _clip(self, key: jax.Array, duration: float, cond: jax.Array | None, num_samples: int,
              config: ARSamplerConfig, diffusion: DiffusionSamplerConfig) -> dict:
        """One batch of ``duration`` seconds: one window, then as many extra chunks as it needs."""
        window, extra = self._windows(duration)
        kwargs = dict(cond=cond, num_samples=num_samples, semantic_config=config, diffusion_config=diffusion)
        if extra:
            return self.generate_long(key, duration=window, extra_chunks=extra, **kwargs)
        return self.generate_window(key, duration=window, **kwargs)

    # -- the model folder ------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike, *, source: str = "", text_encoder: str | None = None) -> Path:
        """Write this MeLoDy as a model folder (see the module docstring); ``text_encoder``: a
        local folder of the text encoder to record (else it is found by its name at load)."""
        from magnet_jax.lm.checkpoint import save_lm
        from magnet_jax.models.conversion import _write_converted
        from magnet_jax.models.sources import FORMAT
        text = text_params = None
        if self.conditioner is not None:
            text = dataclasses.asdict(self.text_settings)
            proj = self.conditioner.conditioner.output_proj
            text_params = {"weight": np.asarray(proj.kernel[...]).T, "bias": np.asarray(proj.bias[...])}
        meta = {"format": FORMAT, "kind": "melody", "source": source or "MeLoDy.save",
                "lm": dataclasses.asdict(self.semantic_lm.cfg), "codec": dataclasses.asdict(self.codec.cfg),
                "dpd": dataclasses.asdict(self.dpd_cfg), "diffusion": dataclasses.asdict(self.diffusion_config),
                "semantic_sampling": dataclasses.asdict(self.semantic_config), "latent_scale": self.latent_scale,
                "window_seconds": self.window_seconds, "text": text, "text_encoder": text_encoder,
                "text_max_tokens": None, "xp_cfg": None}
        return _write_converted(Path(folder), meta, self.semantic_lm, self.codec, text_params, save_lm,
                                extra={"dpd": nnx.to_pure_dict(nnx.state(self.dpd, nnx.Param))})

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "melody-tiny", *,
                        text_encoder: str | os.PathLike | None = None, verify: bool = True,
                        compute_dtype: str = "float32") -> "MeLoDy":
        """The MeLoDy shipped with the package (``melody-tiny``, the default) or a MeLoDy folder
        (``export-melody`` / ``MeLoDy.save``), as ``MAGNeT.from_pretrained`` names its models."""
        from magnet_jax.models.conversion import converted_folder
        model = cls.load_converted(converted_folder(name_or_path), text_encoder=text_encoder, verify=verify,
                                   compute_dtype=compute_dtype)
        model.name = str(name_or_path)
        return model

    @classmethod
    def load_converted(cls, folder: str | os.PathLike, *, text_encoder: str | os.PathLike | None = None,
                       verify: bool = True, compute_dtype: str = "float32", **_: object) -> "MeLoDy":
        """A MeLoDy model folder, checked against its manifest first (``verify``)."""
        from magnet_jax.models.loading import (_load_conditioner, _load_lm, _read_meta, _restore,
                                               load_converted_codec, verify_model_folder)
        folder = Path(folder).absolute()
        if verify:
            verify_model_folder(folder)
        meta = _read_meta(folder)
        if meta.get("kind") != "melody":
            raise PipelineError(f"{folder} holds a {meta.get('kind', 'magnet')} model, not MeLoDy; "
                                f"load it with magnet_jax.models.load_model")
        lm = _load_lm(folder, compute_dtype)
        _, codec = load_converted_codec(folder, verify=False)
        dpd_cfg = dpd_config_from_json(meta["dpd"])
        abstract = nnx.eval_shape(lambda: DPD(dpd_cfg, rngs=nnx.Rngs(0)))
        graphdef, state = nnx.split(abstract)
        nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, _restore(folder / "dpd")))
        dpd = nnx.merge(graphdef, state)
        conditioner = _load_conditioner(folder, meta, lm.cfg.dim, text_encoder, None)
        model = cls(lm, dpd, codec, latent_scale=meta["latent_scale"], conditioner=conditioner,
                    text_settings=None if meta["text"] is None else TextSettings(**meta["text"]),
                    diffusion=DiffusionSamplerConfig(**meta["diffusion"]),
                    semantic_sampling=ARSamplerConfig(**meta["semantic_sampling"]),
                    window_seconds=meta["window_seconds"], name=meta["source"])
        model.checkpoint_dir = folder
        return model
