"""``segflow prune``: structured channel pruning, pruned checkpoints, fine-tuning them.

GFLOPs tolerance: removing a share p of the channels on both sides of a conv removes
``1 - (1 - p)^2`` of its multiply-adds (0.51 at p = 0.3). The measured share differs from
that by construction: the first conv keeps its 3 input channels and the head its class
outputs (both shrink by p only), depthwise convs (MobileNetV3) shrink by p only, torch-pruning
keeps ``int(c * (1 - p))`` channels (a little more than p pruned), and FPN's GroupNorm groups
of 4 channels lose 1 (25 %). Those layers are a minority of the FLOPs, so the share stays
within 0.1 of ``1 - (1 - p)^2`` and above p (measured: Unet-R18 0.509, FPN-MobileNetV3 0.472).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from segflow.cli.main import main
from segflow.data.readers.shapes import SHAPES_CLASSES
from segflow.errors import ConfigError
from segflow.models import build_meta, create_model, load_checkpoint, read_meta, save_model_checkpoint
from segflow.models.meta import DataSummary
from segflow.models.pruning import (
    count_params,
    forward_gflops,
    prune_checkpoint,
    training_input_size,
)
from segflow_test_configs import tiny_training_raw

AMOUNT = 0.3
EXPECTED_SHARE = 1 - (1 - AMOUNT) ** 2  # conv FLOPs left: (1 - p) of inputs x (1 - p) of outputs
TOLERANCE = 0.1
SIDE = 64
TINY_UNET = {"decoder_channels": [32, 16, 16, 8, 8]}  # tiny_training_raw's model: --init-from fits it


def _checkpoint(path: Path, arch: str, encoder: str, **kwargs: Any) -> Path:
    """A random-weight checkpoint of the shapes classes, trained (per its metadata) on 64x64 images."""
    torch.manual_seed(0)
    net = create_model(arch, encoder, 3, len(SHAPES_CLASSES), **kwargs)
    with torch.no_grad():  # non-trivial BatchNorm statistics, so the pruned net's logits depend on them
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    data = DataSummary.describe("shapes", SHAPES_CLASSES, 255, 3, {"size": SIDE, "seed": 1})
    meta = build_meta(
        net,
        SHAPES_CLASSES,
        None,
        255,
        {"max_value": 255.0},
        {"mode": "keep"},
        None,
        {"name": "prune"},
        data=data,
    )
    return save_model_checkpoint(path, net, meta)


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Unet-R18 (tiny decoder) pruned through the API."""
    folder = tmp_path_factory.mktemp("unet")
    source = _checkpoint(folder / "base.ckpt", "unet", "resnet18", **TINY_UNET)
    result = prune_checkpoint(source, AMOUNT, folder / "pruned.ckpt")
    return {"source": source, "result": result}


@pytest.fixture(scope="module")
def fpn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """FPN-MobileNetV3 pruned through the CLI (its printed lines kept)."""
    folder = tmp_path_factory.mktemp("fpn")
    source = _checkpoint(folder / "base.ckpt", "fpn", "tu-mobilenetv3_large_100", decoder_pyramid_channels=64)
    out = folder / "pruned.safetensors"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["prune", str(source), "--amount", str(AMOUNT), "--out", str(out)])
    return {"source": source, "out": out, "code": code, "printed": " ".join(printed.getvalue().split())}


def _reduction(base: float, pruned: float) -> float:
    return 1.0 - pruned / base


@pytest.mark.slow
def test_unet_pruning_keeps_the_output_and_cuts_gflops_by_the_share(unet: dict[str, Any]) -> None:
    result = unet["result"]
    record = result.record
    base, _ = load_checkpoint(unet["source"])
    assert record.input_size == (SIDE, SIDE)  # the training size from the metadata (shapes size 64)
    assert record.amount == AMOUNT and result.step_amount == AMOUNT
    assert record.base_gflops == forward_gflops(base, 3, (SIDE, SIDE))
    assert record.gflops == forward_gflops(result.net, 3, (SIDE, SIDE))
    assert (record.base_params, record.params) == (count_params(base), count_params(result.net))
    share = _reduction(record.base_gflops, record.gflops)
    assert abs(share - EXPECTED_SHARE) <= TOLERANCE and share > AMOUNT
    assert abs(_reduction(record.base_params, record.params) - EXPECTED_SHARE) <= TOLERANCE
    with torch.inference_mode():
        logits = result.net(torch.rand(2, 3, 64, 96))
    assert logits.shape == (2, len(SHAPES_CLASSES), 64, 96)
    first = result.net.model.encoder.conv1
    head = result.net.model.segmentation_head[0]
    assert first.in_channels == 3 and first.out_channels == int(64 * (1 - AMOUNT))  # 64 -> 44
    assert head.out_channels == len(SHAPES_CLASSES) and head.in_channels == int(8 * (1 - AMOUNT))


@pytest.mark.slow
def test_pruned_checkpoint_loads_with_the_pruned_shapes_and_logits(unet: dict[str, Any]) -> None:
    result = unet["result"]
    loaded, meta = load_checkpoint(result.path)
    assert meta.pruned == result.record and read_meta(result.path).pruned == result.record
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {
        k: v.shape for k, v in result.net.state_dict().items()
    }
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), result.net.eval()(x), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_pruning_a_pruned_checkpoint_compounds_against_the_unpruned_base(
    unet: dict[str, Any], tmp_path: Path
) -> None:
    first = unet["result"].record
    again = prune_checkpoint(unet["result"].path, AMOUNT, tmp_path / "again.pt").record
    assert again.amount == pytest.approx(1 - (1 - AMOUNT) ** 2)  # 0.51 of the unpruned channels
    assert (again.base_gflops, again.base_params) == (first.base_gflops, first.base_params)
    assert again.gflops < first.gflops and again.params < first.params
    assert load_checkpoint(tmp_path / "again.pt")[1].pruned == again


@pytest.mark.slow
def test_fpn_mobilenetv3_pruned_by_the_cli(fpn: dict[str, Any]) -> None:
    assert fpn["code"] == 0
    loaded, meta = load_checkpoint(fpn["out"])  # .safetensors: weights and metadata in the header
    record = meta.pruned
    assert record is not None and record.input_size == (SIDE, SIDE)
    share = _reduction(record.base_gflops, record.gflops)
    assert abs(share - EXPECTED_SHARE) <= TOLERANCE and share > AMOUNT
    assert record.gflops == forward_gflops(loaded, 3, (SIDE, SIDE))
    dw = loaded.model.encoder.model.blocks[1][0].conv_dw  # depthwise stays depthwise after loading
    assert dw.groups == dw.in_channels == dw.out_channels == int(64 * (1 - AMOUNT))
    with torch.inference_mode():
        assert loaded(torch.rand(1, 3, 64, 96)).shape == (1, len(SHAPES_CLASSES), 64, 96)
    printed = fpn["printed"]
    assert f"GFLOPs at 64x64: base {record.base_gflops:.3f}, pruned {record.gflops:.3f}" in printed
    assert f"params: base {record.base_params / 1e6:.3f} M, pruned {record.params / 1e6:.3f} M" in printed
    assert f"wrote {fpn['out']}" in printed


@pytest.mark.slow
def test_init_from_a_pruned_checkpoint_fine_tunes_the_pruned_net(
    unet: dict[str, Any], tiny_data: dict[str, Any], tmp_path: Path
) -> None:
    result = unet["result"]
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_training_raw(tmp_path / "runs", tiny_data)))
    assert main(["train", str(config), "--init-from", str(result.path)]) == 0
    best = tmp_path / "runs" / "tiny" / "checkpoints" / "best.ckpt"
    assert read_meta(best).pruned == result.record
    net, _ = load_checkpoint(best)
    assert {k: v.shape for k, v in net.state_dict().items()} == {
        k: v.shape for k, v in result.net.state_dict().items()
    }
    with torch.inference_mode():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, len(SHAPES_CLASSES), 64, 64)
    # --resume of the pruned run rebuilds the pruned shapes before the weights and the optimizer
    last = best.with_name("last.ckpt")
    first_steps = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert main(["train", str(config), "trainer.max_epochs=2", "--resume", str(last)]) == 0
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 2 * first_steps > 0
    assert read_meta(last).pruned == result.record


def test_training_input_size_follows_crop_policy_and_frame(tmp_path: Path) -> None:
    net = create_model("unet", "resnet18", 3, 2, decoder_channels=[8, 8, 8, 8, 8])  # stride 32
    base = {"mode": "keep"}

    def meta(policy: dict[str, Any], config: dict[str, Any], data: DataSummary | None = None) -> Any:
        return build_meta(net, ["a", "b"], None, 255, None, policy, None, config, data=data)

    assert training_input_size(meta(base, {"augment": {"crop_size": [100, 60]}})) == (128, 64)
    assert training_input_size(meta({"mode": "resize", "size": [90, 120]}, {})) == (96, 128)
    both = meta({"mode": "resize", "size": [90, 120]}, {"augment": {"crop_size": [100, 60]}})
    assert training_input_size(both) == (96, 128)  # the network sees the resize size, not the crop
    half = meta({"mode": "scale", "scale": 0.5}, {})
    assert training_input_size(half, frame=(360, 480)) == (192, 256)  # 180x240 padded to stride 32
    shapes = DataSummary.describe("shapes", ["a", "b"], 255, 3, {"size": 96})
    assert training_input_size(meta({"mode": "scale", "scale": 0.5}, {}, shapes)) == (64, 64)
    with pytest.raises(ConfigError, match="pass --size WxH"):
        training_input_size(half)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--amount", "0"], "--amount 0.0 is the share of channels to remove: give a number between 0 and 1"),
        (["--amount", "1"], "--amount 1.0 is the share of channels to remove"),
        (["--amount", "-0.2"], "--amount -0.2 is the share of channels to remove"),
        (["--amount", "0.3", "--size", "480by360"], "--size '480by360': give the frame size as WxH"),
    ],
)
def test_prune_cli_refuses_bad_options_in_one_line(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "model.ckpt"
    source.write_bytes(b"not read: options are checked first")
    assert main(["prune", str(source), "--out", str(tmp_path / "p.ckpt"), *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert message in " ".join(err.split())
    assert not (tmp_path / "p.ckpt").exists()


def test_prune_cli_refuses_non_checkpoints_and_an_existing_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"onnx")
    garbage = tmp_path / "model.ckpt"
    garbage.write_bytes(b"garbage")
    existing = tmp_path / "pruned.ckpt"
    existing.write_bytes(b"keep me")
    cases = [
        ([str(onnx), "--out", str(tmp_path / "p.ckpt")], f"error: CKPT {onnx} is not a checkpoint (.onnx)"),
        ([str(garbage), "--out", str(existing)], f"error: --out {existing} exists; pass --overwrite"),
        ([str(garbage), "--out", str(tmp_path / "p.onnx")], f"error: --out {tmp_path / 'p.onnx'} is not a"),
        ([str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "p.ckpt")], "does not exist"),
        ([str(garbage), "--out", str(tmp_path / "p.ckpt")], f"error: {garbage} is not a segflow checkpoint"),
    ]
    for args, message in cases:
        assert main(["prune", *args, "--amount", "0.3"]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert message in " ".join(err.split()), err
    assert existing.read_bytes() == b"keep me" and not (tmp_path / "p.ckpt").exists()
