"""The request batcher: a worker thread that decodes the queued windows of concurrent requests together."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from transformers.utils import logging

from ..decoding_llm_srt import DecodeRow, DecodingEngine, decode_window_rows
from .protocol import ServeError


logger = logging.get_logger(__name__)


@dataclass
class Row:
    """One decoded sequence: a window's transcript (`asr`) or its translation into `tgt` (`srt`)."""

    task: str
    src: str
    tgt: str


@dataclass
class WindowJob:
    """One audio window of a request and the rows it needs; `future` receives one result dict per row."""

    window: np.ndarray
    rows: list[Row]
    settings: tuple  # hashable generate kwargs; only jobs with equal settings share a generate call
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


_STOP = object()


class Batcher:
    """A worker thread that decodes queued windows of concurrent requests together, through the decoding seam.

    Each window's audio is encoded once for all its rows, and several SRT targets of a window share its transcript
    (`generation_llm_srt.decode_windows`, the pipeline's rule). A job that cannot be prepared fails alone; when a
    whole batch fails, its jobs are retried one at a time so only the one at fault fails.

    Args:
        engine: the `DecodingEngine` (e.g. `TransformersEngine(model, processor)`).
        max_batch_size: most rows (window x target pairs) per batch; a larger job runs alone.
        max_wait_ms: how long the first queued job waits for others to join its batch.
        shared_transcript: several SRT targets of a window share its transcript (default, as the pipeline).
        max_queue: most windows waiting; `submit_all` refuses a request that would pass it (503, Retry-After)
            unless the queue is empty (a request alone is always admitted: its size is bounded by the audio limit).

    A job whose future was cancelled (its client has gone) is dropped when its turn comes, undecoded
    (`stats["cancelled"]`).

    An engine that takes several batches at once (`concurrent_batches`, e.g. vLLM's, which merges them into its
    running batch) gets that many worker threads; the transformers engine gets one, holding `model_lock`.
    """

    def __init__(self, engine: DecodingEngine, max_batch_size: int = 16, max_wait_ms: float = 10.0,
                 shared_transcript: bool = True, max_queue: int = 256):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}.")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}.")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}.")
        self.engine, self.shared_transcript = engine, shared_transcript
        self.max_batch_size, self.max_wait, self.max_queue = max_batch_size, max_wait_ms / 1000.0, max_queue
        self._admission = threading.Lock()
        self.model_lock = threading.Lock()  # the worker and language detection share the model
        self.stats = collections.Counter()  # submitted (windows), batches (decode batches), rows, windows
        self._queue: queue.Queue = queue.Queue()
        self._pending: collections.deque[WindowJob] = collections.deque()
        self.workers = max(1, int(getattr(engine, "concurrent_batches", 1)))
        self._taking = threading.Lock()  # one worker at a time forms its batch from the queue
        self._stats_lock = threading.Lock()
        self._stopping = False
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if not self._threads:
            self._stopping = False
            self._threads = [threading.Thread(target=self._loop, name=f"llm-srt-batcher-{i}", daemon=True)
                             for i in range(self.workers)]
            for thread in self._threads:
                thread.start()

    def stop(self) -> None:
        """Finish the batches in progress, fail the queued jobs (503) and end the workers."""
        if self._threads:
            self._queue.put(_STOP)
            for thread in self._threads:
                thread.join()
            self._threads = []
            leftovers = list(self._pending)
            self._pending.clear()
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if item is not _STOP:
                    leftovers.append(item)
            for job in leftovers:
                job.future.set_exception(ServeError(503, "The server is shutting down.", type="server_error"))

    def submit(self, window: np.ndarray, rows: Sequence[Row], settings: dict) -> concurrent.futures.Future:
        """Queue one window; the future's result is the decoding seam's answer dict per row (`text`, `transcript`,
        `token_ids`, `complete`: False when the token budget cut the answer, ...)."""
        if not self._threads:
            raise ServeError(503, "The server is not running its decoding worker.", type="server_error")
        job = WindowJob(window=window, rows=list(rows), settings=tuple(sorted(settings.items())))
        self.stats["submitted"] += 1
        self._queue.put(job)
        return job.future

    def submit_all(self, windows: Sequence[np.ndarray], rows: Sequence[Row], settings: dict
                   ) -> list[concurrent.futures.Future]:
        """Queue every window of one request, or none: a 503 (`queue_full`, with Retry-After) when the queue would
        pass `max_queue`."""
        with self._admission:
            waiting = self.queued
            if waiting and waiting + len(windows) > self.max_queue:
                self.stats["refused"] += 1
                raise ServeError(503, f"The server is busy ({waiting} audio windows waiting, at most "
                                 f"{self.max_queue}); retry shortly.", None, "queue_full", "server_error",
                                 headers={"Retry-After": str(self.retry_after(waiting))})
            return [self.submit(window, rows, settings) for window in windows]

    def retry_after(self, waiting: int) -> int:
        """Seconds a refused client should wait: the queue's batches at the measured pace (1 s when unmeasured)."""
        batches = max(self.stats["batches"], 1)
        per_batch = self.stats["decode_seconds"] / batches if self.stats["batches"] else 1.0
        return max(1, min(600, int(per_batch * (waiting / self.max_batch_size + 1) + 0.999)))

    @property
    def queued(self) -> int:
        return self._queue.qsize() + len(self._pending)

    # ---------------------------------------------------------------------------------------------------- worker
    def _loop(self) -> None:
        # One engine call at a time holds the model; an engine taking several batches runs them side by side.
        exclusive = self.model_lock if self.workers == 1 else contextlib.nullcontext()
        while True:
            with self._taking:
                if self._stopping:
                    return
                batch, self._stopping = self._next_batch()
            if batch:
                with exclusive:
                    self._run(batch)

    def _next_batch(self) -> tuple[list[WindowJob], bool]:
        """The oldest job and the compatible ones that arrive within `max_wait` (up to `max_batch_size` rows)."""
        if self._pending:
            first = self._pending.popleft()
        else:
            first = self._queue.get()
            if first is _STOP:
                return [], True
        batch, rows = [first], len(first.rows)

        def admit(job) -> None:
            """Into this batch when it shares the settings and fits; else set aside for a later batch."""
            nonlocal rows
            if job.settings == first.settings and rows + len(job.rows) <= self.max_batch_size:
                batch.append(job)
                rows += len(job.rows)
            else:
                self._pending.append(job)

        # Jobs set aside earlier (other settings, or no room) are older than the queued ones: they go first.
        waiting, self._pending = self._pending, collections.deque()
        for job in waiting:
            admit(job)
        deadline = time.monotonic() + self.max_wait
        while rows < self.max_batch_size:
            remaining = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is _STOP:
                return batch, True
            admit(job)
        return batch, False

    def _run(self, jobs: list[WindowJob]) -> None:
        """Decode `jobs` in one batch and resolve their futures; a failing batch is retried job by job."""
        running = []
        for job in jobs:
            if job.future.set_running_or_notify_cancel():
                running.append(job)
            else:
                self.stats["cancelled"] += 1  # its client has gone
        if not running:
            return
        started = time.monotonic()
        try:
            results = self._decode(running)
            with self._stats_lock:
                self.stats["decode_seconds"] += time.monotonic() - started
        except Exception as error:
            if len(running) == 1:
                logger.warning(f"Decoding a window failed: {error}")
                running[0].future.set_exception(error)
                return
            logger.warning(f"A batch of {len(running)} windows failed ({error}); retrying them one at a time.")
            for job in running:
                try:
                    job.future.set_result(self._decode([job])[0])
                except Exception as single_error:
                    job.future.set_exception(single_error)
            return
        for job, result in zip(running, results):
            job.future.set_result(result)

    def _decode(self, jobs: list[WindowJob]) -> list[list[dict]]:
        """Per job, the seam's answer dict per row (`decode_window_rows`: the rows of all jobs in one batch, several
        SRT targets of a window after one shared transcript)."""
        audio, _ = self.engine.encode([job.window for job in jobs])
        rows = [[DecodeRow(j, row.task, row.src, None if row.task == "asr" else row.tgt) for row in job.rows]
                for j, job in enumerate(jobs)]
        answers = decode_window_rows(self.engine, audio, rows, dict(jobs[0].settings), self.shared_transcript)
        with self._stats_lock:
            self.stats["batches"] += 1
            self.stats["rows"] += sum(len(job.rows) for job in jobs)
            self.stats["windows"] += len(jobs)
        return answers
