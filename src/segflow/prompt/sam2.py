"""``sam2:PATH``: SAM 2 (Ravi et al., 2024) through the ``sam2`` package (built from source, see
the Makefile's ``sam2`` step), for single images.

Weights: an official checkpoint (``sam2_hiera_{tiny,small,base_plus,large}.pt`` or
``sam2.1_hiera_{tiny,small,base_plus,large}.pt``) by path; nothing downloads. The file is read
with ``torch.load(weights_only=True)`` (``{"model": state_dict}``, as SAM 2 saves it) or
safetensors. The architecture is one of the package's own hydra configs
(``configs/sam2/*.yaml``, ``configs/sam2.1/*.yaml``), chosen by the state dict: the Hiera
trunk's width (``image_encoder.trunk.patch_embed.proj.weight``), its block count and whether
SAM 2.1's ``no_obj_embed_spatial`` is present. A checkpoint may instead name its config
itself, as segflow's tests save a tiny random model::

    {"model": state_dict, "config": {"name": "configs/sam2.1/sam2.1_hiera_t.yaml",
                                     "overrides": {"model.image_size": 256, ...}}}

``name`` must be one of the package's configs and ``overrides`` may only set numbers, booleans
and lists of numbers under ``model.`` (never a ``_target_``), so a file cannot make hydra build
arbitrary classes. The model is built with ``hydra.compose`` + ``hydra.utils.instantiate`` as
``sam2.build_sam.build_sam2`` does (with its post-processing overrides) and loaded strictly.

Prediction is ``sam2.sam2_image_predictor.SAM2ImagePredictor``'s: :meth:`Sam2Backend.embed`
runs ``set_image`` (resize to the model's square input, Hiera + FPN, ``no_mem_embed``) and keeps
its features (the ``S/16`` image embedding and the ``S/4``, ``S/8`` high-resolution maps: about
6 MiB float32 at 1024 px) in the cache; :meth:`Sam2Backend.decode` puts them back and runs
``predict``. A coarse mask is area-resized to the decoder's ``S/4`` mask input as logits
``+-MASK_LOGIT``. ``multimask`` gives 3 masks; scores are the predicted IoU.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import CheckpointError
from segflow.prompt.base import DEFAULT_CACHE_BYTES, Embedding, Prompt, PromptBackend, PromptResult
from segflow.prompt.sam import MASK_LOGIT, torch_device

CONFIG_FOLDERS = ("configs/sam2", "configs/sam2.1")
"""Folders of the ``sam2`` package whose configs a checkpoint may match or name."""
POSTPROCESSING = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
)
"""What ``sam2.build_sam.build_sam2`` adds by default (fall back to multimask when unstable)."""
REQUIRED_KEYS = ("image_encoder.trunk.patch_embed.proj.weight", "sam_mask_decoder.mask_tokens.weight")
_TRUNK_BLOCK = re.compile(r"^image_encoder\.trunk\.blocks\.(\d+)\.")
_OVERRIDE_KEY = re.compile(r"^model(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@functools.lru_cache(maxsize=1)
def package_configs() -> dict[str, dict[str, Any]]:
    """``{config name: {embed_dim, blocks, sam21}}`` for each config the ``sam2`` package ships
    (read once per process; do not modify the answer)."""
    import sam2
    from omegaconf import OmegaConf
    from sam2.modeling.backbones.hieradet import Hiera

    default_stages = inspect.signature(Hiera).parameters["stages"].default
    root = Path(sam2.__path__[0])
    found = {}
    for folder in CONFIG_FOLDERS:
        for file in sorted((root / folder).glob("*.yaml")):
            model = OmegaConf.load(file).model
            trunk = model.image_encoder.trunk
            found[f"{folder}/{file.name}"] = {
                "embed_dim": int(trunk.get("embed_dim", 96)),
                "blocks": int(sum(trunk.get("stages", default_stages))),
                "sam21": bool(model.get("no_obj_embed_spatial", False)),
            }
    return found


def match_config(state: dict[str, Any], path: Path) -> str:
    """The package config whose trunk width, depth and SAM 2.1 flag the state dict has.

    Raises:
        CheckpointError: Not a SAM 2 state dict, or no config matches.
    """
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        hint = " (it looks like SAM 1: use sam:PATH)" if "mask_decoder.mask_tokens.weight" in state else ""
        raise CheckpointError(f"sam2 checkpoint {path} is not a SAM 2 checkpoint: no {missing[0]}{hint}")
    width = int(state["image_encoder.trunk.patch_embed.proj.weight"].shape[0])
    blocks = 1 + max(int(m.group(1)) for key in state if (m := _TRUNK_BLOCK.match(key)))
    sam21 = "no_obj_embed_spatial" in state
    for name, signature in package_configs().items():
        if signature == {"embed_dim": width, "blocks": blocks, "sam21": sam21}:
            return name
    version = "2.1" if sam21 else "2"
    raise CheckpointError(
        f"sam2 checkpoint {path} has a Hiera trunk of width {width} with {blocks} blocks (SAM {version}), "
        "which no config of the installed sam2 package builds; give an official SAM 2 checkpoint"
    )


def stored_config(extra: Any, path: Path) -> tuple[str, list[str]] | None:
    """``(config name, hydra overrides)`` from a checkpoint's ``config`` entry, checked; None if absent.

    Raises:
        CheckpointError: An unknown config name or an override that is not a plain value under ``model.``.
    """
    if extra is None:
        return None
    known = package_configs()
    name = extra.get("name") if isinstance(extra, dict) else None
    if name not in known:
        raise CheckpointError(
            f"sam2 checkpoint {path}: 'config.name' {name!r} is not a config of the sam2 package; "
            f"use one of {', '.join(sorted(known))}"
        )
    overrides = []
    for key, value in dict(extra.get("overrides") or {}).items():
        if not _OVERRIDE_KEY.match(str(key)) or "_target_" in str(key) or not _plain(value):
            raise CheckpointError(
                f"sam2 checkpoint {path}: override {key}={value!r} is refused; only numbers, booleans and "
                "lists of numbers under 'model.' may be set"
            )
        overrides.append(f"++{key}={json.dumps(value)}")
    return str(name), overrides


def _plain(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    return isinstance(value, int | float | bool)


def read_sam2(path: Path) -> tuple[dict[str, Any], Any]:
    """``(state dict, the checkpoint's 'config' entry or None)``, read with ``weights_only=True``."""
    import torch

    from segflow.prompt.sam import read_weights, state_dict_of

    if path.suffix == ".safetensors":
        return read_weights(path, "sam2"), None
    try:
        raw = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:  # read_weights gives the one-line error
        return read_weights(path, "sam2"), None
    extra = raw.pop("config", None) if isinstance(raw, dict) else None
    return state_dict_of(raw, path, "sam2"), extra


def build_sam2_model(name: str, overrides: list[str]) -> Any:
    """A randomly initialised ``SAM2Base`` from a package config and overrides, in eval mode."""
    import sam2  # noqa: F401  (registers the package's configs with hydra)
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    config = compose(config_name=name, overrides=[*overrides, *POSTPROCESSING])
    OmegaConf.resolve(config)
    return instantiate(config.model, _recursive_=True).eval()


def load_sam2(path: Path, device: str = "cpu") -> Any:
    """The SAM 2 model in ``path`` in eval mode on ``device`` (module docstring).

    Raises:
        CheckpointError: Unreadable, not SAM 2, no matching config, or weights that do not fit it.
        ConfigError: An unavailable device.
    """
    state, extra = read_sam2(path)
    named = stored_config(extra, path)
    name, overrides = named if named is not None else (match_config(state, path), [])
    model = build_sam2_model(name, overrides)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"sam2 checkpoint {path} does not fit config {name} ({first})") from err
    return model.to(torch_device(device))


class Sam2Backend(PromptBackend):
    """SAM 2 on single images with cached image features (see the module docstring).

    Args:
        path: Checkpoint file.
        cache_bytes: Embedding-cache budget in bytes.
        device: Torch device.

    Attributes:
        model: The ``sam2.modeling.sam2_base.SAM2Base``.
        predictor: The ``SAM2ImagePredictor`` whose state is swapped per call.
    """

    name = "sam2"

    def __init__(self, path: Path, cache_bytes: int = DEFAULT_CACHE_BYTES, device: str = "cpu") -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        super().__init__(cache_bytes)
        self.path = Path(path)
        self.model = load_sam2(self.path, device)
        self.predictor = SAM2ImagePredictor(self.model)
        size = int(self.model.image_size)
        # the predictor hard-codes the 1024 px feature sizes; follow the model's input size
        self.predictor._bb_feat_sizes = [
            (size // 4, size // 4),
            (size // 8, size // 8),
            (size // 16, size // 16),
        ]
        self._lock = threading.Lock()

    def embed(self, image: np.ndarray) -> Embedding:
        with self._lock:
            self.predictor.set_image(image)
            features = self.predictor._features
            self.predictor.reset_predictor()
        tensors = [features["image_embed"], *features["high_res_feats"]]
        nbytes = sum(int(t.element_size() * t.nelement()) for t in tensors)
        return Embedding(image_shape=(image.shape[0], image.shape[1]), data=features, nbytes=nbytes)

    def decode(self, embedding: Embedding, prompt: Prompt, multimask: bool) -> PromptResult:
        coords = np.array([(x, y) for x, y, _ in prompt.points], np.float32) if prompt.points else None
        labels = np.array([label for _, _, label in prompt.points], np.int64) if prompt.points else None
        box = np.array(prompt.box, np.float32) if prompt.box is not None else None
        mask_input = self.mask_input(prompt.mask) if prompt.mask is not None else None
        with self._lock:
            predictor = self.predictor
            predictor._features, predictor._orig_hw = embedding.data, [embedding.image_shape]
            predictor._is_image_set, predictor._is_batch = True, False
            try:
                masks, scores, low_res = predictor.predict(
                    point_coords=coords,
                    point_labels=labels,
                    box=box,
                    mask_input=mask_input,
                    multimask_output=multimask,
                    return_logits=False,
                )
            finally:
                predictor.reset_predictor()
        return PromptResult(masks=masks > 0.5, scores=scores, logits=low_res.astype(np.float32))

    def mask_input(self, mask: np.ndarray) -> np.ndarray:
        """SAM 2's ``(1, S/4, S/4)`` mask-input logits for an ``(H, W)`` bool coarse mask (the
        image is resized to a square without keeping its aspect, and so is the mask)."""
        import cv2

        low = int(self.model.image_size) // 4
        small = cv2.resize(mask.astype(np.float32), (low, low), interpolation=cv2.INTER_AREA)
        return np.where(small >= 0.5, MASK_LOGIT, -MASK_LOGIT).astype(np.float32)[None]
