"""``sam:PATH``: Segment Anything (Kirillov et al., 2023) through the ``segment_anything`` package.

Weights: an official checkpoint (``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``,
``sam_vit_h_4b8939.pth``) or any state dict of the same layout, by path; nothing downloads.
They are read with ``torch.load(weights_only=True)`` (or ``safetensors`` for ``.safetensors``),
never with the library's own unrestricted pickle load. The architecture is read from the state
dict's shapes (:func:`sam_architecture`): ViT width, depth, heads, patch size, image size,
window size and global-attention blocks, prompt width, decoder depth and MLP width, so vit_b,
vit_l, vit_h and smaller models (the tests' tiny random one) load through the same code. The
model is built from the library's classes (``segment_anything.modeling``: ``ImageEncoderViT``,
``PromptEncoder``, ``MaskDecoder``, ``TwoWayTransformer``, ``Sam``). Two numbers have no weight
of their own and keep SAM's values: the decoder's 8 attention heads and the encoder's MLP
ratio is read from its first block.

Prediction is ``segment_anything.SamPredictor``'s: :meth:`SamBackend.embed` runs
``set_image`` (resize longest side to the encoder's size, normalise, pad, image encoder) and
keeps the features (``(1, C, S/16, S/16)`` float32: 4 MiB for the official 1024 px models) in
the cache; :meth:`SamBackend.decode` puts them back into the predictor and runs ``predict``
(prompt encoder + mask decoder + upscaling), so a click costs only the decoder. A coarse mask
becomes SAM's low-resolution mask input: resized like the image, padded, area-averaged to the
decoder's mask size and mapped to logits ``+-MASK_LOGIT``. ``multimask`` gives SAM's 3 masks,
otherwise its single-mask output; scores are the predicted IoU.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import CheckpointError, ConfigError
from segflow.prompt.base import DEFAULT_CACHE_BYTES, Embedding, Prompt, PromptBackend, PromptResult

MASK_LOGIT = 10.0
"""Logit given to a coarse mask's inside (and minus it outside) as SAM's mask input."""
DECODER_HEADS = 8
"""Attention heads of SAM's two-way transformer (not visible in the weights; 8 in every release)."""
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
REQUIRED_KEYS = (
    "image_encoder.patch_embed.proj.weight",
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    "mask_decoder.mask_tokens.weight",
)
"""Keys every SAM state dict holds (a file without them is not a SAM checkpoint)."""
_BLOCK = re.compile(r"^image_encoder\.blocks\.(\d+)\.")
_DECODER_LAYER = re.compile(r"^mask_decoder\.transformer\.layers\.(\d+)\.")
_IOU_LAYER = re.compile(r"^mask_decoder\.iou_prediction_head\.layers\.(\d+)\.weight$")


def read_weights(path: Path, name: str) -> dict[str, Any]:
    """The tensors of a checkpoint file, read without unpickling code.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(map_location="cpu", weights_only=True)``. A ``{"model": state_dict}`` or
    ``{"state_dict": ...}`` wrapper (SAM 2's layout) is unwrapped.

    Raises:
        CheckpointError: The file cannot be read this way (one line naming it).
    """
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        else:
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle, zip and safetensors errors have no common base
        # torch's own message (a paragraph on weights_only) says nothing useful about the file
        model = "SAM 2" if name == "sam2" else "SAM"
        raise CheckpointError(
            f"{name} checkpoint {path} is not a PyTorch or safetensors checkpoint of {model}; "
            "give an official .pt/.pth checkpoint or a .safetensors file"
        ) from err
    return state_dict_of(loaded, path, name)


def state_dict_of(loaded: Any, path: Path, name: str) -> dict[str, Any]:
    """The tensors of a loaded checkpoint, unwrapping ``{"model": ...}`` / ``{"state_dict": ...}``.

    Raises:
        CheckpointError: No dict of tensors inside.
    """
    import torch

    for wrapper in ("model", "state_dict"):
        if isinstance(loaded, dict) and isinstance(loaded.get(wrapper), dict):
            loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise CheckpointError(f"{name} checkpoint {path} holds no state dict of tensors; is it a model file?")
    return dict(loaded)


def sam_architecture(state: dict[str, Any], path: Path) -> dict[str, Any]:
    """SAM's constructor arguments read from a state dict's key names and tensor shapes.

    Returns:
        ``{img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, window_size,
        global_attn_indexes, use_rel_pos, use_abs_pos, qkv_bias, out_chans, mask_in_chans,
        decoder_depth, decoder_mlp_dim, num_multimask_outputs, iou_head_depth,
        iou_head_hidden_dim}``.

    Raises:
        CheckpointError: A required key is missing (not a SAM checkpoint) or shapes disagree.
    """
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        hint = (
            " (it looks like SAM 2: use sam2:PATH)"
            if any(k.startswith("sam_mask_decoder") for k in state)
            else ""
        )
        raise CheckpointError(
            f"sam checkpoint {path} is not a Segment Anything checkpoint: no {missing[0]}{hint}"
        )
    try:
        patch = state["image_encoder.patch_embed.proj.weight"]
        embed_dim, patch_size = int(patch.shape[0]), int(patch.shape[-1])
        depth = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK.match(k)))
        use_abs_pos = "image_encoder.pos_embed" in state
        use_rel_pos = "image_encoder.blocks.0.attn.rel_pos_h" in state
        if use_abs_pos:
            grid = int(state["image_encoder.pos_embed"].shape[1])
        else:  # without absolute positions the grid shows in the global blocks' relative tables only
            grid = max(
                (int(state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) + 1) // 2
                for i in range(depth)
            )
        window_size, global_blocks, num_heads = 0, [], None
        if use_rel_pos:
            for i in range(depth):
                table = state[f"image_encoder.blocks.{i}.attn.rel_pos_h"]
                size = (int(table.shape[0]) + 1) // 2
                num_heads = embed_dim // int(table.shape[1])
                if size == grid:
                    global_blocks.append(i)
                else:
                    window_size = size
        mlp_dim = int(state["image_encoder.blocks.0.mlp.lin1.weight"].shape[0])
        out_chans = int(state["image_encoder.neck.0.weight"].shape[0])
        mask_in_chans = int(state["prompt_encoder.mask_downscaling.3.weight"].shape[0])
        decoder_depth = 1 + max(int(m.group(1)) for k in state if (m := _DECODER_LAYER.match(k)))
        decoder_mlp_dim = int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0])
        iou_layers = sorted(int(m.group(1)) for k in state if (m := _IOU_LAYER.match(k)))
        iou_hidden = int(state["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0])
        mask_tokens = int(state["mask_decoder.mask_tokens.weight"].shape[0])
    except (KeyError, ValueError, IndexError) as err:
        raise CheckpointError(
            f"sam checkpoint {path} has an incomplete Segment Anything layout ({err})"
        ) from err
    return {
        "img_size": grid * patch_size,
        "patch_size": patch_size,
        "embed_dim": embed_dim,
        "depth": depth,
        "num_heads": num_heads or 1,
        "mlp_ratio": mlp_dim / embed_dim,
        "window_size": window_size,
        "global_attn_indexes": tuple(global_blocks),
        "use_rel_pos": use_rel_pos,
        "use_abs_pos": use_abs_pos,
        "qkv_bias": "image_encoder.blocks.0.attn.qkv.bias" in state,
        "out_chans": out_chans,
        "mask_in_chans": mask_in_chans,
        "decoder_depth": decoder_depth,
        "decoder_mlp_dim": decoder_mlp_dim,
        "num_multimask_outputs": mask_tokens - 1,
        "iou_head_depth": len(iou_layers),
        "iou_head_hidden_dim": iou_hidden,
    }


def build_sam(arch: dict[str, Any]) -> Any:
    """A randomly initialised ``segment_anything.modeling.Sam`` of the given architecture
    (the keys of :func:`sam_architecture`), in eval mode."""
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = arch["img_size"] // arch["patch_size"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=arch["img_size"],
            patch_size=arch["patch_size"],
            embed_dim=arch["embed_dim"],
            depth=arch["depth"],
            num_heads=arch["num_heads"],
            mlp_ratio=arch["mlp_ratio"],
            out_chans=arch["out_chans"],
            qkv_bias=arch["qkv_bias"],
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_abs_pos=arch["use_abs_pos"],
            use_rel_pos=arch["use_rel_pos"],
            window_size=arch["window_size"],
            global_attn_indexes=tuple(arch["global_attn_indexes"]),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=arch["out_chans"],
            image_embedding_size=(grid, grid),
            input_image_size=(arch["img_size"], arch["img_size"]),
            mask_in_chans=arch["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=arch["num_multimask_outputs"],
            transformer=TwoWayTransformer(
                depth=arch["decoder_depth"],
                embedding_dim=arch["out_chans"],
                mlp_dim=arch["decoder_mlp_dim"],
                num_heads=DECODER_HEADS,
            ),
            transformer_dim=arch["out_chans"],
            iou_head_depth=arch["iou_head_depth"],
            iou_head_hidden_dim=arch["iou_head_hidden_dim"],
        ),
        pixel_mean=list(PIXEL_MEAN),
        pixel_std=list(PIXEL_STD),
    )
    return sam.eval()


def load_sam(path: Path, device: str = "cpu") -> Any:
    """The SAM model in ``path`` (architecture from the weights), in eval mode on ``device``.

    Raises:
        CheckpointError: Unreadable, not SAM, or weights that do not fit the read architecture.
        ConfigError: An unavailable device.
    """
    state = read_weights(path, "sam")
    model = build_sam(sam_architecture(state, path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"sam checkpoint {path} does not fit the SAM layout read from it ({first})"
        ) from err
    return model.to(torch_device(device))


def torch_device(device: str) -> Any:
    """``torch.device(device)``; ConfigError for a malformed name or CUDA that is not there."""
    import torch

    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"device {device!r} is not a torch device; use cpu, cuda or cuda:N") from err
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available here; use cpu")
    return parsed


class SamBackend(PromptBackend):
    """Segment Anything with cached image embeddings (see the module docstring).

    Args:
        path: Checkpoint file.
        cache_bytes: Embedding-cache budget in bytes.
        device: Torch device.

    Attributes:
        model: The ``segment_anything.modeling.Sam``.
        predictor: The ``segment_anything.SamPredictor`` whose state is swapped per call.
    """

    name = "sam"

    def __init__(self, path: Path, cache_bytes: int = DEFAULT_CACHE_BYTES, device: str = "cpu") -> None:
        from segment_anything import SamPredictor

        super().__init__(cache_bytes)
        self.path = Path(path)
        self.model = load_sam(self.path, device)
        self.predictor = SamPredictor(self.model)
        self._lock = threading.Lock()  # the predictor holds one image's state at a time

    def embed(self, image: np.ndarray) -> Embedding:
        with self._lock:
            self.predictor.set_image(image, image_format="RGB")
            features = self.predictor.features
            sizes = (tuple(self.predictor.original_size), tuple(self.predictor.input_size))
            self.predictor.reset_image()
        nbytes = int(features.element_size() * features.nelement())
        return Embedding(image_shape=(image.shape[0], image.shape[1]), data=(features, *sizes), nbytes=nbytes)

    def decode(self, embedding: Embedding, prompt: Prompt, multimask: bool) -> PromptResult:
        logits, scores, low_res = self.decode_logits(embedding, prompt, multimask)
        return PromptResult(masks=logits > self.model.mask_threshold, scores=scores, logits=low_res)

    def decode_logits(
        self, embedding: Embedding, prompt: Prompt, multimask: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """SAM's answer before thresholding.

        Returns:
            ``(logits (M, H, W), scores (M,), low-resolution logits (M, 4S/16, 4S/16))``, float32.
        """
        features, original_size, input_size = embedding.data
        coords = np.array([(x, y) for x, y, _ in prompt.points], np.float32) if prompt.points else None
        labels = np.array([label for _, _, label in prompt.points], np.int64) if prompt.points else None
        box = np.array(prompt.box, np.float32) if prompt.box is not None else None
        mask_input = self.mask_input(prompt.mask, input_size) if prompt.mask is not None else None
        with self._lock:
            predictor = self.predictor
            predictor.features, predictor.original_size, predictor.input_size = (
                features,
                original_size,
                input_size,
            )
            predictor.is_image_set = True
            try:
                logits, scores, low_res = predictor.predict(
                    point_coords=coords,
                    point_labels=labels,
                    box=box,
                    mask_input=mask_input,
                    multimask_output=multimask,
                    return_logits=True,
                )
            finally:
                predictor.reset_image()
        return logits.astype(np.float32), scores.astype(np.float32), low_res.astype(np.float32)

    def mask_input(self, mask: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
        """SAM's ``(1, 4S/16, 4S/16)`` mask-input logits for an ``(H, W)`` bool coarse mask."""
        import cv2

        size = int(self.model.image_encoder.img_size)
        low = int(self.model.prompt_encoder.mask_input_size[0])
        resized = cv2.resize(
            mask.astype(np.float32), (input_size[1], input_size[0]), interpolation=cv2.INTER_NEAREST
        )
        padded = np.zeros((size, size), np.float32)
        padded[: input_size[0], : input_size[1]] = resized
        small = cv2.resize(padded, (low, low), interpolation=cv2.INTER_AREA)
        return np.where(small >= 0.5, MASK_LOGIT, -MASK_LOGIT).astype(np.float32)[None]
