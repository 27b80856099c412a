"""Backend speed benchmark (torch / onnx / onnx-int8), same code as ``segflow benchmark``.

Usage (the issue-3 goal run; ~10 minutes on the 2-core CPU):
    .venv/bin/python benchmarks/bench_backends.py unet:resnet34:12 --size 512 --batch 1,4 \\
        --backend torch,onnx,onnx-int8 --out bench-out/backends
"""

from __future__ import annotations

import sys

from segflow.cli.main import main

DEFAULT_ARGS = ["unet:resnet34:12", "--size", "512", "--batch", "1,4", "--out", "bench-out/backends"]

if __name__ == "__main__":
    sys.exit(main(["benchmark", *(sys.argv[1:] or DEFAULT_ARGS)]))
