"""Backend speed benchmark, same code as ``segflow benchmark``: torch eager, the plain static
``torch.onnx`` export in a default ONNX Runtime session (``onnx-plain``, the reference), segflow's
``onnx`` and ``onnx-int8``, and OpenVINO ``openvino`` / ``openvino-int8`` (NNCF), side by side in
one run with the fp32 matmul peak of each runtime.

Usage (the issue-14 goal run; ~15 minutes on the 2-core CPU):
    .venv/bin/python benchmarks/bench_backends.py unet:resnet34:12 --size 512 --batch 1,4 \\
        --backend torch,onnx-plain,onnx,onnx-int8,openvino,openvino-int8 --iters 6 \\
        --out bench-out/backends
"""

from __future__ import annotations

import sys

from segflow.cli.main import main

DEFAULT_ARGS = [
    "unet:resnet34:12",
    "--size",
    "512",
    "--batch",
    "1,4",
    "--backend",
    "torch,onnx-plain,onnx,onnx-int8,openvino,openvino-int8",
    "--out",
    "bench-out/backends",
]

if __name__ == "__main__":
    sys.exit(main(["benchmark", *(sys.argv[1:] or DEFAULT_ARGS)]))
