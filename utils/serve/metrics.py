"""What the service counts, in the Prometheus text format (the ``prometheus-client`` library).

Every series carries the model's name and runtime as labels, so that the series of
several servers (a checkpoint on OpenVINO beside an ONNX export) can be told apart
on one dashboard. Each application has a registry of its own: two servers in one
process never mix their counts.
"""

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64)


class Metrics:
    """The service's counters and histograms.

    Args:
        model: the model's name.
        runtime: what runs it (e.g. "OpenVINO").
        precision: "fp32", "bf16" or "int8".
        input_size: the network input side.
    """

    def __init__(self, model, runtime, precision, input_size):
        self.registry = CollectorRegistry()
        labels = {"model": model, "runtime": runtime}
        self._labels = labels
        self.requests = Counter("detector_requests", "HTTP requests answered, by endpoint, method and status code",
                                [*labels, "endpoint", "method", "status"], registry=self.registry)
        self.latency = Histogram("detector_request_duration_seconds",
                                 "Time from a request's arrival to its answer, by endpoint",
                                 [*labels, "endpoint"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("detector_batch_size", "Images (or v2 requests) run in one network call",
                                    list(labels), buckets=BATCH_BUCKETS, registry=self.registry)
        self.inference = Histogram("detector_inference_seconds", "Time of one network call on a batch",
                                   list(labels), buckets=LATENCY_BUCKETS, registry=self.registry)
        info = Gauge("detector_model_info", "The served model: 1, with its settings in labels",
                     [*labels, "precision", "input_size"], registry=self.registry)
        info.labels(**labels, precision=precision, input_size=str(input_size)).set(1)

    def observe_request(self, endpoint, method, status, seconds):
        """Counts one answered request and its latency."""
        self.requests.labels(**self._labels, endpoint=endpoint, method=method, status=str(status)).inc()
        self.latency.labels(**self._labels, endpoint=endpoint).observe(seconds)

    def observe_batch(self, size, seconds):
        """Counts one network call on ``size`` items that took ``seconds``."""
        self.batch_size.labels(**self._labels).observe(size)
        self.inference.labels(**self._labels).observe(seconds)

    def exposition(self):
        """(body bytes, content type) of the ``/metrics`` answer."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
