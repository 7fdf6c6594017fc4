"""The dynamic batcher alone (magnet_jax.serve.engine), over a recording fake backend: which rows
share a batch, in which compiled size, what comes back to whom, a full queue, a cancelled
request, a failed batch, the bound on compiled settings. No model, no HTTP: these check the
batching rules the HTTP tests cannot pin down with timing."""
from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest

from magnet_jax.serve.engine import Engine, QueueFull
from magnet_jax.serve.requests import GenerationRequest

TIMEOUT = 30


@dataclasses.dataclass(frozen=True)
class FakePrepared:
    config: str
    rows: tuple
    prompt_frames: int = 0

    @property
    def group(self):
        return (self.config, self.prompt_frames)


class FakeBackend:
    """Rows are (seed, prompt index); a batch's tokens carry each row's seed and index, so a
    result that reached the wrong request, or a padding row that leaked, shows up by value."""
    default_config = "default"
    sample_rate = 100

    def __init__(self, delay: float = 0.0, gate: threading.Event | None = None):
        self.delay, self.gate = delay, gate
        self.batches: list[tuple[str, list]] = []
        self.forgotten: list[str] = []
        self.fail_next = False

    def prepare(self, request: GenerationRequest) -> FakePrepared:
        config = request.settings.get("span_arrangement", "default")
        return FakePrepared(config, tuple((request.seed, i) for i in range(len(request.prompts))))

    def run(self, config, rows):
        if self.gate is not None:
            self.gate.wait(TIMEOUT)
        time.sleep(self.delay)
        self.batches.append((config, list(rows)))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("device fell over")
        tokens = np.array([[[seed, index]] for seed, index in rows], np.int32)
        return tokens, tokens[:, :, :1].astype(np.float32)

    def warm_up(self, config, batch_size):
        self.batches.append((config, [("warm-up", batch_size)]))

    def forget(self, config):
        self.forgotten.append(config)


def request(seed: int, prompts: int = 1, **settings) -> GenerationRequest:
    return GenerationRequest(tuple(f"prompt {i}" for i in range(prompts)), seed, settings=settings)


@pytest.fixture
def started():
    engines = []

    def start(backend, **kw):
        engine = Engine(backend, **{"batch_sizes": (1, 2, 4), "max_wait_ms": 200, **kw})
        engine.start()
        engines.append(engine)
        backend.batches.clear()          # forget the warm-ups
        return engine

    yield start
    for engine in engines:
        engine.stop()


def test_start_compiles_every_batch_size_for_the_defaults():
    backend, lines = FakeBackend(), []
    engine = Engine(backend, batch_sizes=(4, 1, 2))
    engine.start(progress=lines.append)
    engine.stop()
    assert backend.batches == [("default", [("warm-up", s)]) for s in (1, 2, 4)]
    assert len(lines) == 3 and "batch size 4 (3/3)" in lines[-1]


def test_requests_within_the_wait_share_the_smallest_batch_that_holds_them(started):
    backend = FakeBackend()
    engine = started(backend)
    futures = [engine.submit(request(seed)) for seed in (10, 11, 12)]
    results = [f.result(TIMEOUT) for f in futures]
    assert len(backend.batches) == 1
    config, rows = backend.batches[0]
    assert rows == [(10, 0), (11, 0), (12, 0), (12, 0)]              # 3 rows in a batch of 4, last repeated
    for seed, result in zip((10, 11, 12), results):
        assert result.tokens.tolist() == [[[seed, 0]]]              # its own row, never the padding
        assert result.batches[0].size == 4 and result.batches[0].rows == 3
        assert result.seed == seed


def test_other_settings_never_share_a_batch(started):
    backend = FakeBackend()
    engine = started(backend)
    futures = [engine.submit(request(1)), engine.submit(request(2, span_arrangement="stride1")),
               engine.submit(request(3)), engine.submit(request(4, span_arrangement="stride1"))]
    for f in futures:
        f.result(TIMEOUT)
    groups = sorted((config, sorted({seed for seed, _ in rows})) for config, rows in backend.batches)
    assert groups == [("default", [1, 3]), ("stride1", [2, 4])]
    assert all(len(rows) == 2 for _, rows in backend.batches)


def test_a_full_batch_runs_without_waiting(started):
    backend = FakeBackend()
    engine = started(backend, max_wait_ms=10_000)                    # only a full batch can start early
    t0 = time.monotonic()
    result = engine.submit(request(7, prompts=4)).result(TIMEOUT)
    assert time.monotonic() - t0 < 5, "a full batch of 4 must not wait for max_wait_ms"
    assert result.tokens[:, 0].tolist() == [[7, i] for i in range(4)]


def test_clients_that_come_back_after_a_batch_join_the_row_that_waited_through_it(started):
    """Closed-loop clients resubmit just after their batch ends. A row that waited through that
    batch must give them ``max_wait_ms`` from the batch's end to join it, not run alone at once:
    counted from arrival only, 8 looping clients split into batches of 1 and 7 that took turns."""
    gate = threading.Event()
    backend = FakeBackend(gate=gate)
    engine = started(backend, max_wait_ms=500)
    returning = []

    def come_back(_):                     # the first batch's clients send again 50 ms after it ends
        def later():
            time.sleep(0.05)
            returning.extend(engine.submit(request(seed)) for seed in (21, 22))
        threading.Thread(target=later).start()

    first = engine.submit(request(1, prompts=4))          # a full batch: runs at once, held by the gate
    first.add_done_callback(come_back)
    time.sleep(0.3)
    lone = engine.submit(request(20))                      # waits through the first batch
    time.sleep(0.7)                                        # past its max_wait
    gate.set()
    first.result(TIMEOUT)
    lone.result(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while len(returning) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    for f in returning:
        f.result(TIMEOUT)
    assert [sorted({seed for seed, _ in rows}) for _, rows in backend.batches] == [[1], [20, 21, 22]]


def test_a_big_request_spans_batches_in_prompt_order(started):
    backend = FakeBackend()
    engine = started(backend)
    result = engine.submit(request(7, prompts=6)).result(TIMEOUT)
    assert result.tokens[:, 0].tolist() == [[7, i] for i in range(6)]
    assert [len(rows) for _, rows in backend.batches] == [4, 2]
    assert [b.size for b in result.batches] == [4, 4, 4, 4, 2, 2]


def test_full_queue_refuses_with_retry_after(started):
    gate = threading.Event()
    backend = FakeBackend(gate=gate)
    engine = started(backend, max_queue=4, max_wait_ms=0)
    running = engine.submit(request(1, prompts=4))                  # taken by the device loop, held by the gate
    deadline = time.monotonic() + TIMEOUT
    while engine.queue_depth and time.monotonic() < deadline:
        time.sleep(0.01)
    queued = engine.submit(request(2, prompts=3))
    with pytest.raises(QueueFull) as refused:
        engine.submit(request(3, prompts=2))                         # 3 queued + 2 > 4
    assert refused.value.retry_after >= 1 and "at most 4" in str(refused.value)
    gate.set()
    assert running.result(TIMEOUT).tokens.shape[0] == 4 and queued.result(TIMEOUT).tokens.shape[0] == 3


def test_cancelled_request_leaves_the_queue_and_others_still_run(started):
    gate = threading.Event()
    backend = FakeBackend(gate=gate)
    engine = started(backend, max_wait_ms=0)
    first = engine.submit(request(1))
    deadline = time.monotonic() + TIMEOUT
    while engine.queue_depth and time.monotonic() < deadline:
        time.sleep(0.01)
    gone, kept = engine.submit(request(2)), engine.submit(request(3))
    assert engine.cancel(gone) and engine.queue_depth == 1
    gate.set()
    assert kept.result(TIMEOUT).tokens.tolist() == [[[3, 0]]] and first.result(TIMEOUT)
    assert gone.cancelled()
    assert all(seed != 2 for _, rows in backend.batches for seed, _ in rows)


def test_a_failed_batch_fails_its_requests_only(started):
    backend = FakeBackend()
    engine = started(backend)
    backend.fail_next = True
    failed = engine.submit(request(1))
    with pytest.raises(RuntimeError, match="device fell over"):
        failed.result(TIMEOUT)
    assert engine.running
    assert engine.submit(request(2)).result(TIMEOUT).tokens.tolist() == [[[2, 0]]]


def test_compiled_settings_are_bounded_and_the_defaults_stay(started):
    backend = FakeBackend()
    engine = started(backend, max_settings=2, max_wait_ms=0)
    for arrangement in ("a", "b", "c"):
        engine.submit(request(1, span_arrangement=arrangement)).result(TIMEOUT)
    engine.submit(request(1)).result(TIMEOUT)
    assert backend.forgotten == ["a", "b"]                            # never "default"
