"""Classical methods vs the trained U-Net (and U-Net + dense CRF) on ISBI membranes and CamVid val.

One row per method and dataset: mIoU and boundary F1 from the exact metric code ``segflow
evaluate`` uses (:func:`segflow.metrics.evaluate.score_pairs`: one confusion matrix over the
images, boundary F1 at ``--boundary-tolerance`` pixels), and the median milliseconds per image
of the method alone (image already in memory; the U-Net+CRF row counts the network and the CRF).
Rows whose output used the ground truth (a majority vote, label seeds or label boxes) are marked
**oracle-assisted**: they are not comparable to the U-Net as they stand.

Data: ``configs/data/membrane.yaml`` and ``configs/data/camvid.yaml`` (``../shared/data``); a
dataset whose folder is missing is skipped with the reason. The U-Net rows need
``--membrane-model CKPT`` / ``--camvid-model CKPT`` (skipped, with the reason, without them).

    .venv/bin/python benchmarks/bench_classical.py --membrane-model M.ckpt --camvid-model C.ckpt \\
        --out bench-out/classical            # the lead's full run
    .venv/bin/python benchmarks/bench_classical.py --limit 2 --methods otsu,kmeans,unet,unet_crf \\
        --camvid-model runs/camvid14/checkpoints/best.ckpt --out /tmp/bench-classical   # smoke run

Prints a Markdown table and writes ``classical.md`` and ``classical.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = {"membrane": REPO / "configs/data/membrane.yaml", "camvid": REPO / "configs/data/camvid.yaml"}
SPLIT = "val"

# row name -> (classical method, params per dataset). Threshold-like methods run without labels
# on the membranes, where their two levels are the two classes (membranes dark = 0, cells
# bright = 1); on CamVid's 11 classes they need the vote.
ROWS: dict[str, tuple[str, dict[str, dict[str, str]]]] = {
    "otsu": ("otsu", {"membrane": {}, "camvid": {"vote": "true"}}),
    "multi_otsu": (
        "multi_otsu",
        {"membrane": {"classes": "3", "vote": "true"}, "camvid": {"classes": "4", "vote": "true"}},
    ),
    "adaptive": (
        "adaptive",
        {"membrane": {"block_size": "51"}, "camvid": {"block_size": "51", "vote": "true"}},
    ),
    "canny": ("canny", {"membrane": {"vote": "true"}, "camvid": {"vote": "true"}}),
    "region_growing": ("region_growing", {"membrane": {}, "camvid": {}}),
    "watershed": (
        "watershed",
        {"membrane": {"min_distance": "7"}, "camvid": {"min_distance": "7", "vote": "true"}},
    ),
    "watershed_seeds": ("watershed", {"membrane": {"markers": "labels"}, "camvid": {"markers": "labels"}}),
    "kmeans": ("kmeans", {"membrane": {"k": "2"}, "camvid": {"k": "8"}}),
    "mean_shift": ("mean_shift", {"membrane": {}, "camvid": {}}),
    "felzenszwalb": ("felzenszwalb", {"membrane": {}, "camvid": {}}),
    "slic": ("slic", {"membrane": {}, "camvid": {}}),
    "grabcut": ("grabcut", {"membrane": {}, "camvid": {}}),
}
MODEL_ROWS = ("unet", "unet_crf")
ALL_ROWS = (*ROWS, *MODEL_ROWS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", default="membrane,camvid", help="membrane, camvid or both")
    parser.add_argument("--membrane-model", type=Path, help="U-Net checkpoint trained on the membranes")
    parser.add_argument("--camvid-model", type=Path, help="U-Net checkpoint trained on CamVid")
    parser.add_argument("--methods", default=",".join(ALL_ROWS), help=f"rows to run: {', '.join(ALL_ROWS)}")
    parser.add_argument("--limit", type=int, default=0, help="first N val images only (0: all)")
    parser.add_argument("--boundary-tolerance", type=int, default=2, help="boundary F1 distance, pixels")
    parser.add_argument(
        "--crf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="U-Net+CRF: a CRF parameter (segflow.classical.crf.CRF_PARAMS), repeatable",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench-out/classical", help="output folder")
    args = parser.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    args.crf = dict(pair.split("=", 1) for pair in args.crf if "=" in pair)
    unknown = [d for d in args.datasets if d not in DATASETS] + [m for m in args.methods if m not in ALL_ROWS]
    if unknown:
        parser.error(
            f"unknown dataset or method {unknown[0]!r}; datasets: {', '.join(DATASETS)}; "
            f"methods: {', '.join(ALL_ROWS)}"
        )
    return args


def load_split(name: str, limit: int) -> tuple[Any, list[tuple[np.ndarray, np.ndarray]]]:
    """The dataset's val split and its first ``limit`` (image, mask) pairs, read once."""
    from segflow.data import create_dataset, load_data_spec

    dataset = create_dataset(load_data_spec(DATASETS[name]), SPLIT)
    count = len(dataset) if limit <= 0 else min(limit, len(dataset))
    return dataset, [dataset.load_pair(i) for i in range(count)]


def timed(
    pairs: list[tuple[np.ndarray, np.ndarray]],
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    times: list[float],
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(prediction, mask) pairs, appending each prediction's wall time (ms) to ``times``."""
    for image, mask in pairs:
        started = time.perf_counter()
        labels = predict(image, mask)
        times.append((time.perf_counter() - started) * 1000.0)
        yield labels, mask


def score(
    dataset: Any,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    predict: Callable[[np.ndarray, np.ndarray], np.ndarray],
    tolerance: int,
) -> dict[str, Any]:
    """mIoU, boundary F1, pixel accuracy and median ms of ``predict`` over the pairs."""
    from segflow.metrics.evaluate import score_pairs

    times: list[float] = []
    metrics = score_pairs(
        timed(pairs, predict, times),
        len(dataset.classes),
        dataset.ignore_index,
        list(dataset.classes),
        tolerance,
    )
    return {
        "miou": metrics["miou"],
        "boundary_f1": metrics["boundary_f1"],
        "pixel_accuracy": metrics["pixel_accuracy"],
        "ms_median": statistics.median(times),
        "images": len(times),
    }


def classical_row(
    row: str, dataset_name: str, dataset: Any, pairs: list[Any], tolerance: int
) -> dict[str, Any]:
    from segflow.classical.methods import create_classical

    name, per_dataset = ROWS[row]
    params = per_dataset[dataset_name]
    method = create_classical(name, params)
    classes = list(dataset.classes)

    def predict(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return method.segment(image, mask, classes, dataset.ignore_index).labels

    result = score(dataset, pairs, predict, tolerance)
    oracle = method.label_use != "none"  # labels are always given here: used when the method can
    return {"method": row, "params": method.values, "oracle_assisted": oracle, **result}


def model_rows(
    rows: list[str], model: Path, dataset: Any, pairs: list[Any], tolerance: int, crf: dict[str, str]
) -> list[dict[str, Any]]:
    """U-Net (argmax of its softmax) and U-Net + dense CRF on the same probabilities."""
    from segflow.classical.crf import crf_params, refine
    from segflow.inference import InferenceOptions, Predictor

    predictor = Predictor.from_path(model, InferenceOptions(probs=True))
    predictor.predict(pairs[0][0], return_probs=True)  # warm-up (first call allocates)
    params = crf_params(crf)
    results = []
    if "unet" in rows:
        result = score(dataset, pairs, lambda image, mask: predictor.predict(image).labels, tolerance)
        results.append(
            {"method": "unet", "params": {"model": str(model)}, "oracle_assisted": False, **result}
        )
    if "unet_crf" in rows:

        def with_crf(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
            probs = predictor.predict(image, return_probs=True).probs
            assert probs is not None
            return refine(image, probs, params)

        result = score(dataset, pairs, with_crf, tolerance)
        results.append(
            {
                "method": "unet_crf",
                "params": {"model": str(model), **params},
                "oracle_assisted": False,
                **result,
            }
        )
    return results


def markdown(rows: list[dict[str, Any]], skipped: list[dict[str, str]]) -> str:
    lines = [
        "| dataset | method | mIoU | boundary F1 | ms / image | images | oracle-assisted |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        oracle = "**oracle-assisted**" if row["oracle_assisted"] else "no"
        lines.append(
            f"| {row['dataset']} | {row['method']} | {row['miou']:.3f} | {row['boundary_f1']:.3f} | "
            f"{row['ms_median']:.1f} | {row['images']} | {oracle} |"
        )
    lines += [f"\nskipped: {item['dataset']} {item['method']}: {item['reason']}" for item in skipped]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from segflow.errors import SegflowError

    args = parse_args(argv)
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    models = {"membrane": args.membrane_model, "camvid": args.camvid_model}
    for name in args.datasets:
        try:
            dataset, pairs = load_split(name, args.limit)
        except SegflowError as err:
            skipped.append({"dataset": name, "method": "all", "reason": str(err)})
            continue
        for row in [r for r in args.methods if r in ROWS]:
            print(f"{name}: {row} ...", file=sys.stderr, flush=True)
            rows.append(
                {"dataset": name, **classical_row(row, name, dataset, pairs, args.boundary_tolerance)}
            )
        wanted = [r for r in args.methods if r in MODEL_ROWS]
        model = models[name]
        if wanted and (model is None or not Path(model).is_file()):
            reason = f"no --{name}-model given" if model is None else f"model file {model} not found"
            skipped += [{"dataset": name, "method": r, "reason": reason} for r in wanted]
        elif wanted:
            print(f"{name}: {', '.join(wanted)} ...", file=sys.stderr, flush=True)
            for result in model_rows(wanted, Path(model), dataset, pairs, args.boundary_tolerance, args.crf):
                rows.append({"dataset": name, **result})
    table = markdown(rows, skipped)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "classical.md").write_text(table, encoding="utf-8")
    report = {
        "split": SPLIT,
        "limit": args.limit,
        "boundary_tolerance_px": args.boundary_tolerance,
        "rows": rows,
        "skipped": skipped,
    }
    (args.out / "classical.json").write_text(
        json.dumps(report, indent=1, default=str) + "\n", encoding="utf-8"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
