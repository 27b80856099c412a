"""Conversion and read-back time of every annotation format, on CamVid train+val (468 images).

For each target format: ``segflow data convert`` from the CamVid folder into that format
(median of ``--repeats`` runs), then one read of every mask back through the written
``data.yaml`` (reader + label rules, as ``train`` reads them), and whether the labels came back
equal pixel for pixel. The fp32 matmul peak of the same run is printed beside them.

Usage (run alone; ~5 minutes on the 2-core CPU):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_annotation_formats.py \\
        --data configs/data/camvid.yaml --out bench-out/annotation_formats
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import numpy as np

from segflow.annotation.convert import convert
from segflow.data.readers import create_reader
from segflow.data.spec import DataSpec, load_data_spec

FORMATS = (
    "folder",
    "coco",
    "voc",
    "cityscapes",
    "camvid",
    "labelme",
    "cvat",
    "label-studio",
    "via",
    "datumaro",
)


def read_labels(spec: DataSpec) -> dict[str, np.ndarray]:
    """Every split's labels keyed by ``split/last name part``."""
    reader = create_reader(spec)
    rules = reader.label_rules
    out = {}
    for split in reader.split_names():
        for sample in reader.list_split(split).samples:
            key = f"{split}/{sample.name.rsplit('/', 1)[-1]}"
            out[key] = rules.to_labels(reader.read_raw_mask(sample), sample.image_path)
    return out


def bench(source: DataSpec, fmt: str, out: Path, repeats: int, expected: dict[str, np.ndarray]) -> dict:
    times = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        written = convert(source, fmt, out)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    got = read_labels(load_data_spec(written))
    read_s = time.perf_counter() - start
    exact = sorted(got) == sorted(expected) and all(np.array_equal(got[k], expected[k]) for k in expected)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.stat().st_nlink == 1)
    return {
        "format": fmt,
        "convert_s": statistics.median(times),
        "read_s": read_s,
        "exact": exact,
        "bytes_written": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="configs/data/camvid.yaml")
    parser.add_argument("--out", default="bench-out/annotation_formats")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from bench_training import matmul_peak_gflops  # same folder

    source = load_data_spec(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    expected = read_labels(source)
    source_read_s = time.perf_counter() - start
    rows = [bench(source, fmt, out / fmt, args.repeats, expected) for fmt in FORMATS]
    peak = matmul_peak_gflops()
    result = {
        "images": len(expected),
        "source_read_s": source_read_s,
        "matmul_peak_gflops": peak,
        "rows": rows,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"{len(expected)} images; source read {source_read_s:.2f} s; fp32 matmul peak {peak:.0f} GFLOP/s")
    print("| format | convert s (median) | read back s | exact | bytes written (not hard-linked) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['format']} | {row['convert_s']:.2f} | {row['read_s']:.2f} | {row['exact']} | "
            f"{row['bytes_written'] / 1e6:.1f} MB |"
        )


if __name__ == "__main__":
    main()
