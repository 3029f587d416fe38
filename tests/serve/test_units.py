"""The parts of the service without a server: the batcher, upload decoding and the
v2 request and response formats."""

import io
import json
import threading
import time

import numpy as np
import pytest
from PIL import Image

from utils.serve.batcher import Batcher
from utils.serve.protocol import ProtocolError, infer_response, parse_infer_request
from utils.serve.uploads import UploadError, decode_image


def _wait_until(condition, seconds=5):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_batcher_groups_by_key_and_skips_cancelled_jobs():
    release, calls = threading.Event(), []

    def run(key, payloads):
        release.wait(5)
        calls.append((key, list(payloads)))
        return [f"{key}:{p}" for p in payloads]

    batcher = Batcher(run, max_batch=8, max_wait_s=0.0)
    first = batcher.submit("a", 0)  # runs alone; the others queue behind it
    _wait_until(first.running)  # collected and running: later jobs form the next batch
    queued = [batcher.submit(key, i) for i, key in enumerate("abab", start=1)]
    dropped = batcher.submit("a", 9)
    assert dropped.cancel()
    release.set()
    assert first.result(5) == "a:0"
    assert [f.result(5) for f in queued] == ["a:1", "b:2", "a:3", "b:4"]
    batcher.close(5)
    assert calls == [("a", [0]), ("a", [1, 3]), ("b", [2, 4])]
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit("a", 1)


def test_batcher_keeps_to_the_sizes_allowed_and_prepares_each_worker():
    release, calls, prepared = threading.Event(), [], []

    def run(key, payloads):
        release.wait(5)
        calls.append(len(payloads))
        return payloads

    batcher = Batcher(run, max_batch=8, max_wait_s=0.0, workers=2, sizes=[1, 2, 4, 8],
                      on_start=lambda: prepared.append(threading.current_thread().name))
    assert batcher.ready.wait(5) and sorted(prepared) == ["batcher-0", "batcher-1"]
    first = [batcher.submit("k", 0), batcher.submit("k", 1)]
    _wait_until(lambda: all(f.running() for f in first))  # both workers busy: the rest queue up
    rest = [batcher.submit("k", i) for i in range(2, 9)]
    release.set()
    assert [f.result(5) for f in first + rest] == list(range(9))
    batcher.close(5)
    # The 7 jobs queued behind the first ones run as batches of 4, 2 and 1, never 7 or 3.
    assert set(calls) <= {1, 2, 4} and 4 in calls and sum(calls) == 9, calls


def test_batcher_waits_only_for_requests_on_their_way():
    calls = []

    def run(key, payloads):
        calls.append(list(payloads))
        return payloads

    # A wait of 30 s: a lone job that waited for it would miss its 10 s result timeout.
    batcher = Batcher(run, max_batch=8, max_wait_s=30.0)
    assert batcher.submit("k", "alone").result(10) == "alone"
    # While another request is on its way, the job taken waits for it and both run together.
    with batcher.arriving() as arrival:
        first = batcher.submit("k", "first")
        _wait_until(batcher._queue.empty)  # taken by the worker, which now waits
        second = batcher.submit("k", "second", arrival)
    assert (first.result(10), second.result(10)) == ("first", "second")
    # A request that fails before it submits stops counting as on its way when its block ends.
    with pytest.raises(ValueError), batcher.arriving():
        raise ValueError("not an image")
    assert batcher.submit("k", "after").result(10) == "after"
    batcher.close(5)
    assert calls == [["alone"], ["first", "second"], ["after"]]


def test_batcher_hands_errors_to_each_job():
    def run(key, payloads):
        raise ValueError("broken model")

    batcher = Batcher(run, max_batch=4, max_wait_s=0.01)
    futures = [batcher.submit("k", i) for i in range(3)]
    for future in futures:
        with pytest.raises(ValueError, match="broken model"):
            future.result(5)
    batcher.close(5)


def test_decode_applies_exif_orientation_and_converts_modes():
    image = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # turned a quarter: displayed 20 wide, 40 high
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), 10_000).shape == (40, 20, 3)
    buffer = io.BytesIO()
    Image.new("LA", (8, 6)).save(buffer, format="PNG")
    rgb = decode_image(buffer.getvalue(), 10_000)
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    with pytest.raises(UploadError) as raised:
        decode_image(buffer.getvalue(), 47)
    assert raised.value.status == 413 and "8x6" in raised.value.message


def test_v2_binary_request_and_response_round_trip():
    images = np.arange(2 * 32 * 32 * 3, dtype=np.uint8).reshape(2, 32, 32, 3)
    head = json.dumps({"id": "r1", "inputs": [{"name": "images", "datatype": "UINT8", "shape": [2, 32, 32, 3],
                                               "parameters": {"binary_data_size": images.nbytes}}],
                       "parameters": {"binary_data_output": True}}).encode()
    request_id, parsed, wanted = parse_infer_request(head + images.tobytes(), str(len(head)), 32, 8)
    assert request_id == "r1" and np.array_equal(parsed, images)
    assert [name for name, _ in wanted][:4] == ["boxes", "scores", "classes", "count"] and all(b for _, b in wanted)
    with pytest.raises(ProtocolError, match="binary data"):
        parse_infer_request(head + images.tobytes()[:-1], str(len(head)), 32, 8)
    with pytest.raises(ProtocolError, match="B from 1 to 1"):
        parse_infer_request(head + images.tobytes(), str(len(head)), 32, 1)
    arrays = {"count": np.array([3, 0], np.int32), "scores": np.ones((2, 4), np.float32)}
    body, length = infer_response("detector", "r1", arrays, [("count", True), ("scores", False)])
    response = json.loads(body[:length])
    assert response["id"] == "r1" and response["outputs"][0]["parameters"]["binary_data_size"] == 8
    assert np.array_equal(np.frombuffer(body[length:], np.int32), [3, 0])
    assert response["outputs"][1]["data"] == [1.0] * 8 and response["outputs"][1]["shape"] == [2, 4]


class _Recording:
    """Stands in for a predictor: empty detections, and the name of each batch's runner."""

    def __init__(self, name, calls, hold=None):
        self.name, self.calls, self.hold = name, calls, hold
        self.class_names, self.input_size, self.conf, self.nms_iou, self.max_boxes = ["a"], 32, 0.1, 0.3, 10

    def predict_batch(self, images):
        from utils.predict.predictor import Detections

        self.calls.append(self.name)
        if self.hold is not None:
            assert self.hold.wait(5)
        return [Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))
                for _ in images]


def test_a_batch_alone_takes_the_latency_copy():
    from utils.serve.model import ServedModel, Thresholds

    calls, hold = [], threading.Event()
    served = ServedModel(_Recording("streams", calls, hold), "m", Thresholds(0.5, 0.3, 10),
                         alone=_Recording("latency", calls, hold))
    key, image = served.key_for(served.defaults), np.zeros((8, 8, 3), np.uint8)
    first = threading.Thread(target=served.run, args=(key, [(image, 0.5)]))
    first.start()
    _wait_until(lambda: calls)
    second = threading.Thread(target=served.run, args=(key, [(image, 0.5)]))
    second.start()
    _wait_until(lambda: len(calls) == 2)
    hold.set()
    first.join(5), second.join(5)
    assert calls == ["latency", "streams"]
    served.run(key, [(image, 0.5)])
    assert calls[-1] == "latency"
