"""Requests that arrive together, run as one batch in threads of their own.

The event loop only queues a job and awaits its future; worker threads take the
jobs, run them and set the results. A worker that finds a job takes the others
already queued, up to ``max_batch`` in all, and, while other requests are on their
way (``arriving``: a body being read or decoded), waits up to ``max_wait_s`` for
them; then it runs them together. A lone client's request never waits: nothing else
is on its way. Jobs of different kinds (other thresholds, v2 tensors) are run as
separate calls of the same round. A job whose request gave up (a timeout, a client
that went away) is dropped before it runs.

Several workers run batches side by side where the runtime has parallel inference
streams (OpenVINO's throughput setting); one collects a batch at a time. A runtime
that compiles a graph (and keeps buffers) per batch size is given batches of a few
sizes only (``sizes``): the jobs beyond the largest allowed size collected are the
start of the next batch. Each worker can prepare itself (``on_start``) before it takes
jobs, e.g. run those sizes once, so that the memory a server needs is taken at start
and not bit by bit under load.
"""

import collections
import concurrent.futures
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# How often a worker waiting for more jobs looks again whether any is still on its way.
POLL_S = 0.0005


@dataclass
class Job:
    """One unit of work: ``payload`` for the runner of ``key``, and where its result goes."""

    key: object
    payload: object
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Batcher:
    """Collects jobs into batches and runs them in worker threads.

    Args:
        run: function(key, payloads) -> list of results, one per payload, in order;
            called from a worker thread with up to ``max_batch`` payloads of one key.
        max_batch: most jobs run in one call (1: no batching).
        max_wait_s: how long a worker waits for more jobs after the first.
        workers: threads running batches side by side.
        sizes: the batch sizes allowed (must hold 1), or None for any up to ``max_batch``.
        on_start: optional function() each worker calls before it takes jobs.
    """

    def __init__(self, run, max_batch=8, max_wait_s=0.002, workers=1, sizes=None, on_start=None):
        if max_batch < 1 or workers < 1 or max_wait_s < 0 or (sizes is not None and 1 not in sizes):
            raise ValueError(f"max_batch and workers must be >= 1, max_wait_s >= 0 and sizes hold 1, got "
                             f"{max_batch}, {workers}, {max_wait_s}, {sizes}")
        self._run, self.max_batch, self.max_wait_s = run, int(max_batch), float(max_wait_s)
        self._sizes = sorted(sizes) if sizes is not None else None
        self._on_start = on_start
        self._queue = queue.Queue()
        self._arriving = 0  # requests inside ``arriving`` that have not submitted yet
        self._arriving_lock = threading.Lock()
        self._carried = collections.deque()  # jobs collected beyond an allowed size: the next batch's start
        self._collecting = threading.Lock()
        self._closed = False
        self._starting = workers
        self._started_lock = threading.Lock()
        self.ready = threading.Event()  # set once every worker has started
        self._threads = [threading.Thread(target=self._work, name=f"batcher-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    @contextlib.contextmanager
    def arriving(self):
        """Marks a request on its way to ``submit`` (its body being read or decoded) for
        as long as the block runs; pass what it gives to ``submit``.

        While any request is on its way, a worker holding fewer than ``max_batch``
        jobs waits up to ``max_wait_s`` for more; while none is, it runs what it has.
        """
        arrival = _Arrival(self)
        with self._arriving_lock:
            self._arriving += 1
        try:
            yield arrival
        finally:
            arrival.done()

    def submit(self, key, payload, arrival=None):
        """Queues ``payload`` for the runner of ``key``; returns its ``concurrent.futures.Future``.

        ``arrival``: what ``arriving`` gave this request; it stops counting as on its
        way before its job is queued, so the worker that takes the job does not wait
        for it.
        """
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if arrival is not None:
            arrival.done()
        job = Job(key, payload)
        self._queue.put(job)
        return job.future

    def close(self, timeout=None):
        """Runs the jobs already queued, then stops the workers (waiting up to ``timeout`` seconds)."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)

    def _collect(self):
        """The next batch of jobs; None when the batcher is closing."""
        with self._collecting:
            jobs = list(self._carried)
            self._carried.clear()
            if not jobs:
                first = self._queue.get()
                if first is None:
                    return None
                jobs = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 or self._arriving == 0:
                        break
                    try:
                        job = self._queue.get(timeout=min(remaining, POLL_S))
                    except queue.Empty:
                        continue
                if job is None:  # closing: leave the stop mark for this worker's next round
                    self._queue.put(None)
                    break
                jobs.append(job)
            if self._sizes is not None:
                size = max(s for s in self._sizes if s <= len(jobs))
                self._carried.extend(jobs[size:])
                jobs = jobs[:size]
            return jobs

    def _work(self):
        try:
            if self._on_start is not None:
                self._on_start()
        except Exception:  # the worker serves all the same; its first batches prepare what failed
            log.exception("a batch worker could not prepare itself")
        finally:
            with self._started_lock:
                self._starting -= 1
                if self._starting == 0:
                    self.ready.set()
        while True:
            jobs = self._collect()
            if jobs is None:
                return
            # A job whose request gave up is cancelled; it is not run.
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            groups = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                self._run_group(key, group)

    def _run_group(self, key, group):
        try:
            results = self._run(key, [job.payload for job in group])
        except Exception as exc:  # handed to each request, which answers with it
            log.debug("batch of %d failed: %s", len(group), exc)
            for job in group:
                job.future.set_exception(exc)
            return
        for job, result in zip(group, results):
            job.future.set_result(result)


class _Arrival:
    """A request counted as on its way to a ``Batcher``; ``done`` (once) stops counting it."""

    def __init__(self, batcher):
        self._batcher = batcher
        self._done = False

    def done(self):
        batcher = self._batcher
        with batcher._arriving_lock:
            if not self._done:
                self._done = True
                batcher._arriving -= 1
