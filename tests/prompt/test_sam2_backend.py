"""segflow.prompt.sam2: a tiny random SAM 2 built from the sam2 package's own hydra config (with
overrides), saved with that config and loaded by path: SAM2ImagePredictor-equal answers, the
cache, prompt handling, config matching and checkpoint errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from segflow.errors import CheckpointError
from segflow.prompt.base import Prompt, create_prompt_backend
from segflow.prompt.sam2 import Sam2Backend, build_sam2_model, match_config

BASE = "configs/sam2.1/sam2.1_hiera_t.yaml"
TINY = {
    "model.image_size": 256,
    "model.image_encoder.trunk.embed_dim": 8,
    "model.image_encoder.trunk.stages": [1, 1, 2, 1],
    "model.image_encoder.trunk.global_att_blocks": [3],
    "model.image_encoder.neck.backbone_channel_list": [64, 32, 16, 8],
    "model.memory_attention.num_layers": 1,
    "model.memory_attention.layer.dim_feedforward": 64,
}
"""A Hiera of width 8 with 5 blocks at 256 px, one memory-attention layer (about 6M parameters,
most in SAM 2's fixed 256-wide heads)."""


def _tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sam2_model(BASE, [f"++{key}={json.dumps(value)}" for key, value in TINY.items()])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sam2") / "tiny_sam2.pt"
    torch.save({"model": _tiny().state_dict(), "config": {"name": BASE, "overrides": TINY}}, path)
    return path


@pytest.fixture(scope="module")
def backend(checkpoint: Path) -> Sam2Backend:
    made = create_prompt_backend(f"sam2:{checkpoint}", cache_bytes=10 * 1024**2)
    assert isinstance(made, Sam2Backend)
    return made


def _image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (90, 140, 3), dtype=np.uint8)


def test_answers_equal_sam2_image_predictor(backend: Sam2Backend, checkpoint: Path) -> None:
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    reference = SAM2ImagePredictor(backend.model)
    reference._bb_feat_sizes = [(64, 64), (32, 32), (16, 16)]
    image = _image()
    reference.set_image(image)
    for multimask in (False, True):
        prompt = Prompt(points=[(20, 30, 1), (100, 60, 0)], box=(10, 10, 120, 80))
        ours = backend.predict(image, prompt, multimask=multimask)
        masks, scores, _ = reference.predict(
            point_coords=np.array([[20, 30], [100, 60]]), point_labels=np.array([1, 0]),
            box=np.array([10, 10, 120, 80]), multimask_output=multimask,
        )  # fmt: skip
        count = 3 if multimask else 1
        assert ours.masks.shape == (count, 90, 140) and ours.scores.shape == (count,)
        assert np.array_equal(ours.masks, masks > 0.5)
        np.testing.assert_allclose(ours.scores, scores, atol=1e-6)


def test_cache_and_prompt_handling(checkpoint: Path) -> None:
    backend = create_prompt_backend(f"sam2:{checkpoint}", cache_bytes=10 * 1024**2)
    assert isinstance(backend, Sam2Backend)
    calls = []
    backend.model.image_encoder.register_forward_hook(lambda *args: calls.append(1))
    image = _image()
    key = backend.set_image(image)
    # image embedding (256, 16, 16) and the high-resolution maps (32, 64, 64), (64, 32, 32), float32
    assert backend.cache.nbytes == 4 * (256 * 16 * 16 + 32 * 64 * 64 + 64 * 32 * 32)
    positive = backend.predict(key, Prompt(points=[(40, 40, 1)]))
    negative = backend.predict(key, Prompt(points=[(40, 40, 1), (100, 50, 0)]))
    boxed = backend.predict(image, Prompt(box=(10, 10, 80, 70)))
    coarse = np.zeros((90, 140), bool)
    coarse[20:60, 30:90] = True
    masked = backend.predict(key, Prompt(mask=coarse))
    assert len(calls) == 1 and backend.cache.hits == 4
    assert not np.array_equal(positive.masks, negative.masks)
    assert boxed.masks.shape == masked.masks.shape == (1, 90, 140)


def test_official_configs_are_matched_by_the_weights() -> None:
    def fake(width: int, blocks: int, sam21: bool) -> dict[str, torch.Tensor]:
        state = {"image_encoder.trunk.patch_embed.proj.weight": torch.empty(width, 3, 7, 7),
                 "sam_mask_decoder.mask_tokens.weight": torch.empty(4, 256)}  # fmt: skip
        state.update(
            {f"image_encoder.trunk.blocks.{i}.norm1.weight": torch.empty(width) for i in range(blocks)}
        )
        if sam21:
            state["no_obj_embed_spatial"] = torch.empty(1, 64)
        return state

    assert match_config(fake(96, 12, True), Path("t.pt")) == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert match_config(fake(96, 16, False), Path("s.pt")) == "configs/sam2/sam2_hiera_s.yaml"
    assert match_config(fake(112, 24, True), Path("b.pt")) == "configs/sam2.1/sam2.1_hiera_b+.yaml"
    assert match_config(fake(144, 48, False), Path("l.pt")) == "configs/sam2/sam2_hiera_l.yaml"
    with pytest.raises(
        CheckpointError, match="width 8 with 5 blocks .*no config of the installed sam2 package"
    ):
        match_config(fake(8, 5, True), Path("tiny.pt"))
    with pytest.raises(CheckpointError, match="not a SAM 2 checkpoint: .*use sam:PATH"):
        match_config({"mask_decoder.mask_tokens.weight": torch.empty(4, 8)}, Path("sam1.pth"))


def test_stored_configs_are_checked(tmp_path: Path) -> None:
    state = {"image_encoder.trunk.patch_embed.proj.weight": torch.empty(8, 3, 7, 7)}
    for config, message in [
        ({"name": "../../evil.yaml"}, "is not a config of the sam2 package"),
        ({"name": BASE, "overrides": {"model._target_": 1}}, "override model._target_=1 is refused"),
        ({"name": BASE, "overrides": {"model.image_size": "os.system"}}, "is refused"),
    ]:
        path = tmp_path / "bad.pt"
        torch.save({"model": state, "config": config}, path)
        with pytest.raises(CheckpointError, match=message):
            create_prompt_backend(f"sam2:{path}")
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("hello")
    with pytest.raises(
        CheckpointError,
        match=r"^sam2 checkpoint .*garbage.pt is not a PyTorch or safetensors checkpoint of SAM 2; ",
    ):
        create_prompt_backend(f"sam2:{garbage}")
