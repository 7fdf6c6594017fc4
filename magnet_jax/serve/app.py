"""The HTTP side of ``magnet-jax serve``: a FastAPI app over the batching engine, and the web page.

    POST /v1/generate   JSON (or multipart: a ``request`` JSON field + an ``audio_prompt`` file) ->
                        WAV (16-bit PCM, one prompt; settings, seed and timings in X- headers) or,
                        with ``Accept: application/json``, JSON with base64 WAVs, tokens, the batch
                        each prompt ran in, settings and timings
    GET  /v1/health     200 while the engine runs
    GET  /v1/models     the model, its sample rate and segment, the limits, the batch sizes
    GET  /metrics       Prometheus text: queue depth, batch sizes, latency, requests by status
    GET  /              the web page (``static/index.html``)

Errors are JSON ``{"error": "<what was wrong and what to change>"}`` with a 4xx status (400
unparseable body, 404 unknown path, 406 unacceptable Accept, 413 body too large, 415 content
type, 422 a refused value), 503 with ``Retry-After`` when the queue is full, 500 when a batch
fails (the server keeps running). A client that disconnects while queued has its prompts removed;
one that disconnects while its batch runs leaves the batch to finish for the others.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
import time
from importlib import resources
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from magnet_jax.serve.engine import Engine, EngineStopped, GenerationResult, QueueFull
from magnet_jax.serve.requests import GenerationRequest, Limits, RequestError, parse_request

log = logging.getLogger(__name__)

DISCONNECT_POLL_S = 0.25
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300)


class ClientGone(Exception):
    """The client closed its connection before its result was ready."""


class Metrics:
    """The server's Prometheus metrics, in a registry of their own (several apps per process in tests)."""

    def __init__(self, engine: Engine):
        self.registry = CollectorRegistry()
        r = self.registry
        queue = Gauge("magnet_jax_queue_depth", "Prompts queued, not yet in a batch", registry=r)
        queue.set_function(lambda: engine.queue_depth)
        self.batches = Counter("magnet_jax_batches", "Device batches run, by compiled batch size", ["size"], registry=r)
        self.batch_rows = Histogram("magnet_jax_batch_rows", "Real (not padding) rows per batch",
                                    buckets=tuple(range(1, engine.max_batch + 1)), registry=r)
        self.batch_seconds = Histogram("magnet_jax_batch_seconds", "Device time per batch", buckets=LATENCY_BUCKETS,
                                       registry=r)
        self.latency = Histogram("magnet_jax_request_seconds", "POST /v1/generate latency, arrival to response",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("magnet_jax_requests", "POST /v1/generate requests by HTTP status (499: client left)",
                                ["status"], registry=r)

    def batch_done(self, info) -> None:
        self.batches.labels(size=str(info.size)).inc()
        self.batch_rows.observe(info.rows)
        self.batch_seconds.observe(info.seconds)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# -- request bodies ---------------------------------------------------------------------------------
async def read_body(request: Request) -> tuple[Any, bytes | None]:
    """(the JSON request, uploaded audio bytes or None) from a JSON or multipart body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await _read_form(request)
    if kind not in ("application/json", ""):
        raise RequestError(f"content type {kind!r}: send application/json (or multipart/form-data with an "
                           f"audio file)", status=415)
    raw = await request.body()
    try:
        return json.loads(raw), None
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(f"the body is not valid JSON ({err}): send a JSON object such as "
                           f'{{"prompt": "calm piano"}}', status=400) from None


async def _read_form(request: Request) -> tuple[Any, bytes | None]:
    try:
        form = await request.form()
    except RequestError:
        raise
    except Exception as err:  # noqa: BLE001 - a malformed multipart body: one line
        raise RequestError(f"the multipart body could not be parsed ({err})", status=400) from None
    unknown = sorted(set(form) - {"request", "audio_prompt"})
    if unknown:
        raise RequestError(f"unknown form field(s) {unknown}: send a 'request' field (the JSON request) and "
                           f"optionally an 'audio_prompt' file")
    if "request" not in form:
        raise RequestError("the multipart body has no 'request' field: put the JSON request there", status=400)
    text = form["request"]
    text = (await text.read()).decode("utf-8", "replace") if hasattr(text, "read") else text
    try:
        body = json.loads(text)
    except ValueError as err:
        raise RequestError(f"the 'request' field is not valid JSON ({err})", status=400) from None
    upload = form.get("audio_prompt")
    if upload is None:
        return body, None
    audio = await upload.read() if hasattr(upload, "read") else str(upload).encode()
    return body, audio


def response_kind(request: Request, n_prompts: int) -> str:
    """'wav' or 'json' from the Accept header; several prompts cannot be one WAV."""
    accept = request.headers.get("accept", "").lower()
    if "application/json" in accept or "application/*" in accept:
        return "json"
    wants_wav = any(t in accept for t in ("audio/wav", "audio/x-wav", "audio/wave", "audio/*"))
    anything = not accept.strip() or "*/*" in accept
    if wants_wav or anything:
        if n_prompts == 1:
            return "wav"
        if anything:
            return "json"
        raise RequestError(f"{n_prompts} prompts give {n_prompts} clips and a WAV holds one: send "
                           f"Accept: application/json", status=406)
    raise RequestError(f"cannot answer Accept: {accept}; send Accept: audio/wav or application/json", status=406)


# -- responses ----------------------------------------------------------------------------------------
def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """[C, N] float32 -> 16-bit PCM WAV bytes (what ``magnet-jax generate`` writes)."""
    import soundfile
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio.T, -1.0, 1.0), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def describe_result(request: GenerationRequest, result: GenerationResult) -> dict[str, Any]:
    """Everything about a result except the audio: settings, seed, batches, timings."""
    return {"seed": result.seed, "seed_text": str(result.seed),        # exact in JavaScript too
            "seed_given": request.seed_given, "sample_rate": result.sample_rate,
            "settings": dataclasses.asdict(result.config),
            "timings": {"queued_s": round(result.queued_s, 4), "total_s": round(result.total_s, 4)},
            "batches": [dataclasses.asdict(b) for b in result.batches]}


def json_response(request: GenerationRequest, result: GenerationResult) -> JSONResponse:
    body = describe_result(request, result)
    body["results"] = [{"prompt": prompt, "prompt_index": i,
                        "wav_base64": base64.b64encode(wav_bytes(audio, result.sample_rate)).decode("ascii"),
                        "tokens": tokens.tolist(), "batch": dataclasses.asdict(result.batches[i])}
                       for i, (prompt, audio, tokens) in enumerate(zip(request.prompts, result.audio, result.tokens))]
    return JSONResponse(body)


def wav_response(request: GenerationRequest, result: GenerationResult) -> Response:
    info = describe_result(request, result)
    batch = result.batches[0]
    headers = {"X-Seed": str(result.seed), "X-Batch-Id": str(batch.id), "X-Batch-Size": str(batch.size),
               "X-Batch-Rows": str(batch.rows), "X-Queued-S": str(info["timings"]["queued_s"]),
               "X-Total-S": str(info["timings"]["total_s"]), "X-Settings": json.dumps(info["settings"])}
    return Response(wav_bytes(result.audio[0], result.sample_rate), media_type="audio/wav", headers=headers)


# -- the app --------------------------------------------------------------------------------------------
def body_too_large(max_bytes: int) -> RequestError:
    return RequestError(f"the request body is larger than this server's limit of {max_bytes / 2**20:g} MiB: send a "
                        f"shorter audio prompt (or start the server with a larger --max-body-mb)", status=413)


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is a 413, refused by its Content-Length before
    it is read, or (sent without one) as soon as the bytes read pass the limit."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            err = body_too_large(self.max_bytes)
            return await error(err.status, str(err))(scope, receive, send)
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise body_too_large(self.max_bytes)      # reaches _generate's RequestError handler
            return message

        await self.app(scope, counted_receive, send)


def create_app(engine: Engine, limits: Limits, model_info: dict[str, Any], settings: dict[str, Any]) -> FastAPI:
    """The FastAPI app; ``engine`` must be started by the caller. ``settings``: the server's own
    (batch sizes, max wait, queue size), shown by /v1/models."""
    app = FastAPI(title="magnet-jax serve", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = Metrics(engine)
    engine.on_batch = metrics.batch_done
    page = resources.files("magnet_jax.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, f"{exc.detail}: see GET /v1/models and POST /v1/generate")

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/v1/health")
    async def health() -> JSONResponse:
        ok = engine.running
        return JSONResponse({"status": "ok" if ok else "stopped", "queue_depth": engine.queue_depth},
                            status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"models": [{**model_info, "limits": dataclasses.asdict(limits), **settings}]})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/generate")
    async def generate(request: Request) -> Response:
        t0 = time.perf_counter()
        response = await _generate(request, engine, limits)
        metrics.requests.labels(status=str(response.status_code)).inc()
        metrics.latency.observe(time.perf_counter() - t0)
        return response

    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    return app


async def _generate(request: Request, engine: Engine, limits: Limits) -> Response:
    """POST /v1/generate: parse, queue, wait (noticing a client that leaves), answer."""
    try:
        body, audio = await read_body(request)
        parsed = parse_request(body, limits, audio)
        kind = response_kind(request, len(parsed.prompts))
        future = await run_in_threadpool(engine.submit, parsed)
        result = await _wait(request, engine, future)
        return wav_response(parsed, result) if kind == "wav" else json_response(parsed, result)
    except RequestError as err:
        return error(err.status, str(err))
    except QueueFull as err:
        return error(503, str(err), headers={"Retry-After": str(err.retry_after)})
    except EngineStopped as err:
        return error(503, str(err), headers={"Retry-After": "30"})
    except ClientGone:
        return Response(status_code=499)
    except Exception as err:  # noqa: BLE001 - the server answers and lives on
        log.exception("generation failed")
        first = (str(err).splitlines() or [""])[0][:300]
        return error(500, f"generation failed ({type(err).__name__}: {first}); the server is still running, retry "
                          f"or report it")


async def _wait(request: Request, engine: Engine, future) -> GenerationResult:
    """The engine's result; if the client disconnects first, its queued prompts are dropped."""
    waiting = asyncio.wrap_future(future)
    while True:
        done, _ = await asyncio.wait({waiting}, timeout=DISCONNECT_POLL_S)
        if done:
            return waiting.result()
        if await request.is_disconnected():
            engine.cancel(future)
            raise ClientGone()
