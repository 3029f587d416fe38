"""serve.py as a person runs it: a subprocess on a free loopback port, stopped with
SIGTERM while requests are in flight (they finish, then it exits with 0), and the
address check that comes before the model is loaded."""

import io
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import requests
from PIL import Image

from tests.helpers import ROOT, script_env

START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png(seed):
    image = np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _wait_ready(proc, url):
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve.py exited with {proc.returncode}:\n{proc.stderr.read()[-3000:]}"
        try:
            if requests.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise AssertionError("serve.py did not become ready in time")


def test_sigterm_lets_requests_in_flight_finish(triton_repository):
    """The ONNX model of the repository (it starts faster than a checkpoint)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "serve.py", "--model", str(triton_repository / "1" / "model.onnx"),
                             "--port", str(port), "--conf", "0.2", "--log-level", "warning"],
                            cwd=ROOT, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(proc, url)
        body = _png(0)
        # A request in flight: its headers and half its body are sent before SIGTERM, the rest after.
        sock = socket.create_connection(("127.0.0.1", port), timeout=STOP_TIMEOUT_S)
        sock.sendall(b"POST /v1/detect HTTP/1.1\r\nHost: test\r\nContent-Type: image/png\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
        # Others at the same time, from threads.
        answers = []
        threads = [threading.Thread(target=lambda: answers.append(
            requests.post(f"{url}/v1/detect", data=_png(1), timeout=STOP_TIMEOUT_S).status_code)) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        sock.sendall(body[len(body) // 2:])
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            response += chunk
        sock.close()
        for thread in threads:
            thread.join(STOP_TIMEOUT_S)
        assert response.startswith(b"HTTP/1.1 200"), response[:300]
        assert b'"detections"' in response
        assert answers == [200] * 4
        assert proc.wait(STOP_TIMEOUT_S) == 0, proc.stderr.read()[-3000:]
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_public_address_without_key_is_refused(tiny_detector, capsys, monkeypatch):
    """Refused before the model is loaded, with exit status 2 and the way out."""
    import serve
    from utils.serve.server import API_KEY_ENV

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert serve.main(["--model", str(tiny_detector[1]), "--host", "0.0.0.0"]) == 2
    assert "--api-key" in capsys.readouterr().err
    missing = serve.main(["--model", "no/such/model.onnx", "--port", "1"])
    assert missing == 2 and "no/such/model.onnx" in capsys.readouterr().err
