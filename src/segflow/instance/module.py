"""The LightningModule of ``task: instance``: torchvision's Mask R-CNN, scored by COCO mask AP.

Training minimises the sum of Mask R-CNN's five loss terms (``loss_classifier``,
``loss_box_reg``, ``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``), each logged as an
epoch mean (``train/loss_<term>``). Validation runs the model in eval mode, keeps every
detection of a thing class (torchvision's ``box_score_thresh``, 0.05 by default) as a COCO
result with an RLE mask, and at the end of the epoch gathers the results and ground truth of
every DDP rank and scores them with pycocotools (``segflow.instance.metrics.coco_mask_ap``):
``val/map`` (AP@[.5:.95], the checkpoint monitor), ``val/map50``, ``val/map75``. It also logs
``val/miou``, the semantic mIoU of the map pasted from the instances scored at
``score_threshold`` (``segflow.instance.predictor.paste``), against the class masks, so the
``plateau`` scheduler and semantic dashboards still read a value.

Checkpoints hold the network under ``net.`` (the layout every segflow checkpoint has), the
metadata under ``segflow`` (task ``instance``) and the RNG states, all loadable with
``weights_only=True``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from segflow.errors import TrainingError
from segflow.models.meta import CheckpointMeta
from segflow.training.module import SegflowModule, finite

MAP_KEYS = ("map", "map50", "map75")
"""COCO summary values logged as ``val/<key>`` every epoch."""


class InstanceModule(SegflowModule):
    """Trains a torchvision Mask R-CNN.

    Args:
        net: ``MaskRCNN`` (``segflow.instance.maskrcnn.create_maskrcnn``).
        class_names: K class names (0: background).
        things: Thing class indices (the COCO categories scored).
        ignore_index: Class-mask value excluded from ``val/miou``.
        optimizer: Optimizer config dict (``segflow.training.optim``).
        scheduler: Scheduler config dict.
        meta: Checkpoint metadata (task ``instance``).
        score_threshold: Score at which instances are pasted into the ``val/miou`` map.
        mask_threshold: Mask probability cut for results and the pasted map.
        log_every_n_steps: Steps between logged ``train/loss_step`` values.
    """

    def __init__(
        self,
        net: nn.Module,
        class_names: list[str],
        things: list[int],
        ignore_index: int,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        meta: CheckpointMeta,
        score_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        log_every_n_steps: int = 1,
    ) -> None:
        super().__init__()
        from segflow.metrics import SegmentationMetrics

        self.net = net
        self.class_names = class_names
        self.things = list(things)
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        self.meta = meta
        self.score_threshold = score_threshold
        self.mask_threshold = mask_threshold
        self.log_every_n_steps = log_every_n_steps
        self.val_metrics = SegmentationMetrics(
            len(class_names), ignore_index=ignore_index, class_names=class_names, compute_boundary=False
        )
        self.val_gt: list[dict[str, Any]] = []
        self.val_dt: list[dict[str, Any]] = []
        self.last_val: dict[str, Any] = {}

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Eval-mode detections for a list of ``(C, H, W)`` images in [0, 1]."""
        return self.net(images)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, targets = batch["image"], batch["target"]
        terms = self.net(images, [_training_target(t) for t in targets])
        loss = sum(terms.values())
        assert isinstance(loss, torch.Tensor)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at global step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}); stopped, the last good checkpoint is kept. Lower optimizer.lr or set "
                "trainer.gradient_clip_val"
            )
        named = {f"loss_{name.removeprefix('loss_')}": value for name, value in terms.items()}
        self.record_loss(loss, named, len(images))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_loss_means()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        from segflow.instance.predictor import detections, paste
        from segflow.instance.rle import encode_mask

        outputs = self.net(batch["image"])
        for output, target, class_mask in zip(outputs, batch["target"], batch["class_mask"], strict=True):
            image_id = int(target["image_id"])
            masks, labels, scores = detections(output, self.things, 0.0, self.mask_threshold)
            self.val_dt += [
                {
                    "image_id": image_id,
                    "category_id": int(c),
                    "score": float(s),
                    "segmentation": encode_mask(m),
                }
                for m, c, s in zip(masks, labels, scores, strict=True)
            ]
            self.val_gt.append(
                {
                    "image_id": image_id,
                    "masks": np.packbits(target["masks"].cpu().numpy().astype(bool), axis=-1),
                    "width": int(class_mask.shape[-1]),
                    "height": int(class_mask.shape[-2]),
                    "labels": target["labels"].cpu().numpy(),
                    "iscrowd": target["iscrowd"].cpu().numpy(),
                    "ignore": np.packbits(
                        (class_mask == self.val_metrics.ignore_index).cpu().numpy(), axis=-1
                    ),
                }
            )
            shown = scores >= self.score_threshold
            semantic, _ = paste(masks[shown], labels[shown], tuple(class_mask.shape))
            self.val_metrics.update(
                torch.from_numpy(semantic).long()[None].to(class_mask.device), class_mask[None]
            )

    def on_validation_epoch_end(self) -> None:
        from segflow.distributed.launch import gather_objects
        from segflow.instance.metrics import coco_mask_ap

        semantic = self.val_metrics.compute()  # counts summed across processes first
        self.val_metrics.reset()
        gathered = gather_objects((self.val_gt, self.val_dt))
        self.val_gt, self.val_dt = [], []
        gt = [_unpacked(record) for part in gathered for record in part[0]]
        dt = [record for part in gathered for record in part[1]]
        scores = coco_mask_ap(gt, dt, self.class_names, self.things) if gt else {}
        self.last_val = {**scores, "miou": semantic["miou"]}
        for key in MAP_KEYS:
            self.log(f"val/{key}", finite(scores.get(key) or 0.0), prog_bar=key == "map", sync_dist=False)
        self.log("val/miou", finite(semantic["miou"]), sync_dist=False)


def _training_target(target: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Boxes, labels and masks of the non-crowd objects (crowd regions are not trained on, as in
    Detectron; COCO scores a detection on one as neither right nor wrong)."""
    keep = target["iscrowd"] == 0
    return {key: target[key][keep] for key in ("boxes", "labels", "masks")}


def _unpacked(record: dict[str, Any]) -> dict[str, Any]:
    """A ground-truth record with its bit-packed masks (kept small across the epoch) unpacked."""
    width = record["width"]
    masks = np.unpackbits(record["masks"], axis=-1, count=width).astype(np.uint8)
    ignore = np.unpackbits(record["ignore"], axis=-1, count=width).astype(bool)
    return {**record, "masks": masks, "ignore": ignore}
