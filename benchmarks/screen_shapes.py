"""Screens demo models: val mIoU on the shapes data after a fixed wall-clock training budget.

The demo must reach its mIoU within minutes on a 2-core CPU, so what matters is accuracy per
second, not per epoch. This trains one segflow model on in-memory shapes images for
``--seconds`` with the engine's optimiser and warm-up + cosine schedule (stretched over the
time budget instead of a step count) and label-exact flips and 90-degree turns,
and prints one JSON line with the val mIoU, per-class IoU, steps, images/s and an mIoU curve.
Two screens can run side by side with ``--threads 1`` each: both then see the same machine.

    python benchmarks/screen_shapes.py --encoder tu-regnetx_004 --depth 3 --decoder 32,16,8 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from segflow.constants import IGNORE_INDEX
from segflow.data.readers.shapes import SHAPES_CLASSES, SPLIT_IDS, make_sample
from segflow.metrics import class_indices, confusion_matrix_tensor, metrics_from_counts
from segflow.models import create_model
from segflow.training.losses import create_loss
from segflow.training.optim import WarmupDecay, create_optimizer

NUM_CLASSES = len(SHAPES_CLASSES)
VAL_IMAGES = 64
CURVE_POINTS = 6
SCHEDULE_STEPS = 10_000
"""Resolution of the time-based schedule: the budget is mapped onto this many virtual steps."""
WEIGHT_DECAY = 1e-4


def make_split(split: str, count: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The shapes split as tensors: images (N, 3, H, W) in [0, 1], masks (N, H, W) int64."""
    pairs = [make_sample(np.random.default_rng([seed, SPLIT_IDS[split], i]), size) for i in range(count)]
    images = torch.from_numpy(np.stack([image for image, _ in pairs])).permute(0, 3, 1, 2).float() / 255
    return images, torch.from_numpy(np.stack([mask for _, mask in pairs])).long()


def augment(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips and 90-degree turns of a batch (the demo's augmentation)."""
    if torch.rand(1, generator=gen) < 0.5:
        x, y = x.flip(3), y.flip(2)
    if torch.rand(1, generator=gen) < 0.5:
        x, y = x.flip(2), y.flip(1)
    turns = int(torch.randint(0, 4, (1,), generator=gen))
    return torch.rot90(x, turns, (2, 3)), torch.rot90(y, turns, (1, 2))


def evaluate(net: torch.nn.Module, images: torch.Tensor, masks: torch.Tensor) -> dict:
    """Exact val metrics (one confusion matrix over the split)."""
    net.eval()
    matrix = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, len(images), 32):
            pred = class_indices(net(images[start : start + 32]))
            matrix += confusion_matrix_tensor(pred, masks[start : start + 32], NUM_CLASSES, IGNORE_INDEX)
    net.train()
    return metrics_from_counts(matrix.numpy(), class_names=SHAPES_CLASSES)


def screen(args: argparse.Namespace) -> dict:
    """Trains for ``args.seconds`` and returns the summary dict."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train_x, train_y = make_split("train", args.train_images, args.size)
    val_x, val_y = make_split("val", VAL_IMAGES, args.size)
    decoder = [int(v) for v in args.decoder.split(",")]
    net = create_model(
        args.arch, args.encoder, 3, NUM_CLASSES, encoder_depth=args.depth, decoder_channels=decoder
    )
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=memory)
    optimizer = create_optimizer({"name": "adamw", "lr": args.lr, "weight_decay": WEIGHT_DECAY}, net)
    schedule = WarmupDecay("cosine", SCHEDULE_STEPS, int(args.warmup * SCHEDULE_STEPS), 0.0, 1.0)
    loss_fn = create_loss(args.loss, NUM_CLASSES)
    gen = torch.Generator().manual_seed(0)
    ema = None
    if args.ema:
        ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(args.ema), use_buffers=True)
    start, steps, curve = time.perf_counter(), 0, []
    while (elapsed := time.perf_counter() - start) < args.seconds:
        for group in optimizer.param_groups:
            group["lr"] = args.lr * schedule(int(elapsed / args.seconds * SCHEDULE_STEPS))
        index = torch.randint(0, len(train_x), (args.batch,), generator=gen)
        x, y = augment(train_x[index], train_y[index], gen)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(net(x.contiguous(memory_format=memory)), y).backward()
        optimizer.step()
        if ema is not None:
            ema.update_parameters(net)
        steps += 1
        if elapsed > (len(curve) + 1) * args.seconds / CURVE_POINTS:
            curve.append([round(elapsed), round(evaluate(net, val_x, val_y)["miou"], 3)])
    metrics = evaluate(net, val_x, val_y)
    ema_miou = round(evaluate(ema.module, val_x, val_y)["miou"], 4) if ema is not None else None
    return {
        "encoder": args.encoder,
        "depth": args.depth,
        "decoder": decoder,
        "batch": args.batch,
        "lr": args.lr,
        "threads": args.threads,
        "seconds": args.seconds,
        "miou": round(metrics["miou"], 4),
        "ema": args.ema,
        "ema_miou": ema_miou,
        "per_class_iou": {k: round(v["iou"], 3) for k, v in metrics["per_class"].items()},
        "steps": steps,
        "images_per_s": round(steps * args.batch / args.seconds, 1),
        "curve": curve,
    }


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=240.0, help="training wall-clock budget")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--arch", default="unet")
    p.add_argument("--encoder", default="tu-regnetx_004")
    p.add_argument("--depth", type=int, default=3, help="encoder stages (3: features down to stride 8)")
    p.add_argument("--decoder", default="32,16,8", help="decoder channels, one per stage")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--warmup", type=float, default=0.04, help="share of the budget spent warming up")
    p.add_argument("--loss", default="1.0*ce + 1.0*dice")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--train-images", type=int, default=4096)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--ema", type=float, default=0.0, help="also score an EMA of the weights (decay)")
    return p.parse_args()


if __name__ == "__main__":
    print(json.dumps(screen(parse_args())), flush=True)
