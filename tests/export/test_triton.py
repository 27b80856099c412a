"""Triton repository: configs valid under Triton's protobuf schema and consistent with the ONNX
graph, and the pre/post-processing equal to the Predictor pixel for pixel.

No Triton server runs here. The configs are parsed with Triton's own ``ModelConfig`` schema
(``tritonclient``), which rejects any unknown field. The ensemble is replayed step by step from
its ``config.pbtxt`` mappings: the repository's own ``model.py`` files run through their
``TritonPythonModel`` class (with :class:`PbUtils`, a minimal stand-in for the in-process
``triton_python_backend_utils`` module that exists only inside Triton), and the ONNX step runs in
ONNX Runtime, as Triton's onnxruntime backend would.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from segflow.errors import ConfigError
from segflow.export import triton_model
from segflow.export.base import ExportRequest
from segflow.export.onnx import export_onnx
from segflow.export.parity import ExportCheckError, sample_batches
from segflow.export.triton import (
    MARKER,
    check_triton_target,
    names,
    spec_of,
    write_triton_repository,
)
from segflow.inference.backends import OnnxBackend
from segflow.inference.postprocess import probs_to_labels, softmax
from segflow.inference.predictor import Predictor
from segflow.models.meta import CheckpointMeta

ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32,
    onnx.TensorProto.UINT8: model_config_pb2.TYPE_UINT8,
    onnx.TensorProto.INT64: model_config_pb2.TYPE_INT64,
}
NP_TO_TRITON = {
    np.dtype(np.float32): model_config_pb2.TYPE_FP32,
    np.dtype(np.uint8): model_config_pb2.TYPE_UINT8,
    np.dtype(np.uint16): model_config_pb2.TYPE_UINT16,
    np.dtype(np.int64): model_config_pb2.TYPE_INT64,
}
STRIDE = 8  # tests/export/conftest.py: TinyNet
SIZES = [(8, 8), (19, 27), (33, 8), (5, 70), (1, 1)]
"""Image sizes, most of them not multiples of the stride (1 x 1: reflect padding falls back to edge)."""


def _request(
    net: torch.nn.Module, meta: dict[str, Any], out: Path, lines: list[str] | None = None, **changes: Any
) -> ExportRequest:
    info = CheckpointMeta.of_module(net, meta)
    log = (lines if lines is not None else []).append
    return ExportRequest(
        net=net, meta=info, out=out, batches=sample_batches(info.in_channels, info.stride), log=log, **changes
    )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, make_tiny: Any) -> Path:
    net, meta = make_tiny(3)
    out = tmp_path_factory.mktemp("triton") / "repo"
    write_triton_repository(_request(net, meta, out))
    return out


@pytest.fixture(scope="module")
def full_onnx(tmp_path_factory: pytest.TempPathFactory, make_tiny: Any) -> Path:
    """segflow's plain (logits, probs, labels) ONNX export of the net the repository holds."""
    net, meta = make_tiny(3)
    return export_onnx(net, meta, tmp_path_factory.mktemp("full") / "full.onnx")


def _config(repo: Path, model: str) -> model_config_pb2.ModelConfig:
    """The model's config.pbtxt parsed strictly (an unknown field raises ParseError)."""
    return text_format.Parse((repo / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def _configs(repo: Path) -> dict[str, model_config_pb2.ModelConfig]:
    return {folder.name: _config(repo, folder.name) for folder in repo.iterdir() if folder.is_dir()}


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value if d.dim_param == "" else -1 for d in value.type.tensor_type.shape.dim]


# --- configs -----------------------------------------------------------------------------------


def test_the_schema_parser_is_strict() -> None:
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "x"\nmax_batch: 4\n', model_config_pb2.ModelConfig())


def test_every_model_folder_has_a_valid_config_named_like_it(repo: Path) -> None:
    configs = _configs(repo)
    assert set(configs) == set(names().values())
    for folder, config in configs.items():
        assert config.name == folder
        assert (repo / folder / "1").is_dir()
        assert config.max_batch_size > 0
    assert (repo / names()["onnx"] / "1" / "model.onnx").is_file()
    marker = json.loads((repo / MARKER).read_text())
    assert marker["models"] == names() and marker["call"] == "segflow"


def test_onnx_config_matches_the_graph_and_the_metadata(repo: Path) -> None:
    model_name = names()["onnx"]
    config = _config(repo, model_name)
    graph = onnx.load(str(repo / model_name / "1" / "model.onnx"))
    meta = OnnxBackend(repo / model_name / "1" / "model.onnx").meta
    assert config.platform == "onnxruntime_onnx"
    for declared, actual in [(config.input, graph.graph.input), (config.output, graph.graph.output)]:
        assert [t.name for t in declared] == [v.name for v in actual]
        for tensor, value in zip(declared, actual, strict=True):
            assert tensor.data_type == ONNX_TO_TRITON[value.type.tensor_type.elem_type]
            assert [-1, *tensor.dims] == _dims(value)  # batch dimension left to max_batch_size
    assert list(config.input[0].dims) == [meta.in_channels, -1, -1]
    assert list(config.output[0].dims) == [meta.output_channels, -1, -1]
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert config.max_batch_size >= max(config.dynamic_batching.preferred_batch_size)
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert json.loads(config.parameters["classes"].string_value) == meta.class_names == ["c0", "c1", "c2"]


def test_the_onnx_model_is_cut_down_to_logits(repo: Path) -> None:
    """ONNX Runtime runs every node whatever is fetched: the probs/labels heads the ensemble
    throws away must not be in the graph at all."""
    model_name = names()["onnx"]
    graph = onnx.load(str(repo / model_name / "1" / "model.onnx"))
    assert [v.name for v in graph.graph.output] == ["logits"]
    assert [t.name for t in _config(repo, model_name).output] == ["logits"]
    assert not {"Softmax", "ArgMax"} & {node.op_type for node in graph.graph.node}
    export = json.loads({p.key: p.value for p in graph.metadata_props}["segflow_export"])
    assert export["outputs"] == ["logits"]
    onnx.checker.check_model(graph)


def test_python_models_carry_the_template_and_the_spec(repo: Path) -> None:
    meta = OnnxBackend(repo / names()["onnx"] / "1" / "model.onnx").meta
    template = Path(triton_model.__file__).read_text()
    for role in triton_model.ROLES:
        config = _config(repo, names()[role])
        assert config.backend == "python"
        assert config.parameters["role"].string_value == role
        assert triton_model.Spec.from_json(config.parameters["segflow"].string_value) == spec_of(meta)
        assert (repo / names()[role] / "1" / "model.py").read_text() == template


def test_model_py_imports_only_numpy_and_the_standard_library(repo: Path) -> None:
    tree = ast.parse((repo / names()["preprocess"] / "1" / "model.py").read_text())
    top = {
        ((node.module or "") if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert top <= {"__future__", "json", "dataclasses", "typing", "numpy"}
    everywhere = {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert "triton_python_backend_utils" in everywhere - top  # imported inside methods only


def test_ensemble_steps_refer_to_existing_models_and_tensors(repo: Path) -> None:
    configs = _configs(repo)
    ensemble = configs[names()["ensemble"]]
    assert ensemble.platform == "ensemble"
    known = {t.name: (t.data_type, list(t.dims)) for t in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        inputs = {t.name: (t.data_type, list(t.dims)) for t in model.input}
        outputs = {t.name: (t.data_type, list(t.dims)) for t in model.output}
        assert set(step.input_map) == set(inputs), step.model_name  # every input fed
        for model_input, tensor in step.input_map.items():
            assert tensor in known, f"{step.model_name} reads {tensor} before any step wrote it"
            assert known[tensor][0] == inputs[model_input][0]
            assert _compatible(known[tensor][1], inputs[model_input][1])
        assert ensemble.max_batch_size <= model.max_batch_size
        for model_output, tensor in step.output_map.items():
            assert model_output in outputs
            known[tensor] = outputs[model_output]
    for output in ensemble.output:
        assert known[output.name] == (output.data_type, list(output.dims))
    assert json.loads(ensemble.parameters["classes"].string_value) == ["c0", "c1", "c2"]


def _compatible(a: list[int], b: list[int]) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


# --- the ensemble replayed, against the Predictor ----------------------------------------------


@dataclass
class _Tensor:
    name: str
    array: np.ndarray

    def as_numpy(self) -> np.ndarray:
        return self.array


@dataclass
class _Response:
    output_tensors: list[_Tensor]
    error: Any = None


class PbUtils(types.ModuleType):
    """The part of Triton's in-process ``triton_python_backend_utils`` that ``model.py`` uses."""

    def __init__(self) -> None:
        super().__init__("triton_python_backend_utils")
        self.Tensor = _Tensor
        self.InferenceResponse = _Response
        self.TritonError = str

    @staticmethod
    def get_input_tensor_by_name(request: dict[str, _Tensor], name: str) -> _Tensor:
        return request[name]


@pytest.fixture
def pb_utils(monkeypatch: pytest.MonkeyPatch) -> PbUtils:
    module = PbUtils()
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", module)
    return module


class Ensemble:
    """Runs the repository's ensemble from its config: python steps through the repository's own
    model.py, the ONNX step in ONNX Runtime."""

    def __init__(self, repo: Path) -> None:
        self.configs = _configs(repo)
        self.steps: dict[str, Any] = {}
        for name, config in self.configs.items():
            if config.backend == "python":
                spec = importlib.util.spec_from_file_location(
                    f"triton_{name}", repo / name / "1" / "model.py"
                )
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                sys.modules[spec.name] = module  # as an import would (dataclasses look themselves up)
                try:
                    spec.loader.exec_module(module)
                finally:
                    del sys.modules[spec.name]
                model = module.TritonPythonModel()
                model.initialize(
                    {"model_config": json_format.MessageToJson(config, preserving_proto_field_name=True)}
                )
                self.steps[name] = model
            elif config.platform == "onnxruntime_onnx":
                path = repo / name / "1" / "model.onnx"
                self.steps[name] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        ensemble = self.configs[names()["ensemble"]]
        tensors = {ensemble.input[0].name: image[None]}  # Triton adds the batch dimension
        for step in ensemble.ensemble_scheduling.step:
            feed = {key: tensors[value] for key, value in step.input_map.items()}
            model = self.steps[step.model_name]
            declared = {t.name: t.data_type for t in self.configs[step.model_name].input}
            assert all(NP_TO_TRITON[array.dtype] == declared[key] for key, array in feed.items())
            if isinstance(model, ort.InferenceSession):
                produced = dict(zip(step.output_map, model.run(list(step.output_map), feed), strict=True))
            else:
                request = {key: _Tensor(key, array) for key, array in feed.items()}
                (response,) = model.execute([request])
                assert response.error is None, response.error
                produced = {t.name: t.array for t in response.output_tensors}
            tensors.update({step.output_map[key]: array for key, array in produced.items()})
        return tensors[ensemble.output[0].name][0]


@pytest.mark.parametrize("channels", [3, 1, 4])
def test_ensemble_labels_equal_the_predictor_pixel_for_pixel(
    repo: Path, full_onnx: Path, pb_utils: PbUtils, channels: int
) -> None:
    """Against the Predictor on segflow's full (three-output) export of the same net, so the
    logits-only cut is checked too."""
    ensemble = Ensemble(repo)
    predictor = Predictor(OnnxBackend(full_onnx))
    rng = np.random.default_rng(channels)
    for height, width in SIZES:
        image = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        labels = ensemble(image)
        assert labels.dtype == np.uint8 and labels.shape == (height, width)
        np.testing.assert_array_equal(labels, predictor.predict(image).labels, err_msg=f"{height}x{width}")


def test_ensemble_answers_an_error_not_a_crash_for_a_bad_image(repo: Path, pb_utils: PbUtils) -> None:
    pre = Ensemble(repo).steps[names()["preprocess"]]
    (response,) = pre.execute([{"IMAGE": _Tensor("IMAGE", np.zeros((1, 4, 4, 3), np.float32))}])
    assert response.output_tensors == [] and "uint8 or uint16" in response.error


class _PolicyBackend:
    """The repository's ONNX graph under another input policy or bit depth (the policy and the
    pixel scaling live outside the graph, so one graph serves every variant)."""

    def __init__(self, onnx_path: Path, **meta_changes: Any) -> None:
        self.onnx = OnnxBackend(onnx_path)
        raw = self.onnx.meta.to_dict()
        for key, value in meta_changes.items():
            raw[key] = {**raw[key], **value}
        self.meta = CheckpointMeta.of(raw)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.onnx.forward(x)


@pytest.mark.parametrize(
    ("changes", "dtype"),
    [
        ({"input_policy": {"mode": "resize", "size": [24, 40]}}, np.uint8),
        ({"input_policy": {"mode": "scale", "scale": 0.6}}, np.uint8),
        ({"input_policy": {"mode": "keep"}, "normalization": {"max_value": 4095.0}}, np.uint16),
        ({"input_policy": {"mode": "keep"}}, np.uint16),
    ],
    ids=["resize", "scale", "12-bit", "16-bit-image-8-bit-model"],
)
def test_pre_post_functions_equal_the_predictor_under_each_policy(
    repo: Path, changes: dict[str, Any], dtype: type
) -> None:
    path = repo / names()["onnx"] / "1" / "model.onnx"
    backend = _PolicyBackend(path, **changes)
    predictor, spec = Predictor(backend), spec_of(backend.meta)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    for height, width in SIZES[1:4]:
        image = rng.integers(0, np.iinfo(dtype).max, (height, width, 3), dtype=dtype, endpoint=True)
        x, sizes = triton_model.preprocess_batch(image[None], spec)
        assert x.shape[2] % STRIDE == 0 and x.shape[3] % STRIDE == 0
        (logits,) = session.run(["logits"], {"image": x})
        labels = triton_model.postprocess_batch(logits, sizes)[0]
        np.testing.assert_array_equal(labels, predictor.predict(image).labels, err_msg=f"{height}x{width}")


def test_single_logit_post_processing_equals_segflow() -> None:
    # Within about 1e-7 of logit 0 the class depends on the last bit of exp (segflow uses
    # OpenCV's, model.py NumPy's): no such logit here, and none in the Predictor comparisons.
    logits = np.random.default_rng(2).normal(0, 3, (1, 1, 13, 17)).astype(np.float32)
    logits[0, 0, 0, :3] = [0.0, 1e-3, -1e-3]  # at and near the 0.5 boundary
    sizes = np.array([13, 17, 13, 17])
    expected = probs_to_labels(softmax(logits)[0])
    np.testing.assert_array_equal(triton_model.postprocess(logits[0], sizes), expected)


# --- writing the folder ------------------------------------------------------------------------


def test_a_foreign_non_empty_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError) as err:
        check_triton_target(tmp_path)
    assert "not a segflow Triton repository" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_triton_target(tmp_path / "file")
    check_triton_target(tmp_path / "new")  # a missing folder is fine


def test_uint8_input_and_int8_are_refused(
    tmp_path: Path, tiny_net: torch.nn.Module, meta: dict, shapes_yaml: Path
) -> None:
    from segflow.export.pipeline import Int8Options, export_model

    with pytest.raises(
        ConfigError, match="--input uint8-nhwc does not apply to --format triton; it takes float-nchw"
    ):
        export_model((tiny_net, meta), tmp_path / "r", fmt="triton", input_format="uint8-nhwc")
    with pytest.raises(
        ConfigError, match=r"--int8 needs one of --format onnx, openvino, tflite \(got --format triton\)"
    ):
        export_model((tiny_net, meta), tmp_path / "r", fmt="triton", int8=Int8Options(shapes_yaml))
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_a_previous_repository_is_replaced_and_a_failed_export_leaves_it(
    tmp_path: Path, tiny_net: torch.nn.Module, meta: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "repo"
    out.mkdir()  # an empty folder is written into
    write_triton_repository(_request(tiny_net, meta, out))
    before = (out / MARKER).read_text()
    (out / names()["onnx"] / "stale").write_text("left by an older export")

    def broken(*_args: Any) -> float:
        raise ExportCheckError("chain check failed")

    monkeypatch.setattr("segflow.export.triton.check_chain", broken)
    with pytest.raises(ExportCheckError):
        write_triton_repository(_request(tiny_net, meta, out))
    assert (out / MARKER).read_text() == before and (out / names()["onnx"] / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # no partial folder left
    monkeypatch.undo()
    lines: list[str] = []
    write_triton_repository(_request(tiny_net, meta, out, lines))
    assert not (out / names()["onnx"] / "stale").exists()
    assert any(line.startswith("replaced the previous segflow Triton repository") for line in lines)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


# --- the command line --------------------------------------------------------------------------


@pytest.mark.slow
def test_segflow_export_format_triton_writes_the_repository_beside_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import segflow.export.triton  # noqa: F401  (registers --format triton, as segflow.export does)
    from segflow.cli.main import main
    from segflow.models import build_meta, create_model, save_model_checkpoint

    net = create_model("unet", "resnet18", 3, 2, encoder_depth=3, decoder_channels=(32, 16, 8))
    policy = {"mode": "keep", "multiple": net.output_stride}
    meta = build_meta(net, ["sky", "road"], None, 255, {"max_value": 255.0}, policy, None, {"name": "cli"})
    checkpoint = save_model_checkpoint(tmp_path / "best.ckpt", net, meta)
    assert main(["export", str(checkpoint), "--format", "triton"]) == 0
    repo = tmp_path / "best_triton"
    assert json.loads((repo / MARKER).read_text())["classes"] == ["sky", "road"]
    assert json.loads(_config(repo, "segflow").parameters["classes"].string_value) == ["sky", "road"]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    capsys.readouterr()
    assert main(["export", str(checkpoint), "--format", "triton", "--out", str(foreign)]) == 1
    error = capsys.readouterr().err.strip()
    assert "not a segflow Triton repository" in error and "\n" not in error
    assert sorted(p.name for p in foreign.iterdir()) == ["keep.txt"]
