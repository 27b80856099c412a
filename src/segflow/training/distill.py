"""Knowledge distillation for the semantic task: a trained teacher's softened class
distribution guides the student (``distill:`` in the training config, :class:`DistillConfig`).

Loss (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network", eq. 2 and
the T^2 factor of section 2):

    L = (1 - w) * L_task(s, labels) + w * T^2 * mean_{labelled pixels} KL(softmax(t/T) || softmax(s/T))

with ``s``, ``t`` the student's and teacher's logits ``(B, K, H, W)``; the ``T^2`` keeps the
gradient of the soft term at the scale of the hard one when ``T`` changes. Pixels whose label is
``ignore_index`` (padding, unlabelled area) count in neither term.

The teacher is loaded once from its checkpoint (``weights_only``, the project's loader), frozen
and kept in eval mode; it is not a sub-module of the LightningModule, so it is neither trained,
nor saved in the student's checkpoints, nor averaged by EMA, nor wrapped by DDP. It sees the
student's batch tensor (padded further to its own stride when that is larger).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from segflow.config import TrainConfig
from segflow.errors import ConfigError
from segflow.models.net import round_up
from segflow.tasks import SEMANTIC, task_of


def distill_kl(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, temperature: float, ignore_index: int
) -> torch.Tensor:
    """``T^2 * mean over labelled pixels of KL(softmax(t/T) || softmax(s/T))`` (Hinton et al. 2015).

    Args:
        student: Student logits, float ``(B, K, H, W)``.
        teacher: Teacher logits ``(B, K, h, w)``; resized bilinearly (``align_corners=False``) to
            ``(H, W)`` when ``(h, w)`` differs. No gradient flows into it.
        target: Labels, int64 ``(B, H, W)``; pixels equal to ``ignore_index`` do not count.
        temperature: ``T`` > 0.
        ignore_index: Label value of unlabelled pixels.

    Returns:
        A float32 scalar in nats; 0 (with a gradient) when no pixel is labelled.

    Raises:
        ValueError: Batch or class counts of ``student`` and ``teacher`` differ, or ``target``
            is not ``(B, H, W)``.
    """
    if student.ndim != 4 or teacher.ndim != 4 or student.shape[:2] != teacher.shape[:2]:
        raise ValueError(
            f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} must both "
            "be (B, K, H, W) with the same B and K"
        )
    if target.shape != (student.shape[0], *student.shape[2:]):
        raise ValueError(f"target {tuple(target.shape)} must be (B, H, W) of logits {tuple(student.shape)}")
    teacher = teacher.detach().float()
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher, size=student.shape[-2:], mode="bilinear", align_corners=False)
    log_s = F.log_softmax(student.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher / temperature, dim=1)
    kl = (log_t.exp() * (log_t - log_s)).sum(dim=1)  # (B, H, W)
    keep = (target != ignore_index).to(kl.dtype)
    return temperature**2 * (kl * keep).sum() / keep.sum().clamp(min=1.0)


class Distillation:
    """A frozen teacher and the settings of one distilled run.

    Deliberately not an ``nn.Module``: held by the LightningModule as a plain attribute, the
    teacher stays out of its ``state_dict`` (checkpoints), parameters (optimizer, EMA, DDP) and
    ``train()`` calls. A deep copy (Lightning's EMA copies the module) shares the frozen teacher.

    Args:
        teacher: Network mapping images ``(B, C, H, W)`` in [0, 1] to logits ``(B, K, H, W)``.
        weight: ``w`` in [0, 1].
        temperature: ``T`` > 0.
        ignore_index: Label value of unlabelled pixels.
        source: The teacher's checkpoint file (for messages).
    """

    def __init__(
        self,
        teacher: nn.Module,
        weight: float,
        temperature: float,
        ignore_index: int,
        source: Path | None = None,
    ) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = float(weight)
        self.temperature = float(temperature)
        self.ignore_index = int(ignore_index)
        self.source = source

    def __deepcopy__(self, memo: dict[int, Any]) -> Distillation:
        return self

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's logits ``(B, K, H, W)`` for the student's batch ``(B, C, H, W)``.

        The batch is padded bottom/right with 0 (as the data pipeline pads) when the teacher
        needs a larger multiple (its ``output_stride``) or minimum size; the logits are cropped
        back to ``(H, W)``. The teacher follows the batch's device on first use.
        """
        teacher = self.teacher
        first = next(teacher.parameters(), None)
        if first is not None and first.device != images.device:
            teacher.to(images.device)
        teacher.eval()
        height, width = int(images.shape[-2]), int(images.shape[-1])
        stride = int(getattr(teacher, "output_stride", 1))
        minimum = int(getattr(teacher, "min_input_size", 1))
        pad_h = round_up(max(height, minimum), stride) - height
        pad_w = round_up(max(width, minimum), stride) - width
        if not (pad_h or pad_w):
            return teacher(images).float()  # type: ignore[no-any-return]
        logits: torch.Tensor = teacher(F.pad(images, (0, pad_w, 0, pad_h)))
        return logits[..., :height, :width].float()

    def __call__(
        self, task_loss: torch.Tensor, student: torch.Tensor, images: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``((1 - w) * task_loss + w * term, term)``, ``term`` = :func:`distill_kl` against the
        teacher's logits for ``images`` (``student``: ``(B, K, H, W)``, ``target``: ``(B, H, W)``)."""
        term = distill_kl(student, self.teacher_logits(images), target, self.temperature, self.ignore_index)
        return (1.0 - self.weight) * task_loss + self.weight * term, term


def teacher_path(config: TrainConfig) -> Path:
    """``distill.teacher`` as a file: relative paths resolve against the config file's folder
    (``base_dir``; the current folder when the config has none), as ``data:`` does.

    Raises:
        ConfigError: No ``distill:`` section, or the file does not exist.
    """
    if config.distill is None:
        raise ConfigError("the config has no distill: section")
    base = Path(config.base_dir) if config.base_dir else Path.cwd()
    path = Path(config.distill.teacher).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ConfigError(
            f"distill.teacher {path} does not exist; give the checkpoint of a trained semantic model "
            f"(e.g. runs/<teacher>/checkpoints/best.ckpt; a relative path resolves against {base})"
        )
    return path


def load_teacher(
    config: TrainConfig, classes: list[str], in_channels: int, ignore_index: int
) -> Distillation:
    """The frozen teacher of ``config.distill`` (``weights_only`` load through
    :func:`segflow.models.checkpoint.load_checkpoint`, CPU, eval mode, no gradients).

    Args:
        config: The run's config (``distill``, ``base_dir``, ``task``).
        classes: The student's class names, in order.
        in_channels: The student's input channels.
        ignore_index: Label value of unlabelled pixels.

    Raises:
        ConfigError: A missing teacher file, a student or teacher that is not semantic, or a
            teacher with other classes (names and order) or input channels than the student.
        CheckpointError: The file is not a readable segflow checkpoint.
    """
    from segflow.models.checkpoint import load_checkpoint, read_meta

    if config.task != SEMANTIC:
        raise ConfigError(f"distill: trains semantic models only, this run's task is {config.task}")
    assert config.distill is not None
    path = teacher_path(config)
    meta = read_meta(path)
    if task_of(meta) != SEMANTIC:
        raise ConfigError(f"distill.teacher {path} is a {task_of(meta)} model; the teacher must be semantic")
    if list(meta.class_names) != list(classes):
        raise ConfigError(
            f"distill.teacher {path} predicts classes {list(meta.class_names)} but this run's data has "
            f"{list(classes)}; the teacher needs the same classes in the same order"
        )
    if meta.model.in_channels != in_channels:
        raise ConfigError(
            f"distill.teacher {path} takes {meta.model.in_channels}-channel images but this run's model "
            f"takes {in_channels}; the teacher needs the student's input channels"
        )
    net, _ = load_checkpoint(path)
    d = config.distill
    return Distillation(net, d.weight, d.temperature, ignore_index, source=path)
