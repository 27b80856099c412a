"""TFLite / LiteRT export: ``segflow export CKPT --format tflite [--int8 --calib DATA.yaml]``.

Path: segflow's parity-checked fp32 ONNX export (:func:`segflow.export.base.staged_onnx`) ->
its ``logits`` output alone (``probs`` and ``labels`` are cut off: softmax and argmax run
outside the model, in the Predictor, as for every backend) -> ``onnx2tf`` (TensorFlow's
TFLite converter) in its own cached virtualenv (:mod:`segflow.export.converter_venv`, pinned
by ``tflite_requirements.txt``), because TensorFlow needs other numpy and protobuf releases
than segflow. Only ``ai-edge-litert`` (the runtime) lives in segflow's environment.

What comes out:

- ``<out>.tflite``: fp32, input float32 ``(1, H, W, C)`` NHWC in [0, 1] (normalisation inside),
  output logits ``(1, H, W, K)``. ``H, W`` are fixed at export (``input_size`` in the export
  record, and the ``wrote ... (fixed input HxW)`` log line): the converter bakes the decoder's
  resize sizes into the graph. The size (:func:`model_size`) does not depend on ``--calib``:
  the model's ``input_policy.size`` when its policy fixes one (``resize``), else the training
  crop or patch size recorded in the metadata (``augment.crop_size`` of the training config,
  else the data's ``window`` / ``tile`` / ``patch_size`` / ``size`` option), else
  :data:`DEFAULT_SIDE` (512) rounded up to the stride, as a square.
- Other sizes: the ``tflite`` backend runs them as overlapping windows of the model size
  (:mod:`segflow.inference.litert_backend`, overlap 0.25, Gaussian blend); a non-square
  model accepts only its own size. Windowed predictions are close to, not identical with,
  the eager net on the whole image (the net sees less context per window and the blend
  mixes window edges): on small test models about 93-99 % argmax agreement at sizes such as
  300x257 or 384x613. The export measures it on one image about 2.5x the model size (not a
  multiple of it) and logs ``tflite windows at WxH: argmax agreement X %``; it is
  informational, not gated. Export at the size you predict at (``input_policy`` ``resize``)
  or use the ``onnx`` backend for exact whole-image predictions.
- With ``--int8``: ``<stem>.int8.tflite``, full-integer quantisation (int8 weights,
  activations, input and output; per-channel weights), calibrated on up to
  ``--calib-images`` train images of ``--calib`` (cropped or reflect-padded to the model
  size), kept only if it passes the one INT8 gate (:func:`segflow.export.base.int8_gate`).
- The checkpoint meta and the export record are embedded in the flatbuffer's metadata.

Checks: the fp32 model must match the eager net with >= 99.9 % argmax agreement in the
LiteRT interpreter at the model size (parity images cropped or padded to it, so both see the
same pixels); the windowed path at a larger size is measured and logged only; INT8 parity is
informational and its mIoU drop is gated. Nothing is renamed into place before its check passed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

import segflow
from segflow.errors import ConfigError
from segflow.export.base import (
    CALIB_SPLIT,
    ExportFormat,
    ExportRequest,
    ExportResult,
    calibration_batches,
    checked,
    int8_gate,
    register_format,
    staged_onnx,
)
from segflow.export.converter_venv import ConverterError, converter_python, run_converter
from segflow.export.onnx import INPUT_NAME
from segflow.export.parity import check_parity, torch_forward
from segflow.inference.backends import EXPORT_KEY, INPUT_FLOAT_NCHW, LOGITS_OUTPUT, META_KEY
from segflow.inference.litert_backend import (
    LAYOUT_NHWC,
    TFLITE_SUFFIX,
    LiteRTBackend,
    embed_tflite_metadata,
    int8_tflite_path,
)
from segflow.io_utils import atomic_write

LOCK_FILE = Path(__file__).with_name("tflite_requirements.txt")
VENV_NAME = "onnx2tf"
CONVERTER_MODULE = "onnx2tf"
CONVERT_TIMEOUT_S = 1800.0
SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
"""onnx2tf validates 3-channel models on this file in its working folder and downloads it when it
is missing; segflow writes its own parity images there, so nothing is fetched."""
FLOAT_SUFFIX = "_float32.tflite"
INT8_SUFFIX = "_full_integer_quant.tflite"
QUANT_FORMAT = "full-integer int8 (per-channel weights), TFLite converter"
TFLITE_CALIBRATION = "minmax"
DEFAULT_SIDE = 512
"""Model side (rounded up to the stride) when neither the input policy nor the training
metadata fixes a size."""
WINDOW_SCALE = (2.5, 2.25)
"""The windowed-path check image is about this many model heights / widths (not a multiple)."""


def converter_versions() -> str:
    """``onnx2tf X + tensorflow-cpu Y``, read from the lock file."""
    pins = dict(
        line.split("==", 1) for line in LOCK_FILE.read_text().splitlines() if "==" in line and line[0] != "#"
    )
    onnx2tf, tensorflow = pins.get("onnx2tf", "?"), pins.get("tensorflow_cpu", "?")
    return f"onnx2tf {onnx2tf} (tf_converter) + tensorflow-cpu {tensorflow}"


def model_size(request: ExportRequest) -> tuple[int, int]:
    """The fixed ``(H, W)`` of the TFLite model, independent of the parity images (so of ``--calib``).

    The size the metadata fixes (:func:`segflow.inference.preprocess.recorded_input_size`:
    ``resize`` policy, else training crop, else the data options' training image size), else
    :data:`DEFAULT_SIDE` square; padded up to the input policy's multiple.
    """
    from segflow.inference.preprocess import InputPolicy, padded_size, recorded_input_size

    size = recorded_input_size(request.meta)
    multiple = InputPolicy.from_meta(request.meta).multiple
    return size if size is not None else padded_size(DEFAULT_SIDE, DEFAULT_SIDE, multiple)


def window_check_size(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """About :data:`WINDOW_SCALE` times ``size``, multiples of ``stride`` but not of ``size``."""
    out = []
    for side, scale in zip(size, WINDOW_SCALE, strict=True):
        value = -(-int(side * scale) // stride) * stride
        if value % side == 0:
            value += stride
        out.append(value)
    return out[0], out[1]


def log_window_agreement(request: ExportRequest, backend: LiteRTBackend, size: tuple[int, int]) -> None:
    """Logs the argmax agreement of the windowed path (``backend.forward`` at a larger size that
    is not a multiple of the model size) with the eager net; informational, not gated."""
    if size[0] != size[1]:
        request.log(
            f"tflite windows: none (the model is {size[0]}x{size[1]}, not square, so it takes that size only)"
        )
        return
    height, width = window_check_size(size, request.meta.stride)
    image = fit(request.batches[0][:1], (height, width))
    report = check_parity(torch_forward(request.net), backend.forward, [image])
    request.log(
        f"tflite windows at {width}x{height}: argmax agreement {report.argmax_agreement * 100:.2f} %; "
        f"other sizes are predicted as windows of the model size {size[0]}x{size[1]}"
    )


def fit(batch: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(N, C, H, W)`` reflect-padded at the bottom/right up to ``size``, then cropped to it."""
    pad_h, pad_w = max(size[0] - batch.shape[2], 0), max(size[1] - batch.shape[3], 0)
    if pad_h or pad_w:
        batch = np.pad(batch, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)), mode="reflect")
    return np.ascontiguousarray(batch[:, :, : size[0], : size[1]], dtype=np.float32)


def nhwc_stack(batches: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Images fitted to ``size`` as one float32 ``(N, H, W, C)`` array (onnx2tf's data layout)."""
    return np.concatenate([fit(batch, size) for batch in batches]).transpose(0, 2, 3, 1).copy()


def logits_only(source: Path, dest: Path) -> Path:
    """The ONNX graph from ``image`` to ``logits`` (softmax and argmax cut off)."""
    import onnx.utils

    onnx.utils.extract_model(str(source), str(dest), [INPUT_NAME], [LOGITS_OUTPUT])
    return dest


def convert(
    request: ExportRequest, onnx_path: Path, work: Path, size: tuple[int, int], calib: np.ndarray | None
) -> dict[str, Path]:
    """Runs onnx2tf in its venv on ``onnx_path`` at the fixed ``size``.

    Returns:
        ``{"fp32": path}`` and, with ``calib``, ``"int8": path`` (files inside ``work``).

    Raises:
        ConverterEnvError: The converter venv cannot be built.
        ConverterError: onnx2tf failed, timed out or wrote no model.
    """
    python = converter_python(VENV_NAME, LOCK_FILE, log=request.log)
    channels = request.meta.in_channels
    np.save(work / SAMPLE_FILE, nhwc_stack(request.batches, size))
    out = work / "tflite"
    args = [CONVERTER_MODULE, "-i", str(onnx_path), "-o", str(out), "-n"]
    args += ["-ois", f"{INPUT_NAME}:1,{channels},{size[0]},{size[1]}"]
    if calib is not None:
        np.save(work / "calib.npy", calib)
        zeros, ones = json.dumps([[[[0.0] * channels]]]), json.dumps([[[[1.0] * channels]]])
        args += ["-oiqt", "-qt", "per-channel", "-cind", INPUT_NAME, str(work / "calib.npy"), zeros, ones]
    request.log(f"converting to TFLite with {converter_versions()} at {size[0]}x{size[1]}")
    run_converter(python, args, work, f"onnx2tf on {request.out.name}", CONVERT_TIMEOUT_S)
    found = {"fp32": out / (onnx_path.stem + FLOAT_SUFFIX)}
    if calib is not None:
        found["int8"] = out / (onnx_path.stem + INT8_SUFFIX)
    for kind, path in found.items():
        if not path.is_file():
            raise ConverterError(
                f"onnx2tf finished but wrote no {kind} model {path.name} for {request.out.name}; "
                "nothing was written"
            )
    return found


def export_record(
    request: ExportRequest, size: tuple[int, int], quantization: dict[str, Any] | None
) -> dict[str, Any]:
    """The ``segflow_export`` metadata of a TFLite export."""
    return {
        "format": "tflite",
        "input_name": INPUT_NAME,
        "input_format": "float-nhwc",
        "input_layout": LAYOUT_NHWC,
        "input_size": list(size),
        "outputs": [LOGITS_OUTPUT],
        "output_layout": LAYOUT_NHWC,
        "output_stride": int(request.meta.stride),
        "opset": int(request.opset),
        "exporter": f"segflow ONNX (logits only) -> {converter_versions()}",
        "segflow_version": segflow.__version__,
        "quantization": quantization,
    }


def stage(request: ExportRequest, converted: Path, dest: Path, record: dict[str, Any]) -> LiteRTBackend:
    """Writes the converter's model with segflow's metadata embedded to ``dest`` and loads it."""
    content = embed_tflite_metadata(
        converted.read_bytes(), {META_KEY: request.meta.to_json(), EXPORT_KEY: json.dumps(record)}
    )
    dest.write_bytes(content)
    return LiteRTBackend(dest)


def check_target(out: Path) -> None:
    """Refuses an ``--out`` without the ``.tflite`` suffix (runtimes and ``--backend`` pick by it).

    Raises:
        ConfigError: Another suffix.
    """
    if out.suffix.lower() != TFLITE_SUFFIX:
        raise ConfigError(
            f"--out {out}: --format tflite writes a .tflite file; give a path such as {out.stem}.tflite"
        )


def write_tflite(request: ExportRequest) -> ExportResult:
    """Exports, converts and checks (see the module docstring).

    Raises:
        ConfigError: An option the format cannot honour.
        ConverterEnvError: The converter venv cannot be built (names the package pip refused).
        ConverterError: onnx2tf failed or timed out (its error lines).
        ExportCheckError: fp32 parity below 99.9 %, or INT8 refused by the mIoU gate (the fp32
            model is then kept and no ``.int8.tflite`` written).
    """
    check_target(request.out)
    size = model_size(request)
    calib = nhwc_stack(calibration_batches(request), size) if request.int8 is not None else None
    int8_out = int8_tflite_path(request.out)
    with tempfile.TemporaryDirectory(prefix="segflow-tflite-") as folder:
        work = Path(folder)
        onnx_path = logits_only(staged_onnx(request, work / "segflow.onnx").path, work / "model.onnx")
        converted = convert(request, onnx_path, work, size, calib)
        with atomic_write(request.out) as staged:
            fp32 = stage(request, converted["fp32"], staged, export_record(request, size, None))
            fitted = [fit(batch, size) for batch in request.batches]
            report = checked(
                check_parity(torch_forward(request.net), fp32.forward, fitted), "tflite fp32", request.log
            )
            log_window_agreement(request, fp32, size)
        request.log(f"wrote {request.out} (fixed input {size[0]}x{size[1]})")
        result = ExportResult(request.out, report)
        if request.int8 is None:
            return result
        if int8_out.exists():
            int8_out.unlink()
            request.log(f"removed the previous INT8 model {int8_out}")
        fp32 = LiteRTBackend(request.out)
        with atomic_write(int8_out) as staged:
            quant = {
                "format": QUANT_FORMAT,
                "data": str(request.int8.calib),
                "images": int(calib.shape[0]) if calib is not None else 0,
                "split": CALIB_SPLIT,
                "calibration": TFLITE_CALIBRATION,
            }
            int8 = stage(request, converted["int8"], staged, export_record(request, size, quant))
            result.miou, result.int8_parity = int8_gate(request, fp32, int8, "tflite", request.out, int8_out)
        request.log(f"wrote {int8_out}")
        result.int8_path = int8_out
        return result


TFLITE_FORMAT = register_format(
    ExportFormat(
        name="tflite",
        suffix=TFLITE_SUFFIX,
        write=write_tflite,
        int8=True,
        onnx_based=True,
        check_target=check_target,
        input_formats=(INPUT_FLOAT_NCHW,),  # the model takes float32 NHWC in [0, 1]
        calibrations=(TFLITE_CALIBRATION,),  # TensorFlow's converter calibrates min/max
        help="TFLite / LiteRT flatbuffer (NHWC, fixed size; --int8: full-integer), converted by onnx2tf "
        "in its own cached venv",
    )
)
