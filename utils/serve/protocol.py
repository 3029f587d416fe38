"""The Open Inference Protocol (KServe v2) over HTTP/JSON, with its binary tensor extension.

The served model has the tensors of the ONNX export (``utils.predict.runtimes``):
one input, ``images``, uint8 (B, S, S, 3) RGB letterboxed to the input size, and the
outputs "boxes" (B, K, 4) float32 xyxy input pixels, "scores" (B, K) float32,
"classes" (B, K) int32, "count" (B,) int32 and the raw heads "raw_s32", "raw_s16",
"raw_s8" (B, S/stride, S/stride, 3·(5+C)) float32.

A request is JSON, or JSON followed by the raw bytes of its tensors when the header
``Inference-Header-Content-Length`` gives the JSON's length (each binary input says
its size in ``parameters.binary_data_size``): this is how Triton's clients send
tensors. Outputs are answered the same way when the request asks for binary data
(``parameters.binary_data`` of an output, or ``binary_data_output`` of the request).
"""

import json

import numpy as np

from utils.config import STRIDES
from utils.predict.predictor import DETECTION_OUTPUTS, RAW_OUTPUTS
from utils.predict.runtimes import INPUT_NAME

HEADER_LENGTH = "Inference-Header-Content-Length"
# The protocol's datatype names and their NumPy types.
DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
    "FP32": np.float32, "FP64": np.float64,
}
OUTPUTS = (*DETECTION_OUTPUTS, *RAW_OUTPUTS)


class ProtocolError(ValueError):
    """A v2 request that cannot be answered; ``status`` is the HTTP status (400 or 404)."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status
        self.message = message


def datatype_of(array):
    """The protocol datatype name of a NumPy array."""
    for name, dtype in DATATYPES.items():
        if array.dtype == dtype:
            return name
    raise ValueError(f"no v2 datatype for {array.dtype}")


def tensor_specs(input_size, num_classes):
    """(inputs, outputs): the model's tensors as the metadata endpoint lists them, -1 for a free dimension."""
    inputs = [{"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, input_size, input_size, 3]}]
    outputs = [
        {"name": "boxes", "datatype": "FP32", "shape": [-1, -1, 4]},
        {"name": "scores", "datatype": "FP32", "shape": [-1, -1]},
        {"name": "classes", "datatype": "INT32", "shape": [-1, -1]},
        {"name": "count", "datatype": "INT32", "shape": [-1]},
    ]
    depth = 3 * (5 + num_classes)
    for name, stride in zip(RAW_OUTPUTS, STRIDES):
        side = input_size // stride
        outputs.append({"name": name, "datatype": "FP32", "shape": [-1, side, side, depth]})
    return inputs, outputs


def parse_infer_request(body, header_length, input_size, max_batch):
    """Reads an inference request.

    Args:
        body: the request body.
        header_length: the ``Inference-Header-Content-Length`` header (None: all JSON).
        input_size: the side S the input must have.
        max_batch: the most images one request may hold.

    Returns:
        (request id, uint8 (B, S, S, 3) images, [(output name, binary)] asked for,
        in order).

    Raises:
        ProtocolError: malformed JSON, a wrong tensor name, datatype or shape, or
            binary data that does not match the sizes given.
    """
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < length <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} is {length} but the body has {len(body)} bytes")
        head, binary = body[:length], body[length:]
    else:
        head, binary = body, b""
    try:
        request = json.loads(head)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"the request is not valid JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise ProtocolError("the request must be a JSON object with an 'inputs' list")
    inputs = request["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict) or inputs[0].get("name") != INPUT_NAME:
        names = [tensor.get("name") if isinstance(tensor, dict) else tensor for tensor in inputs]
        raise ProtocolError(f"the model takes one input, {INPUT_NAME!r}; the request has {names}")
    images = _input_array(inputs[0], binary, input_size, max_batch)
    return str(request.get("id", "")), images, _requested_outputs(request)


def _input_array(tensor, binary, input_size, max_batch):
    datatype, shape = tensor.get("datatype"), tensor.get("shape")
    if datatype != "UINT8":
        raise ProtocolError(f"input {INPUT_NAME!r} must have datatype UINT8 (RGB 0-255), got {datatype!r}")
    expected = ["B", input_size, input_size, 3]
    if (not isinstance(shape, list) or len(shape) != 4 or not all(isinstance(d, int) for d in shape)
            or shape[1:] != expected[1:] or not 1 <= shape[0] <= max_batch):
        raise ProtocolError(f"input {INPUT_NAME!r} must have shape [B, {input_size}, {input_size}, 3] with B from 1 "
                            f"to {max_batch} (letterboxed images), got {shape}")
    count = int(np.prod(shape))
    parameters = tensor.get("parameters") or {}
    size = parameters.get("binary_data_size")
    if size is not None:
        if size != count or len(binary) != count:
            raise ProtocolError(f"input {INPUT_NAME!r} of shape {shape} needs {count} bytes of binary data; "
                                f"binary_data_size is {size} and the body holds {len(binary)}")
        return np.frombuffer(binary, np.uint8).reshape(shape)
    if binary:
        raise ProtocolError(f"the body has {len(binary)} bytes after the JSON but no input says binary_data_size")
    try:
        values = np.asarray(tensor.get("data"), dtype=np.float64)
    except (TypeError, ValueError):
        raise ProtocolError(f"input {INPUT_NAME!r}: 'data' must be a list of numbers") from None
    if values.size != count:
        raise ProtocolError(f"input {INPUT_NAME!r} of shape {shape} needs {count} values, 'data' has {values.size}")
    if values.size and (values.min() < 0 or values.max() > 255 or not np.all(values == np.round(values))):
        raise ProtocolError(f"input {INPUT_NAME!r}: UINT8 values must be whole numbers from 0 to 255")
    return values.astype(np.uint8).reshape(shape)


def _requested_outputs(request):
    parameters = request.get("parameters") or {}
    binary_default = bool(parameters.get("binary_data_output", False))
    asked = request.get("outputs")
    if asked is None:
        return [(name, binary_default) for name in OUTPUTS]
    if not isinstance(asked, list) or not all(isinstance(o, dict) for o in asked):
        raise ProtocolError("'outputs' must be a list of objects with a 'name'")
    wanted = []
    for output in asked:
        name = output.get("name")
        if name not in OUTPUTS:
            raise ProtocolError(f"unknown output {name!r}; the model's outputs are {', '.join(OUTPUTS)}")
        binary = (output.get("parameters") or {}).get("binary_data", binary_default)
        wanted.append((name, bool(binary)))
    return wanted


def infer_response(model_name, request_id, arrays, wanted):
    """The body of an inference response, and its header length when binary data follows.

    Args:
        model_name: the model's name.
        request_id: the request's id ("" for none).
        arrays: output name -> NumPy array.
        wanted: [(output name, binary)] from ``parse_infer_request``.

    Returns:
        (body bytes, the JSON's length or None when the body is all JSON).
    """
    outputs, blobs = [], []
    for name, binary in wanted:
        array = np.ascontiguousarray(arrays[name])
        entry = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if binary:
            blob = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    response = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if request_id:
        response["id"] = request_id
    head = json.dumps(response).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
