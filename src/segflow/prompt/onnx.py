"""ONNX export of Segment Anything's prompt decoder, and its parity check against torch.

The exported graph is ``segment_anything.utils.onnx.SamOnnxModel`` (prompt encoder + mask
decoder + mask upscaling, without the image encoder) written by ``torch.onnx.export`` (the
TorchScript exporter, ``dynamo=False``), as the library's ``scripts/export_onnx_model.py``
does. A browser or an edge device then runs the decoder on an embedding computed once
elsewhere. Inputs (:func:`decoder_inputs` builds them):

- ``image_embeddings`` ``(1, C, S/16, S/16)`` float32: the image encoder's features;
- ``point_coords`` ``(1, N, 2)`` float32 and ``point_labels`` ``(1, N)`` float32: points in the
  encoder's resized frame (``ResizeLongestSide``), then the box as two corners labelled 2 and 3,
  or, without a box, one padding point labelled -1; N is dynamic;
- ``mask_input`` ``(1, 1, 4S/16, 4S/16)`` and ``has_mask_input`` ``(1,)``: a coarse mask's logits
  (a prompt needs a point or a box besides: with a mask alone torch's prompt encoder has no
  sparse token while the graph always holds one, so the answers differ);
- ``orig_im_size`` ``(2,)`` float32: ``(H, W)``.

Outputs: ``masks`` ``(1, K, H, W)`` logits of all K = 1 + multimask decoder outputs (index 0 is
SAM's single-mask answer, 1.. its multimask answers), ``iou_predictions`` ``(1, K)`` and
``low_res_masks``. :func:`check_decoder_parity` runs the file in ONNX Runtime and the same
prompt through :class:`~segflow.prompt.sam.SamBackend` and reports the largest logit
difference; binary masks must agree wherever the torch logit is farther than the tolerance
from SAM's threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import InferenceError
from segflow.prompt.base import Prompt
from segflow.prompt.sam import SamBackend

OPSET = 17
"""ONNX opset (the library's export script uses 17)."""
PARITY_ATOL = 1e-4
"""Largest logit difference accepted between ONNX Runtime and torch (float32 on CPU)."""
INPUT_NAMES = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks")
PAD_LABEL = -1.0
BOX_LABELS = (2.0, 3.0)


def export_sam_decoder(backend: SamBackend, path: str | Path, opset: int = OPSET) -> Path:
    """Writes the decoder of ``backend.model`` as ONNX to ``path`` (atomically); returns the path."""
    import torch
    from segment_anything.utils.onnx import SamOnnxModel

    from segflow.io_utils import atomic_write

    model = backend.model
    wrapper = _dynamic_crop_model(SamOnnxModel)(model, return_single_mask=False).eval()
    channels = int(model.prompt_encoder.embed_dim)
    grid = tuple(int(v) for v in model.prompt_encoder.image_embedding_size)
    low = tuple(int(v) for v in model.prompt_encoder.mask_input_size)
    device = next(model.parameters()).device
    example = (
        torch.randn(1, channels, *grid, device=device),
        torch.randint(0, int(model.image_encoder.img_size), (1, 5, 2), device=device).float(),
        torch.randint(0, 4, (1, 5), device=device).float(),
        torch.randn(1, 1, *low, device=device),
        torch.tensor([1.0], device=device),
        torch.tensor([300.0, 400.0], device=device),
    )
    with atomic_write(path) as tmp, torch.no_grad():
        torch.onnx.export(
            wrapper,
            example,
            str(tmp),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return Path(path)


def _dynamic_crop_model(base: type) -> type:
    """``SamOnnxModel`` whose crop of the padded mask follows ``orig_im_size`` at run time.

    The library crops with ``int(prepadded_size[0])``, which tracing freezes to the example's
    size: the exported graph then crops every image as if it had the example's aspect ratio
    (logits off by up to 0.1 on a 150x100 image). Selecting rows and columns with
    ``torch.arange(prepadded_size[i])`` keeps the size an input of the graph.
    """
    import torch
    from torch.nn import functional as F

    class DynamicCropSamOnnxModel(base):  # type: ignore[misc,valid-type]
        def mask_postprocessing(self, masks: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
            masks = F.interpolate(
                masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
            )
            prepadded = self.resize_longest_image_size(orig_im_size, self.img_size)
            masks = masks.index_select(2, torch.arange(prepadded[0], device=masks.device))
            masks = masks.index_select(3, torch.arange(prepadded[1], device=masks.device))
            size = orig_im_size.to(torch.int64)
            return F.interpolate(masks, size=(size[0], size[1]), mode="bilinear", align_corners=False)  # type: ignore[arg-type]

    return DynamicCropSamOnnxModel


def decoder_inputs(backend: SamBackend, image_or_key: Any, prompt: Prompt) -> dict[str, np.ndarray]:
    """The ONNX decoder's inputs (module docstring) for a prompt on a cached or given image."""
    key = image_or_key if isinstance(image_or_key, str) else backend.set_image(image_or_key)
    embedding = backend.cache.get(key)
    if embedding is None:
        raise InferenceError(f"image key {key[:12]}... is not in the sam cache; send the image again")
    prompt.check(*embedding.image_shape)
    if not prompt.points and prompt.box is None:
        # the graph always holds at least one (padding) token where torch would hold none
        raise InferenceError("the ONNX SAM decoder needs a point or a box; a mask alone cannot be exported")
    features, original_size, input_size = embedding.data
    transform = backend.predictor.transform
    coords = [[x, y] for x, y, _ in prompt.points]
    labels = [float(label) for _, _, label in prompt.points]
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        coords += [[x0, y0], [x1, y1]]
        labels += list(BOX_LABELS)
    else:
        coords.append([0.0, 0.0])
        labels.append(PAD_LABEL)
    points = transform.apply_coords(np.array(coords, np.float32), original_size).astype(np.float32)
    low = tuple(int(v) for v in backend.model.prompt_encoder.mask_input_size)
    if prompt.mask is not None:
        mask_input, has_mask = backend.mask_input(prompt.mask, input_size)[None], 1.0
    else:
        mask_input, has_mask = np.zeros((1, 1, *low), np.float32), 0.0
    return {
        "image_embeddings": features.detach().cpu().numpy().astype(np.float32),
        "point_coords": points[None],
        "point_labels": np.array([labels], np.float32),
        "mask_input": mask_input.astype(np.float32),
        "has_mask_input": np.array([has_mask], np.float32),
        "orig_im_size": np.array(original_size, np.float32),
    }


def check_decoder_parity(
    backend: SamBackend, onnx_path: str | Path, image_or_key: Any, prompt: Prompt, atol: float = PARITY_ATOL
) -> dict[str, float]:
    """Runs the exported decoder in ONNX Runtime and the same prompt through torch.

    Returns:
        ``{max_abs_diff, score_abs_diff, mask_mismatch}``: the largest logit and score
        differences over all K outputs, and the number of pixels whose binary mask differs
        although the torch logit lies more than ``atol`` from the threshold.

    Raises:
        InferenceError: The differences exceed ``atol`` or masks disagree (one line with the numbers).
    """
    import onnxruntime as ort

    inputs = decoder_inputs(backend, image_or_key, prompt)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_scores, _ = session.run(list(OUTPUT_NAMES), inputs)
    key = image_or_key if isinstance(image_or_key, str) else backend.set_image(image_or_key)
    embedding = backend.cache.get(key)
    if embedding is None:
        raise InferenceError("the sam cache keeps no embedding (cache_bytes too small); give it room for one")
    single = backend.decode_logits(embedding, prompt, multimask=False)
    multi = backend.decode_logits(embedding, prompt, multimask=True)
    torch_logits = np.concatenate([single[0], multi[0]])
    torch_scores = np.concatenate([single[1], multi[1]])
    threshold = float(backend.model.mask_threshold)
    diff = float(np.abs(onnx_logits[0] - torch_logits).max())
    score_diff = float(np.abs(onnx_scores[0] - torch_scores).max())
    sure = np.abs(torch_logits - threshold) > atol
    mismatch = int(((onnx_logits[0] > threshold) != (torch_logits > threshold))[sure].sum())
    report = {"max_abs_diff": diff, "score_abs_diff": score_diff, "mask_mismatch": float(mismatch)}
    if diff > atol or score_diff > atol or mismatch:
        raise InferenceError(
            f"ONNX decoder {onnx_path} differs from torch: max logit diff {diff:.2e}, score diff "
            f"{score_diff:.2e} (tolerance {atol:g}), {mismatch} mask pixels differ"
        )
    return report
