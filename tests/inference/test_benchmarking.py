"""``segflow.inference.benchmarking``: MODEL resolution through the one parser (fast parts only;
the timed run is tests/cli/test_benchmark_cli.py)."""

from __future__ import annotations

import pytest

from segflow.errors import ConfigError
from segflow.inference.benchmarking import load_model


def test_spec_builds_a_random_model_with_its_own_stride() -> None:
    loaded = load_model("unet:resnet18:3")
    assert loaded.net is not None and loaded.torch_source is loaded.net and loaded.onnx_path is None
    assert (loaded.meta.num_classes, loaded.meta.in_channels) == (3, 3)
    assert loaded.meta.stride == loaded.net.output_stride == 32
    assert loaded.meta.class_names == ["class_0", "class_1", "class_2"]


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("classical:otsu", "MODEL 'classical:otsu': unknown model scheme 'classical'; valid forms: PATH"),
        ("unet:resnet18:zero", "model spec 'unet:resnet18:zero': the class count must be a positive integer"),
    ],
)
def test_bad_model_is_one_line(model: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_model(model)
