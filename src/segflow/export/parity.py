"""Checks that an exported model computes what the original computes.

- :func:`check_parity`: max absolute logit difference and argmax agreement between a
  reference forward and a candidate on the same images.
- :func:`evaluate_miou`: mIoU (percent) of a backend on a dataset split, through the one
  inference path (:class:`segflow.inference.Predictor`) and the exact metrics
  (:class:`segflow.metrics.SegmentationMetrics`); the INT8 gate compares fp32 and INT8 with it.
- :func:`sample_batches` / :func:`dataset_batches`: the images the checks run on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from segflow.errors import SegflowError

if TYPE_CHECKING:
    from segflow.models.meta import CheckpointMeta

MIN_ARGMAX_AGREEMENT = 0.999
"""An export whose argmax differs from the original on more than 0.1 % of pixels is refused."""
PARITY_IMAGES = 4
SYNTHETIC_SIZE_MULTIPLES = ((4, 4), (3, 5))
"""Synthetic parity images: two sizes, in multiples of the output stride (e.g. 128x128, 96x160)."""
PERCENT = 100.0

Forward = Callable[[np.ndarray], np.ndarray]


class ExportCheckError(SegflowError, RuntimeError):
    """An export failed its parity check or the INT8 accuracy gate."""


@dataclass
class ParityReport:
    """Result of :func:`check_parity`.

    Attributes:
        max_abs_diff: Largest absolute logit difference over all images and pixels.
        argmax_agreement: Fraction of pixels whose argmax class matches (0..1).
        num_images: Images compared.
        num_pixels: Pixels compared.
    """

    max_abs_diff: float
    argmax_agreement: float
    num_images: int
    num_pixels: int

    @property
    def passed(self) -> bool:
        """True when the argmax agreement is at least :data:`MIN_ARGMAX_AGREEMENT`."""
        return self.argmax_agreement >= MIN_ARGMAX_AGREEMENT

    def summary(self, label: str) -> str:
        """One line for the CLI."""
        verdict = "ok" if self.passed else f"FAILED (needs >= {MIN_ARGMAX_AGREEMENT * PERCENT:.1f} %)"
        return (
            f"{label} parity on {self.num_images} images: max |logit diff| {self.max_abs_diff:.2e}, "
            f"argmax agreement {self.argmax_agreement * PERCENT:.3f} % {verdict}"
        )


def check_parity(reference: Forward, candidate: Forward, batches: list[np.ndarray]) -> ParityReport:
    """Compares two forwards on the same inputs.

    Args:
        reference: ``(N, C, H, W)`` float32 in [0, 1] -> logits ``(N, K, H, W)``.
        candidate: Same signature (e.g. an ONNX backend's ``forward``).
        batches: Inputs ``(N, C, H, W)``, H and W multiples of the model's stride.

    Returns:
        The parity report.
    """
    max_diff, agree, pixels, images = 0.0, 0, 0, 0
    for batch in batches:
        expected = np.asarray(reference(batch), dtype=np.float32)
        actual = np.asarray(candidate(batch), dtype=np.float32)
        max_diff = max(max_diff, float(np.abs(expected - actual).max()))
        agree += int((expected.argmax(1) == actual.argmax(1)).sum())
        pixels += expected.shape[0] * expected.shape[2] * expected.shape[3]
        images += batch.shape[0]
    return ParityReport(max_diff, agree / max(pixels, 1), images, pixels)


def torch_forward(net: torch.nn.Module) -> Forward:
    """Wraps an eager module as a NumPy forward (fp32, inference mode)."""
    net = net.eval()

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()

    return forward


def sample_batches(
    in_channels: int, stride: int, count: int = PARITY_IMAGES, seed: int = 0
) -> list[np.ndarray]:
    """Synthetic smooth-plus-noise images at two sizes (multiples of ``stride``).

    Values are k / 255 so the uint8 input variant sees exactly the same pixels.

    Returns:
        ``count`` float32 batches ``(1, C, H, W)`` in [0, 1].
    """
    rng = np.random.default_rng(seed)
    batches = []
    for index in range(count):
        rows, cols = SYNTHETIC_SIZE_MULTIPLES[index % len(SYNTHETIC_SIZE_MULTIPLES)]
        height, width = rows * stride, cols * stride
        ramp = np.linspace(0, 1, width, dtype=np.float32)[None, None, :] * rng.random((in_channels, 1, 1))
        noise = rng.random((in_channels, height, width)).astype(np.float32)
        image = np.rint((0.5 * ramp + 0.5 * noise) * 255) / 255
        batches.append(image[None].astype(np.float32))
    return batches


def _load_dataset(data_yaml: str | Path, split: str) -> Any:
    from segflow.data import create_dataset, load_data_spec

    return create_dataset(load_data_spec(data_yaml), split)


def dataset_batches(
    data_yaml: str | Path, split: str, count: int, meta: CheckpointMeta
) -> Iterator[np.ndarray]:
    """Yields the first ``count`` images of a split as ``(1, C, H, W)`` float32 batches in [0, 1],
    sized as the Predictor feeds the network: the model's input policy (keep, resize to a size or
    scale by a factor), then reflect-padded at the bottom/right to the policy's multiple
    (:func:`segflow.inference.preprocess.policy_input`). INT8 calibration and parity
    therefore see the resolution the model runs at (a scale-0.5 model: half-size images), and
    pixels scaled by the model's ``normalization.max_value`` as training and the Predictor scale
    them (a 12-bit model: uint16 / 4095, :func:`segflow.inference.preprocess.pixel_scale`).
    """
    from segflow.inference.preprocess import InputPolicy, policy_input, to_chw

    policy = InputPolicy.from_meta(meta)
    dataset = _load_dataset(data_yaml, split)
    for index in range(min(count, len(dataset))):
        name = str(dataset.samples[index].image_path)
        yield policy_input(
            to_chw(dataset.load_image(index), meta.in_channels, meta.max_value, name)[None], policy
        )[0]


def check_measurable(data_yaml: str | Path, split: str, max_images: int | None = None) -> int:
    """Refuses a split on which mIoU cannot be measured, before any model is run.

    Args:
        data_yaml: Data spec file.
        split: Split name.
        max_images: Only the first N images are scored (None: all).

    Returns:
        Number of labelled pixels in the images that would be scored (> 0).

    Raises:
        ExportCheckError: No image, or no pixel other than ``ignore_index`` in them.
    """
    dataset = _load_dataset(data_yaml, split)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    labelled = sum(int((np.asarray(dataset[i]["mask"]) != dataset.ignore_index).sum()) for i in range(count))
    if labelled == 0:
        raise ExportCheckError(
            f"{data_yaml}: the {split} split has no labelled pixel in its first {count} image(s) "
            f"(every mask value is ignore_index {dataset.ignore_index}), so the INT8 gate cannot measure "
            "mIoU; give data with labelled masks. Nothing was written"
        )
    return labelled


def evaluate_miou(
    backend: Any, data_yaml: str | Path, split: str = "val", max_images: int | None = None
) -> float:
    """mIoU in percent points of ``backend`` on a dataset split.

    Args:
        backend: A segflow backend (``forward`` + ``meta``).
        data_yaml: Data spec file.
        split: Split name.
        max_images: Evaluate only the first N images (None: all).

    Returns:
        mIoU x 100 from one confusion matrix over the split.

    Raises:
        ExportCheckError: The split has no image or no labelled pixel, so mIoU is undefined
            (a gate that cannot measure refuses).
    """
    from segflow.inference import predictor as predictor_module
    from segflow.metrics import SegmentationMetrics

    dataset = _load_dataset(data_yaml, split)
    predictor = predictor_module.Predictor(backend)
    metrics = SegmentationMetrics(predictor.num_classes, ignore_index=dataset.ignore_index)
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    for index in range(count):
        sample = dataset[index]
        labels = predictor.predict(sample["image"]).labels
        metrics.update(
            torch.from_numpy(labels.astype(np.int64))[None],
            torch.from_numpy(np.asarray(sample["mask"]))[None],
        )
    miou = float(metrics.compute()["miou"]) * PERCENT
    if not math.isfinite(miou):
        raise ExportCheckError(
            f"{data_yaml}: the {split} split has no labelled pixel in its first {count} image(s) "
            "(every mask value is ignore_index), so mIoU cannot be measured; give data with labelled masks"
        )
    return miou
