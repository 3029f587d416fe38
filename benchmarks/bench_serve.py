"""Throughput and latency of serve.py over loopback HTTP, with batching on and off.

For each detector (``--models`` checkpoints, or by default untrained B0 and Lite0 at
``--size``; the speed does not depend on the weights), ``predict.py --mode fps``
first times one image on the same runtime (this also fills the export cache that
serve.py then reuses). serve.py is then started twice on a free loopback port, with
``--max-batch`` (batching on) and with ``--max-batch 1`` (off); at each of
``--clients`` concurrent clients, ``--requests`` JPEG uploads to ``POST /v1/detect``
are timed, and requests per second and p50/p95/p99 latency are printed. With
batching on, a soak of ``--soak-requests`` at the largest client count follows,
counting errors and the server's resident memory before and after.

The clients are threads of this process on the same machine as the server, so on a
small CPU they take cores from it: the figures are those of a server and its callers
sharing the machine. Every loop is bounded by its request count and by ``--timeout``.

Usage:
    python benchmarks/bench_serve.py                                  # B0 and Lite0 at 416, runtime auto
    python benchmarks/bench_serve.py --backbones efficientnet-lite0 --requests 40 --soak-requests 200
    python benchmarks/bench_serve.py --models logs/exp/best.keras --runtime tf
"""

import argparse
import concurrent.futures
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NUM_CLASSES = 20
# The objectness logit of the untrained detectors: sigmoid(-4) = 0.018, so that a few
# anchors, not all, pass the lowest threshold (see ``untrained_checkpoint``).
OBJECTNESS_BIAS = -4.0
START_TIMEOUT_S = 600


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", help="comma-separated checkpoints or exports (default: untrained --backbones)")
    p.add_argument("--backbones", default="efficientnet-b0,efficientnet-lite0",
                   help="comma-separated backbones of the untrained detectors (default B0 and Lite0)")
    p.add_argument("--size", type=int, default=416, help="input size of the untrained detectors (default 416)")
    p.add_argument("--runtime", default="auto", help="serve.py and predict.py --runtime (default auto)")
    p.add_argument("--clients", default="1,4,16", help="comma-separated concurrent client counts (default 1,4,16)")
    p.add_argument("--requests", type=int, default=200, help="timed requests per client count (default 200)")
    p.add_argument("--soak-requests", type=int, default=2000,
                   help="requests of the soak at the largest client count, batching on (default 2000; 0: none)")
    p.add_argument("--max-batch", type=int, default=8, help="serve.py --max-batch when batching is on (default 8)")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="serve.py --max-wait-ms (default 2)")
    p.add_argument("--image", default="640x480", help="size WxH of the uploaded JPEG (default 640x480)")
    p.add_argument("--fps-runs", type=int, default=30, help="predict.py --fps-runs (default 30)")
    p.add_argument("--off-first", action="store_true",
                   help="run the server without batching first (the machine's load may change during a run)")
    p.add_argument("--timeout", type=float, default=600, help="longest one load loop may run, seconds (default 600)")
    return p.parse_args(argv)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def script_env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")


def untrained_checkpoint(folder, backbone, size):
    """An untrained detector whose objectness is low almost everywhere, as a trained one's
    is: with the heads' zero biases every anchor would score about 0.25 and the NMS
    (at the served lowest conf, 0.1) would sort every box of the image, which no trained
    model asks of it."""
    from nets.yolo import YoloV3
    from utils.checkpoint import save_model

    model = YoloV3(NUM_CLASSES, backbone=backbone, input_size=size)
    for level in ("p5", "p4", "p3"):
        layer = model.get_layer(f"head_{level}_pred")
        bias = np.asarray(layer.bias).reshape(-1, 5 + NUM_CLASSES).copy()
        bias[:, 4] = OBJECTNESS_BIAS
        layer.bias.assign(bias.reshape(-1))
    path = Path(folder) / f"{backbone}_{size}.keras"
    save_model(model, path)
    return path


def test_image(folder, width, height):
    """A JPEG of drawn shapes on noise; returns (path, bytes)."""
    import cv2

    from utils.export.exporter import synthetic_images

    image = cv2.resize(synthetic_images(1, seed=3)[0], (width, height))
    path = Path(folder) / "upload.jpg"
    cv2.imwrite(str(path), image[..., ::-1])
    return path, path.read_bytes()


def predict_fps(model, image, runtime, runs, out):
    """predict.py --mode fps: {stage: (mean, p50, p95) ms}."""
    proc = subprocess.run([sys.executable, "predict.py", "--model", str(model), "--source", str(image), "--mode",
                           "fps", "--runtime", runtime, "--fps-runs", str(runs), "--out", str(out)],
                          cwd=ROOT, env=script_env(), capture_output=True, text=True, timeout=START_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"predict.py --mode fps failed:\n{proc.stderr[-2000:]}")
    stages = {}
    for line in proc.stdout.splitlines():
        found = re.match(r"^(.*?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$", line)
        if found:
            stages[found.group(1).strip()] = tuple(float(v) for v in found.groups()[1:])
    runtime_line = next((line for line in proc.stdout.splitlines() if line.startswith("Runtime:")), "Runtime: ?")
    return stages, runtime_line


class Server:
    """serve.py in a subprocess on a free loopback port."""

    def __init__(self, model, runtime, max_batch, max_wait_ms):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "serve.py", "--model", str(model), "--runtime", runtime, "--port", str(self.port),
             "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), "--log-level", "warning"],
            cwd=ROOT, env=script_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output = []
        threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True).start()

    def __enter__(self):
        import requests

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("serve.py exited:\n" + "".join(self.output)[-3000:])
            try:
                if requests.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.5)
        raise RuntimeError("serve.py did not become ready")

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def rss_mb(self):
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def batches(self):
        """(network calls, items run) so far, from /metrics."""
        import requests
        from prometheus_client.parser import text_string_to_metric_families

        text = requests.get(f"{self.url}/metrics", timeout=10).text
        values = {sample.name: sample.value for family in text_string_to_metric_families(text)
                  for sample in family.samples if sample.name.startswith("detector_batch_size_")}
        return values.get("detector_batch_size_count", 0.0), values.get("detector_batch_size_sum", 0.0)

    def runtime(self):
        return next((line.strip() for line in self.output if line.startswith("Runtime:")), "Runtime: ?")


def load(url, body, clients, requests_total, timeout):
    """``requests_total`` uploads from ``clients`` threads; (requests/s, latencies ms, errors)."""
    import requests

    remaining = [requests_total]
    lock = threading.Lock()
    deadline = time.monotonic() + timeout

    def client():
        latencies, errors = [], 0
        with requests.Session() as http:
            while time.monotonic() < deadline:
                with lock:
                    if remaining[0] == 0:
                        break
                    remaining[0] -= 1
                start = time.perf_counter()
                try:
                    ok = http.post(f"{url}/v1/detect", data=body, headers={"Content-Type": "image/jpeg"},
                                   timeout=60).status_code == 200
                except requests.RequestException:
                    ok = False
                latencies.append(1e3 * (time.perf_counter() - start))
                errors += not ok
        return latencies, errors

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: client(), range(clients)))
    seconds = time.perf_counter() - started
    latencies = [v for found, _ in results for v in found]
    return len(latencies) / seconds, np.asarray(latencies), sum(errors for _, errors in results)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from utils.export.auto_runtime import cpu_flags

    clients = [int(c) for c in args.clients.split(",") if c.strip()]
    width, height = (int(v) for v in args.image.lower().split("x"))
    flags = cpu_flags()
    print(f"{os.cpu_count()} CPUs; bf16/VNNI/AMX flags: {'unknown' if flags is None else ', '.join(flags) or 'none'}; "
          f"upload {width}x{height} JPEG; loopback HTTP, clients in this process")
    with tempfile.TemporaryDirectory() as scratch:
        image, body = test_image(scratch, width, height)
        if args.models:
            models = [(Path(m).stem, Path(m)) for m in args.models.split(",") if m.strip()]
        else:
            models = [(f"{b} (untrained) at {args.size}", untrained_checkpoint(scratch, b, args.size))
                      for b in args.backbones.split(",") if b.strip()]
        for label, model in models:
            stages, runtime_line = predict_fps(model, image, args.runtime, args.fps_runs, Path(scratch) / "fps")
            total, network = stages.get("total"), stages.get("network + decoding (in graph)")
            pre = stages.get("preprocessing")
            print(f"\n{label}: predict.py --mode fps ({runtime_line.removeprefix('Runtime: ')}): total p50 "
                  f"{total[1]:.1f} ms, preprocessing + network p50 {pre[1] + network[1]:.1f} ms")
            ways = [("on", args.max_batch), ("off", 1)]
            for batching, max_batch in (ways[::-1] if args.off_first else ways):
                with Server(model, args.runtime, max_batch, args.max_wait_ms) as server:
                    print(f"  batching {batching} (--max-batch {max_batch}); {server.runtime()}")
                    load(server.url, body, 1, 5, args.timeout)  # warm-up
                    for count in clients:
                        calls, items = server.batches()
                        rate, latencies, errors = load(server.url, body, count, args.requests, args.timeout)
                        calls_after, items_after = server.batches()
                        mean_batch = (items_after - items) / max(calls_after - calls, 1)
                        p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
                        line = (f"    {count:>3} clients: {rate:6.1f} req/s, latency p50 {p50:7.1f} p95 {p95:7.1f} "
                                f"p99 {p99:7.1f} ms, mean batch {mean_batch:.1f}, {errors} errors of "
                                f"{len(latencies)}")
                        if count == 1:
                            line += f"; p50 / predict.py fps total p50 = {p50 / total[1]:.2f}"
                        print(line)
                    if batching == "on" and args.soak_requests:
                        before = server.rss_mb()
                        rate, latencies, errors = load(server.url, body, max(clients), args.soak_requests,
                                                       args.timeout)
                        after = server.rss_mb()
                        print(f"    soak: {len(latencies)} requests at {max(clients)} clients, {errors} errors, "
                              f"{rate:.1f} req/s; server memory {before:.0f} -> {after:.0f} MB "
                              f"({after - before:+.1f} MB)")


if __name__ == "__main__":
    main()
