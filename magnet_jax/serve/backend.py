"""The model side of serving: a MAGNeT's requests turned into rows of fixed shapes, and batches of
rows run through its compiled sampler and codec.

Why rows of fixed shapes: the sampler compiles one program per batch shape, and a server must
not compile per request. Every prompt's text condition is therefore padded to one length (the
server's ``max_prompt_tokens``), and each row tells the cross-attention its own token count
(``cond_lengths``): keys past it get no attention, so a row attends to exactly what it attends to
when the prompt is generated alone (audiocraft pads a batch to its longest prompt and lets the
zero padding take softmax mass, which would make a request's result depend on its batch mates).
Each row carries its own PRNG key, ``prompt_key(seed, i)``, the key ``MAGNeT.generate`` gives
prompt i of a call with that seed. What is left between a row here and the same prompt through
``MAGNeT.generate`` is float rounding: XLA's CPU kernels round differently per shape (batch
size, padded text length), up to a few 1e-6 in the logits (README, "Serving").

Text and audio prompts are encoded once per request, on the caller's thread, while the engine
runs earlier batches; a lock keeps the text encoder's prompt cache single-threaded.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from magnet_jax.lm.sampler import SamplerConfig
from magnet_jax.models import MAGNeT, PipelineError, convert_audio
from magnet_jax.models.magnet import prompt_key
from magnet_jax.serve.requests import GenerationRequest, Limits, RequestError

DEFAULT_PROMPT_TOKENS = 64     # for a text encoder without its own truncation length (T5)


@dataclasses.dataclass(frozen=True)
class Row:
    """One prompt of one request, ready to be stacked with others."""
    cond: jax.Array                 # [S, D]: the projected text condition, zero past ``length``
    length: int                     # the prompt's own token count
    key: jax.Array                  # its PRNG key
    prompt: jax.Array | None        # [K, P] codes of the audio to continue, or None


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A request's rows and the settings they run with. Rows of one ``group`` (same sampler
    settings, same continuation length) can share a batch: one compiled program runs them."""
    config: SamplerConfig
    prompt_frames: int
    rows: tuple[Row, ...]

    @property
    def group(self) -> tuple[SamplerConfig, int]:
        return (self.config, self.prompt_frames)


class MagnetBackend:
    """A loaded MAGNeT for the engine: ``prepare`` checks and encodes a request, ``run`` generates a
    full batch of rows (tokens and audio), ``warm_up`` compiles a batch size ahead of traffic."""

    def __init__(self, model: MAGNeT, max_prompt_tokens: int | None = None):
        if not isinstance(model, MAGNeT):
            raise PipelineError(f"serve runs MAGNeT models; this checkpoint is a {type(model).__name__}: "
                                "generate with it through `magnet-jax generate --model ...` instead")
        if model.conditioner is None:
            raise PipelineError("this model has no text conditioner, so it cannot take prompts: serve a "
                                "text-conditioned MAGNeT")
        self.model = model
        tokenizer = model.conditioner.encoder.tokenizer
        own = getattr(tokenizer, "max_length", None)
        wanted = max_prompt_tokens or own or DEFAULT_PROMPT_TOKENS
        if wanted < 1:
            raise PipelineError(f"max_prompt_tokens={wanted}: must be >= 1")
        self.text_length = min(wanted, own) if own else wanted
        self._lock = threading.Lock()

    # -- what the server offers ------------------------------------------------------------------
    @property
    def default_config(self) -> SamplerConfig:
        return self.model.generation_params

    @property
    def sample_rate(self) -> int:
        return self.model.sample_rate

    def limits(self, max_prompts: int, **overrides: Any) -> Limits:
        return Limits(max_prompts=max_prompts, max_prompt_tokens=self.text_length,
                      max_top_k=self.model.lm_cfg.card, **overrides)

    def describe(self) -> dict[str, Any]:
        """The model's facts a client needs (``GET /v1/models``)."""
        m = self.model
        return {"name": m.name, "family": "magnet", "sample_rate": m.sample_rate, "channels": m.audio_channels,
                "segment_s": m.duration, "frames": m.output_frames(), "frame_rate": m.frame_rate,
                "codebooks": m.lm_cfg.n_q, "card": m.lm_cfg.card,
                "defaults": dataclasses.asdict(self.default_config)}

    # -- requests -> rows ----------------------------------------------------------------------------
    def prepare(self, request: GenerationRequest) -> Prepared:
        """Check what needs the model and encode text (and audio) per prompt; RequestError if refused."""
        try:
            config = self.model.sampler_config(request.settings)
        except PipelineError as err:
            raise RequestError(str(err)) from None
        self._check_duration(request.duration)
        counts = [self._token_count(i, p, len(request.prompts)) for i, p in enumerate(request.prompts)]
        with self._lock:
            prompt = None if request.audio_prompt is None else self._encode_audio(*request.audio_prompt, config)
            conds = [self.model.conditions([p])[0] for p in request.prompts]
        rows = tuple(Row(_pad_rows(c, self.text_length), n, prompt_key(request.seed, i), prompt)
                     for i, (c, n) in enumerate(zip(conds, counts)))
        return Prepared(config, 0 if prompt is None else int(prompt.shape[-1]), rows)

    def _check_duration(self, duration: float | None) -> None:
        if duration is not None and not math.isclose(duration, self.model.duration, rel_tol=1e-6):
            raise RequestError(f"duration {duration:g} s: this MAGNeT model generates {self.model.duration:g} s "
                               f"segments only; omit duration or send {self.model.duration:g}")

    def _token_count(self, index: int, text: str, n: int) -> int:
        """The prompt's token count; a prompt the tokenizer would truncate is refused."""
        tokenizer = self.model.conditioner.encoder.tokenizer
        backend = getattr(tokenizer, "backend", None)
        if backend is not None:             # tokenizers' Tokenizer: truncation leaves overflow pieces
            encoding = backend.encode(text)
            count = len(encoding.ids) + (self.text_length if encoding.overflowing else 0)
        else:
            count = len(tokenizer.encode(text))
        if count > self.text_length:
            name = "prompt" if n == 1 else f"prompts[{index}]"
            raise RequestError(f"{name} is longer than the {self.text_length} tokens this server takes: shorten it")
        return count

    def _encode_audio(self, wav: np.ndarray, rate: int, config: SamplerConfig) -> jax.Array:
        """[C, N] at ``rate`` -> codes [K, P] of the model's codec (resampled and mixed as generate does)."""
        m = self.model
        try:
            audio = convert_audio(wav[None], rate, m.sample_rate, m.audio_channels)
        except PipelineError as err:
            raise RequestError(str(err)) from None
        frames, limit = m.codec.num_frames(audio.shape[-1]), m.output_frames(config)
        if frames >= limit:
            raise RequestError(f"the audio prompt lasts {audio.shape[-1] / m.sample_rate:.3f} s ({frames} frames), not "
                               f"shorter than the {limit / m.frame_rate:.3f} s this model generates: shorten it")
        if frames < 1:
            raise RequestError(f"the audio prompt is shorter than one codec frame ({1 / m.frame_rate:.3f} s): "
                               f"send a longer one")
        return m.codec.encode(jnp.asarray(audio), n_q=m.lm_cfg.n_q)[0]

    # -- batches -----------------------------------------------------------------------------------
    def run(self, config: SamplerConfig, rows: Sequence[Row]) -> tuple[np.ndarray, np.ndarray]:
        """Tokens [B, K, T] and audio [B, C, N] for a full batch of rows (one compiled program)."""
        m = self.model
        cond = jnp.stack([r.cond for r in rows])
        prompt = None if rows[0].prompt is None else jnp.stack([r.prompt for r in rows])
        tokens = m.sampler.generate(jnp.stack([r.key for r in rows]), cond=cond, prompt=prompt,
                                    cond_lengths=np.array([r.length for r in rows]), config=config)
        audio = m.codec.decode(tokens)
        return np.asarray(tokens, np.int32), np.asarray(audio, np.float32)

    def warm_up(self, config: SamplerConfig, batch_size: int) -> None:
        """Compile (and run once) the programs of one batch size, so no request waits for them."""
        row = Row(jnp.zeros((self.text_length, self.model.lm_cfg.dim), jnp.float32), 1, prompt_key(0, 0), None)
        self.run(config, [row] * batch_size)

    def warm_up_text(self) -> None:
        """Compile the text path for every prompt length the server takes: the encoder's length
        buckets and the projection per token count. Otherwise the first prompt of each new
        length would stall every request behind it (text is encoded under one lock)."""
        from magnet_jax.text.encoder import bucket
        from magnet_jax.text.tokenizer import pad_rows
        conditioner = self.model.conditioner
        encoder = conditioner.encoder
        pad = encoder.tokenizer.pad_id
        for n in sorted({bucket(k, encoder.min_length) for k in range(1, self.text_length + 1)}):
            encoder.forward(pad_rows([[pad] * n], pad))
        for n in range(1, self.text_length + 1):          # encode_with_null: the prompt and its null row
            conditioner.project(np.zeros((2, n, encoder.width), np.float32), np.zeros((2, n), np.int32))

    def forget(self, config: SamplerConfig) -> None:
        """Drop one setting's compiled sampler programs (the engine bounds how many it keeps)."""
        self.model.sampler.forget(config)


def _pad_rows(cond: jax.Array, length: int) -> jax.Array:
    """[S0, D] -> [length, D] with zero rows (what the conditioner's mask gives padding)."""
    return jnp.pad(cond, ((0, length - cond.shape[0]), (0, 0)))
