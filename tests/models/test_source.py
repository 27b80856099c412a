"""The MODEL argument: one parser, a registry of schemes, one line for an unknown form."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.errors import CheckpointError, ConfigError
from segflow.models.source import MODEL_SCHEMES, ModelSource, parse_model_source

FILE_FORM = "PATH (a model file: .ckpt, .pt, .safetensors, .onnx, .ts or .pt2)"
SPEC_FORM = "arch:encoder:classes (random weights, for benchmark, e.g. unet:resnet34:12)"


def test_registered_schemes() -> None:
    assert MODEL_SCHEMES.names() == ["file", "models", "spec"]  # models: segflow.tracking.scheme


def test_file_path_and_explicit_prefix(tmp_path: Path) -> None:
    model = tmp_path / "best.ckpt"
    model.write_bytes(b"x")
    assert parse_model_source(str(model)) == ModelSource("file", str(model), path=model)
    assert parse_model_source(f"file:{model}").path == model


def test_file_named_like_a_spec_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("unet:resnet34:3").write_bytes(b"x")
    assert parse_model_source("unet:resnet34:3", accept=("file", "spec")).scheme == "file"


def test_spec() -> None:
    source = parse_model_source("unet:resnet34:12", accept=("file", "spec"))
    assert (source.scheme, source.arch, source.encoder, source.num_classes) == (
        "spec",
        "unet",
        "resnet34",
        12,
    )
    assert parse_model_source("spec:fpn:tu-regnetx_004:2", accept=("spec",)).arch == "fpn"


@pytest.mark.parametrize(
    ("text", "accept", "error", "message"),
    [
        (
            "classical:otsu",
            ("file",),
            ConfigError,
            "MODEL 'classical:otsu': unknown model scheme 'classical'; "
            f"valid forms: {FILE_FORM}; {SPEC_FORM}",
        ),
        ("models:/roads", ("file",), ConfigError, "'models:/roads' is not a registry model; write models:/"),
        ("prompt:points=3,4", ("file",), ConfigError, "unknown model scheme 'prompt'"),
        (
            "unet:resnet34:3",
            ("file",),
            ConfigError,
            f"MODEL 'unet:resnet34:3' is a spec model, which predict does not take; give {FILE_FORM}",
        ),
        ("unet:resnet34:x", ("spec",), ConfigError, "the class count must be a positive integer"),
        ("gone.ckpt", ("file",), CheckpointError, f"model file gone.ckpt does not exist; give {FILE_FORM}"),
        ("", ("file",), ConfigError, "MODEL is empty; give PATH"),
    ],
)
def test_refusals_are_one_line(text: str, accept: tuple[str, ...], error: type, message: str) -> None:
    with pytest.raises(error) as err:
        parse_model_source(text, accept=accept, command="predict")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_folder_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=f"model file {tmp_path} is a folder, not a model file"):
        parse_model_source(tmp_path)
