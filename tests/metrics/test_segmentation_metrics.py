"""SegmentationMetrics: accumulation over batches, and exact sums across 2 gloo processes."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segflow.constants import IGNORE_INDEX
from segflow.data.labels import LabelRules
from segflow.errors import ConfigError, DataError
from segflow.metrics import (
    SegmentationMetrics,
    boundary_counts,
    class_indices,
    confusion_matrix,
    metrics_from_counts,
)

NUM_CLASSES = 4
# Uneven shards (rank 0: images 0-4, rank 1: images 5-6) so that averaging the two
# processes' mIoU would not give the split value.
SHARDS = ((0, 5), (5, 7))


def make_split(num_images: int = 7, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocky random masks with ignore pixels and imperfect predictions, seeded."""
    gen = torch.Generator().manual_seed(0)
    coarse = torch.randint(0, NUM_CLASSES, (num_images, size // 4, size // 4), generator=gen)
    target = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)
    pred = torch.roll(target, shifts=2, dims=2)
    noise = torch.rand(target.shape, generator=gen) < 0.1
    pred[noise] = torch.randint(0, NUM_CLASSES, (int(noise.sum()),), generator=gen)
    target[torch.rand(target.shape, generator=gen) < 0.05] = IGNORE_INDEX
    target[0][target[0] == 3] = 0  # image 0 has no class 3 in its ground truth
    return pred, target


def test_multi_batch_equals_single_shot() -> None:
    pred, target = make_split()
    single = SegmentationMetrics(NUM_CLASSES)
    single.update(pred, target)
    batched = SegmentationMetrics(NUM_CLASSES)
    for start in range(0, len(pred), 2):
        batched.update(pred[start : start + 2], target[start : start + 2])
    a, b = single.compute(), batched.compute()
    assert json.dumps(a) == json.dumps(b)
    assert a["num_images"] == 7


def test_matches_pure_functions() -> None:
    pred, target = make_split()
    metric = SegmentationMetrics(NUM_CLASSES, class_names=["a", "b", "c", "d"], boundary_tolerance=1)
    metric.update(pred, target)
    confmat = confusion_matrix(pred, target, NUM_CLASSES)
    boundary = sum(boundary_counts(p, t, NUM_CLASSES, tolerance=1) for p, t in zip(pred, target, strict=True))
    labels = LabelRules.for_scoring(NUM_CLASSES, IGNORE_INDEX, ["a", "b", "c", "d"])
    expected = metrics_from_counts(confmat, boundary, num_images=7, labels=labels, boundary_tolerance_px=1)
    assert json.dumps(metric.compute()) == json.dumps(expected)
    assert (expected["boundary_tolerance_px"], expected["ignore_index"]) == (1, IGNORE_INDEX)
    assert metric.confmat.dtype == torch.int64 and metric.boundary.dtype == torch.int64
    assert int(metric.confmat.sum()) == int((target != IGNORE_INDEX).sum())


def test_without_boundary_reports_nan() -> None:
    pred, target = make_split(num_images=1)
    metric = SegmentationMetrics(NUM_CLASSES, compute_boundary=False)
    metric.update(pred, target)
    result = metric.compute()
    assert math.isnan(result["boundary_f1"])
    assert int(metric.boundary.sum()) == 0


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        SegmentationMetrics(0)
    with pytest.raises(ConfigError, match="2 names"):
        SegmentationMetrics(3, class_names=["a", "b"])
    metric = SegmentationMetrics(2)
    with pytest.raises(DataError, match=r"\(N, H, W\)"):
        metric.update(torch.zeros(4, 4, dtype=torch.long), torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(DataError, match="argmax"):
        metric.update(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(DataError, match="dtype torch.float32"):
        metric.update(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)  # forked child: keep off the parent's OpenMP pool
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        pred, target = make_split()
        start, stop = SHARDS[rank]
        metric = SegmentationMetrics(NUM_CLASSES)
        metric.update(pred[start:stop], target[start:stop])
        local_confmat = metric.confmat.clone()
        first = metric.compute()
        metric.update(pred[:0], target[:0])  # empty batch: clears the cache, forces a second sync
        second = metric.compute()
        result = {
            "first": first,
            "second": second,
            "local_unchanged": bool(torch.equal(local_confmat, metric.confmat)),
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)  # about 9 s on an idle machine (2 spawned interpreters)
def test_ddp_two_processes_equal_single_process(tmp_path: Path) -> None:
    # fork: the children reuse the imported torch instead of starting 2 interpreters (~4 s each)
    mp.start_processes(
        ddp_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    pred, target = make_split()
    single = SegmentationMetrics(NUM_CLASSES)
    single.update(pred, target)
    expected = json.dumps(single.compute())
    # Guard that the test can fail: one shard alone gives other numbers.
    shard = SegmentationMetrics(NUM_CLASSES)
    shard.update(pred[:5], target[:5])
    assert json.dumps(shard.compute()) != expected
    for rank in range(2):
        result = json.loads(Path(tmp_path, f"rank{rank}.json").read_text())
        assert json.dumps(result["first"]) == expected
        assert json.dumps(result["second"]) == expected
        assert result["local_unchanged"]
    assert np.isfinite(json.loads(expected)["miou"])


def test_class_indices_equals_argmax_and_takes_the_first_of_ties() -> None:
    logits = torch.randn(3, 6, 17, 9)
    assert torch.equal(class_indices(logits), logits.argmax(1))
    tied = torch.zeros(1, 4, 2, 2)
    tied[0, 2, 0, 0] = tied[0, 3, 0, 0] = 1.0  # classes 2 and 3 tie at (0, 0)
    assert class_indices(tied).tolist() == [[[2, 0], [0, 0]]]


@pytest.mark.parametrize("ignore", [0, 1, 2])  # the ignore value is the first, middle or last class
def test_ignored_class_is_excluded_from_every_score(ignore: int) -> None:
    names = ["c0", "c1", "c2"]
    target = torch.tensor([[[2, 1, 0, 0], [2, 1, 0, 0]]])
    pred = torch.where(target == ignore, (ignore + 1) % 3, target)  # right on every labelled pixel
    metric = SegmentationMetrics(3, ignore_index=ignore, class_names=names, boundary_tolerance=0)
    metric.update(pred, target)
    result = metric.compute()
    assert [result[key] for key in ("miou", "pixel_accuracy", "mean_dice", "boundary_f1")] == [1.0] * 4
    assert all(math.isnan(v) for v in result["per_class"][names[ignore]].values())
    assert int(metric.confmat[ignore].sum()) == 0 and int(metric.boundary[ignore].sum()) == 0
    assert (result["ignore_index"], result["boundary_tolerance_px"]) == (ignore, 0)
