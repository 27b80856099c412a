"""segflow.prompt.sam: a tiny random Segment Anything built from segment_anything's own classes,
saved to a file and loaded by path: architecture read from the weights, SamPredictor-equal
answers, the embedding cache (the image encoder runs once per image), prompt handling and
checkpoint errors."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from segflow.errors import CheckpointError
from segflow.prompt.base import Prompt, create_prompt_backend
from segflow.prompt.sam import MASK_LOGIT, SamBackend, sam_architecture

IMG_SIZE, PATCH, DIM, PROMPT_DIM = 256, 16, 64, 32


def tiny_sam() -> Sam:
    """ViT with embed_dim 64, depth 2 (one windowed block, one global), 256 px input; a
    32-wide prompt encoder and decoder."""
    torch.manual_seed(0)
    grid = IMG_SIZE // PATCH
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=IMG_SIZE, patch_size=PATCH, embed_dim=DIM, depth=2, num_heads=2, mlp_ratio=2.0,
            out_chans=PROMPT_DIM, qkv_bias=True, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True, window_size=4, global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=PROMPT_DIM, image_embedding_size=(grid, grid), input_image_size=(IMG_SIZE, IMG_SIZE),
            mask_in_chans=8,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_DIM, mlp_dim=64, num_heads=8),
            transformer_dim=PROMPT_DIM, iou_head_depth=3, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sam") / "tiny_sam.pth"
    torch.save(tiny_sam().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def backend(checkpoint: Path) -> SamBackend:
    made = create_prompt_backend(f"sam:{checkpoint}", cache_bytes=10 * 1024**2)
    assert isinstance(made, SamBackend)
    return made


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (90, 140, 3), dtype=np.uint8)


def test_architecture_is_read_from_the_weights(checkpoint: Path) -> None:
    arch = sam_architecture(torch.load(checkpoint, weights_only=True), checkpoint)
    assert arch == {
        "img_size": 256, "patch_size": 16, "embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 2.0,
        "window_size": 4, "global_attn_indexes": (1,), "use_rel_pos": True, "use_abs_pos": True,
        "qkv_bias": True, "out_chans": 32, "mask_in_chans": 8, "decoder_depth": 2, "decoder_mlp_dim": 64,
        "num_multimask_outputs": 3, "iou_head_depth": 3, "iou_head_hidden_dim": 32,
    }  # fmt: skip


def test_answers_equal_sam_predictor(backend: SamBackend) -> None:
    image = _image()
    reference = SamPredictor(tiny_sam())
    reference.set_image(image)
    cases: list[tuple[Prompt, dict[str, Any]]] = [
        (Prompt(points=[(20, 30, 1), (100, 60, 0)]), {"point_coords": np.array([[20, 30], [100, 60]]),
                                                       "point_labels": np.array([1, 0])}),
        (Prompt(box=(10, 10, 80, 70)), {"box": np.array([10, 10, 80, 70])}),
        (Prompt(box=(10, 10, 80, 70), points=[(40, 40, 1)]), {"box": np.array([10, 10, 80, 70]),
                                                               "point_coords": np.array([[40, 40]]),
                                                               "point_labels": np.array([1])}),
    ]  # fmt: skip
    for prompt, kwargs in cases:
        for multimask in (False, True):
            ours = backend.predict(image, prompt, multimask=multimask)
            masks, scores, low_res = reference.predict(**kwargs, multimask_output=multimask)
            count = 3 if multimask else 1
            assert ours.masks.shape == (count, 90, 140) and ours.scores.shape == (count,)
            assert ours.logits is not None and ours.logits.shape == (count, 64, 64)
            assert np.array_equal(ours.masks, masks)
            np.testing.assert_allclose(ours.scores, scores, atol=1e-6)
            np.testing.assert_allclose(ours.logits, low_res, atol=1e-5)


def test_cache_runs_the_image_encoder_once_per_image(checkpoint: Path) -> None:
    backend = create_prompt_backend(f"sam:{checkpoint}", cache_bytes=10 * 1024**2)
    assert isinstance(backend, SamBackend)
    calls = []
    backend.model.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    image = _image()
    key = backend.set_image(image)
    assert len(calls) == 1 and backend.cache.nbytes == 32 * 16 * 16 * 4  # (1, 32, 16, 16) float32
    for x in (10, 50, 90):
        backend.predict(key, Prompt(points=[(x, 40, 1)]))
    backend.predict(image, Prompt(box=(5, 5, 60, 60)))  # by pixels: found in the cache
    assert len(calls) == 1 and backend.cache.hits == 4
    backend.predict(_image(1), Prompt(points=[(10, 10, 1)]))
    assert len(calls) == 2 and len(backend.cache) == 2


def test_negative_points_and_masks_change_the_answer(backend: SamBackend) -> None:
    image = _image()
    key = backend.set_image(image)
    positive = backend.predict(key, Prompt(points=[(40, 40, 1)]))
    with_negative = backend.predict(key, Prompt(points=[(40, 40, 1), (100, 50, 0)]))
    as_positive = backend.predict(key, Prompt(points=[(40, 40, 1), (100, 50, 1)]))
    assert not np.array_equal(positive.masks, with_negative.masks)
    assert not np.array_equal(with_negative.masks, as_positive.masks)  # the label matters, not only the place
    coarse = np.zeros((90, 140), bool)
    coarse[20:60, 30:90] = True
    with_mask = backend.predict(key, Prompt(points=[(40, 40, 1)], mask=coarse))
    assert not np.array_equal(positive.masks, with_mask.masks)
    assert backend.predict(key, Prompt(mask=coarse)).masks.shape == (1, 90, 140)


def test_coarse_mask_becomes_sam_mask_input(backend: SamBackend) -> None:
    full = backend.mask_input(np.ones((90, 140), bool), (165, 256))  # 140 -> 256 wide, 90 -> 165 high
    assert full.shape == (1, 64, 64) and full.dtype == np.float32
    rows = int((full[0, :, 0] == MASK_LOGIT).sum())
    assert rows == round(165 / 4) and (full[0, rows:] == -MASK_LOGIT).all()  # padding stays outside


def test_checkpoint_errors(tmp_path: Path, checkpoint: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(
        CheckpointError,
        match=r"^sam checkpoint .*garbage.pth is not a PyTorch or safetensors checkpoint of SAM; ",
    ) as raised:
        create_prompt_backend(f"sam:{garbage}")
    assert "weights_only" not in str(raised.value) and "\n" not in str(raised.value)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": Path("x")}, pickled)  # needs unpickling a class: refused by weights_only
    with pytest.raises(CheckpointError, match="not a PyTorch or safetensors checkpoint of SAM"):
        create_prompt_backend(f"sam:{pickled}")
    sam2_like = tmp_path / "sam2.pt"
    torch.save({"model": {"sam_mask_decoder.mask_tokens.weight": torch.zeros(4, 8)}}, sam2_like)
    with pytest.raises(CheckpointError, match=r"not a Segment Anything checkpoint: .*use sam2:PATH"):
        create_prompt_backend(f"sam:{sam2_like}")
    state = torch.load(checkpoint, weights_only=True)
    state["mask_decoder.iou_token.weight"] = torch.zeros(1, 7)
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(CheckpointError, match="does not fit the SAM layout read from it"):
        create_prompt_backend(f"sam:{broken}")


def test_safetensors_weights_load(tmp_path: Path, checkpoint: Path) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in torch.load(checkpoint, weights_only=True).items()}, str(path))
    image = _image()
    prompt = Prompt(points=[(20, 30, 1)])
    from_pth = create_prompt_backend(f"sam:{checkpoint}").predict(image, prompt)
    from_safetensors = create_prompt_backend(f"sam:{path}").predict(image, prompt)
    assert np.array_equal(from_pth.masks, from_safetensors.masks)
