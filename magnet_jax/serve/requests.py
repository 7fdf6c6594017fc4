"""What a client may ask the server for: the request's wire format, parsed and checked.

A request is a JSON object (or, with an audio file attached, a multipart form whose ``request``
field holds that object and whose ``audio_prompt`` file part holds the audio):

    {"prompt": "calm piano"}                                  one clip
    {"prompts": ["calm piano", "fast techno"], "seed": 7}     several (prompt i draws from seed's key i)
    {"prompt": "...", "decoding_steps": [20, 10, 10, 10], "temperature": 2.0, "top_p": 0.9,
     "use_sampling": true, "duration": 5, "audio_prompt": "<base64 WAV/FLAC/OGG to continue>"}

Every field is checked here, before anything is queued: a wrong type, a non-finite or
out-of-range number, an unknown field and an empty prompt are each one ``RequestError`` saying
what to change. Checks that need the model (token counts, decoding steps per codebook, the
segment duration, the audio prompt's length in frames) are the backend's (``backend.py``).
Nothing here imports a web framework: ``app.py`` maps errors to HTTP statuses.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import math
import secrets
from typing import Any, Mapping

import numpy as np

from magnet_jax.seeds import SEED_LIMIT

SAMPLER_FIELDS: tuple[str, ...] = ("decoding_steps", "temperature", "anneal_temp", "use_sampling", "top_k",
                                   "top_p", "max_cfg_coef", "min_cfg_coef", "span_scoring", "span_arrangement")
REQUEST_FIELDS: tuple[str, ...] = ("prompt", "prompts", "seed", "duration", "audio_prompt") + SAMPLER_FIELDS
CHOICES: dict[str, tuple[str, ...]] = {"span_scoring": ("max", "prod"),
                                       "span_arrangement": ("nonoverlap", "stride1")}


class RequestError(ValueError):
    """A request the server refuses, with an HTTP status (4xx) and one line saying what to change."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for; ``GET /v1/models`` lists them so clients can stay inside.

    ``max_prompt_tokens`` is also the text length every batch is padded to (one compiled program
    per batch size), so it is at most the text encoder's own truncation length: a longer prompt
    is refused, never silently cut.
    """
    max_prompts: int
    max_prompt_tokens: int
    max_prompt_chars: int = 2000
    max_decoding_steps: int = 200
    max_temperature: float = 100.0
    max_cfg_coef: float = 100.0
    max_top_k: int = 0                 # the codebook size (0: unknown, not checked here)
    max_body_bytes: int = 10 * 2**20


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    """A checked request: prompts, the seed (drawn by the server when the client gave none),
    the sampler settings the client set, an optional audio prompt ([C, N] float32, its rate)."""
    prompts: tuple[str, ...]
    seed: int
    seed_given: bool = True
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    duration: float | None = None
    audio_prompt: tuple[np.ndarray, int] | None = None


def parse_request(body: Any, limits: Limits, audio_file: bytes | None = None) -> GenerationRequest:
    """A JSON-decoded body (and the bytes of an uploaded audio file) -> a checked request."""
    if not isinstance(body, Mapping):
        raise RequestError(f"the request body is a JSON {type(body).__name__}; send a JSON object such as "
                           f'{{"prompt": "calm piano"}}', status=400)
    unknown = sorted(set(body) - set(REQUEST_FIELDS))
    if unknown:
        raise RequestError(f"unknown setting(s) {unknown}; known: {sorted(REQUEST_FIELDS)}")
    if "audio_prompt" in body and audio_file is not None:
        raise RequestError("the audio prompt came twice (a base64 'audio_prompt' field and an uploaded file); "
                           "send one of them")
    prompts = _prompts(body, limits)
    seed_given = body.get("seed") is not None
    seed = _seed(body["seed"]) if seed_given else secrets.randbelow(2**32)
    settings = {name: _setting(name, body[name], limits) for name in SAMPLER_FIELDS if body.get(name) is not None}
    duration = _number("duration", body["duration"], 0.0, math.inf) if body.get("duration") is not None else None
    audio = audio_file if audio_file is not None else _base64_audio(body.get("audio_prompt"))
    return GenerationRequest(tuple(prompts), seed, seed_given, settings, duration,
                             None if audio is None else read_audio(audio))


# -- fields -----------------------------------------------------------------------------------------
def _prompts(body: Mapping[str, Any], limits: Limits) -> list[str]:
    if ("prompt" in body) == ("prompts" in body):
        raise RequestError('give exactly one of "prompt" (a string) and "prompts" (a list of strings)')
    if "prompt" in body:
        prompts, where = [body["prompt"]], ["prompt"]
    else:
        prompts = body["prompts"]
        if not isinstance(prompts, list) or not prompts:
            raise RequestError('"prompts" must be a non-empty list of strings')
        where = [f"prompts[{i}]" for i in range(len(prompts))]
    if len(prompts) > limits.max_prompts:
        raise RequestError(f"{len(prompts)} prompts in one request; this server takes at most {limits.max_prompts}: "
                           f"split them over several requests")
    out = []
    for text, name in zip(prompts, where):
        if not isinstance(text, str):
            raise RequestError(f"{name} is a {type(text).__name__}; it must be a string")
        text = text.strip()
        if not text:
            raise RequestError(f"{name} is empty: describe the music to generate")
        if len(text) > limits.max_prompt_chars:
            raise RequestError(f"{name} has {len(text)} characters; this server takes at most "
                               f"{limits.max_prompt_chars}: shorten it")
        out.append(text)
    return out


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"seed {value!r} must be an integer in [0, 2**64)")
    if not 0 <= value < SEED_LIMIT:
        raise RequestError(f"seed {value} is outside [0, 2**64)")
    return value


def _number(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    """A finite number in [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(f"{name} {value!r} must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise RequestError(f"{name} {value} must be a finite number")
    if value < low or (low_open and value == low) or value > high:
        bracket = "(" if low_open else "["
        raise RequestError(f"{name} {value:g} is outside {bracket}{low:g}, {high:g}]: pick a value inside")
    return value


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} {value!r} must be an integer")
    if not low <= value <= high:
        raise RequestError(f"{name} {value} is outside [{low}, {high}]: pick a value inside")
    return value


def _setting(name: str, value: Any, limits: Limits) -> Any:
    """One sampler setting, typed and in range (the per-model checks follow in the backend)."""
    if name == "decoding_steps":
        if not isinstance(value, list) or not value:
            raise RequestError(f"decoding_steps {value!r} must be a list of integers, one per codebook")
        return [_integer("decoding_steps entry", s, 1, limits.max_decoding_steps) for s in value]
    if name in ("anneal_temp", "use_sampling"):
        if not isinstance(value, bool):
            raise RequestError(f"{name} {value!r} must be true or false")
        return value
    if name in CHOICES:
        if value not in CHOICES[name]:
            raise RequestError(f"{name} {value!r}: use one of {list(CHOICES[name])}")
        return value
    if name == "top_k":
        return _integer("top_k", value, 0, limits.max_top_k or 2**31 - 1)
    if name == "top_p":
        return _number("top_p", value, 0.0, 1.0)
    if name == "temperature":
        return _number("temperature", value, 0.0, limits.max_temperature, low_open=True)
    return _number(name, value, 0.0, limits.max_cfg_coef)      # max_cfg_coef, min_cfg_coef


# -- audio --------------------------------------------------------------------------------------------
def _base64_audio(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError("audio_prompt must be a base64 string of an audio file (WAV, FLAC or OGG)")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise RequestError("audio_prompt is not valid base64: encode the audio file's bytes with base64") from None


def read_audio(data: bytes) -> tuple[np.ndarray, int]:
    """An uploaded audio file -> ([C, N] float32, rate); undecodable, empty or non-finite is refused."""
    import soundfile
    try:
        wav, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as err:  # noqa: BLE001 - any decoder failure: say so in one line
        first = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise RequestError(f"the audio prompt could not be decoded ({first}): send a WAV, FLAC or OGG file") from None
    if wav.shape[0] == 0:
        raise RequestError("the audio prompt has no samples: send a non-empty audio file")
    bad = int(wav.size - np.count_nonzero(np.isfinite(wav)))
    if bad:
        raise RequestError(f"the audio prompt has {bad} NaN/inf samples of {wav.size}: repair the audio first")
    return np.ascontiguousarray(wav.T), int(rate)
