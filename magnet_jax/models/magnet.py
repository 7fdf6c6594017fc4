"""Text -> tokens -> audio with a released MAGNeT checkpoint: audiocraft's ``MAGNeT`` in JAX.

    from magnet_jax.models import MAGNeT
    model = MAGNeT.from_pretrained("facebook/magnet-small-10secs")      # or a local folder
    out = model.generate(["80s synth pop", "calm piano"], seed=0)       # audio [2, 1, N], tokens [2, 4, T]
    out = model.generate_continuation(wav, 44100, ["...continue with drums"])

What ``from_pretrained`` reads is what audiocraft's ``MAGNeT.get_pretrained`` reads: a folder (a
local one, or Hugging Face's ``facebook/magnet-*`` repo) holding ``state_dict.bin`` (the LM and the
text projection, with the experiment's ``xp.cfg``) and ``compression_state_dict.bin`` (EnCodec: a
native export, or the redirect ``{'pretrained': 'facebook/encodec_32khz'}``). Every setting comes
from ``xp.cfg`` (the text encoder's name, the segment duration, the LM shape) or the codec itself
(the frame rate). The torch pickles are converted once into an orbax folder (``convert``), cached
per checkpoint file, so every later load reads orbax and safetensors only: torch is not imported.

Generation reproduces audiocraft's ``MAGNeT.generate``: descriptions and their null conditions are
tokenized together (padded to the longest prompt of the batch: padding changes MAGNeT's
cross-attention, so it is kept), the compiled sampler (``magnet_jax.lm.sampler``) decodes all stages
in one program, and EnCodec decodes the tokens. Like the reference, MAGNeT emits exactly one segment
(``dataset.segment_duration``, trimmed to whole spans by the 'nonoverlap' arrangement). Many prompts
run in fixed-size batches (the last padded by repeating its last prompt, so its text padding and
its compiled program stay the same), each batch split over the devices of a mesh.

Randomness is per prompt: prompt i of a call draws from ``prompt_key(seed, i)`` =
``fold_in(seed_key(seed), i)`` alone, so its sample does not change with ``batch_size`` or with
the other prompts of the call. The serving engine (``magnet_jax.serve``), which batches unrelated
requests, uses the same keys, so it reproduces a one-prompt ``generate`` for the same prompt and
seed (up to the float rounding of another compiled shape: README, "Serving").
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from magnet_jax.codec import Encodec
from magnet_jax.codec.runner import CodecRunner
from magnet_jax.lm.model import MagnetLM
from magnet_jax.lm.rescore import RescoreConfig, RescoringSampler
from magnet_jax.lm.sampler import MagnetSampler, SamplerConfig, output_length
from magnet_jax.models import sources
from magnet_jax.models.audio import convert_audio
from magnet_jax.models.conversion import _check_compatible, converted_folder
from magnet_jax.models.errors import ModelNotFoundError, PipelineError
from magnet_jax.models.loading import (_load_conditioner, _load_lm, _read_meta, auto_mesh, load_converted_codec,
                                       verify_model_folder)
from magnet_jax.models.sources import no_model_message
from magnet_jax.seeds import seed_key
from magnet_jax.text import Conditioner

if TYPE_CHECKING:       # musicgen.py imports this module
    from magnet_jax.models.musicgen import MusicGen

log = logging.getLogger(__name__)


class Generation(NamedTuple):
    """What a generate call returns: audio float32 [N, C, samples], tokens int32 [N, K, T]."""
    audio: np.ndarray
    tokens: np.ndarray
    sample_rate: int


def prompt_key(seed_or_key: int | jax.Array, index: int) -> jax.Array:
    """The PRNG key of prompt ``index`` of a generate call with this seed (or base key)."""
    key = seed_or_key if isinstance(seed_or_key, jax.Array) else seed_key(seed_or_key)
    return jax.random.fold_in(key, index)


def _pad_index(start: int, batch: int, n: int) -> list[int]:
    """Rows of one fixed-size batch: the real ones, then the last real one repeated."""
    return [min(i, n - 1) for i in range(start, start + batch)]


def generate_in_batches(n: int, batch: int, progress: bool, sample_rate: int,
                        run_batch: Callable[[int, list[int]], tuple[Any, Any]]) -> Generation:
    """``n`` rows in fixed-size batches of ``batch``: ``run_batch(i, rows)`` makes batch ``i``
    (``rows``: the prompt indices, the last one repeated as padding) and returns its tokens and
    audio; the padding rows are dropped. Why fixed sizes: every batch reuses one compiled program."""
    from tqdm.auto import tqdm
    tokens, audio = [], []
    starts = range(0, n, batch)
    for i, start in enumerate(tqdm(starts, desc="generating", unit="batch", disable=not progress)):
        batch_tokens, batch_audio = run_batch(i, _pad_index(start, batch, n))
        tokens.append(batch_tokens)
        audio.append(batch_audio)
    keep = [min(batch, n - s) for s in starts]
    tokens_np = np.concatenate([np.asarray(t)[:k] for t, k in zip(tokens, keep)])
    audio_np = np.concatenate([np.asarray(a)[:k] for a, k in zip(audio, keep)])
    return Generation(audio_np.astype(np.float32), tokens_np.astype(np.int32), sample_rate)


# -- the model -----------------------------------------------------------------------------------------
class MAGNeT:
    """A MAGNeT LM, its text conditioner and its codec, with audiocraft's generation API."""

    def __init__(self, lm: MagnetLM, codec: Encodec, conditioner: Conditioner | None, *,
                 name: str = "", mesh: Mesh | None = None):
        _check_compatible(lm.cfg, codec.cfg)
        if lm.cfg.frame_rate != int(codec.cfg.frame_rate):
            raise PipelineError(f"LM frame rate {lm.cfg.frame_rate} != codec frame rate {codec.cfg.frame_rate}")
        self.name = name
        self.mesh = mesh
        self.lm_cfg = lm.cfg
        self.codec_cfg = codec.cfg
        self.conditioner = conditioner
        self.sampler = MagnetSampler(lm, mesh)
        self.codec = CodecRunner(codec, mesh)
        self.generation_params = SamplerConfig()
        self.checkpoint_dir: Path | None = None
        self.rescorer: MusicGen | None = None
        self.rescore_params = RescoreConfig()
        self._rescoring: RescoringSampler | None = None

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, *,
                        text_encoder: str | os.PathLike | None = None,
                        codec: str | os.PathLike | None = None,
                        cache_dir: str | os.PathLike | None = None,
                        mesh: Mesh | None | str = "auto", compute_dtype: str = "float32",
                        verify: bool = True) -> "MAGNeT":
        """Load a released checkpoint (hub name), an audiocraft folder, or a converted folder.

        An audiocraft export is converted once (torch) into ``cache_dir`` (default
        $MAGNET_JAX_CACHE or ~/.cache/magnet_jax) and read from there afterwards (no torch).
        ``text_encoder``: a local T5 folder when xp.cfg's hub name (t5-base / t5-large) cannot be
        fetched; ``codec``: a local EncodecModel folder for a codec redirect; ``mesh``: "auto"
        (every accelerator), None (one device) or a Mesh; ``compute_dtype``: the LM's
        "float32" or "bfloat16"; ``verify``: check the converted folder's files against its
        manifest (False for huge trusted folders).
        """
        name_or_path = name_or_path if name_or_path is not None else sources.DEFAULT_MODEL
        if name_or_path is None:
            raise ModelNotFoundError(no_model_message())
        folder = converted_folder(name_or_path, text_encoder=text_encoder, codec=codec, cache_dir=cache_dir)
        model = cls.load_converted(folder, text_encoder=text_encoder, mesh=mesh,
                                   compute_dtype=compute_dtype, verify=verify)
        model.name = str(name_or_path)
        return model

    @classmethod
    def load_converted(cls, folder: str | os.PathLike, *, text_encoder: str | os.PathLike | None = None,
                       mesh: Mesh | None | str = "auto", compute_dtype: str = "float32",
                       verify: bool = True) -> "MAGNeT":
        """A folder written by ``convert`` or ``export`` (orbax + JSON; reads no torch pickle),
        checked against its manifest first unless ``verify=False``."""
        folder = Path(folder).absolute()
        if verify:
            verify_model_folder(folder)
        meta = _read_meta(folder)
        mesh = auto_mesh() if mesh == "auto" else mesh
        lm = _load_lm(folder, compute_dtype)
        _, codec_model = load_converted_codec(folder, verify=False)      # verified above
        conditioner = _load_conditioner(folder, meta, lm.cfg.dim, text_encoder, mesh)
        model = cls(lm, codec_model, conditioner, name=meta["source"], mesh=mesh)
        model.checkpoint_dir = folder
        if meta.get("generation"):      # the defaults an exported model was evaluated with
            model.set_generation_params(**meta["generation"])
        return model

    # -- properties (the reference's names) ---------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.codec_cfg.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.lm_cfg.frame_rate

    @property
    def audio_channels(self) -> int:
        return self.codec_cfg.channels

    @property
    def duration(self) -> float:
        """Seconds of one segment: MAGNeT generates exactly this (xp.cfg dataset.segment_duration)."""
        return self.lm_cfg.segment_duration

    def output_frames(self, config: SamplerConfig | None = None) -> int:
        """Frames generated: the segment, trimmed to whole spans for 'nonoverlap' (500 -> 498)."""
        return output_length(self.lm_cfg, config or self.generation_params, self.lm_cfg.sequence_len)

    def set_generation_params(self, **params: Any) -> SamplerConfig:
        """Change the default sampler parameters (SamplerConfig fields), as audiocraft's method."""
        self.generation_params = self.sampler_config(params)
        return self.generation_params

    def sampler_config(self, params: Mapping[str, Any]) -> SamplerConfig:
        fields = {f.name for f in dataclasses.fields(SamplerConfig)}
        unknown = sorted(set(params) - fields)
        if unknown:
            raise PipelineError(f"unknown sampler parameter(s) {unknown}; known: {sorted(fields)}")
        config = dataclasses.replace(self.generation_params, **params).for_codebooks(self.lm_cfg.n_q)
        try:
            config.validate(self.lm_cfg.n_q)
        except ValueError as err:
            raise PipelineError(str(err)) from err
        return config

    def set_rescorer(self, rescorer: MusicGen | None, weight: float = RescoreConfig.weight,
                     stages: Sequence[int] | None = None, steps: Sequence[int] | None = None,
                     cfg_coef: float = RescoreConfig.cfg_coef) -> RescoreConfig | None:
        """Rescore every generation with an autoregressive MusicGen (the paper's rescoring,
        ``magnet_jax.lm.rescore``): spans are re-masked by ``weight * p_rescorer + (1 - weight)
        * p_MAGNeT`` of the sampled tokens. The rescorer must read MAGNeT's codec tokens (same
        codebooks, card, frame rate and sample rate); it conditions on the text through its own
        text encoder. ``stages`` / ``steps``: which stages and step indices are rescored (None:
        all); ``cfg_coef``: the rescorer's guidance. ``None`` turns rescoring off."""
        if rescorer is None:
            self.rescorer, self._rescoring = None, None
            return None
        check_shared_codec(self, rescorer, "rescorer")
        config = RescoreConfig(float(weight), None if stages is None else tuple(stages),
                               None if steps is None else tuple(steps), float(cfg_coef))
        try:
            config.validate(self.lm_cfg.n_q)
        except ValueError as err:
            raise PipelineError(str(err)) from err
        from flax import nnx
        lm = nnx.merge(rescorer.sampler.graphdef, rescorer.sampler.state)
        self.rescorer, self.rescore_params = rescorer, config
        self._rescoring = RescoringSampler(self.sampler, lm)
        return config

    def _check_duration(self, duration: float | None) -> None:
        if duration is not None and not math.isclose(float(duration), self.duration, rel_tol=1e-6):
            raise PipelineError(
                f"this MAGNeT model generates {self.duration:g} s segments only (its training segment, "
                f"xp.cfg dataset.segment_duration); {float(duration):g} s cannot be produced: "
                f"omit the duration or ask for {self.duration:g}")

    # -- generation -----------------------------------------------------------------------------
    def generate(self, descriptions: Sequence[str | None] | str, *, seed: int = 0,
                 key: jax.Array | None = None, batch_size: int | None = None, progress: bool = False,
                 duration: float | None = None, **params: Any) -> Generation:
        """Audio and tokens for text descriptions (None or "" = no text). ``params``: any
        SamplerConfig field (decoding_steps, temperature, anneal_temp, use_sampling, top_k, top_p,
        max_cfg_coef, min_cfg_coef, span_scoring, span_arrangement)."""
        descriptions = _descriptions(descriptions)
        return self._generate(descriptions, None, seed, key, batch_size, progress, duration, params)

    def generate_unconditional(self, num_samples: int, *, seed: int = 0, key: jax.Array | None = None,
                               batch_size: int | None = None, progress: bool = False,
                               duration: float | None = None, **params: Any) -> Generation:
        """Samples without text (both CFG halves are the null condition, so no CFG work is done)."""
        if int(num_samples) < 1:
            raise PipelineError(f"num_samples={num_samples}: ask for at least one sample")
        return self._generate([None] * int(num_samples), None, seed, key, batch_size, progress, duration, params)

    def generate_continuation(self, prompt: np.ndarray | jax.Array, prompt_sample_rate: int,
                              descriptions: Sequence[str | None] | None = None, *, seed: int = 0,
                              key: jax.Array | None = None, batch_size: int | None = None,
                              progress: bool = False, duration: float | None = None,
                              **params: Any) -> Generation:
        """Continue audio prompts ``[B, C, N]`` (or ``[C, N]``) at ``prompt_sample_rate``: the prompts
        are resampled to the codec's rate, encoded, and their tokens pinned while the rest is
        decoded. One prompt with several descriptions continues that prompt once per description."""
        wav = np.asarray(prompt, np.float32)
        if wav.ndim == 2:
            wav = wav[None]
        if wav.ndim != 3 or wav.shape[-1] < 1:
            raise PipelineError(f"prompt audio has shape {tuple(wav.shape)}; expected [B, C, N] or [C, N] "
                                f"with N >= 1 samples")
        bad = int(wav.size - np.count_nonzero(np.isfinite(wav)))
        if bad:   # NaN through the codec is a constant code, and the continuation would be silent garbage
            raise PipelineError(f"prompt audio has {bad} NaN/inf samples of {wav.size}: repair the audio first")
        descriptions = _descriptions(descriptions if descriptions is not None else [None] * wav.shape[0])
        if wav.shape[0] == 1 and len(descriptions) > 1:
            wav = np.repeat(wav, len(descriptions), axis=0)
        if wav.shape[0] != len(descriptions):
            raise PipelineError(f"{wav.shape[0]} prompt audios but {len(descriptions)} descriptions")
        wav = convert_audio(wav, int(prompt_sample_rate), self.sample_rate, self.audio_channels)
        return self._generate(descriptions, wav, seed, key, batch_size, progress, duration, params)

    def _generate(self, descriptions: list[str | None], prompt_audio: np.ndarray | None, seed: int,
                  key: jax.Array | None, batch_size: int | None, progress: bool,
                  duration: float | None, params: Mapping[str, Any]) -> Generation:
        self._check_duration(duration)
        config = self.sampler_config(params)
        self._check_prompt(prompt_audio, config)
        n = len(descriptions)
        batch = self._batch_size(batch_size, n)
        if key is None:
            try:
                key = seed_key(seed)
            except ValueError as err:
                raise PipelineError(str(err)) from None

        def run_batch(_: int, rows: list[int]) -> tuple[jax.Array, jax.Array]:
            prompt = None if prompt_audio is None else self._encode_prompt(prompt_audio[rows])
            keys = jnp.stack([prompt_key(key, r) for r in rows])       # padding rows repeat the last
            codes = self.generate_tokens(keys, [descriptions[r] for r in rows], prompt, config)
            return codes, self.codec.decode(codes)

        return generate_in_batches(n, batch, progress, self.sample_rate, run_batch)

    def _batch_size(self, batch_size: int | None, n: int) -> int:
        """Rows per compiled call: all prompts at once by default (as the reference), rounded up
        to a multiple of the mesh's data-parallel size."""
        from magnet_jax.train.sharding import batch_axis_size
        if batch_size is not None and int(batch_size) < 1:
            raise PipelineError(f"batch_size={batch_size}: must be >= 1")
        batch = min(int(batch_size or n), n)
        if self.mesh is not None:
            ways = batch_axis_size(self.mesh)
            batch = -(-batch // ways) * ways
        return batch

    def _check_prompt(self, wav: np.ndarray | None, config: SamplerConfig) -> None:
        if wav is None:
            return
        frames, limit = self.codec.num_frames(wav.shape[-1]), self.output_frames(config)
        if frames >= limit:
            raise PipelineError(
                f"the prompt audio lasts {wav.shape[-1] / self.sample_rate:.3f} s ({frames} frames), not "
                f"shorter than the {limit / self.frame_rate:.3f} s ({limit} frames) this model generates: "
                f"shorten the prompt so something is left to generate")

    def _encode_prompt(self, wav: np.ndarray) -> jax.Array:
        return self.codec.encode(jnp.asarray(wav), n_q=self.lm_cfg.n_q)

    def conditions(self, descriptions: Sequence[str | None]) -> jax.Array | None:
        """The projected text condition [B, S, D] (tokenized with the null texts, as the reference);
        None when no row has text (the null condition's cross-attention output is exactly 0)."""
        if all(not d for d in descriptions):
            return None
        if self.conditioner is None:
            raise PipelineError("this model has no text conditioner; pass None descriptions")
        cond, _null = self.conditioner.encode_with_null(list(descriptions))
        if self.mesh is not None:
            from magnet_jax.train.sharding import logical_sharding
            cond = jax.device_put(cond, logical_sharding(self.mesh, "batch", None, None))
        return cond

    def generate_tokens(self, key: jax.Array, descriptions: Sequence[str | None],
                        prompt: jax.Array | None = None, config: SamplerConfig | None = None) -> jax.Array:
        """One batch: tokens [B, K, T] (the compiled sampler, no audio). ``key``: one key (row r
        draws from ``fold_in(key, r)``) or one per row [B]."""
        config = config or self.generation_params
        try:
            if self._rescoring is None:
                return self.sampler.generate(key, cond=self.conditions(descriptions), prompt=prompt,
                                             num_samples=len(descriptions), config=config)
            return self._rescoring.generate(key, cond=self.conditions(descriptions), prompt=prompt,
                                            num_samples=len(descriptions), config=config,
                                            rescore_cond=self._rescorer_conditions(descriptions),
                                            rescore_config=self.rescore_params)
        except ValueError as err:
            raise PipelineError(str(err)) from err

    def _rescorer_conditions(self, descriptions: Sequence[str | None]) -> jax.Array | None:
        """The rescorer's own text condition (its encoder and projection); None without text or
        for a rescorer without a text conditioner (then it scores unconditionally)."""
        if self.rescorer is None or self.rescorer.conditioner is None:
            return None
        cond = self.rescorer.conditions(descriptions)
        if cond is not None and self.mesh is not None:
            from magnet_jax.train.sharding import logical_sharding
            cond = jax.device_put(cond, logical_sharding(self.mesh, "batch", None, None))
        return cond

    def decode(self, tokens: np.ndarray | jax.Array) -> np.ndarray:
        """Tokens [B, K, T] -> audio [B, C, T * hop] (the reference's generate_audio)."""
        return np.asarray(self.codec.decode(jnp.asarray(tokens)))


def check_shared_codec(magnet: MAGNeT, other: MusicGen, role: str) -> None:
    """Refuse a MusicGen whose tokens are not MAGNeT's (as rescorer or hybrid AR model): one
    line naming each setting that differs."""
    from magnet_jax.models.musicgen import MusicGen
    if not isinstance(other, MusicGen):
        raise PipelineError(f"the {role} must be a MusicGen (autoregressive) model; got {type(other).__name__}")
    mine = {"codebooks": magnet.lm_cfg.n_q, "card": magnet.lm_cfg.card, "frame rate": magnet.frame_rate,
            "sample rate": magnet.sample_rate, "channels": magnet.audio_channels}
    theirs = {"codebooks": other.lm_cfg.n_q, "card": other.lm_cfg.card, "frame rate": other.frame_rate,
              "sample rate": other.sample_rate, "channels": other.audio_channels}
    diffs = [f"{k} {theirs[k]} vs {mine[k]}" for k in mine if theirs[k] != mine[k]]
    if diffs:
        raise PipelineError(f"the {role} {other.name or 'MusicGen'} does not share {magnet.name or 'MAGNeT'}'s codec "
                            f"({', '.join(diffs)}; {role} vs MAGNeT): pick one trained on the same codec")


def _descriptions(descriptions: Sequence[str | None] | str) -> list[str | None]:
    if isinstance(descriptions, str):
        descriptions = [descriptions]
    descriptions = list(descriptions)
    if not descriptions:
        raise PipelineError("no descriptions given: pass at least one prompt (None for no text)")
    bad = [i for i, d in enumerate(descriptions) if d is not None and not isinstance(d, str)]
    if bad:
        raise PipelineError(f"descriptions must be strings or None; entries {bad[:5]} are not")
    return descriptions
