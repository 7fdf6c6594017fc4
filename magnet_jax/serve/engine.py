"""The dynamic batcher: requests from many clients grouped into the compiled batch sizes.

    engine = Engine(MagnetBackend(model), batch_sizes=(1, 2, 4, 8), max_wait_ms=50, max_queue=64)
    engine.start(progress=print)            # compiles every batch size before the first request
    result = engine.submit(request).result()

A request becomes one row per prompt (``backend.prepare``, on the caller's thread). One worker
thread owns the device and runs one batch at a time. When it is free it looks at the oldest
queued row: rows with the same sampler settings and continuation length (its ``group``; other
settings need another compiled program) join it, in arrival order, up to the largest batch size.
It runs them as soon as that batch is full, or once the oldest row has waited ``max_wait_ms``,
in the smallest compiled batch size that holds them; padding rows repeat the last real row and
are never returned. Rows that arrive while a batch runs are already encoded and queued, so the
next batch is assembled while the current one runs.

The wait is counted from the row's arrival or from the end of the last batch, whichever is later.
Why: clients that loop (send, wait for the answer, send again) come back just after their batch
ends. Counted from arrival only, a row that had waited through the batch ran at once and alone,
and the clients split into two cohorts that took turns on the device (8 clients ran as batches
of 1 and 7, bench/bench_serve.py); with the wait counted from the end of the batch, they regroup.
A row in a quiet server (no batch just ended) waits at most ``max_wait_ms``, as before.

Nothing here knows about HTTP: ``submit`` raises ``QueueFull`` (the app's 503) or the backend's
``RequestError`` (a 4xx), and returns a ``concurrent.futures.Future``; ``cancel`` drops a
request's queued rows (a client that went away) without touching the batch it may be part of.
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import itertools
import logging
import math
import threading
import time
from concurrent.futures import Future, InvalidStateError
from typing import Any, Callable, Hashable, Protocol, Sequence

import numpy as np

from magnet_jax.serve.requests import GenerationRequest

log = logging.getLogger(__name__)


class Backend(Protocol):
    """What the engine needs from a model (``backend.MagnetBackend``; tests use a fake)."""
    default_config: Any
    sample_rate: int

    def prepare(self, request: GenerationRequest) -> Any: ...      # .config, .group, .rows
    def run(self, config: Any, rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]: ...
    def warm_up(self, config: Any, batch_size: int) -> None: ...
    def forget(self, config: Any) -> None: ...


class QueueFull(Exception):
    """The queue cannot take the request's prompts now; ``retry_after`` seconds is an estimate."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class EngineStopped(RuntimeError):
    """The engine is not running (not started, or stopped): nothing can be queued."""


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    """One device batch: its number, the compiled size it ran in, how many rows were real."""
    id: int
    size: int
    rows: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class GenerationResult:
    """A finished request: audio [n, C, N] float32, tokens [n, K, T] int32 (one row per prompt),
    the seed and settings used, the batch each prompt ran in, and the request's timings."""
    audio: np.ndarray
    tokens: np.ndarray
    sample_rate: int
    seed: int
    config: Any
    batches: tuple[BatchInfo, ...]
    queued_s: float
    total_s: float


class _Job:
    """A request in flight: its prepared rows, the future to resolve, what has come back."""

    def __init__(self, request: GenerationRequest, prepared: Any, submitted: float):
        self.request = request
        self.prepared = prepared
        self.future: Future = Future()
        self.submitted = submitted
        self.started: float | None = None
        n = len(prepared.rows)
        self.tokens: list[np.ndarray | None] = [None] * n
        self.audio: list[np.ndarray | None] = [None] * n
        self.batches: list[BatchInfo | None] = [None] * n
        self.left = n

    def deliver(self, index: int, tokens: np.ndarray, audio: np.ndarray, info: BatchInfo, now: float,
                sample_rate: int) -> None:
        self.tokens[index], self.audio[index], self.batches[index] = tokens, audio, info
        self.left -= 1
        if self.left == 0:
            result = GenerationResult(np.stack(self.audio), np.stack(self.tokens), sample_rate, self.request.seed,
                                      self.prepared.config, tuple(self.batches),
                                      queued_s=(self.started or now) - self.submitted, total_s=now - self.submitted)
            _resolve(self.future, result=result)

    def fail(self, err: BaseException) -> None:
        _resolve(self.future, error=err)


def _resolve(future: Future, result: Any = None, error: BaseException | None = None) -> None:
    """Set a future's outcome unless the client already cancelled it (a cancelled future refuses)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


@dataclasses.dataclass
class _Pending:
    """One queued row: which request, which of its prompts, its group, when it arrived."""
    job: _Job
    index: int
    group: Hashable
    arrived: float


class Engine:
    """Queue, dynamic batching and the device loop over a ``Backend``.

    ``batch_sizes``: the compiled batch sizes (each compiled at ``start``); ``max_wait_ms``: how
    long the oldest queued row waits for others before a partial batch runs (from its arrival or
    the end of the last batch, whichever is later); ``max_queue``: queued
    prompts (rows not yet in a batch) beyond which ``submit`` raises ``QueueFull``;
    ``max_settings``: distinct sampler settings whose compiled programs are kept (least recently
    used dropped first; the defaults always stay); ``on_batch``: called with each ``BatchInfo``
    (metrics).
    """

    def __init__(self, backend: Backend, *, batch_sizes: Sequence[int] = (1, 2, 4, 8), max_wait_ms: float = 50.0,
                 max_queue: int = 64, max_settings: int = 8, on_batch: Callable[[BatchInfo], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        sizes = sorted(set(int(b) for b in batch_sizes))
        if not sizes or sizes[0] < 1:
            raise ValueError(f"batch sizes {list(batch_sizes)}: give one or more sizes >= 1")
        if not math.isfinite(max_wait_ms) or max_wait_ms < 0:
            raise ValueError(f"max_wait_ms={max_wait_ms}: must be a finite number >= 0")
        if max_queue < 1 or max_settings < 1:
            raise ValueError(f"max_queue={max_queue} and max_settings={max_settings} must be >= 1")
        self.backend = backend
        self.batch_sizes = tuple(sizes)
        self.max_batch = sizes[-1]
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.max_settings = max_settings
        self.on_batch = on_batch
        self._clock = clock
        self._queue: list[_Pending] = []
        self._cond = threading.Condition()
        self._settings: collections.OrderedDict[Any, None] = collections.OrderedDict()
        self._batch_ids = itertools.count(1)
        self._batch_seconds = 1.0          # running mean, for Retry-After
        self._free_since = -math.inf       # when the last batch ended (the device loop's clock)
        self._thread: threading.Thread | None = None
        self._stopping = False

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self, progress: Callable[[str], None] | None = None) -> None:
        """Compile every batch size for the default settings, then start the device loop."""
        config = self.backend.default_config
        for i, size in enumerate(self.batch_sizes):
            t0 = self._clock()
            self.backend.warm_up(config, size)
            if progress:
                progress(f"compiled batch size {size} ({i + 1}/{len(self.batch_sizes)}) in "
                         f"{self._clock() - t0:.1f} s")
        self._settings[config] = None
        self._thread = threading.Thread(target=self._loop, name="magnet-jax-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish the running batch, fail what is still queued, end the device loop."""
        with self._cond:
            self._stopping = True
            pending, self._queue = self._queue, []
            self._cond.notify_all()
        for p in pending:
            p.job.fail(EngineStopped("the server is shutting down: retry elsewhere or later"))
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queue_depth(self) -> int:
        """Queued prompts not yet in a batch."""
        with self._cond:
            return len(self._queue)

    # -- requests -----------------------------------------------------------------------------------
    def submit(self, request: GenerationRequest) -> Future:
        """Queue a request; its future resolves to a ``GenerationResult``. Raises the backend's
        RequestError for a request it refuses, QueueFull when the queue has no room."""
        if not self.running:
            raise EngineStopped("the engine is not running")
        rows = len(request.prompts)
        self._check_room(rows)                                       # before encoding: cheap refusal
        prepared = self.backend.prepare(request)
        with self._cond:
            self._check_room(rows, locked=True)
            job = _Job(request, prepared, self._clock())
            for i in range(rows):
                self._queue.append(_Pending(job, i, prepared.group, job.submitted))
            self._cond.notify_all()
        return job.future

    def cancel(self, future: Future) -> bool:
        """Drop a request's queued rows and cancel its future (the client left). Rows already in
        a running batch finish with it, and their results are discarded. True if it was pending."""
        with self._cond:
            mine = [p for p in self._queue if p.job.future is future]
            self._queue = [p for p in self._queue if p.job.future is not future]
        cancelled = future.cancel()
        return cancelled or bool(mine)

    def _check_room(self, rows: int, locked: bool = False) -> None:
        depth = len(self._queue) if locked else self.queue_depth
        if depth + rows > self.max_queue:
            waves = (depth + rows) / self.max_batch + 1
            retry = max(1, math.ceil(self._batch_seconds * waves))
            raise QueueFull(f"the queue holds {depth} prompts and takes at most {self.max_queue}: "
                            f"retry in about {retry} s", retry)

    # -- the device loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            self._run(batch)
            self._free_since = self._clock()

    def _take_batch(self) -> list[_Pending] | None:
        """Wait for the oldest row's batch to fill or its wait to run out; take its rows."""
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if not self._queue:
                    self._cond.wait()
                    continue
                oldest = self._queue[0]
                same = [p for p in self._queue if p.group == oldest.group][:self.max_batch]
                left = max(oldest.arrived, self._free_since) + self.max_wait - self._clock()
                if len(same) == self.max_batch or left <= 0:
                    taken = set(map(id, same))
                    self._queue = [p for p in self._queue if id(p) not in taken]
                    return same
                self._cond.wait(timeout=left)

    def _run(self, batch: list[_Pending]) -> None:
        """One device batch: pad to the smallest compiled size, run, hand each row to its request."""
        size = self.batch_sizes[bisect.bisect_left(self.batch_sizes, len(batch))]
        rows = [p.job.prepared.rows[p.index] for p in batch]
        rows += [rows[-1]] * (size - len(rows))
        config = batch[0].job.prepared.config
        self._keep_compiled(config)
        started = self._clock()
        for p in batch:
            p.job.started = p.job.started or started
        try:
            tokens, audio = self.backend.run(config, rows)
        except Exception as err:  # noqa: BLE001 - a failed batch fails its requests, never the loop
            log.exception("batch of %d rows failed", len(batch))
            for job in {id(p.job): p.job for p in batch}.values():
                job.fail(err)
            return
        now = self._clock()
        info = BatchInfo(next(self._batch_ids), size, len(batch), now - started)
        self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * info.seconds
        for i, p in enumerate(batch):
            p.job.deliver(p.index, tokens[i], audio[i], info, now, self.backend.sample_rate)
        if self.on_batch is not None:
            self.on_batch(info)

    def _keep_compiled(self, config: Any) -> None:
        """Remember ``config`` as recently used; past ``max_settings`` drop the least recently used
        (never the defaults) so that a stream of distinct settings cannot grow memory forever."""
        self._settings[config] = None
        self._settings.move_to_end(config)
        while len(self._settings) > self.max_settings:
            old = next(c for c in self._settings if c != self.backend.default_config)
            del self._settings[old]
            self.backend.forget(old)
