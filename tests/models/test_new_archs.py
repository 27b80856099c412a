"""torchvision's FCN and LR-ASPP and timm's HRNet behind ``create_model``: shapes, strides, weights
policies, errors, a training run through the engine and ``segflow export`` parity for LR-ASPP."""

from __future__ import annotations

import copy
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision

from segflow.errors import ConfigError, InferenceError
from segflow.models import MODELS, create_model, load_checkpoint

TORCHVISION_CASES = [
    # arch, encoder, in_channels, stride (the dilated backbone's)
    ("fcn", "resnet50", 3, 8),
    ("lraspp", "mobilenet_v3_large", 3, 16),
    ("lraspp", "mobilenet_v3_large", 1, 16),
    ("lraspp", "mobilenet_v3_large", 4, 16),
]


def test_registry_names_the_torchvision_archs() -> None:
    assert "fcn" in MODELS and "lraspp" in MODELS
    with pytest.raises(ConfigError, match="valid names: .*fcn.*lraspp"):
        MODELS.get("fcn8s")


@pytest.mark.parametrize(("arch", "encoder", "channels", "stride"), TORCHVISION_CASES)
def test_torchvision_archs_return_logits_at_input_size(
    arch: str, encoder: str, channels: int, stride: int
) -> None:
    net = create_model(arch, encoder, in_channels=channels, num_classes=3).eval()
    assert (net.output_stride, net.min_input_size) == (stride, stride)
    assert net.name == f"{arch}/{encoder}"
    x = torch.rand(2, channels, 3 * stride, 5 * stride)
    with torch.no_grad():
        logits = net(x)
    assert isinstance(logits, torch.Tensor)  # torchvision's dict is unwrapped
    assert logits.shape == (2, 3, 3 * stride, 5 * stride)
    with pytest.raises(InferenceError, match=f"not a multiple of {stride}"):
        net(torch.rand(1, channels, 3 * stride + 1, 5 * stride))


def test_fcn_resnet101_builds() -> None:
    net = create_model("fcn", "resnet101", num_classes=2).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 16, 24)).shape == (1, 2, 16, 24)


@pytest.mark.parametrize(("arch", "encoder"), [("unet", "tu-hrnet_w18"), ("fpn", "tu-hrnet_w18_small")])
def test_hrnet_encoder_with_smp_archs(arch: str, encoder: str) -> None:
    net = create_model(arch, encoder, in_channels=3, num_classes=4).eval()
    assert net.output_stride == 32
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 96)).shape == (1, 4, 64, 96)


def test_hrnet_needs_multiples_of_32_whatever_the_depth() -> None:
    # timm's HRNet runs all four branches down to 1/32 even when smp asks for 3 stages; at
    # 48 px its fuse layers fail, so the stride recorded for padding must be 32, not 8.
    net = create_model(
        "unet", "tu-hrnet_w18_small", num_classes=2, encoder_depth=3, decoder_channels=(32, 16, 8)
    ).eval()
    assert (net.output_stride, net.min_input_size) == (32, 32)
    with pytest.raises(InferenceError, match="not a multiple of 32"):
        net(torch.rand(1, 3, 48, 64))
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 2, 64, 64)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "fcn", "encoder": "resnet34"}, "not available for fcn .*: use resnet101 or resnet50"),
        ({"arch": "lraspp", "encoder": "resnet50"}, "use mobilenet_v3_large"),
        (
            {"arch": "lraspp", "encoder": "mobilenet_v3_large", "aux_loss": True},
            r"model.kwargs \['aux_loss'\]",
        ),
        ({"arch": "deeplabv3", "encoder": "tu-hrnet_w18"}, "HRNet .* cannot do: use unet, fpn"),
        ({"arch": "pan", "encoder": "tu-hrnet_w18_small"}, "dilates its encoder"),
        ({"arch": "mask2former", "encoder": "tiny"}, "task: panoptic"),
        ({"arch": "fcn", "encoder": "resnet50", "num_classes": 1}, "num_classes must be an integer >= 2"),
    ],
)
def test_bad_combinations_are_one_line(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        create_model(**kwargs)
    assert "\n" not in str(info.value)


def test_imagenet_offline_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> Any:
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(
        ConfigError, match="could not download torchvision's imagenet weights .*encoder_weights=null"
    ):
        create_model("lraspp", "mobilenet_v3_large", encoder_weights="imagenet")


@pytest.mark.parametrize("layout", ["classification", "backbone"])
def test_local_backbone_weights_are_loaded(tmp_path: Path, layout: str) -> None:
    torch.manual_seed(0)
    if layout == "classification":  # torchvision's own ImageNet network of the backbone
        classifier = torchvision.models.mobilenet_v3_large()
        state = classifier.state_dict()
        reference = classifier.features[0][0].weight
    else:  # the segmentation backbone of another segflow LR-ASPP
        other: Any = create_model("lraspp", "mobilenet_v3_large", num_classes=5).model
        state = other.encoder.state_dict()
        reference = state["0.0.weight"]
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    net: Any = create_model("lraspp", "mobilenet_v3_large", num_classes=3, encoder_weights=str(path)).model
    assert torch.equal(net.encoder.state_dict()["0.0.weight"], reference)


def test_local_weights_of_another_backbone_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mnv3_small.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    with pytest.raises(ConfigError, match="do not match encoder mobilenet_v3_large: missing keys"):
        create_model("lraspp", "mobilenet_v3_large", encoder_weights=str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        create_model("fcn", "resnet50", encoder_weights=str(tmp_path / "missing.pth"))


@pytest.mark.slow
def test_lraspp_trains_checkpoints_and_exports_with_parity(
    tiny_config: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from segflow.cli.main import main
    from segflow.config import build_config
    from segflow.inference.backends import create_backend
    from segflow.training.engine import train

    config = copy.deepcopy(tiny_config)
    config["data"]["options"]["num_images"] = {"train": 8, "val": 2, "test": 1}
    config["model"] = {"arch": "lraspp", "encoder": "mobilenet_v3_large", "encoder_weights": None}
    result = train(build_config(config))
    assert result is not None
    assert 0.0 <= result.metrics["miou"] <= 1.0
    net, meta = load_checkpoint(result.best_checkpoint)
    assert (meta.model.arch, meta.model.encoder, meta.stride) == ("lraspp", "mobilenet_v3_large", 16)

    out = tmp_path / "lraspp.onnx"
    assert main(["export", str(result.best_checkpoint), "--out", str(out)]) == 0  # parity-checked inside
    assert "parity" in capsys.readouterr().out.lower()
    backend = create_backend("onnx", out)
    x = np.random.default_rng(0).random((1, 3, 48, 80), dtype=np.float32)  # another size than export's
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    got = backend.forward(x)
    assert got.shape == expected.shape == (1, 5, 48, 80)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
