"""The CamVid frontier: best held-out mIoU per CPU millisecond (issue 15).

Protocol. CamVid's file names carry the drive (``0001TP_006690.png``). Drive 0001TP (62 frames,
all in train) is held out as ``test``; train is the other train frames (0006R0 + 0016E5, 305),
val the native val split (101 frames of 0016E5). One model gives both figures: val mIoU (a
drive it saw) and held-out mIoU (a drive it never saw). Every mIoU is ``segflow evaluate``'s
``metrics.json`` ``miou`` (full 480x360 masks, void ignored, no TTA, ``--upsample labels``:
argmax at the network's resolution, labels upsampled nearest to 480x360, the path the
end-to-end latency times); the per-class held-out IoU is its ``per_class[NAME].iou``.

Stages (``--stage a,b`` or ``all``, run in this order; each resumes where it stopped):

* ``protocol``: ``segflow data split DATA --group-by '^([^_]+)_' --hold-out 0001TP --out
  OUT/protocol`` (skipped when OUT/protocol/data.yaml exists).
* ``screen``: every candidate of ``configs/frontier/`` trained from scratch for
  ``--budget-minutes`` (default 15) of wall clock (``trainer.max_time_minutes``; the configs'
  cosine anneals by time, ``max_epochs`` is only a cap), then ``segflow evaluate`` on val and on
  the held-out test split. Row ``screen-<candidate>``.
* ``final``: the best ``--finalists`` (3) screen rows by held-out mIoU (``--select-by val`` picks
  by val mIoU instead, leaving the held-out drive untouched by the choice; ``--finalists a,b``
  names the candidates instead, for example when the screen rows are recorded in
  docs/benchmarks.md but their folder is gone) retrained for
  ``--budget-minutes`` (default 60), rows ``final-<candidate>``; plus the baseline row
  ``baseline-unet-r18``: today's ``configs/camvid.yaml`` (its own 60-minute limit) run with
  exactly ``segflow train configs/camvid.yaml data=OUT/protocol/data.yaml output_dir=OUT/runs
  name=baseline-unet-r18``; plus, when asked, ``--distill`` (the finalist of fewest GFLOPs
  trained again with the best final row as its teacher, ``distill.teacher=CKPT``; with
  ``--distill-student ROW`` that finished row's recipe and stage budget instead, row ROW-distill,
  so a 15-minute screen row gets a 15-minute distilled twin) and
  ``--prune AMOUNT`` (``segflow prune`` of the best final row, fine-tuned for
  ``--prune-minutes`` with ``--init-from``).
* ``latency``: one side-by-side run in this process over every finished row:
  :func:`segflow.inference.benchmarking.run_benchmark` per model at a 480x360 frame, 2 threads,
  backends torch, onnx, onnx-int8, openvino, openvino-int8; each result row's ``e2e_p50_ms`` is
  the median end-to-end time of one decoded 480x360 RGB frame to 480x360 labels (segflow's
  Predictor path with ``upsample="labels"``, as the evaluations); the torch matmul peak is
  measured at the start and the end of the same run.
  Written to OUT/latency.json (skipped when it already covers every finished row).
* ``int8-eval``: the held-out mIoU of each row's own INT8 exports (``segflow export --int8``,
  calibrated on the protocol's train split, then ``segflow evaluate --backend onnx-int8`` /
  ``openvino-int8``), for the rows whose INT8 point could be on the frontier (it would be with
  the fp32 mIoU), or the rows named by ``--rows``. OUT/int8/<row>.json.
* ``report``: OUT/frontier.md (a row per model: stage, train minutes, epochs, val and held-out
  mIoU, GFLOPs, parameters, end-to-end ms per backend, INT8 held-out mIoU; then the Pareto
  front) and OUT/frontier.png (held-out mIoU against end-to-end ms, a marker per backend, a
  colour per row, the Pareto front drawn). An INT8 point counts with its own held-out mIoU
  only; one not yet evaluated is drawn hollow and is not on the front.

Resuming: a row with OUT/rows/<row>.json is done and skipped; a row whose run folder
OUT/runs/<row>/ holds ``metrics.json`` (a finished training, such as the baseline run started by
hand with the command above) is only evaluated; a run folder without it that changed in the last
``STALE_MINUTES`` minutes is taken for a training still running and left alone; an older one is
an interrupted training, trained again with ``--overwrite``. Trainings and evaluations run as
``segflow`` subprocesses with OMP_NUM_THREADS=2 (logs in OUT/logs); the evaluations of a row go
to OUT/eval/<row>/{val,test}. ``--dry-run`` prints every command of the asked stages and runs
or writes nothing.

    .venv/bin/python benchmarks/frontier.py --stage protocol,screen
        # 6 candidates x (15 min + about 4 min of start-up and evaluation): about 2 hours
    .venv/bin/python benchmarks/frontier.py --stage final
        # 3 finalists x (60 min + about 5 min), the baseline adopted: about 3.3 hours
    .venv/bin/python benchmarks/frontier.py --stage latency,int8-eval,report
    .venv/bin/python benchmarks/frontier.py --stage all --dry-run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = Path("configs/frontier")
"""Candidate configs, relative to the repository (the commands name them so)."""
CANDIDATES = (
    "unet-r18",
    "unet-r18-photometric",
    "lraspp-mobilenetv3",
    "fpn-mobilenetv3",
    "linknet-r18",
    "segformer-b0",
    "deeplabv3plus-r18-os16",
)
BASELINE_ROW = "baseline-unet-r18"
BASELINE_CONFIG = "configs/camvid.yaml"
BASELINE_CANDIDATE = "camvid"
DATA_TEMPLATE = REPO / "configs/data/camvid.yaml"
DEFAULT_DATA = REPO.parent / "shared" / "data"
STAGES = ("protocol", "screen", "final", "latency", "int8-eval", "report")
GROUP_BY = "^([^_]+)_"
HOLD_OUT = "0001TP"
BUDGETS = {"screen": 15.0, "final": 60.0}
"""Default ``--budget-minutes`` per training stage."""
MAX_EPOCHS = 1000
"""Epoch cap of the candidates: the time budget stops them."""
FINALISTS = 3
PRUNE_MINUTES = 15.0
THREADS = 2
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
TTA = "none"
"""No test-time augmentation: ``--upsample labels`` refuses views, and the latency times one view."""
UPSAMPLE = "labels"
"""``segflow evaluate --upsample`` and ``run_benchmark(upsample=...)``: mIoU and e2e ms of one path.
An evaluation, row or latency file recorded with another value is measured again."""
FRAME = (480, 360)
"""(W, H) of a CamVid frame: the latency input."""
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
INT8_EXPORTS = {"onnx-int8": ("onnx", "model.onnx"), "openvino-int8": ("openvino", "model.xml")}
"""INT8 backend -> (``segflow export --format``, fp32 file name; the INT8 one goes beside it)."""
INT8_MAX_DROP = 100.0
"""``--max-miou-drop`` of the INT8 exports: never refused, its held-out mIoU is measured instead."""
STALE_MINUTES = 10.0
LATENCY_ITERS, LATENCY_WARMUP = 50, 5
MARKERS = {"torch": "o", "onnx": "s", "onnx-int8": "D", "openvino": "^", "openvino-int8": "v"}
WALL_TIME = re.compile(r"Wall time: ([0-9.]+) min")
"""The fit time line of a run's model_card.md (segflow.training.report)."""


class BenchError(Exception):
    """A bad input or a failed step, printed as one line."""


# -- settings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """What one invocation does."""

    out: Path
    data: Path
    stages: tuple[str, ...]
    rows: frozenset[str] | None  # None: every row
    budget_minutes: float | None  # None: BUDGETS per stage
    finalists: int | tuple[str, ...]  # the best N screen rows, or these candidates
    select_by: str  # heldout or val
    distill: bool
    distill_student: str | None  # None: the final row of fewest GFLOPs
    prune: float | None
    prune_minutes: float
    iters: int
    warmup: int
    dry_run: bool

    @property
    def protocol_yaml(self) -> Path:
        return self.out / "protocol" / "data.yaml"

    @property
    def runs(self) -> Path:
        return self.out / "runs"

    def budget(self, stage: str) -> float:
        return self.budget_minutes if self.budget_minutes is not None else BUDGETS[stage]

    def wants(self, row: str, candidate: str) -> bool:
        """Whether ``--rows`` names the row or its candidate (no ``--rows``: every row)."""
        return self.rows is None or row in self.rows or candidate in self.rows


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--stage", required=True, help=f"comma-separated stages from {', '.join(STAGES)}, or all"
    )
    parser.add_argument("--rows", default=None, help="only these rows or candidates, comma-separated (a,b)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("bench-out/frontier"),
        help="output folder (default bench-out/frontier)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help="the shared data folder holding camvid/ (default ../shared/data), or a CamVid data YAML",
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=None,
        help="training wall clock per row (default: screen 15, final 60; the baseline keeps its 60)",
    )
    parser.add_argument(
        "--finalists",
        default=str(FINALISTS),
        metavar="N|a,b",
        help="final: the best N screen rows (default 3), or these candidates, comma-separated",
    )
    parser.add_argument(
        "--select-by",
        choices=("heldout", "val"),
        default="heldout",
        help="mIoU that picks the finalists (default heldout, as issue 15 asks)",
    )
    parser.add_argument("--distill", action="store_true", help="final: add a distilled row")
    parser.add_argument(
        "--distill-student",
        default=None,
        metavar="ROW",
        help="final --distill: the finished row whose recipe and budget the student repeats "
        "(default: the final row of fewest GFLOPs)",
    )
    parser.add_argument("--prune", type=float, default=None, metavar="AMOUNT", help="final: add a pruned row")
    parser.add_argument(
        "--prune-minutes", type=float, default=PRUNE_MINUTES, help="fine-tuning of the pruned row (15)"
    )
    parser.add_argument("--iters", type=int, default=LATENCY_ITERS, help="latency: timed calls (50)")
    parser.add_argument("--warmup", type=int, default=LATENCY_WARMUP, help="latency: untimed calls (5)")
    parser.add_argument("--dry-run", action="store_true", help="print every command; run and write nothing")
    args = parser.parse_args(argv)
    asked = list(comma_list(args.stage))
    if asked == ["all"]:
        asked = list(STAGES)
    unknown = [s for s in asked if s not in STAGES]
    if unknown or not asked:
        parser.error(f"--stage {args.stage!r}: use stages from {', '.join(STAGES)} (comma-separated) or all")
    if args.budget_minutes is not None and args.budget_minutes <= 0:
        parser.error("--budget-minutes must be positive")
    if args.prune is not None and not 0 < args.prune < 1:
        parser.error(f"--prune {args.prune} must be a share of channels in (0, 1), e.g. 0.3")
    finalists = parse_finalists(args.finalists)
    if finalists is None:
        known = ", ".join(CANDIDATES)
        parser.error(f"--finalists {args.finalists!r}: give a count of at least 1 or candidates from {known}")
    if args.iters < 1 or args.warmup < 0:
        parser.error("--iters must be at least 1, --warmup at least 0")
    rows = frozenset(comma_list(args.rows)) if args.rows else None
    return Settings(
        out=args.out.resolve(),
        data=args.data.resolve(),
        stages=tuple(s for s in STAGES if s in asked),
        rows=rows,
        budget_minutes=args.budget_minutes,
        finalists=finalists,
        select_by=args.select_by,
        distill=args.distill,
        distill_student=args.distill_student,
        prune=args.prune,
        prune_minutes=args.prune_minutes,
        iters=args.iters,
        warmup=args.warmup,
        dry_run=args.dry_run,
    )


# -- small helpers ----------------------------------------------------------------------------
def comma_list(text: str) -> tuple[str, ...]:
    """``a, b,,c`` -> ``("a", "b", "c")`` (``--stage``, ``--rows``, ``--finalists``)."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_finalists(text: str) -> int | tuple[str, ...] | None:
    """``--finalists``: a count (at least 1) or known candidate names; None when it is neither."""
    if text.strip().isdigit():
        return int(text) if int(text) >= 1 else None
    names = comma_list(text)
    return names if names and all(n in CANDIDATES for n in names) else None


def log(message: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def note(settings: Settings, message: str) -> None:
    """A step not run: a ``# comment`` among the dry run's commands, else a log line."""
    if settings.dry_run:
        print(f"# {message}")
    else:
        log(message)


def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename."""
    from segflow.io_utils import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, json.dumps(value, indent=1) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise BenchError(f"{path} is not readable JSON ({err}); remove it to redo that step") from None


def segflow_program() -> str:
    """The ``segflow`` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("segflow")
    if beside.is_file():
        return str(beside)
    return shutil.which("segflow") or "segflow"


def job_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({name: str(THREADS) for name in THREAD_ENV})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def shown(command: Sequence[str]) -> str:
    """The command as recorded: ``segflow ARGS`` (the console script's path left out)."""
    return shlex.join(["segflow", *command])


def run_segflow(settings: Settings, args: list[str], log_name: str) -> None:
    """Runs ``segflow ARGS`` with 2 threads (its output in OUT/logs/LOG_NAME.log), or prints it
    under ``--dry-run``.

    Raises:
        BenchError: A non-zero exit (the log's last line and path named).
    """
    line = f"OMP_NUM_THREADS={THREADS} {shown(args)}"
    if settings.dry_run:
        print(line)
        return
    log_path = settings.out / "logs" / f"{log_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log(f"run: {line}")
    with log_path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC\n{line}\n")
        handle.flush()
        done = subprocess.run(
            [segflow_program(), *args], cwd=REPO, env=job_env(), stdout=handle, stderr=subprocess.STDOUT
        )
    if done.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        raise BenchError(
            f"{shown(args[:2])} failed (exit {done.returncode}): {''.join(tail)} (log: {log_path})"
        )


# -- rows -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """One row to train (or adopt) and evaluate."""

    row: str
    stage: str
    candidate: str
    config: str  # as the command names it (relative to the repository)
    extra: tuple[str, ...] = ()  # overrides after data/output_dir/name
    options: tuple[str, ...] = ()  # options after the overrides (--init-from)
    budget_minutes: float | None = None
    before: tuple[tuple[str, ...], ...] = ()  # segflow commands that must run first (prune)
    notes: dict[str, Any] = field(default_factory=dict)


def candidate_plan(settings: Settings, stage: str, candidate: str, row: str | None = None) -> Plan:
    minutes = settings.budget(stage)
    return Plan(
        row=row or f"{stage}-{candidate}",
        stage=stage,
        candidate=candidate,
        config=str(CONFIGS / f"{candidate}.yaml"),
        extra=(f"trainer.max_time_minutes={minutes:g}", f"trainer.max_epochs={MAX_EPOCHS}"),
        budget_minutes=minutes,
    )


def baseline_plan() -> Plan:
    """Today's recipe as it is (60 minutes from its own config): the hand-started run's command."""
    return Plan(BASELINE_ROW, "final", BASELINE_CANDIDATE, BASELINE_CONFIG, budget_minutes=60.0)


def train_args(settings: Settings, plan: Plan) -> list[str]:
    """``train CONFIG data=... output_dir=... name=ROW [EXTRA...] [OPTIONS...]``."""
    return [
        "train",
        plan.config,
        f"data={settings.protocol_yaml}",
        f"output_dir={settings.runs}",
        f"name={plan.row}",
        *plan.extra,
        *plan.options,
    ]


def checkpoint_of(run_dir: Path) -> Path:
    """The run's best.ckpt (its last.ckpt when only that exists)."""
    best, last = run_dir / "checkpoints" / "best.ckpt", run_dir / "checkpoints" / "last.ckpt"
    return last if last.is_file() and not best.is_file() else best


def minutes_since_change(folder: Path) -> float:
    """Minutes since any file under ``folder`` last changed."""
    latest = max(
        (p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=folder.stat().st_mtime
    )
    return (time.time() - latest) / 60


def epochs_done(run_dir: Path) -> int | None:
    """Epochs the run started, from its metrics.csv (None without one)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        epochs = {row["epoch"] for row in csv.DictReader(handle) if row.get("epoch", "").isdigit()}
    return len(epochs) or None


def fit_seconds(run_dir: Path, measured: float | None) -> float | None:
    """The run's fit time from its model card (0.1-min resolution), else the measured wall time."""
    card = run_dir / "model_card.md"
    found = WALL_TIME.search(card.read_text(encoding="utf-8")) if card.is_file() else None
    return round(float(found.group(1)) * 60, 1) if found else measured


def model_size(checkpoint: Path) -> tuple[int, float, tuple[int, int]]:
    """(parameters, GFLOPs of one forward, network input ``(H, W)`` for a 480x360 frame) of a checkpoint.

    GFLOPs follow :func:`segflow.inference.benchmarking.count_gflops` (FLOPs = 2 x MACs, torch's
    FlopCounterMode) at :func:`segflow.inference.benchmarking.frame_input_size` of :data:`FRAME`
    (scale 0.5: 240x180 padded to the output stride, 1x3x192x256 at 32 and 1x3x192x240 at 16).
    """
    from segflow.errors import SegflowError
    from segflow.inference.backends import load_torch_model
    from segflow.inference.benchmarking import count_gflops, frame_input_size

    try:
        net, meta, _ = load_torch_model(checkpoint)
    except SegflowError as err:
        raise BenchError(f"{checkpoint}: {err}") from None
    params = sum(p.numel() for p in net.parameters())
    size = frame_input_size(meta, FRAME)
    return params, round(count_gflops(net, meta.in_channels, size), 4), size


def eval_metrics(
    settings: Settings, row: str, model: Path, split: str, tag: str, backend: str | None = None
) -> Path:
    """Runs ``segflow evaluate MODEL --split SPLIT`` into OUT/eval/ROW/TAG (kept when done); returns
    its metrics.json."""
    out = settings.out / "eval" / row / tag
    metrics = out / "metrics.json"
    if not metrics.is_file() or read_json(metrics).get("upsample") != UPSAMPLE:
        args = ["evaluate", str(model), "--data", str(settings.protocol_yaml), "--split", split]
        args += ["--out", str(out), "--tta", TTA, "--upsample", UPSAMPLE]
        args += ["--backend", backend] if backend else []
        run_segflow(settings, args, f"{row}.eval-{tag}")
    return metrics


def do_row(settings: Settings, plan: Plan) -> None:
    """Trains (or adopts) and evaluates one row; writes OUT/rows/ROW.json."""
    row_json = settings.out / "rows" / f"{plan.row}.json"
    if row_json.is_file() and read_json(row_json).get("upsample") == UPSAMPLE:
        note(settings, f"{plan.row}: done ({row_json})")
        return
    run_dir = settings.runs / plan.row
    measured = None
    args = train_args(settings, plan)
    if not (run_dir / "metrics.json").is_file():
        if run_dir.is_dir() and minutes_since_change(run_dir) < STALE_MINUTES:
            note(
                settings,
                f"{plan.row}: {run_dir} changed in the last {STALE_MINUTES:g} min, a training still "
                "running; skipped (rerun when it has finished)",
            )
            return
        for before in plan.before:
            run_segflow(settings, list(before), f"{plan.row}.{before[0]}")
        started = time.perf_counter()
        run_segflow(settings, args + (["--overwrite"] if run_dir.is_dir() else []), f"{plan.row}.train")
        measured = round(time.perf_counter() - started, 1)
    else:
        note(settings, f"{plan.row}: {run_dir} finished training; only evaluated")
    checkpoint = checkpoint_of(run_dir)
    val = eval_metrics(settings, plan.row, checkpoint, "val", "val")
    test = eval_metrics(settings, plan.row, checkpoint, "test", "test")
    if settings.dry_run:
        return
    val_metrics, test_metrics = read_json(val), read_json(test)
    params, gflops, net_input = model_size(checkpoint)
    result = {
        "row": plan.row,
        "stage": plan.stage,
        "candidate": plan.candidate,
        "config": plan.config,
        "command": f"OMP_NUM_THREADS={THREADS} {shown(args)}",
        "budget_minutes": plan.budget_minutes,
        "train_seconds": fit_seconds(run_dir, measured),
        "epochs": epochs_done(run_dir),
        "val_miou": val_metrics["miou"],
        "heldout_miou": test_metrics["miou"],
        "heldout_per_class_iou": {name: c["iou"] for name, c in test_metrics["per_class"].items()},
        "params": params,
        "gflops": gflops,
        "gflops_input": [1, 3, *net_input],
        "run_dir": str(run_dir),
        "checkpoint": str(checkpoint),
        "eval": {"val": str(val.parent), "test": str(test.parent)},
        "tta": TTA,
        "upsample": UPSAMPLE,
        "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        **plan.notes,
    }
    write_json(row_json, result)
    log(f"{plan.row}: val mIoU {result['val_miou']:.4f}, held-out mIoU {result['heldout_miou']:.4f}")


def load_rows(settings: Settings, stage: str | None = None) -> list[dict[str, Any]]:
    """The finished rows (OUT/rows/*.json), of one stage when given, as ``--rows`` selects."""
    folder = settings.out / "rows"
    rows = [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return [
        r for r in rows if (stage is None or r["stage"] == stage) and settings.wants(r["row"], r["candidate"])
    ]


# -- stages -----------------------------------------------------------------------------------
def source_data(settings: Settings) -> Path:
    """The data YAML the protocol splits: ``--data`` itself, or for a folder OUT/camvid-source.yaml
    (configs/data/camvid.yaml with its root at FOLDER/camvid)."""
    if settings.data.is_file() or settings.data.suffix in (".yaml", ".yml"):
        return settings.data
    target = settings.out / "camvid-source.yaml"
    note(settings, f"{target}: {DATA_TEMPLATE.relative_to(REPO)} with root {settings.data / 'camvid'}")
    if not settings.dry_run:
        if not (settings.data / "camvid").is_dir():
            raise BenchError(f"--data {settings.data} holds no camvid/ folder; give the shared data folder")
        spec = yaml.safe_load(DATA_TEMPLATE.read_text(encoding="utf-8"))
        spec["root"] = str(settings.data / "camvid")
        write_atomic(target, yaml.safe_dump(spec, sort_keys=False))
    return target


def stage_protocol(settings: Settings) -> None:
    if settings.protocol_yaml.is_file():
        note(settings, f"protocol: {settings.protocol_yaml} exists; kept")
        return
    folder = settings.protocol_yaml.parent
    args = ["data", "split", str(source_data(settings)), "--group-by", GROUP_BY, "--hold-out", HOLD_OUT]
    args += ["--out", str(folder), *(["--overwrite"] if folder.is_dir() else [])]
    run_segflow(settings, args, "protocol")


def require_protocol(settings: Settings) -> None:
    if not settings.dry_run and not settings.protocol_yaml.is_file():
        raise BenchError(f"{settings.protocol_yaml} not found; run --stage protocol first")


def do_rows(settings: Settings, plans: Sequence[Plan]) -> None:
    """:func:`do_row` for each plan ``--rows`` selects; a failed row is logged and the next one runs.

    Raises:
        BenchError: At the end, when a row failed (the first failure named).
    """
    failed = []
    for plan in plans:
        if not settings.wants(plan.row, plan.candidate):
            continue
        try:
            do_row(settings, plan)
        except BenchError as err:
            log(f"{plan.row} failed: {err}")
            failed.append(f"{plan.row}: {err}")
    if failed:
        raise BenchError(f"{len(failed)} row(s) failed, rerun to retry them; first: {failed[0]}")


def stage_screen(settings: Settings) -> None:
    require_protocol(settings)
    do_rows(settings, [candidate_plan(settings, "screen", candidate) for candidate in CANDIDATES])


def is_variant(row: dict[str, Any]) -> bool:
    """A distilled or pruned row (not a candidate's own recipe)."""
    return "teacher" in row or "pruned_from" in row


def finalists(settings: Settings) -> list[str]:
    """The candidates ``--finalists`` names, or its best N screen rows by the ``--select-by`` mIoU
    (ties: fewer GFLOPs)."""
    if isinstance(settings.finalists, tuple):
        return list(settings.finalists)
    key = "heldout_miou" if settings.select_by == "heldout" else "val_miou"
    screened = [r for r in load_rows(replace(settings, rows=None), "screen") if not is_variant(r)]
    screened.sort(key=lambda r: (-r[key], r["gflops"], r["row"]))
    return [r["candidate"] for r in screened[: settings.finalists]]


def stage_final(settings: Settings) -> None:
    require_protocol(settings)
    chosen = finalists(settings)
    if not chosen:
        note(settings, "final: no screen rows in OUT/rows yet (the finalists are picked from them)")
    do_rows(settings, [baseline_plan()] + [candidate_plan(settings, "final", c) for c in chosen])
    if not chosen and not settings.dry_run:
        raise BenchError("no finalists: the screen stage has no finished row yet; run --stage screen first")
    every = load_rows(replace(settings, rows=None))  # the teacher / student / pruned source: finished rows
    finals = [r for r in every if r["stage"] == "final"]
    extra = [
        distill_plan(settings, finals, every) if settings.distill else None,
        prune_plan(settings, finals) if settings.prune is not None else None,
    ]
    do_rows(settings, [plan for plan in extra if plan is not None])


def distill_plan(
    settings: Settings, finals: list[dict[str, Any]], every: list[dict[str, Any]]
) -> Plan | None:
    """The student (``--distill-student ROW``'s recipe and stage budget, else the finalist of fewest
    GFLOPs) trained with the best final row (held-out mIoU) as teacher."""
    own = [r for r in finals if not is_variant(r)]
    if not own:
        note(settings, "final --distill: no finished final row yet (the teacher is the best one)")
        return None
    students = [r for r in every if r["candidate"] in CANDIDATES and not is_variant(r)]  # not the baseline
    if settings.distill_student is not None:
        named = [r for r in students if r["row"] == settings.distill_student]
        if not named:
            raise BenchError(
                f"--distill-student {settings.distill_student}: no finished candidate row of that name in "
                f"{settings.out / 'rows'}; name a screen or final row (OUT/rows/ROW.json)"
            )
        student = named[0]
    elif cheapest := sorted(
        (r for r in own if r["candidate"] in CANDIDATES), key=lambda r: (r["gflops"], r["row"])
    ):
        student = cheapest[0]
    else:
        note(settings, "final --distill: no finished final row of a candidate yet (the student)")
        return None
    teacher = max(own, key=lambda r: r["heldout_miou"])
    if teacher["row"] == student["row"]:
        note(
            settings, f"final --distill: {student['row']} is the best and the cheapest final row; no student"
        )
        return None
    base = candidate_plan(settings, student["stage"], student["candidate"], f"{student['row']}-distill")
    extra = (*base.extra, f"distill.teacher={teacher['checkpoint']}")
    return replace(base, extra=extra, notes={"teacher": teacher["row"]})


def prune_plan(settings: Settings, finals: list[dict[str, Any]]) -> Plan | None:
    """``segflow prune`` of the best final row, fine-tuned for ``--prune-minutes``."""
    own = [r for r in finals if not is_variant(r)]
    if not own:
        note(settings, "final --prune: no finished final row yet")
        return None
    source = max(own, key=lambda r: r["heldout_miou"])
    amount = settings.prune or 0.0
    row = f"{source['row']}-prune{round(amount * 100)}"
    pruned = settings.out / "pruned" / f"{row}.ckpt"
    frame = f"{FRAME[0]}x{FRAME[1]}"  # the scale input policy records no size: the frame's is given
    prune = ("prune", source["checkpoint"], "--amount", f"{amount:g}", "--size", frame, "--out", str(pruned))
    return Plan(
        row=row,
        stage="final",
        candidate=source["candidate"],
        config=source["config"],
        extra=(f"trainer.max_time_minutes={settings.prune_minutes:g}", f"trainer.max_epochs={MAX_EPOCHS}"),
        options=("--init-from", str(pruned)),
        budget_minutes=settings.prune_minutes,
        before=() if pruned.is_file() else (prune,),
        notes={"pruned_from": source["row"], "prune_amount": amount},
    )


def stage_latency(settings: Settings) -> None:
    """Every finished row (``--rows`` does not apply: one run times them all side by side)."""
    rows = [r for r in load_rows(replace(settings, rows=None)) if Path(r["checkpoint"]).is_file()]
    path = settings.out / "latency.json"
    if path.is_file() and not settings.dry_run:
        done = read_json(path)
        if {r["row"] for r in rows} <= set(done.get("rows", {})) and done.get("upsample") == UPSAMPLE:
            note(settings, f"latency: {path} covers every finished row; kept (remove it to measure again)")
            return
    if settings.dry_run:
        for r in rows:
            print(
                f"# in this process: run_benchmark({r['checkpoint']!r}, size={FRAME}, backends={BACKENDS}, "
                f"threads={THREADS}, warmup={settings.warmup}, iters={settings.iters}, upsample={UPSAMPLE!r})"
            )
        if not rows:
            print("# latency: no finished rows yet")
        return
    if not rows:
        raise BenchError("no finished rows to time; run --stage screen or final first")
    write_json(path, measure_latency(settings, rows))


def measure_latency(settings: Settings, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One side-by-side run over ``rows``: run_benchmark per checkpoint, peaks at start and end."""
    import torch

    from segflow.errors import SegflowError
    from segflow.inference.benchmarking import run_benchmark, torch_matmul_peak

    torch.set_num_threads(THREADS)
    started = datetime.now(UTC)
    log("torch matmul peak (2 threads) ...")
    result: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "started": started.strftime("%Y-%m-%d %H:%M"),
        "size": list(FRAME),
        "threads": THREADS,
        "upsample": UPSAMPLE,
        "backends": list(BACKENDS),
        "warmup": settings.warmup,
        "iters": settings.iters,
        "peak_gflops_start": round(torch_matmul_peak(), 1),
        "rows": {},
    }
    for r in rows:
        log(f"latency: {r['row']}")
        try:
            report = run_benchmark(
                r["checkpoint"],
                size=FRAME,  # (W, H): the end-to-end timing of a frame (issue 15)
                batches=(1,),
                backends=BACKENDS,
                warmup=settings.warmup,
                iters=settings.iters,
                threads=THREADS,
                log=lambda line: log(f"  {line}"),
                upsample=UPSAMPLE,  # the path the evaluations score
            )
        except SegflowError as err:
            raise BenchError(f"latency of {r['row']}: {err}") from None
        missing = [x["backend"] for x in report["results"] if x.get("e2e_p50_ms") is None]
        if missing:
            raise BenchError(
                f"run_benchmark gave no e2e_p50_ms for {', '.join(missing)}: it needs the end-to-end "
                "timing of a WxH frame (issue 15, segflow benchmark --size 480x360)"
            )
        result["machine"] = report["machine"]
        result["rows"][r["row"]] = {
            "checkpoint": r["checkpoint"],
            "e2e_p50_ms": {x["backend"]: x["e2e_p50_ms"] for x in report["results"]},
            "latency_p50_ms": {x["backend"]: x["latency_p50_ms"] for x in report["results"]},
            "report": report,
        }
        write_json(settings.out / "latency.partial.json", result)
    result["peak_gflops_end"] = round(torch_matmul_peak(), 1)
    result["finished"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    return result


# -- the frontier -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Point:
    """One (row, backend) point: end-to-end ms and held-out mIoU (``own``: INT8 scored itself)."""

    row: str
    backend: str
    ms: float
    miou: float
    own: bool = True


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point dominates (as fast or faster and as accurate or more, strictly
    better in one), fastest first."""
    front = [
        p
        for p in points
        if not any(q.ms <= p.ms and q.miou >= p.miou and (q.ms < p.ms or q.miou > p.miou) for q in points)
    ]
    return sorted(front, key=lambda p: (p.ms, -p.miou, p.row, p.backend))


def frontier_points(
    rows: list[dict[str, Any]], latency: dict[str, Any], int8: dict[str, dict[str, float | str]]
) -> list[Point]:
    """Every (row, backend) with a time: fp32 backends at the row's held-out mIoU, INT8 ones at
    their own (``own=False`` and the fp32 mIoU where not evaluated yet)."""
    points = []
    for r in rows:
        timed = latency.get("rows", {}).get(r["row"], {}).get("e2e_p50_ms", {})
        for backend in BACKENDS:
            if timed.get(backend) is None:
                continue
            if backend in INT8_EXPORTS:
                found = int8.get(r["row"], {}).get(backend)
                own = found if isinstance(found, float) else None  # not evaluated, or REFUSED
                points.append(
                    Point(r["row"], backend, timed[backend], own or r["heldout_miou"], own is not None)
                )
            else:
                points.append(Point(r["row"], backend, timed[backend], r["heldout_miou"]))
    return points


def int8_targets(settings: Settings, rows: list[dict[str, Any]], latency: dict[str, Any]) -> list[str]:
    """Rows named by ``--rows``, else those with an INT8 point on the front drawn with the fp32 mIoU."""
    if settings.rows is not None:
        return [r["row"] for r in rows]
    optimistic = [Point(p.row, p.backend, p.ms, p.miou) for p in frontier_points(rows, latency, {})]
    return sorted({p.row for p in pareto_front(optimistic) if p.backend in INT8_EXPORTS})


def stage_int8(settings: Settings) -> None:
    require_protocol(settings)
    rows = load_rows(settings)
    path = settings.out / "latency.json"
    latency = read_json(path) if path.is_file() else {}
    if not latency and settings.rows is None:
        message = "no latency.json: the rows to score are those whose INT8 point could be on the front"
        if settings.dry_run:
            print(f"# int8-eval: {message}")
            return
        raise BenchError(f"{message}; run --stage latency first (or name them with --rows)")
    by_row = {r["row"]: r for r in rows}
    for name in int8_targets(settings, rows, latency):
        target = settings.out / "int8" / f"{name}.json"
        if target.is_file():
            note(settings, f"int8-eval {name}: done ({target})")
            continue
        result: dict[str, Any] = {"row": name, "heldout_miou": {}, "commands": []}
        for backend, (fmt, filename) in INT8_EXPORTS.items():
            export = settings.out / "exports" / name / filename
            int8_file = export.with_name(export.stem + ".int8" + export.suffix)
            if not int8_file.is_file():
                args = ["export", by_row[name]["checkpoint"], "--format", fmt, "--out", str(export), "--int8"]
                args += ["--calib", str(settings.protocol_yaml), "--max-miou-drop", f"{INT8_MAX_DROP:g}"]
                if not settings.dry_run:
                    export.parent.mkdir(parents=True, exist_ok=True)
                result["commands"].append(shown(args))
                try:
                    run_segflow(settings, args, f"{name}.export-{fmt}")
                except BenchError as err:  # refused (e.g. an INT8 graph that cannot run): recorded, no point
                    log(f"int8-eval {name}: {backend} refused: {err}")
                    result.setdefault("refused", {})[backend] = str(err)
                    continue
            metrics = eval_metrics(settings, name, export, "test", f"test-{backend}", backend)
            if not settings.dry_run:
                result["heldout_miou"][backend] = read_json(metrics)["miou"]
        if not settings.dry_run:
            write_json(target, result)


def load_int8(settings: Settings) -> dict[str, dict[str, float | str]]:
    folder = settings.out / "int8"
    found = [read_json(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    return {r["row"]: {**r["heldout_miou"], **dict.fromkeys(r.get("refused", {}), REFUSED)} for r in found}


REFUSED = "refused"
"""OUT/int8/ROW.json ``refused``: an INT8 export ``segflow export`` refused (its message kept);
the point is drawn hollow at the fp32 mIoU and is never on the front."""
STAGE_ORDER = {"screen": 0, "final": 1}


def cell(value: Any, fmt: str) -> str:
    return "–" if value is None else fmt.format(value)


def markdown(
    rows: list[dict[str, Any]], latency: dict[str, Any], int8: dict[str, dict[str, float | str]]
) -> str:
    """OUT/frontier.md: the settings, a row per model, the Pareto front."""
    points = frontier_points(rows, latency, int8)
    front = pareto_front([p for p in points if p.own])
    on_front = {(p.row, p.backend) for p in front}
    lines = [
        "# CamVid frontier: held-out mIoU per CPU millisecond",
        "",
        f"- Protocol: drive {HOLD_OUT} held out as test (62 frames); train 0006R0 + 0016E5 (305), val native "
        f"(101). mIoU: `segflow evaluate --tta {TTA} --upsample {UPSAMPLE}` (480x360 masks, void ignored; "
        "argmax at the network's resolution, labels upsampled nearest: the path e2e ms times).",
        "- GFLOPs: one forward (2 x MACs) at the network input of a 480x360 frame at scale 0.5: 240x180 "
        "padded to the output stride (1x3x192x256 at stride 32, 1x3x192x240 at stride 16).",
    ]
    if latency:
        machine = latency.get("machine", {})
        lines.append(
            f"- e2e ms: median of {latency.get('iters')} calls, one {FRAME[0]}x{FRAME[1]} RGB uint8 frame in "
            f"memory -> labels at {FRAME[0]}x{FRAME[1]} (segflow's Predictor path, upsample "
            f"{latency.get('upsample', 'probs')}), {latency.get('threads')} "
            f"threads; {machine.get('cpu', '?')} ({machine.get('cpu_capability', '?')}); torch fp32 matmul "
            f"peak {latency.get('peak_gflops_start')} GFLOP/s at start, "
            f"{latency.get('peak_gflops_end', '–')} at end. **Bold**: on the Pareto front. (bf16): torch "
            "ran under bf16 autocast (`precision: auto` on a native-bf16 CPU for a model trained "
            "bf16-mixed); every other cell is fp32 or its INT8 export."
        )
    lines += [
        "",
        "| row | stage | train min | epochs | val mIoU | held-out mIoU | GFLOPs | params (M) | "
        + " | ".join(f"{b} ms" for b in BACKENDS)
        + " | INT8 held-out mIoU |",
        "| --- | --- |" + " ---: |" * (6 + len(BACKENDS)) + " --- |",
    ]
    ordered = sorted(rows, key=lambda r: (STAGE_ORDER.get(r["stage"], 9), -r["heldout_miou"], r["row"]))
    for r in ordered:
        timed = latency.get("rows", {}).get(r["row"], {}).get("e2e_p50_ms", {})
        bf16 = ran_bf16(latency.get("rows", {}).get(r["row"], {}))
        ms_cells = []
        for backend in BACKENDS:
            text = cell(timed.get(backend), "{:.1f}") + (" (bf16)" if backend in bf16 else "")
            ms_cells.append(f"**{text}**" if (r["row"], backend) in on_front else text)
        own = int8.get(r["row"], {})
        scored = [f"{b} {own[b]:.3f}" for b in INT8_EXPORTS if isinstance(own.get(b), float)]
        int8_cell = ", ".join(scored + [f"{b} refused" for b in INT8_EXPORTS if own.get(b) == REFUSED]) or "–"
        minutes = None if r.get("train_seconds") is None else r["train_seconds"] / 60
        params = None if r.get("params") is None else r["params"] / 1e6
        cells = [
            r["row"],
            r["stage"],
            cell(minutes, "{:.1f}"),
            cell(r.get("epochs"), "{}"),
            cell(r.get("val_miou"), "{:.3f}"),
            cell(r.get("heldout_miou"), "{:.3f}"),
            cell(r.get("gflops"), "{:.2f}"),
            cell(params, "{:.2f}"),
            *ms_cells,
            int8_cell,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Pareto front (fastest first):", ""]
    lines += [f"- {p.row} / {p.backend}: {p.ms:.1f} ms, held-out mIoU {p.miou:.3f}" for p in front] or ["- –"]
    refused = sorted({p.row for p in points if not p.own and int8.get(p.row, {}).get(p.backend) == REFUSED})
    pending = sorted({p.row for p in points if not p.own} - set(refused))
    if pending:
        lines += ["", f"INT8 not evaluated (drawn hollow, not on the front): {', '.join(pending)}."]
    if refused:
        lines += [
            "",
            f"INT8 refused by segflow export (drawn hollow, not on the front): {', '.join(refused)}.",
        ]
    return "\n".join(lines) + "\n"


def ran_bf16(latency_row: dict[str, Any]) -> set[str]:
    """Backends of one latency row that ran under bf16 autocast (the ``precision`` of each result
    of :func:`segflow.inference.benchmarking.run_benchmark`; absent in reports before it)."""
    results = latency_row.get("report", {}).get("results", [])
    return {x["backend"] for x in results if x.get("precision") == "bf16"}


def label_front(ax: Any, front: list[Point]) -> None:
    """Numbers the front's points (offsets alternate above and below, so neighbours do not print
    over each other) and names them in one box under the axes, where it covers no point."""
    for number, p in enumerate(front, 1):
        offset = (5, 3) if number % 2 else (5, -10)
        ax.annotate(str(number), (p.ms, p.miou), fontsize=8, xytext=offset, textcoords="offset points")
    legend = [f"{n}  {p.row} / {p.backend}: {p.ms:.1f} ms, {p.miou:.3f}" for n, p in enumerate(front, 1)]
    ax.text(
        0.0,
        -0.11,
        "Pareto front (fastest first)\n" + "\n".join(legend),
        transform=ax.transAxes,
        fontsize=7,
        va="top",
        ha="left",
        bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "0.7"},
    )


def plot(path: Path, points: list[Point]) -> None:
    """OUT/frontier.png: held-out mIoU against e2e ms; marker per backend, colour per row, front line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from segflow.io_utils import atomic_write

    rows = sorted({p.row for p in points})
    colours = {row: plt.get_cmap("tab10")(i % 10) for i, row in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(9, 6))
    for p in points:
        colour = colours[p.row]
        face = colour if p.own else "none"
        ax.scatter(
            p.ms, p.miou, marker=MARKERS[p.backend], s=55, facecolors=face, edgecolors=colour, zorder=3
        )
    front = pareto_front([p for p in points if p.own])
    if front:
        ax.plot([p.ms for p in front], [p.miou for p in front], "k--", lw=1, drawstyle="steps-post", zorder=2)
        label_front(ax, front)
    handles = [Line2D([], [], marker=MARKERS[b], ls="", color="k", label=b) for b in BACKENDS]
    handles += [Line2D([], [], marker="o", ls="", color=colours[r], label=r) for r in rows]
    handles.append(Line2D([], [], ls="--", color="k", label="Pareto front"))
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.set_xlabel(f"end-to-end ms per {FRAME[0]}x{FRAME[1]} frame ({THREADS} threads)")
    ax.set_ylabel(f"held-out mIoU (drive {HOLD_OUT})")
    ax.set_title("CamVid frontier")
    ax.grid(alpha=0.3)
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def stage_report(settings: Settings) -> None:
    if settings.dry_run:
        print(f"# report: writes {settings.out / 'frontier.md'} and {settings.out / 'frontier.png'}")
        return
    rows = load_rows(settings)
    if not rows:
        raise BenchError(f"no rows in {settings.out / 'rows'}; run --stage screen first")
    path = settings.out / "latency.json"
    latency = read_json(path) if path.is_file() else {}
    int8 = load_int8(settings)
    text = markdown(rows, latency, int8)
    write_atomic(settings.out / "frontier.md", text)
    points = frontier_points(rows, latency, int8)
    if points:
        plot(settings.out / "frontier.png", points)
    print(text)


RUNNERS = {
    "protocol": stage_protocol,
    "screen": stage_screen,
    "final": stage_final,
    "latency": stage_latency,
    "int8-eval": stage_int8,
    "report": stage_report,
}


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        for stage in settings.stages:
            if settings.dry_run:
                print(f"# stage {stage}")
            else:
                log(f"stage {stage} ({platform.node()})")
            RUNNERS[stage](settings)
        return 0
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
