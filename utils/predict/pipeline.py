"""Running a detector over a stream of frames, with decoding, detection and the
caller's drawing and encoding overlapped.

``FrameStream`` reads frames in one thread and detects in another (or in several,
for a runtime that runs several inferences at once), and hands the results to the
thread that iterates it (which draws, encodes and shows them), so the throughput
approaches that of the slowest stage instead of the sum of all. Stages are joined
by bounded queues, so memory stays bounded when one stage is slower, and frames come
out in source order (several detector threads file theirs under their places, and
none waits for another to finish).

A camera runs the other way round: its reader keeps only the newest frame
(``NewestFrame``) and the detector always takes that one, so what is shown lags
the camera by at most one detection; the frames the detector had no time for
are dropped and counted.

An exception in a stage thread (a ``KeyboardInterrupt`` too) reaches the iterating
thread in its place in the stream, after the frames before it. ``close`` stops and
joins the threads; a stream is a context manager.
"""

import logging
import queue
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

# Frames waiting between two stages.
DEFAULT_DEPTH = 4
# How often a blocked stage looks whether the stream was closed, in seconds.
_POLL_S = 0.05
# How long ``close`` waits for a stage thread to finish its current frame.
_JOIN_TIMEOUT_S = 10.0
# Weight of the newest interval in the smoothed rates.
_RATE_SMOOTHING = 0.1


@dataclass
class StreamedFrame:
    """One frame of a stream with what the detector made of it.

    Attributes:
        index: the frame's position in the source, from 0 (frames a camera stream
            dropped leave gaps).
        frame: the frame, RGB uint8 (H, W, 3).
        result: what ``detect(frame)`` returned.
        timestamp: when the frame was read, ``time.monotonic()`` seconds.
    """

    index: int
    frame: object
    result: object
    timestamp: float


class RateMeter:
    """Events per second, smoothed exponentially over the intervals between ticks."""

    def __init__(self):
        self.rate = None
        self._last = None

    def tick(self, now=None):
        """Records an event at ``now`` (default: ``time.monotonic()``)."""
        now = time.monotonic() if now is None else now
        if self._last is not None and now > self._last:
            current = 1.0 / (now - self._last)
            self.rate = current if self.rate is None else (1 - _RATE_SMOOTHING) * self.rate + _RATE_SMOOTHING * current
        self._last = now


class _End:
    """Marks the end of the source in a queue; ``seq`` is its place in the stream."""

    def __init__(self, seq=None):
        self.seq = seq


class _Failure:
    """Carries an exception of a stage thread to the iterating thread, at ``seq``."""

    def __init__(self, error, seq=None):
        self.error = error
        self.seq = seq


class _InOrder:
    """Where several detectors hand on their frames: an item filed under its place in
    the stream (``put(seq, item)``, never blocking) is taken (``get``) once every item
    before it was. An item filed again under a place already taken or filled is
    dropped (an end that each detector hands on)."""

    def __init__(self):
        self._items = {}
        self._next = 0
        self._cond = threading.Condition()

    def put(self, seq, item):
        with self._cond:
            if seq >= self._next and seq not in self._items:
                self._items[seq] = item
                self._cond.notify_all()

    def get(self, timeout=None):
        """The next item in stream order, waiting up to ``timeout`` seconds.

        Raises:
            queue.Empty: it did not arrive in time.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._next in self._items, timeout):
                raise queue.Empty
            self._next += 1
            return self._items.pop(self._next - 1)

    def empty(self):
        """Whether the next item has still to arrive."""
        with self._cond:
            return self._next not in self._items


class NewestFrame:
    """A one-frame slot between a camera and a detector: a new frame replaces the
    one waiting, which counts as dropped.

    Attributes:
        dropped: frames replaced before anyone took them.
        read: frames put in all.
    """

    def __init__(self):
        self._item = None
        self._cond = threading.Condition()
        self.dropped = 0
        self.read = 0

    def put(self, item):
        """Puts ``item`` in the slot, dropping the one waiting there (never blocks)."""
        with self._cond:
            if self._item is not None and not isinstance(self._item, (_End, _Failure)):
                self.dropped += 1
            self._item = item
            self.read += 1
            self._cond.notify_all()

    def get(self, timeout=None):
        """Takes the newest item, waiting up to ``timeout`` seconds (None: forever).

        Raises:
            queue.Empty: nothing arrived in time.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._item is not None, timeout):
                raise queue.Empty
            item, self._item = self._item, None
            return item


class FrameStream:
    """Frames of a source with their detections, in source order.

    Iterating yields ``StreamedFrame``s. With ``overlap`` the source is read in one
    thread and ``detect`` runs in ``detectors`` others, while the iterating thread
    handles the previous frames; without it each frame is read and detected when
    asked for, in the iterating thread (the sequential way, for comparison).

    Args:
        frames: an iterable of RGB uint8 frames (e.g. a ``VideoReader``); it is
            iterated in the reader thread only.
        detect: function(frame) -> result, called once per frame, in order.
        overlap: read and detect in threads of their own.
        newest_only: keep only the newest frame between reader and detector
            (cameras): frames the detector had no time for are dropped. Needs
            ``overlap``.
        depth: frames that may wait between two stages.
        detectors: threads calling ``detect`` at once, each on the next waiting
            frame (for a runtime with as many inference streams); ``detect`` must
            then be safe to call from several threads. A detector that finishes a
            frame before the one ahead of it goes on with the next frame; at most
            ``depth + detectors`` frames are between the reader and the iterating
            thread. Needs ``overlap`` and not ``newest_only``.
    """

    def __init__(self, frames, detect, *, overlap=True, newest_only=False, depth=DEFAULT_DEPTH, detectors=1):
        if newest_only and not overlap:
            raise ValueError("newest_only needs overlap=True: without a reader thread no frame can be dropped")
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth!r}")
        if detectors < 1 or (detectors > 1 and (newest_only or not overlap)):
            raise ValueError(f"detectors must be 1, or more with overlap and without newest_only; got {detectors!r}")
        self.detect = detect
        self.overlap = overlap
        self.camera_rate = RateMeter()
        self.detector_rate = RateMeter()
        self._frames = iter(frames) if not overlap else frames
        self._index = 0
        self._read_count = 0
        self._closed = False
        self._stop = threading.Event()
        self._threads = []
        # Several detectors file their frames under their places in the source, and
        # each takes a frame only when there is room for it (given back as the
        # iterating thread takes one); one detector hands its frames on as they
        # come, in order (a camera's dropped frames leave gaps in the places).
        self._room = threading.Semaphore(depth + detectors) if detectors > 1 else None
        if overlap:
            self._slot = NewestFrame() if newest_only else queue.Queue(maxsize=depth)
            self._out = _InOrder() if detectors > 1 else queue.Queue(maxsize=1 if newest_only else depth)
            self._threads = [threading.Thread(target=self._read, args=(frames,), name="frame-reader", daemon=True)]
            self._threads += [threading.Thread(target=self._detect, name=f"detector-{k}", daemon=True)
                              for k in range(detectors)]
            for thread in self._threads:
                thread.start()

    # --- statistics ---------------------------------------------------------------

    @property
    def dropped(self):
        """Frames a camera stream dropped because the detector was busy (0 otherwise)."""
        return self._slot.dropped if self.overlap and isinstance(self._slot, NewestFrame) else 0

    @property
    def frames_read(self):
        """Frames the reader has read so far."""
        if self.overlap and isinstance(self._slot, NewestFrame):
            return self._slot.read
        return self._read_count

    @property
    def camera_fps(self):
        """Frames read per second (smoothed), or None before the second frame."""
        return self.camera_rate.rate

    @property
    def detector_fps(self):
        """Detections per second (smoothed), or None before the second one."""
        return self.detector_rate.rate

    # --- the stage threads ----------------------------------------------------------

    def _put(self, target, item):
        """Puts into a bounded queue, giving up when the stream is closed; False then."""
        if isinstance(target, NewestFrame):
            target.put(item)
            return True
        while not self._stop.is_set():
            try:
                target.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, source):
        """Takes from a queue or slot, giving up (None) when the stream is closed."""
        while not self._stop.is_set():
            try:
                return source.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return None

    def _read(self, frames):
        try:
            for index, frame in enumerate(frames):
                now = time.monotonic()
                self._read_count += 1
                self.camera_rate.tick(now)
                if not self._put(self._slot, (index, frame, now)):
                    return
                if self._stop.is_set():
                    return
            self._put(self._slot, _End(self._read_count))
        except BaseException as exc:  # forwarded, so the iterating thread raises it
            self._put(self._slot, _Failure(exc, self._read_count))

    def _detect(self):
        while True:
            if self._room is not None and not self._take_room():
                return
            item = self._get(self._slot)
            if item is None:
                return
            if isinstance(item, (_End, _Failure)):
                if self._room is not None:
                    self._put(self._slot, item)  # for the other detectors, which stop there too
                self._hand_on(item.seq, item)
                return
            try:
                streamed = self._detect_one(*item)
            except BaseException as exc:  # forwarded, so the iterating thread raises it
                self._hand_on(item[0], _Failure(exc, item[0]))
                return
            if not self._hand_on(item[0], streamed):
                return

    def _take_room(self):
        """Waits for room for one more frame, giving up (False) when the stream is closed."""
        while not self._stop.is_set():
            if self._room.acquire(timeout=_POLL_S):
                return True
        return False

    def _hand_on(self, seq, item):
        """Hands ``item``, the ``seq``-th of the stream, on to the iterating thread;
        False when the stream was closed."""
        if self._room is not None:  # several detectors: filed under its place
            self._out.put(seq, item)
            return not self._stop.is_set()
        return self._put(self._out, item)

    def _detect_one(self, index, frame, timestamp):
        result = self.detect(frame)
        self.detector_rate.tick()
        return StreamedFrame(index, frame, result, timestamp)

    # --- iteration --------------------------------------------------------------------

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        if not self.overlap:
            try:
                frame = next(self._frames)
            except StopIteration:
                self._closed = True
                raise
            now = time.monotonic()
            self._read_count += 1
            self.camera_rate.tick(now)
            streamed = self._detect_one(self._index, frame, now)
            self._index += 1
            return streamed
        # A timeout, so that Ctrl-C reaches this thread while it waits.
        while True:
            try:
                item = self._out.get(timeout=_POLL_S)
                break
            except queue.Empty:
                if not any(thread.is_alive() for thread in self._threads) and self._out.empty():
                    self.close()
                    raise StopIteration from None
        if isinstance(item, _End):
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        if self._room is not None:
            self._room.release()
        return item

    def close(self):
        """Stops the stage threads and waits for them (each finishes its current frame)."""
        self._closed = True
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT_S)
                if thread.is_alive():
                    log.warning("The %s thread did not stop within %.0f s.", thread.name, _JOIN_TIMEOUT_S)
        self._threads = []

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
