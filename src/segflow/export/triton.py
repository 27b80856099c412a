"""``segflow export CKPT --format triton --out repo/``: a Triton Inference Server model repository.

Layout (``<name>`` is :data:`MODEL_NAME`)::

    repo/
      segflow_triton.json          what wrote the repository (Triton reads only the folders)
      <name>/config.pbtxt          ensemble: IMAGE (H, W, C) uint8|uint16 -> LABELS (H, W) uint8
      <name>/1/                    (empty: an ensemble has no file, but needs its version folder)
      <name>_preprocess/           Python backend: input policy, pixel scaling, channels
        config.pbtxt, 1/model.py
      <name>_onnx/                 ONNX Runtime: segflow's parity-checked ONNX export, cut
        config.pbtxt, 1/model.onnx   down to its ``logits`` output (the ensemble uses nothing else)
      <name>_postprocess/          Python backend: crop/resize back, argmax, class names
        config.pbtxt, 1/model.py

``model.py`` is :mod:`segflow.export.triton_model` copied verbatim. Every ``config.pbtxt`` is
built as a ``ModelConfig`` message of Triton's own protobuf schema (``tritonclient``), so an
unknown field cannot be written. The ONNX model's inputs, outputs, data types and dims are
read from the exported graph (H and W dynamic, ``-1``), and checked against the metadata.

Before anything is renamed into place, the export is checked twice: the ONNX graph against
the eager net (``staged_onnx``), and the pre/ONNX/post chain against segflow's
:class:`~segflow.inference.predictor.Predictor` on the same graph (label maps of images whose
sides are not multiples of the stride). The repository is built in a hidden sibling folder and
renamed onto ``--out``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

import segflow
from segflow.errors import ConfigError
from segflow.export import triton_model
from segflow.export.base import ExportFormat, ExportRequest, ExportResult, Log, register_format, staged_onnx
from segflow.export.onnx import INPUT_NAME
from segflow.export.parity import MIN_ARGMAX_AGREEMENT, ExportCheckError
from segflow.inference.backends import EXPORT_KEY, INPUT_FLOAT_NCHW, LOGITS_OUTPUT, logits_graph
from segflow.io_utils import current_umask
from segflow.models.meta import CheckpointMeta

if TYPE_CHECKING:
    import onnx

FORMAT_NAME = "triton"
MODEL_NAME = "segflow"
"""The ensemble clients call; its parts are ``<name>_preprocess``, ``_onnx`` and ``_postprocess``."""
MARKER = "segflow_triton.json"
MARKER_FORMAT = "segflow-triton-repository"
VERSION = "1"
ONNX_FILE = "model.onnx"
PYTHON_FILE = "model.py"
MAX_QUEUE_DELAY_US = 5000
"""Dynamic batching waits at most 5 ms for more requests (segflow serve's ``--max-wait-ms``
default)."""
MAX_BATCH_SIZE = 8
"""Largest batch (segflow serve's ``--max-batch`` default); Triton only batches requests whose
H and W are equal."""
PREFERRED_BATCH_SIZES = (4, 8)
INSTANCE_COUNT = 1
UINT8_MAX = 255.0
CHAIN_CHECK_SIZES = ((1, 1), (2, 3), (1, 2))
"""Check images of ``stride * a + 3`` by ``stride * b + 5`` pixels: sides not multiples of the
stride, so the padding and cropping are exercised."""


def names(name: str = MODEL_NAME) -> dict[str, str]:
    """The repository's model names: ``ensemble``, ``preprocess``, ``onnx``, ``postprocess``."""
    return {
        "ensemble": name,
        "preprocess": f"{name}_preprocess",
        "onnx": f"{name}_onnx",
        "postprocess": f"{name}_postprocess",
    }


def is_segflow_repository(folder: Path) -> bool:
    """True when ``folder`` holds the marker file of a repository this module wrote."""
    try:
        return json.loads((folder / MARKER).read_text()).get("format") == MARKER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_triton_target(out: Path) -> None:
    """Refuses an ``--out`` that cannot hold the repository, before any model is loaded.

    A missing or empty folder is written; a previous segflow Triton repository is replaced.

    Raises:
        ConfigError: ``out`` is a file, its parent is a file, or it is a non-empty folder that
            segflow did not write.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; --format triton writes a folder, give a folder path")
    parent = next((p for p in out.parents if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder; choose another output path")
    if out.is_dir() and any(out.iterdir()) and not is_segflow_repository(out):
        raise ConfigError(
            f"--out {out} is a non-empty folder that is not a segflow Triton repository (no {MARKER}); "
            "choose a new or empty folder, or remove this one first"
        )


def spec_of(meta: CheckpointMeta) -> triton_model.Spec:
    """The pre/post :class:`~segflow.export.triton_model.Spec` of a model's metadata."""
    policy = meta.input_policy
    return triton_model.Spec(
        in_channels=meta.in_channels,
        max_value=float(meta.max_value),
        mode=policy.mode,
        size=None if policy.size is None else (int(policy.size[0]), int(policy.size[1])),
        scale=policy.scale,
        multiple=meta.stride,
    )


def image_type(meta: CheckpointMeta) -> str:
    """Triton data type of the ensemble's ``IMAGE``: uint8 for 8-bit models, uint16 above."""
    return "TYPE_UINT8" if meta.max_value <= UINT8_MAX else "TYPE_UINT16"


# --- config.pbtxt -----------------------------------------------------------------------------


def graph_tensors(model: onnx.ModelProto, kind: str) -> list[dict[str, Any]]:
    """``[{name, data_type, dims}]`` of the graph's inputs or outputs, batch dimension removed.

    ``data_type`` is Triton's (``TYPE_FP32`` ...); a symbolic dimension is ``-1``.

    Args:
        model: The loaded ONNX model.
        kind: ``input`` or ``output``.

    Raises:
        ExportCheckError: A tensor whose first dimension is not the dynamic batch.
    """
    from onnx.helper import tensor_dtype_to_np_dtype
    from tritonclient.utils import np_to_triton_dtype

    tensors = []
    for value in getattr(model.graph, kind):
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.dim_value > 0 else -1 for d in tensor.shape.dim]
        if not dims or dims[0] != -1:
            raise ExportCheckError(f"ONNX {kind} {value.name!r} has no dynamic batch dimension: {dims}")
        dtype = np_to_triton_dtype(tensor_dtype_to_np_dtype(tensor.elem_type))
        tensors.append({"name": value.name, "data_type": f"TYPE_{dtype}", "dims": dims[1:]})
    return tensors


def check_graph(inputs: list[dict[str, Any]], outputs: list[dict[str, Any]], meta: CheckpointMeta) -> None:
    """Checks the graph's tensors against the metadata (NCHW input of ``in_channels``, logits of K).

    Raises:
        ExportCheckError: They disagree (the export is broken; nothing is written).
    """
    image = next((t for t in inputs if t["name"] == INPUT_NAME), None)
    logits = next((t for t in outputs if t["name"] == LOGITS_OUTPUT), None)
    if image is None or image["dims"] != [meta.in_channels, -1, -1] or image["data_type"] != "TYPE_FP32":
        raise ExportCheckError(f"ONNX input {image} is not float32 ({meta.in_channels}, -1, -1)")
    if logits is None or logits["dims"] != [meta.output_channels, -1, -1]:
        raise ExportCheckError(f"ONNX output {logits} is not logits ({meta.output_channels}, -1, -1)")


def _tensor(name: str, data_type: str, dims: list[int]) -> dict[str, Any]:
    return {"name": name, "data_type": data_type, "dims": dims}


def _parameters(values: dict[str, str]) -> dict[str, Any]:
    return {key: {"string_value": value} for key, value in values.items()}


def _cpu_instances() -> list[dict[str, Any]]:
    return [{"count": INSTANCE_COUNT, "kind": "KIND_CPU"}]


def onnx_config(name: str, model: onnx.ModelProto, meta: CheckpointMeta) -> dict[str, Any]:
    """``config.pbtxt`` fields of the ONNX Runtime model, tensors read from ``model``'s graph."""
    inputs, outputs = graph_tensors(model, "input"), graph_tensors(model, "output")
    check_graph(inputs, outputs, meta)
    return {
        "name": name,
        "platform": "onnxruntime_onnx",
        "max_batch_size": MAX_BATCH_SIZE,
        "input": inputs,
        "output": outputs,
        "dynamic_batching": {
            "preferred_batch_size": list(PREFERRED_BATCH_SIZES),
            "max_queue_delay_microseconds": MAX_QUEUE_DELAY_US,
        },
        "instance_group": _cpu_instances(),
        "parameters": _parameters({triton_model.CLASSES_PARAMETER: json.dumps(meta.class_names)}),
    }


def python_config(name: str, role: str, meta: CheckpointMeta) -> dict[str, Any]:
    """``config.pbtxt`` fields of the preprocess or postprocess Python-backend model."""
    m = triton_model
    if role == m.ROLE_PRE:
        inputs = [_tensor(m.IMAGE, image_type(meta), [-1, -1, -1])]
        outputs = [
            _tensor(m.INPUT, "TYPE_FP32", [meta.in_channels, -1, -1]),
            _tensor(m.SIZES, "TYPE_INT64", [4]),
        ]
    else:
        inputs = [
            _tensor(m.LOGITS, "TYPE_FP32", [meta.output_channels, -1, -1]),
            _tensor(m.SIZES, "TYPE_INT64", [4]),
        ]
        outputs = [_tensor(m.LABELS, "TYPE_UINT8", [-1, -1])]
    parameters = {
        m.ROLE_PARAMETER: role,
        m.SPEC_PARAMETER: spec_of(meta).to_json(),
        m.CLASSES_PARAMETER: json.dumps(meta.class_names),
    }
    return {
        "name": name,
        "backend": "python",
        "max_batch_size": MAX_BATCH_SIZE,
        "input": inputs,
        "output": outputs,
        "instance_group": _cpu_instances(),
        "parameters": _parameters(parameters),
    }


def ensemble_config(model_names: dict[str, str], meta: CheckpointMeta) -> dict[str, Any]:
    """``config.pbtxt`` fields of the ensemble: preprocess -> ONNX -> postprocess."""
    m = triton_model
    steps = [
        {
            "model_name": model_names["preprocess"],
            "model_version": -1,
            "input_map": {m.IMAGE: m.IMAGE},
            "output_map": {m.INPUT: "network_input", m.SIZES: "sizes"},
        },
        {
            "model_name": model_names["onnx"],
            "model_version": -1,
            "input_map": {INPUT_NAME: "network_input"},
            "output_map": {LOGITS_OUTPUT: "network_logits"},
        },
        {
            "model_name": model_names["postprocess"],
            "model_version": -1,
            "input_map": {m.LOGITS: "network_logits", m.SIZES: "sizes"},
            "output_map": {m.LABELS: m.LABELS},
        },
    ]
    return {
        "name": model_names["ensemble"],
        "platform": "ensemble",
        "max_batch_size": MAX_BATCH_SIZE,
        "input": [_tensor(m.IMAGE, image_type(meta), [-1, -1, -1])],
        "output": [_tensor(m.LABELS, "TYPE_UINT8", [-1, -1])],
        "ensemble_scheduling": {"step": steps},
        "parameters": _parameters({m.CLASSES_PARAMETER: json.dumps(meta.class_names)}),
    }


def to_pbtxt(fields: dict[str, Any]) -> str:
    """Text format of a ``ModelConfig`` (Triton's schema): an unknown field or value raises."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    message = json_format.ParseDict(fields, model_config_pb2.ModelConfig())
    return str(text_format.MessageToString(message))


# --- the pre/ONNX/post chain, checked against the Predictor -----------------------------------


def chain_labels(session: Any, image: np.ndarray, spec: triton_model.Spec) -> np.ndarray:
    """What the ensemble answers for one ``(H, W, C)`` image, run here with ONNX Runtime.

    Args:
        session: ``onnxruntime.InferenceSession`` of the repository's ``model.onnx``.
        image: uint8/uint16 pixels.
        spec: The preprocess/postprocess spec.

    Returns:
        uint8 ``(H, W)`` labels.
    """
    x, sizes = triton_model.preprocess_batch(image[None], spec)
    (logits,) = session.run([LOGITS_OUTPUT], {INPUT_NAME: x})
    return triton_model.postprocess_batch(logits, sizes)[0]


def check_images(meta: CheckpointMeta) -> list[np.ndarray]:
    """Random images of :data:`CHAIN_CHECK_SIZES` in the model's channels and bit depth."""
    rng = np.random.default_rng(0)
    dtype = np.uint8 if meta.max_value <= UINT8_MAX else np.uint16
    top = int(min(meta.max_value, np.iinfo(dtype).max))
    return [
        rng.integers(0, top + 1, (meta.stride * a + 3, meta.stride * b + 5, meta.in_channels), dtype=dtype)
        for a, b in CHAIN_CHECK_SIZES
    ]


def check_chain(onnx_path: Path, meta: CheckpointMeta, log: Log) -> float:
    """Label agreement of the pre/ONNX/post chain with the Predictor on the same graph.

    Returns:
        The lowest per-image fraction of equal labels.

    Raises:
        ExportCheckError: Below ``MIN_ARGMAX_AGREEMENT`` on an image (the repository is not written).
    """
    import onnxruntime as ort

    from segflow.inference.backends import OnnxBackend
    from segflow.inference.predictor import Predictor

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    predictor = Predictor(OnnxBackend(onnx_path))
    spec = spec_of(meta)
    agreement = min(
        float(np.mean(chain_labels(session, image, spec) == predictor.predict(image).labels))
        for image in check_images(meta)
    )
    log(f"triton pre/post chain: {agreement * 100:.3f} % of labels equal to segflow's Predictor")
    if agreement < MIN_ARGMAX_AGREEMENT:
        raise ExportCheckError(
            f"the Triton pre/post chain agrees with segflow's Predictor on only {agreement * 100:.3f} % "
            "of pixels; the repository was not written (report this as a segflow bug)"
        )
    return agreement


# --- the repository ---------------------------------------------------------------------------


def logits_only(onnx_path: Path) -> None:
    """Cuts the checked export at ``onnx_path`` down to its ``logits`` output, in place.

    The ensemble only uses ``logits``, and ONNX Runtime runs every node whatever is fetched, so
    the ``probs``/``labels`` heads would cost each request a softmax and an argmax over the
    image (+15-29 % for a 512x512 Unet-R34). The cut is :func:`logits_graph`'s, the very graph
    the parity check ran (``OnnxBackend`` runs it too); the export record lists the one output.
    """
    import onnx

    content = logits_graph(onnx_path)
    model = onnx.load_from_string(content) if isinstance(content, bytes) else onnx.load(str(onnx_path))
    props = {p.key: p.value for p in model.metadata_props}
    export = json.loads(props.get(EXPORT_KEY, "{}"))
    export["outputs"] = [LOGITS_OUTPUT]
    for entry in model.metadata_props:
        if entry.key == EXPORT_KEY:
            entry.value = json.dumps(export)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))


def _write_model(folder: Path, config: dict[str, Any]) -> None:
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(to_pbtxt(config))


def build_repository(request: ExportRequest, folder: Path) -> ExportResult:
    """Writes and checks the whole repository into the (new, empty) ``folder``."""
    import onnx

    meta, model_names = request.meta, names()
    onnx_path = folder / model_names["onnx"] / VERSION / ONNX_FILE
    result = staged_onnx(request, onnx_path)
    logits_only(onnx_path)
    check_chain(onnx_path, meta, request.log)
    graph = onnx.load(str(onnx_path), load_external_data=False)
    _write_model(folder / model_names["onnx"], onnx_config(model_names["onnx"], graph, meta))
    template = Path(triton_model.__file__).read_text()
    for role in triton_model.ROLES:
        _write_model(folder / model_names[role], python_config(model_names[role], role, meta))
        (folder / model_names[role] / VERSION / PYTHON_FILE).write_text(template)
    _write_model(folder / model_names["ensemble"], ensemble_config(model_names, meta))
    export = json.loads({p.key: p.value for p in graph.metadata_props}.get(EXPORT_KEY, "{}"))
    marker = {
        "format": MARKER_FORMAT,
        "segflow_version": segflow.__version__,
        "models": model_names,
        "call": model_names["ensemble"],
        "classes": meta.class_names,
        "onnx_export": export,
    }
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return result


def _swap_in(staged: Path, out: Path) -> None:
    """Renames ``staged`` onto ``out``; an empty folder or a previous repository there is
    moved aside first and removed afterwards (``check_triton_target`` refused anything else)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    staged.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_triton_repository(request: ExportRequest) -> ExportResult:
    """Writes a checked Triton model repository at ``request.out`` (see the module docstring).

    Raises:
        ConfigError: An ``--out`` that cannot be written, or options the repository cannot honour.
        ExportCheckError: The ONNX export or the pre/post chain failed its check; ``--out`` is
            left as it was.
    """
    out = Path(request.out)
    check_triton_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        os.chmod(staged, 0o777 & ~current_umask())  # mkdtemp's 0700 would hide the repository from Triton
        result = build_repository(request, staged)
        replaced = is_segflow_repository(out)
        _swap_in(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    if replaced:
        request.log(f"replaced the previous segflow Triton repository at {out}")
    request.log(f"wrote the Triton repository {out} (call model {MODEL_NAME!r})")
    result.path = out
    return result


TRITON_FORMAT = register_format(
    ExportFormat(
        name=FORMAT_NAME,
        suffix="",
        write=write_triton_repository,
        folder=True,
        onnx_based=True,
        help="Triton model repository: ONNX model, ensemble with pre/post-processing (docs/deploy.md).",
        check_target=check_triton_target,
        input_formats=(INPUT_FLOAT_NCHW,),  # the preprocess model feeds the graph float32 NCHW
    )
)
