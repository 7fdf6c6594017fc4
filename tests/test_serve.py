"""``magnet-jax serve`` over real HTTP: the shipped default model behind the real command, on a
loopback port, with small decoding steps. Each error case, requests that share a batch (a
request's result must not depend on its batch mates, and must match the one-prompt
``MAGNeT.generate`` of this process for the same prompt and seed), continuation audio as base64
and as a multipart upload, a full queue, clients that hang up, and the web page in headless
Chromium. Every request loop is bounded in count and time and only talks to 127.0.0.1."""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from magnet_jax.serve.cli import LISTENING

STEPS = [2, 1, 1, 1]
# Few steps, and settings under which the seed matters: with the model's top-p 0.9 and CFG 10 the
# shipped model's draws are nearly certain at 2,1,1,1 steps (another seed agreed on 97 % of the
# tokens), so token agreement could not tell the right key from a wrong one.
SETTINGS = dict(decoding_steps=STEPS, top_p=0.0, max_cfg_coef=3.0)
# --max-wait-ms 2000: four client threads on 2 cores busy with another test file must all arrive
# within the window to share a batch (with 1 s they once did not, under extra load); a full batch
# of 4 starts at once, so only lone requests pay the wait.
SERVER_ARGS = ["serve", "--port", "0", "--batch-sizes", "1,4", "--max-wait-ms", "2000", "--max-queue", "8",
               "--decoding-steps", ",".join(map(str, STEPS)), "--top-p", "0", "--max-cfg-coef", "3",
               "--max-body-mb", "1"]
START_TIMEOUT = 900        # model load + compiling 2 batch sizes on 2 busy cores
REQUEST_TIMEOUT = 300
FRAMES, HOP, RATE = 249, 320, 16000
# Prompts of different token counts (MiniLM): X is the shortest, so batch mates pad it the most.
X = "calm piano"
MATES_A = ["an organ playing an arpeggio in D minor at 90 BPM with drums", "a flute melody",
           "fast techno with drums at 140 BPM and a bass line"]
MATES_B = ["a slow cello in C major", "guitar strumming chords at 100 BPM", "marimba pattern with drums"]
# The same prompt and seed through another compiled shape: at least this share of tokens is equal
# (float rounding can flip a near-tied draw, and the stage's later steps follow it; measured
# 100 % under SETTINGS). Another seed for the same prompt agrees on 40 % (the test checks < 90 %).
SAME_TOKENS = 0.9


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Server(NamedTuple):
    host: str
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def call(server: Server, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
         timeout: float = REQUEST_TIMEOUT) -> Reply:
    """One HTTP request to the test server (a dict body is sent as JSON)."""
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn = http.client.HTTPConnection(server.host, server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        reply = conn.getresponse()
        return Reply(reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read())
    finally:
        conn.close()


def generate(server: Server, body: dict, accept: str = "application/json") -> Reply:
    return call(server, "POST", "/v1/generate", body, {"Accept": accept})


def concurrently(fn, args: list) -> list:
    """fn(*a) for each a on its own thread, all released at once; results in order."""
    barrier, results = threading.Barrier(len(args)), [None] * len(args)

    def run(i, a):
        barrier.wait(30)
        results[i] = fn(*a)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(args)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(REQUEST_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a request did not finish in time"
    return results


def wav_samples(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile
    audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio.T, rate


def metric(server: Server, name: str, labels: str = "") -> float:
    text = call(server, "GET", "/metrics").body.decode()
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


# -- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``magnet-jax serve`` in a subprocess on an ephemeral loopback port; stopped with SIGTERM."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "magnet_jax.cli", *SERVER_ARGS], stdout=sink,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            found = re.search(rf"{LISTENING} http://([\d.]+):(\d+)", log.read_text())
            if found:
                break
            assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the server did not start in {START_TIMEOUT} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield Server(found.group(1), int(found.group(2)), log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    print(f"server log: {log}")


@pytest.fixture(scope="module")
def model():
    """The same shipped model in this process: the one-prompt reference."""
    from magnet_jax.models import MAGNeT
    return MAGNeT.from_pretrained()


def reference_tokens(model, prompt: str, seed: int) -> np.ndarray:
    return model.generate([prompt], seed=seed, **SETTINGS).tokens[0]


# -- the API ----------------------------------------------------------------------------------------
def test_health_models_metrics_and_page(server):
    assert call(server, "GET", "/v1/health").json()["status"] == "ok"
    info = call(server, "GET", "/v1/models").json()["models"][0]
    assert (info["sample_rate"], info["segment_s"], info["frames"]) == (RATE, 5.0, FRAMES)
    assert info["batch_sizes"] == [1, 4] and info["defaults"]["decoding_steps"] == STEPS
    assert info["limits"]["max_prompt_tokens"] == 48 and info["limits"]["max_prompts"] == 4
    page = call(server, "GET", "/")
    assert page.status == 200 and b'id="generate"' in page.body
    text = call(server, "GET", "/metrics").body.decode()
    for name in ("magnet_jax_queue_depth", "magnet_jax_batches_total", "magnet_jax_request_seconds_bucket",
                 "magnet_jax_batch_rows_bucket"):
        assert name in text


def _wav_b64(seconds: float, rate: int = RATE, channels: int = 1) -> str:
    import soundfile
    t = np.arange(int(seconds * rate)) / rate
    wav = np.stack([0.3 * np.sin(2 * np.pi * 220 * (c + 1) * t) for c in range(channels)], axis=1)
    buffer = io.BytesIO()
    soundfile.write(buffer, wav.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return base64.b64encode(buffer.getvalue()).decode()


BAD_REQUESTS = [
    (b"{not json", 400, "not valid JSON"),
    ([1, 2], 400, "send a JSON object"),
    ({"prompt": "   "}, 422, "prompt is empty"),
    ({"prompts": ["a", ""]}, 422, "prompts[1] is empty"),
    ({"prompt": "piano " * 60}, 422, "longer than the 48 tokens"),
    ({"prompt": "x" * 2001}, 422, "at most 2000"),
    ({"prompt": "piano", "topp": 0.5}, 422, "unknown setting(s) ['topp']"),
    ({"prompt": "piano", "temperature": -1}, 422, "temperature -1 is outside (0, 100]"),
    ({"prompt": "piano", "top_p": 1.5}, 422, "top_p 1.5 is outside [0, 1]"),
    ({"prompt": "piano", "top_k": 300}, 422, "top_k 300 is outside [0, 256]"),
    (b'{"prompt": "piano", "max_cfg_coef": NaN}', 422, "must be a finite number"),
    ({"prompt": "piano", "decoding_steps": [2, 1]}, 422, "has 2 entries"),
    ({"prompt": "piano", "decoding_steps": [2, 1, 1, 0]}, 422, "decoding_steps entry 0 is outside [1, 200]"),
    ({"prompt": "piano", "use_sampling": "yes"}, 422, "must be true or false"),
    ({"prompt": "piano", "span_arrangement": "zigzag"}, 422, "use one of ['nonoverlap', 'stride1']"),
    ({"prompt": "piano", "seed": -1}, 422, "outside [0, 2**64)"),
    ({"prompt": "piano", "seed": 2**64}, 422, "outside [0, 2**64)"),
    ({"prompt": "piano", "seed": 1.5}, 422, "must be an integer"),
    ({"prompt": "piano", "duration": 10}, 422, "generates 5 s segments only"),
    ({"prompt": "piano", "audio_prompt": "!!not base64!!"}, 422, "not valid base64"),
    ({"prompt": "piano", "audio_prompt": base64.b64encode(b"RIFF not really audio").decode()}, 422,
     "could not be decoded"),
    ({"prompt": "piano", "audio_prompt": _wav_b64(5.0)}, 422, "not shorter than the 4.980 s"),
    ({"prompts": ["a", "b", "c", "d", "e"]}, 422, "at most 4"),
    ({"prompt": "piano", "audio_prompt": "A" * (2**20 + 8)}, 413, "larger than this server's limit of 1 MiB"),
]


@pytest.mark.parametrize("body,status,message", BAD_REQUESTS, ids=[m for _, _, m in BAD_REQUESTS])
def test_bad_request_is_a_4xx_saying_what_to_change(server, body, status, message):
    reply = generate(server, body) if not isinstance(body, bytes) else call(
        server, "POST", "/v1/generate", body, {"Content-Type": "application/json"})
    assert reply.status == status, reply.body[:300]
    assert message in reply.json()["error"]


def test_wrong_accept_content_type_and_path_are_4xx(server):
    reply = generate(server, {"prompts": ["a", "b"]}, accept="audio/wav")
    assert reply.status == 406 and "Accept: application/json" in reply.json()["error"]
    reply = call(server, "POST", "/v1/generate", b"prompt=piano", {"Content-Type": "text/plain"})
    assert reply.status == 415 and "application/json" in reply.json()["error"]
    reply = call(server, "GET", "/v2/generate")
    assert reply.status == 404 and "error" in reply.json()
    assert metric(server, "magnet_jax_requests_total", '{status="422"}') >= 1
    assert call(server, "GET", "/v1/health").json()["status"] == "ok"


# -- batching -----------------------------------------------------------------------------------------
def _round(server: Server, mates: list[str]) -> list[Reply]:
    bodies = [{"prompt": X, "seed": 11}] + [{"prompt": p, "seed": 20 + i} for i, p in enumerate(mates)]
    replies = concurrently(lambda b: generate(server, b), [(b,) for b in bodies])
    assert [r.status for r in replies] == [200] * 4, [r.body[:200] for r in replies]
    batches = {json.dumps(r.json()["results"][0]["batch"]["id"]) for r in replies}
    assert len(batches) == 1, "the four concurrent requests must share one batch"
    batch = replies[0].json()["results"][0]["batch"]
    assert (batch["size"], batch["rows"]) == (4, 4)
    return replies


def test_batch_mates_do_not_change_a_result_and_it_matches_generate(server, model):
    """X with seed 11 shares a batch of 4 with three other requests, then with three others of
    other token lengths: its tokens and audio are bit-identical both times. Alone it runs in the
    batch of 1; all three agree with this process's one-prompt MAGNeT.generate(seed=11)."""
    first, second = _round(server, MATES_A), _round(server, MATES_B)
    a, b = first[0].json()["results"][0], second[0].json()["results"][0]
    assert a["tokens"] == b["tokens"]
    assert base64.b64decode(a["wav_base64"]) == base64.b64decode(b["wav_base64"])

    alone = generate(server, {"prompt": X, "seed": 11}, accept="audio/wav")
    assert alone.status == 200 and alone.headers["x-batch-size"] == "1" and alone.headers["x-seed"] == "11"
    audio, rate = wav_samples(alone.body)
    assert rate == RATE and audio.shape == (1, FRAMES * HOP)

    want = reference_tokens(model, X, 11)
    served = np.asarray(a["tokens"])
    assert served.shape == want.shape == (4, FRAMES)
    assert (served == want).mean() >= SAME_TOKENS, f"only {(served == want).mean():.3f} of the tokens match"
    mates = [np.asarray(r.json()["results"][0]["tokens"]) for r in first[1:]]
    for prompt, got, seed in zip(MATES_A, mates, (20, 21, 22)):
        assert (got == reference_tokens(model, prompt, seed)).mean() >= SAME_TOKENS, prompt
    other_seed = reference_tokens(model, X, 12)
    print(f"agreement: same seed {(served == want).mean():.3f}, another seed {(other_seed == want).mean():.3f}")
    assert (other_seed == want).mean() < SAME_TOKENS, "the tolerance must tell another seed apart"


def test_several_prompts_in_one_request(server, model):
    """prompts[i] draws from seed's key i, as MAGNeT.generate's prompt i does."""
    reply = generate(server, {"prompts": [X, MATES_B[0]], "seed": 5})
    assert reply.status == 200
    body = reply.json()
    want = model.generate([X, MATES_B[0]], seed=5, batch_size=1, **SETTINGS).tokens
    for i, result in enumerate(body["results"]):
        assert result["prompt_index"] == i and result["batch"]["size"] == 4 and result["batch"]["rows"] == 2
        assert (np.asarray(result["tokens"]) == want[i]).mean() >= SAME_TOKENS


# -- continuation -------------------------------------------------------------------------------------
def test_continuation_base64_and_multipart(server, model):
    """A 1 s stereo 22.05 kHz clip, as base64 JSON and as an uploaded file: the same tokens both
    ways, its first 50 frames pinned to the codec's codes of the resampled mono clip, and the
    rest agreeing with MAGNeT.generate_continuation in this process."""
    import soundfile
    clip = _wav_b64(1.0, rate=22050, channels=2)
    as_json = generate(server, {"prompt": X, "seed": 3, "audio_prompt": clip})
    assert as_json.status == 200, as_json.body[:300]
    boundary = uuid.uuid4().hex
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n"
            f"{json.dumps({'prompt': X, 'seed': 3})}\r\n--{boundary}\r\nContent-Disposition: form-data; "
            f"name=\"audio_prompt\"; filename=\"clip.wav\"\r\nContent-Type: audio/wav\r\n\r\n").encode()
    form += base64.b64decode(clip) + f"\r\n--{boundary}--\r\n".encode()
    as_form = call(server, "POST", "/v1/generate", form,
                   {"Content-Type": f"multipart/form-data; boundary={boundary}", "Accept": "application/json"})
    assert as_form.status == 200, as_form.body[:300]
    tokens = np.asarray(as_json.json()["results"][0]["tokens"])
    np.testing.assert_array_equal(np.asarray(as_form.json()["results"][0]["tokens"]), tokens)

    wav, rate = soundfile.read(io.BytesIO(base64.b64decode(clip)), dtype="float32", always_2d=True)
    want = model.generate_continuation(wav.T, rate, [X], seed=3, **SETTINGS).tokens[0]
    np.testing.assert_array_equal(tokens[:, :50], want[:, :50])
    assert (tokens == want).mean() >= SAME_TOKENS


# -- load and failures --------------------------------------------------------------------------------
def test_full_queue_is_503_with_retry_after(server):
    """Four requests of 4 prompts at once against a queue of 8: one runs, at most two wait, the
    rest are refused with Retry-After; everything admitted completes."""
    bodies = [({"prompts": [f"{p} {i}" for p in ("piano", "organ", "flute", "drums")], "seed": i},) for i in range(4)]
    replies = concurrently(lambda b: generate(server, b), bodies)
    refused = [r for r in replies if r.status == 503]
    assert refused and all(r.status in (200, 503) for r in replies), [r.status for r in replies]
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1 and "queue" in r.json()["error"]
    for r in replies:
        if r.status == 200:
            assert len(r.json()["results"]) == 4
    assert call(server, "GET", "/v1/health").json()["queue_depth"] == 0


def _queue_depth(server: Server) -> int:
    return call(server, "GET", "/v1/health").json()["queue_depth"]


def _hang_up(server: Server, body: dict, when) -> None:
    """Send a request, wait until ``when()`` is true (bounded), close without reading the answer."""
    data = json.dumps(body).encode()
    with socket.create_connection((server.host, server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(data)).encode() + b"\r\n\r\n" + data)
        deadline = time.monotonic() + 60
        while not when() and time.monotonic() < deadline:
            time.sleep(0.05)


def test_clients_that_hang_up_do_not_break_their_batch(server):
    """Three requests arrive together (the batch waits max_wait_ms = 2 s for mates). One client
    leaves at 0.2 s, while queued: its prompt is dropped. One leaves once the batch has taken the
    queue (it is running): the batch finishes for the third, whose answer shows a batch of 2 real
    rows, its own and the one whose client left. Both count as 499; the server carries on."""
    gone_before = metric(server, "magnet_jax_requests_total", '{status="499"}')
    seen_queued = []

    def batch_took_the_queue() -> bool:
        depth = _queue_depth(server)
        if depth:
            seen_queued.append(depth)
        return bool(seen_queued) and depth == 0

    t0 = time.monotonic()
    jobs = [(lambda: _hang_up(server, {"prompt": "organ", "seed": 1}, lambda: time.monotonic() - t0 > 0.2)),
            (lambda: _hang_up(server, {"prompt": "flute", "seed": 2}, batch_took_the_queue)),
            (lambda: generate(server, {"prompt": "piano", "seed": 3}))]
    results = concurrently(lambda job: job(), [(j,) for j in jobs])
    kept = results[2]
    assert kept.status == 200, kept.body[:300]
    assert kept.json()["results"][0]["batch"]["rows"] == 2 and len(kept.json()["results"][0]["tokens"]) == 4
    deadline = time.monotonic() + 30
    while metric(server, "magnet_jax_requests_total", '{status="499"}') < gone_before + 2:
        assert time.monotonic() < deadline, "the server did not notice both clients leaving"
        time.sleep(0.25)
    assert generate(server, {"prompt": "piano", "seed": 3}).status == 200


# -- the page -------------------------------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"


def test_page_generates_a_playable_clip(server, tmp_path):
    """Headless Chromium fills the prompt, clicks Generate and gets an audio element whose WAV
    source plays (metadata loaded, 4.98 s long) and a drawn spectrogram; the screenshot is kept."""
    import importlib
    import reference
    install = "bash scripts/install_reference.sh"
    sync_api = reference.require_import(lambda: importlib.import_module("playwright.sync_api"), "playwright", install)
    reference.require_import(lambda: Path(CHROMIUM).resolve(strict=True), f"Debian's chromium ({CHROMIUM})", install)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run"])          # playwright gives the browser a fresh temporary profile
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(server.url + "/", timeout=60_000)
            page.wait_for_function("document.getElementById('model-info').textContent.includes('Hz')", timeout=60_000)
            page.fill("#prompt", "an organ playing an arpeggio in D minor at 90 BPM with drums")
            page.fill("#seed", "7")
            page.click("#generate")
            page.wait_for_function("(() => { const a = document.querySelector('.card audio');"
                                   " return a && a.readyState >= 1 && a.duration > 0; })()", timeout=REQUEST_TIMEOUT * 1000)
            audio = page.evaluate("(() => { const a = document.querySelector('.card audio');"
                                  " return {src: a.src, duration: a.duration, wav: a.canPlayType('audio/wav')}; })()")
            meta = page.inner_text(".card .meta")
            drawn = page.evaluate("(() => { const c = document.querySelector('.card canvas');"
                                  " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                                  " let lit = 0; for (let i = 0; i < d.length; i += 4) lit += d[i] > 0; return lit; })()")
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    print(f"screenshot: {shot}")
    assert audio["src"].startswith("blob:") and audio["wav"] in ("maybe", "probably")
    assert abs(audio["duration"] - FRAMES * HOP / RATE) < 0.01
    assert "seed 7" in meta and "steps 2,1,1,1" in meta and "batch #" in meta
    assert drawn > 1000, "the spectrogram canvas must be drawn"
    assert shot.stat().st_size > 10_000
