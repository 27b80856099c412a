"""segflow.prompt.onnx: the SAM decoder exported with SamOnnxModel + torch.onnx.export gives
ONNX Runtime masks equal to the torch decoder's on the same embedding and prompt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from segflow.errors import InferenceError
from segflow.prompt.base import Prompt, create_prompt_backend
from segflow.prompt.onnx import PARITY_ATOL, check_decoder_parity, decoder_inputs, export_sam_decoder
from segflow.prompt.sam import SamBackend, build_sam, sam_architecture

TINY = {
    "img_size": 256, "patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0,
    "window_size": 4, "global_attn_indexes": (1,), "use_rel_pos": True, "use_abs_pos": True, "qkv_bias": True,
    "out_chans": 32, "mask_in_chans": 8, "decoder_depth": 2, "decoder_mlp_dim": 64,
    "num_multimask_outputs": 3, "iou_head_depth": 3, "iou_head_hidden_dim": 32,
}  # fmt: skip


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[SamBackend, Path]:
    folder = tmp_path_factory.mktemp("sam_onnx")
    torch.manual_seed(1)
    state = build_sam(TINY).state_dict()
    assert sam_architecture(state, folder) == TINY
    torch.save(state, folder / "tiny.pth")
    backend = create_prompt_backend(f"sam:{folder / 'tiny.pth'}")
    assert isinstance(backend, SamBackend)
    return backend, export_sam_decoder(backend, folder / "decoder.onnx")


def test_exported_graph_has_the_decoder_inputs(exported: tuple[SamBackend, Path]) -> None:
    _, path = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == [
        "image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size"
    ]  # fmt: skip
    assert [o.name for o in model.graph.output] == ["masks", "iou_predictions", "low_res_masks"]


@pytest.mark.parametrize(
    "prompt",
    [
        Prompt(points=[(20, 30, 1), (100, 60, 0)]),
        Prompt(box=(10, 10, 80, 70)),
        Prompt(box=(10, 10, 80, 70), points=[(40, 40, 1), (60, 20, 0), (5, 80, 1)]),
        Prompt(points=[(40, 40, 1)], mask=np.pad(np.ones((40, 60), bool), ((20, 30), (30, 50)))),
    ],
)
def test_onnx_runtime_masks_equal_torch(exported: tuple[SamBackend, Path], prompt: Prompt) -> None:
    backend, path = exported
    image = np.random.default_rng(0).integers(0, 256, (90, 140, 3), dtype=np.uint8)  # not the export's size
    report = check_decoder_parity(backend, path, image, prompt)
    assert report["max_abs_diff"] <= PARITY_ATOL and report["score_abs_diff"] <= PARITY_ATOL
    assert report["mask_mismatch"] == 0


def test_mask_only_prompt_is_refused(exported: tuple[SamBackend, Path]) -> None:
    backend, _ = exported
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InferenceError, match="needs a point or a box"):
        decoder_inputs(backend, image, Prompt(mask=np.ones((32, 32), bool)))
