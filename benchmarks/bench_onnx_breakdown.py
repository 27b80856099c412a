"""Where does segflow's ONNX export lose time against a plain ``torch.onnx`` export?

Every variant adds one of segflow's features to a plain static export (or one of its
session options to ONNX Runtime's defaults). All variants run in ONE process, interleaved
round-robin (``--repeats`` rounds of one timed call each, after ``--warmup`` calls), and
each row reports the median and its ratio to the plain export, so a busy machine slows
every variant alike and the ratios stay comparable across machines.

Variants (each ONNX file in a temporary folder):
    raw-static        smp model without normalisation, static (1, C, S, S), opset 17, default session
    plain-static      segflow net (normalisation inside), static, opset 17, default session
    +dynamic          plain-static with dynamic N/H/W axes
    +heads            +dynamic with segflow's probs/labels outputs, fetching only logits
    +heads-fetch-all  the same graph, fetching logits, probs and labels
    segflow-before    segflow's export before the constant-scale fix (Resize sizes computed from Shape)
    segflow-before+options  ... in segflow's session options (the ``onnx`` backend before the fix)
    +dynamic+const-scales   +dynamic with the upsampling exported as constant scales (the fix)
    segflow-opsetNN   segflow's ``export_onnx`` (metadata included), opset NN, default session
    segflow+options   segflow's export in segflow's session options (the ``onnx`` backend as shipped)
    segflow+arena     segflow's session options with the CPU memory arena enabled
    segflow+arena-same  ... arena on with ``arena_extend_strategy`` kSameAsRequested
    segflow+shrink    ... arena on, and the run asks the arena to shrink back after every call
    plain+no-arena    plain-static with only ``enable_cpu_mem_arena=False``
    segflow-logits-graph          segflow's export cut down to the nodes ``logits`` needs (ONNX
                                  Runtime runs every node of a graph, fetched or not)
    segflow-logits-graph+options  ... in segflow's session options
    segflow-logits-graph+arena    ... in segflow's session options with the arena on (the proposed fix)

``--memory`` then runs each session-option variant of segflow's export in its own
subprocess at ``--memory-batch`` and reports the process peak RSS and the RSS held after the
run (what a long-lived session keeps).

Usage (about 2 minutes at the defaults on a 2-core CPU):
    .venv/bin/python benchmarks/bench_onnx_breakdown.py --spec unet:resnet18 --size 256 --repeats 8
    .venv/bin/python benchmarks/bench_onnx_breakdown.py --spec unet:resnet34 --size 512 --repeats 6 \\
        --memory --out bench-out/onnx_breakdown.md
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from unittest import mock

import numpy as np
import psutil

CLASSES = 12
MIB = 1024 * 1024
MS = 1000.0
PLAIN = "plain-static"
MEMORY_VARIANTS = (
    "segflow+defaults",
    "segflow+options",
    "segflow+arena",
    "segflow+arena-same",
    "segflow+shrink",
)


@dataclass
class Variant:
    """One row: an ONNX file, its session options and the outputs fetched."""

    name: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None
    shrink: bool = False


def session_options(segflow: bool = False, arena: bool | None = None, same_as_requested: bool = False) -> Any:
    """ORT defaults, or segflow's ``_session_options`` (optionally with the arena switched)."""
    import onnxruntime as ort

    from segflow.inference.backends import _session_options

    options = _session_options(None) if segflow else ort.SessionOptions()
    if arena is not None:
        options.enable_cpu_mem_arena = arena
    if same_as_requested:
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


THREADS: list[int] = []
"""``--threads``: when set, every variant runs with this many intra-op threads."""


def make_session(variant: Variant) -> Any:
    import onnxruntime as ort

    options = session_options(**variant.options)
    if THREADS:
        options.intra_op_num_threads = THREADS[0]
    if variant.options.get("same_as_requested"):
        arena = ort.OrtArenaCfg({"arena_extend_strategy": 1})  # 1 = kSameAsRequested
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        ort.create_and_register_allocator(info, arena)  # process-wide: used by use_env_allocators sessions
    return ort.InferenceSession(str(variant.path), options, providers=["CPUExecutionProvider"])


def run_options(shrink: bool) -> Any:
    import onnxruntime as ort

    options = ort.RunOptions()
    if shrink:
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def export_variants(spec: str, size: int, folder: Path) -> list[Variant]:
    """Writes the ONNX files and returns the variants in table order."""
    import torch

    from segflow.export.onnx import (
        ExportWrapper,
        _dynamic_axes,
        constant_scale_resizes,
        export_onnx,
        fixed_resize_ratios,
    )
    from segflow.inference.benchmarking import build_spec_model, spec_meta

    arch, encoder = spec.split(":")[:2]
    net = build_spec_model(arch, encoder, CLASSES).eval()
    meta = spec_meta(arch, encoder, CLASSES)
    x = torch.rand(1, 3, size, size)

    def plain(module: torch.nn.Module, name: str, outputs: list[str], dynamic: bool) -> Path:
        path = folder / f"{name}.onnx"
        axes = {k: v for k, v in _dynamic_axes("float-nchw").items() if k in ["image", *outputs]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (x,),
                str(path),
                input_names=["image"],
                output_names=outputs,
                dynamic_axes=axes if dynamic else None,
                opset_version=17,
                dynamo=False,
            )
        return path

    raw = plain(cast("torch.nn.Module", net.model), "raw", ["logits"], dynamic=False)
    static = plain(net, "plain", ["logits"], dynamic=False)
    dynamic = plain(net, "dynamic", ["logits"], dynamic=True)
    wrapper = ExportWrapper(net, "float-nchw", CLASSES).eval()
    heads = plain(wrapper, "heads", ["logits", "probs", "labels"], True)
    with constant_scale_resizes(fixed_resize_ratios(net, 3, int(cast(int, net.output_stride)))):
        scaled = plain(net, "dynamic-scales", ["logits"], dynamic=True)
    with mock.patch("segflow.export.onnx.fixed_resize_ratios", lambda *args: []):  # the export before the fix
        before = export_onnx(net, meta, folder / "segflow-before.onnx")
    segflow = {
        opset: export_onnx(net, meta, folder / f"segflow{opset}.onnx", opset=opset) for opset in (13, 17, 20)
    }
    s17 = segflow[17]
    logits_only = logits_only_copy(s17, folder / "segflow17-logits.onnx")
    return [
        Variant("raw-static", raw),
        Variant(PLAIN, static),
        Variant("+dynamic", dynamic),
        Variant("+heads", heads, outputs=["logits"]),
        Variant("+heads-fetch-all", heads, outputs=None),
        Variant("segflow-before", before, outputs=["logits"]),
        Variant("segflow-before+options", before, {"segflow": True}, ["logits"]),
        Variant("+dynamic+const-scales", scaled),
        *(Variant(f"segflow-opset{o}", p, outputs=["logits"]) for o, p in segflow.items()),
        Variant("segflow+options", s17, {"segflow": True}, ["logits"]),
        Variant("segflow+arena", s17, {"segflow": True, "arena": True}, ["logits"]),
        Variant("segflow+shrink", s17, {"segflow": True, "arena": True}, ["logits"], shrink=True),
        Variant("plain+no-arena", static, {"arena": False}, ["logits"]),
        Variant("segflow-logits-graph", logits_only, outputs=["logits"]),
        Variant("segflow-logits-graph+options", logits_only, {"segflow": True}, ["logits"]),
        Variant("segflow-logits-graph+arena", logits_only, {"segflow": True, "arena": True}, ["logits"]),
    ]


def logits_only_copy(path: Path, out: Path) -> Path:
    """segflow's export cut down to the nodes ``logits`` needs. ONNX Runtime runs every node of a
    graph on each call, whatever ``run`` fetches, and keeps nodes that feed no graph output, so
    dropping the outputs is not enough: the softmax/argmax nodes themselves must go."""
    import onnx

    model = onnx.load(str(path))
    needed, kept = {"logits"}, []
    for node in reversed(model.graph.node):
        if needed.intersection(node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    del model.graph.node[:]
    model.graph.node.extend(reversed(kept))
    outputs = [output for output in model.graph.output if output.name == "logits"]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    onnx.save(model, str(out))
    return out


@dataclass
class Timings:
    """Per-call samples of one variant: wall seconds, minor page faults, system CPU seconds."""

    wall: list[float] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)
    sys: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def timed_call(run: Callable[[], Any], into: Timings) -> None:
    """One call; page faults and system time come from ``getrusage`` (all threads of the process)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    run()
    into.wall.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    into.faults.append(after.ru_minflt - before.ru_minflt)
    into.sys.append(after.ru_stime - before.ru_stime)
    into.cpu.append(after.ru_stime - before.ru_stime + after.ru_utime - before.ru_utime)


def interleaved(variants: list[Variant], size: int, warmup: int, repeats: int) -> dict[str, Timings]:
    """Round-robin timing: every round times one call of every variant."""
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    sessions = {v.name: make_session(v) for v in variants}

    def runner(v: Variant) -> Callable[[], Any]:
        return lambda: sessions[v.name].run(v.outputs, {"image": x}, run_options(v.shrink))

    runs = {v.name: runner(v) for v in variants}
    for _ in range(warmup):
        for run in runs.values():
            run()
    times = {v.name: Timings() for v in variants}
    for _ in range(repeats):
        for name, run in runs.items():
            timed_call(run, times[name])
    return times


def memory_child(path: str, name: str, size: int, batch: int) -> None:
    """Runs one session variant twice at ``batch`` and prints its RSS figures as JSON."""
    from segflow.inference.benchmarking import rss_peak

    process = psutil.Process()
    before = process.memory_info().rss / MIB
    settings = {
        "segflow+defaults": ({}, False),
        "segflow+options": ({"segflow": True}, False),
        "segflow+arena": ({"segflow": True, "arena": True}, False),
        "segflow+arena-same": ({"segflow": True, "arena": True, "same_as_requested": True}, False),
        "segflow+shrink": ({"segflow": True, "arena": True}, True),
    }
    options, shrink = settings[name]
    variant = Variant(name, Path(path), options, ["logits"], shrink)
    session = make_session(variant)
    loaded = process.memory_info().rss / MIB
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    with rss_peak() as running:
        start = time.perf_counter()
        for _ in range(2):
            session.run(["logits"], {"image": x}, run_options(shrink))
        seconds = (time.perf_counter() - start) / 2
    print(
        json.dumps(
            {
                "name": name,
                "rss_before_mb": before,
                "rss_loaded_mb": loaded,
                "run_peak_rss_mb": running[0],
                "rss_after_mb": process.memory_info().rss / MIB,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "ms_per_call": seconds * MS,
            }
        )
    )


def memory_rows(path: Path, size: int, batch: int) -> list[dict[str, Any]]:
    rows = []
    for name in MEMORY_VARIANTS:
        command = [sys.executable, __file__, "--memory-child", str(path), name, str(size), str(batch)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            print(f"memory row {name} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return rows


def render(args: argparse.Namespace, times: dict[str, Timings], memory: list[dict[str, Any]]) -> str:
    medians = {name: float(np.median(t.wall)) for name, t in times.items()}
    mins = {name: min(t.wall) for name, t in times.items()}
    command = " ".join(["benchmarks/bench_onnx_breakdown.py", *sys.argv[1:]])
    lines = [
        f"# ONNX export breakdown: {args.spec} at {args.size}x{args.size}, batch 1",
        "",
        f"`{command}`: {args.warmup} warm-up + {args.repeats} interleaved rounds; "
        f"onnxruntime {__import__('onnxruntime').__version__}, "
        f"{psutil.cpu_count(logical=False)} physical cores. "
        "Page faults and system CPU time per call from getrusage (not slowed by other processes).",
        "",
        "| variant | median ms | min ms | x plain (median) | x plain (min) | CPU ms/call | x plain (CPU) "
        "| page faults/call | sys ms/call |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, median in medians.items():
        t = times[name]
        lines.append(
            f"| {name} | {median * MS:.1f} | {mins[name] * MS:.1f} | {median / medians[PLAIN]:.2f} "
            f"| {mins[name] / mins[PLAIN]:.2f} | {np.median(t.cpu) * MS:.1f} "
            f"| {np.median(t.cpu) / np.median(times[PLAIN].cpu):.2f} "
            f"| {np.median(t.faults):.0f} | {np.median(t.sys) * MS:.1f} |"
        )
    if memory:
        lines += [
            "",
            f"Memory (segflow export, batch {args.memory_batch}, one subprocess per row):",
            "",
            "| session | ms/call | RSS after load MiB | peak RSS while running MiB | RSS held after MiB "
            "| process peak (ru_maxrss) MiB |",
            "|---|---|---|---|---|---|",
            *(
                f"| {m['name']} | {m['ms_per_call']:.1f} | {m['rss_loaded_mb']:.0f} "
                f"| {m['run_peak_rss_mb']:.0f} | {m['rss_after_mb']:.0f} | {m['peak_rss_mb']:.0f} |"
                for m in memory
            ),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="unet:resnet18", help="arch:encoder (random weights, 12 classes)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads for every variant (default: each its own)"
    )
    parser.add_argument("--memory", action="store_true", help="also measure RSS per session variant")
    parser.add_argument("--memory-batch", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        THREADS.append(args.threads)
    if args.memory_child:
        path, name, size, batch = args.memory_child
        memory_child(path, name, int(size), int(batch))
        return 0
    with tempfile.TemporaryDirectory(prefix="segflow-onnx-breakdown-") as workdir:
        variants = export_variants(args.spec, args.size, Path(workdir))
        if args.only:
            keep = {PLAIN, *args.only.split(",")}
            variants = [v for v in variants if v.name in keep]
        times = interleaved(variants, args.size, args.warmup, args.repeats)
        print(render(args, times, []), flush=True)
        memory = (
            memory_rows(Path(workdir) / "segflow17.onnx", args.size, args.memory_batch) if args.memory else []
        )
    text = render(args, times, memory)
    if memory:
        print(text[text.index("Memory") :])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
