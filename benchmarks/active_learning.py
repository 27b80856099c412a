"""Active learning on CamVid: images chosen by entropy versus at random, 3 rounds, 2 seeds per arm.

Protocol (issue 11). Each seed starts from its own seeded pick of 40 labelled train images
(round 0, trained once per seed and shared by both arms). Each of rounds 1..3 adds 40 images
from the unlabelled pool (the train images not yet labelled), per arm:

* ``random``: a seeded random draw from the pool;
* ``entropy``: the 40 most uncertain pool images by mean pixel entropy, ranked by the arm's own
  model of the round before (``segflow rank CKPT POOL... --by entropy --top 40 --out DIR``,
  read back with :func:`segflow.active.rank.read_ranking`).

So a seed trains 7 models: 40 images, then 80, 120 and 160 per arm. Every training starts from
scratch with ``configs/active_learning/camvid_al.yaml`` (Unet-R18, random init, half resolution,
batch 8) and runs for the same 6 minutes of one CPU core (``trainer.max_time_minutes``), pinned
with ``taskset`` to its own core with one torch/OpenMP/MKL thread and no loader workers, so
every training gets the same compute. The labelled set reaches the trainer as a data YAML
whose ``split_lists`` name the labelled train images and the 101 val images. Val mIoU is
``metrics.json``'s: the best checkpoint by val mIoU (validated about once per 120 training
images, the same for both arms at a round; time stops training without a last validation),
scored on the full 480x360 val masks, void ignored, one view.

It resumes round by round: a training whose run folder holds ``metrics.json`` is not run
again, a round's picks (list file) are reused, and ``<out>/state.json`` records every step;
rerun the same command to continue. ``--jobs 2`` runs the seeds side by side, seed ``i`` on
core ``i``; ``--jobs 1`` runs everything on core 0, one after the other.

Outputs under ``--out``: ``results.json`` (every training: seed, arm, round, labelled count,
epochs and optimiser steps done in the budget, val mIoU, wall seconds; the machine, command,
date and the one-thread torch fp32 matmul peak at start and end) and ``results.md`` (the
table for docs/benchmarks.md). Run folders in ``runs/``, list files in ``lists/``, data YAMLs
in ``data/``, rankings in ``rank/``, training logs in ``logs/``.

    .venv/bin/python benchmarks/active_learning.py --jobs 2 --out bench-out/active_learning
        # the full run, alone on the 2-core machine: about 1 hour (14 trainings of 6 min, 7 per
        # core, each with about 1 min of start-up and final evaluation, plus 3 rankings of
        # 250-330 pool images per seed, about 2 min each); --jobs 1: about 2 hours
    .venv/bin/python benchmarks/active_learning.py --smoke --out /tmp/al-smoke
        # a dry run of every code path: 24 train / 8 val images, 4 + 4 labelled, 1 round,
        # 1 seed, 1-epoch trainings (about 3 minutes; add --seeds 0,1 --jobs 2 for the parallel path)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/active_learning/camvid_al.yaml"
DATA = REPO / "configs/data/camvid.yaml"
ARMS = ("random", "entropy")
START = "start"  # round 0's arm name: shared by both arms
TRAIN_SPLIT, VAL_SPLIT = "train", "val"
VAL_EVERY_IMAGES = 120  # about one validation per this many training images (see the config)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
PEAK_SIZE, SMOKE_PEAK_SIZE = 2048, 512


class BenchError(Exception):
    """A bad input or a failed step, printed as one line."""


# -- settings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """What one benchmark run does (every value is recorded in results.json)."""

    out: Path
    data: Path
    config: Path
    seeds: tuple[int, ...]
    rounds: int
    start: int
    add: int
    minutes: float
    jobs: int
    train_limit: int  # 0: every train image
    val_limit: int  # 0: every val image
    smoke: bool
    extra: tuple[str, ...] = ()  # further dotted overrides for every training

    def overrides(self) -> list[str]:
        """Overrides every training gets (the per-training ones are added by :func:`train`)."""
        base = [f"trainer.max_time_minutes={self.minutes}", "trainer.num_workers=0"]
        if self.smoke:
            # one epoch of 2 steps, validated (the 30-s limit is a cap, not reached on an idle core)
            base += ["trainer.max_epochs=1", "trainer.batch_size=2", "trainer.val_batch_size=2"]
            base += ["scheduler.warmup_steps=1"]
        return base + list(self.extra)


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench-out/active_learning", help="output folder")
    parser.add_argument("--data", type=Path, default=DATA, help="CamVid data YAML (train and val splits)")
    parser.add_argument("--config", type=Path, default=CONFIG, help="training config of every round")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1; --smoke: 0)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds after round 0 (default 3)")
    parser.add_argument("--start", type=int, default=40, help="labelled images of round 0 (default 40)")
    parser.add_argument("--add", type=int, default=40, help="images added per round (default 40)")
    parser.add_argument("--minutes", type=float, default=6.0, help="training budget per model (default 6)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="seeds trained side by side, one core each (default 2; --smoke: 1)",
    )
    parser.add_argument("--train-limit", type=int, default=0, help="use only N train images (0: all)")
    parser.add_argument("--val-limit", type=int, default=0, help="use only N val images (0: all)")
    parser.add_argument(
        "--override", action="append", default=[], metavar="KEY=VALUE", help="extra training override"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny dry run: 24 train / 8 val images, 4 + 4 labelled, 1 round, seed 0, 1-epoch trainings",
    )
    args = parser.parse_args(argv)
    if args.seeds is None:
        args.seeds = "0" if args.smoke else "0,1"
    if args.jobs is None:
        args.jobs = 1 if args.smoke else 2
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError:
        parser.error(f"--seeds {args.seeds!r} must be comma-separated integers, e.g. 0,1")
    if args.smoke:
        args.rounds, args.start, args.add, args.minutes = 1, 4, 4, 0.5
        args.train_limit, args.val_limit = 24, 8
    if not seeds or len(set(seeds)) != len(seeds):
        parser.error("--seeds must name at least one seed, each once")
    for name in ("rounds", "start", "add", "jobs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    return Settings(
        out=args.out.resolve(),
        data=args.data.resolve(),
        config=args.config.resolve(),
        seeds=seeds,
        rounds=args.rounds,
        start=args.start,
        add=args.add,
        minutes=args.minutes,
        jobs=args.jobs,
        train_limit=args.train_limit,
        val_limit=args.val_limit,
        smoke=args.smoke,
        extra=tuple(args.override),
    )


# -- small helpers ----------------------------------------------------------------------------
def write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename."""
    from segflow.io_utils import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def run_name(seed: int, arm: str, round_index: int) -> str:
    """``s0-start-r0``, ``s1-entropy-r3``: the run folder, list and data YAML name of a training."""
    return f"s{seed}-{arm}-r{round_index}"


def segflow_command() -> list[str]:
    """The ``segflow`` console script of this interpreter's environment."""
    beside = Path(sys.executable).with_name("segflow")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("segflow")
    if found:
        return [found]
    return [sys.executable, "-c", "from segflow.cli.main import main; main()"]


def job_env() -> dict[str, str]:
    """The environment of every training and ranking: one thread for each library."""
    env = dict(os.environ)
    for name in THREAD_ENV:
        env[name] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pinned(command: list[str], core: int) -> list[str]:
    """``command`` pinned to one core with ``taskset`` (left as it is where taskset is missing)."""
    if shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(core), *command]


def usable_cores() -> list[int]:
    """The core ids this process may run on (0..N-1 where the OS does not say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """CPU model, core counts, memory and software versions."""
    import torch

    import segflow

    memory_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        pass
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": len(usable_cores()),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "segflow": segflow.__version__,
        "commit": commit or None,
    }


def matmul_peak(size: int) -> float:
    """One-thread torch fp32 matmul GFLOP/s (what each training's core can do at most)."""
    import torch

    from segflow.inference.benchmarking import torch_matmul_peak

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return round(torch_matmul_peak(size), 1)
    finally:
        torch.set_num_threads(threads)


# -- data -------------------------------------------------------------------------------------
@dataclass
class Dataset:
    """The CamVid images the benchmark uses, as paths relative to the dataset root."""

    root: Path
    spec: dict[str, Any]  # the data YAML's content, root made absolute
    train: list[str]
    val: list[str]

    def absolute(self, relative: str) -> Path:
        return (self.root / relative).resolve()


def load_dataset(settings: Settings) -> Dataset:
    """Reads the data YAML and lists its train and val images (first N of each with the limits)."""
    from segflow.data import load_data_spec
    from segflow.data.readers.base import create_reader
    from segflow.errors import SegflowError

    if not settings.data.is_file():
        raise BenchError(f"data YAML {settings.data} not found; pass --data with CamVid's data YAML")
    try:
        spec = load_data_spec(settings.data)
        reader = create_reader(spec)
        lists = {
            split: [reader.relative_path(Path(s.image_path)) for s in reader.list_split(split).samples]
            for split in (TRAIN_SPLIT, VAL_SPLIT)
        }
    except SegflowError as err:
        raise BenchError(f"{settings.data}: {err}") from None
    if spec.root is None:
        raise BenchError(f"{settings.data} has no root folder; the benchmark needs CamVid on disk")
    raw = yaml.safe_load(settings.data.read_text(encoding="utf-8"))
    raw["root"] = str(spec.root)
    raw.pop("split_lists", None)
    train, val = sorted(lists[TRAIN_SPLIT]), sorted(lists[VAL_SPLIT])
    if settings.train_limit:
        train = sorted(random.Random("train-limit").sample(train, min(settings.train_limit, len(train))))
    if settings.val_limit:
        val = val[: settings.val_limit]
    needed = settings.start + settings.rounds * settings.add
    if needed > len(train):
        raise BenchError(
            f"{needed} labelled images needed ({settings.start} + {settings.rounds} x {settings.add}) but "
            f"only {len(train)} train images; lower --start, --add or --rounds"
        )
    return Dataset(Path(spec.root), raw, train, val)


# -- state ------------------------------------------------------------------------------------
@dataclass
class Training:
    """One training's record (a row of results.json)."""

    name: str
    seed: int
    arm: str
    round: int
    labelled: int
    status: str = "pending"  # pending, done, failed
    miou: float | None = None
    epochs: int | None = None
    steps: int | None = None
    images_per_s: float | None = None
    wall_s: float | None = None
    select_s: float | None = None
    core: int | None = None
    val_every_n_epoch: int | None = None  # validations: about one per VAL_EVERY_IMAGES training images
    run_dir: str = ""
    checkpoint: str | None = None
    picked: list[str] = field(default_factory=list)
    error: str | None = None


class State:
    """``<out>/state.json``: the trainings, rewritten atomically after every step (thread-safe)."""

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.meta = meta
        self.trainings: dict[str, Training] = {}
        if path.is_file():
            try:
                saved = json.loads(path.read_text(encoding="utf-8"))
                self.trainings = {t["name"]: Training(**t) for t in saved.get("trainings", [])}
                self.meta = {**saved.get("meta", {}), **meta}
            except (ValueError, TypeError, KeyError) as err:
                raise BenchError(f"{path} is not a state file of this benchmark ({err}); remove it") from None

    def get(self, name: str, seed: int, arm: str, round_index: int, labelled: int) -> Training:
        with self.lock:
            if name not in self.trainings:
                self.trainings[name] = Training(name, seed, arm, round_index, labelled)
            return self.trainings[name]

    def save(self) -> None:
        with self.lock:
            rows = [asdict(t) for t in sorted(self.trainings.values(), key=order)]
            write_atomic(self.path, json.dumps({"meta": self.meta, "trainings": rows}, indent=1) + "\n")


def order(training: Training) -> tuple[int, int, int]:
    arm_order = (START, *ARMS)
    return (training.round, arm_order.index(training.arm), training.seed)


# -- one step ---------------------------------------------------------------------------------
def log(message: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def write_lists(settings: Settings, dataset: Dataset, name: str, labelled: list[str]) -> Path:
    """The list file of the labelled images and the data YAML naming it; returns the data YAML."""
    lists = settings.out / "lists"
    train_list = lists / f"{name}.txt"
    val_list = lists / "val.txt"
    if not val_list.is_file():
        write_atomic(val_list, "\n".join(dataset.val) + "\n")
    write_atomic(train_list, "\n".join(labelled) + "\n")
    spec = {**dataset.spec, "split_lists": {TRAIN_SPLIT: str(train_list), VAL_SPLIT: str(val_list)}}
    data_yaml = settings.out / "data" / f"{name}.yaml"
    write_atomic(data_yaml, yaml.safe_dump(spec, sort_keys=False))
    return data_yaml


def read_list(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def metrics_csv_summary(run_dir: Path) -> tuple[int | None, int | None, float | None]:
    """(epochs started, optimiser steps, median train images/s) from the run's metrics.csv."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return None, None, None
    epochs: set[int] = set()
    steps, rates = 0, []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                epochs.add(int(row["epoch"]))
                steps = max(steps, int(row["step"]))
            except (KeyError, ValueError):
                continue
            rate = row.get("train/images_per_s") or ""
            if rate:
                rates.append(float(rate))
    rates.sort()
    steps_done = steps + 1 if epochs else None  # the logged step index counts from 0
    return len(epochs) or None, steps_done, (rates[len(rates) // 2] if rates else None)


def train(settings: Settings, training: Training, data_yaml: Path, core: int) -> None:
    """Trains one model from scratch (skipped when its metrics.json exists) and fills its record."""
    runs = settings.out / "runs"
    run_dir = runs / training.name
    training.run_dir = str(run_dir)
    training.core = core
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        val_every = 1 if settings.smoke else max(1, -(-VAL_EVERY_IMAGES // training.labelled))
        training.val_every_n_epoch = val_every
        overrides = [
            f"name={training.name}",
            f"output_dir={runs}",
            f"seed={training.seed}",
            f"data={data_yaml}",
            f"trainer.check_val_every_n_epoch={val_every}",
            *settings.overrides(),
        ]
        command = pinned([*segflow_command(), "train", str(settings.config), *overrides], core)
        if run_dir.exists():
            command.append("--overwrite")  # an interrupted earlier attempt
        log_path = settings.out / "logs" / f"{training.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log(f"train {training.name}: {training.labelled} images, core {core}")
        started = time.perf_counter()
        with log_path.open("w", encoding="utf-8") as handle:
            handle.write(shlex.join(command) + "\n")
            handle.flush()
            done = subprocess.run(
                command, cwd=REPO, env=job_env(), stdout=handle, stderr=subprocess.STDOUT, check=False
            )
        training.wall_s = round(time.perf_counter() - started, 1)
        if done.returncode != 0 or not metrics_path.is_file():
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
            raise BenchError(
                f"training {training.name} failed (exit {done.returncode}): {tail[0] if tail else ''} "
                f"(log: {log_path})"
            )
    metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    training.miou = round(float(metrics["miou"]), 4)
    training.epochs, training.steps, rate = metrics_csv_summary(run_dir)
    training.images_per_s = round(rate, 2) if rate else None
    best = run_dir / "checkpoints" / "best.ckpt"
    training.checkpoint = str(best if best.is_file() else run_dir / "checkpoints" / "last.ckpt")
    training.status = "done"
    training.error = None
    log(f"done {training.name}: val mIoU {training.miou:.4f}, {training.epochs} epochs, {training.wall_s} s")


def read_ranked_images(csv_path: Path) -> list[Path]:
    """The ranked images, most uncertain first (segflow's one ranking reader)."""
    try:
        from segflow.active.rank import read_ranking
    except ImportError:  # before the rank module exists: the CSV's `image` column, in order
        with csv_path.open(newline="", encoding="utf-8") as handle:
            return [Path(row["image"]) for row in csv.DictReader(handle)]
    return [Path(row.image) for row in read_ranking(csv_path)]


def pick_entropy(
    settings: Settings, dataset: Dataset, name: str, checkpoint: str, pool: list[str], core: int
) -> list[str]:
    """The ``settings.add`` pool images ``segflow rank --by entropy`` puts first."""
    out = settings.out / "rank" / name
    ranking = out / "ranking.csv"
    if not ranking.is_file():
        command = pinned(
            [
                *segflow_command(),
                "rank",
                checkpoint,
                *[str(dataset.absolute(p)) for p in pool],
                "--by",
                "entropy",
                "--top",
                str(settings.add),
                "--out",
                str(out),
            ],
            core,
        )
        if out.exists():
            command.append("--overwrite")  # an interrupted earlier attempt
        log_path = settings.out / "logs" / f"{name}.rank.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log(f"rank {name}: {len(pool)} pool images, core {core}")
        with log_path.open("w", encoding="utf-8") as handle:
            handle.write(shlex.join(command[:6]) + f" ... ({len(pool)} images) {shlex.join(command[-6:])}\n")
            handle.flush()
            done = subprocess.run(
                command, cwd=REPO, env=job_env(), stdout=handle, stderr=subprocess.STDOUT, check=False
            )
        if done.returncode != 0 or not ranking.is_file():
            tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
            raise BenchError(
                f"ranking {name} failed (exit {done.returncode}): {tail[0] if tail else ''} (log: {log_path})"
            )
    by_path = {dataset.absolute(p): p for p in pool}
    picked: list[str] = []
    for image in read_ranked_images(ranking):
        key = by_path.get(image.resolve())
        if key is None:
            raise BenchError(f"{ranking} ranks {image}, which is not in the unlabelled pool; remove {out}")
        if key not in picked:
            picked.append(key)
    if len(picked) < min(settings.add, len(pool)):
        raise BenchError(f"{ranking} ranks {len(picked)} pool images, {settings.add} wanted; remove {out}")
    return picked[: settings.add]


def pick_random(settings: Settings, seed: int, round_index: int, pool: list[str]) -> list[str]:
    """A seeded draw of ``settings.add`` pool images (depends on the seed and the round only)."""
    return random.Random(f"random-arm-{seed}-{round_index}").sample(pool, settings.add)


def initial_pick(settings: Settings, dataset: Dataset, seed: int) -> list[str]:
    """Round 0's labelled images: a seeded pick of ``settings.start``, one per seed, shared by the arms."""
    return sorted(random.Random(f"start-{seed}").sample(dataset.train, settings.start))


# -- the schedule -----------------------------------------------------------------------------
def seed_chain(settings: Settings, dataset: Dataset, state: State, seed: int, core: int) -> None:
    """Every training of one seed, round by round (round 0, then each arm of rounds 1..N)."""
    name = run_name(seed, START, 0)
    labelled = {arm: initial_pick(settings, dataset, seed) for arm in ARMS}
    start = state.get(name, seed, START, 0, len(labelled[ARMS[0]]))
    data_yaml = write_lists(settings, dataset, name, labelled[ARMS[0]])
    run_step(state, start, lambda: train(settings, start, data_yaml, core))
    previous = {arm: start for arm in ARMS}
    for round_index in range(1, settings.rounds + 1):
        for arm in ARMS:
            name = run_name(seed, arm, round_index)
            before = labelled[arm]
            training = state.get(name, seed, arm, round_index, len(before) + settings.add)
            list_file = settings.out / "lists" / f"{name}.txt"
            if list_file.is_file() and training.picked:
                labelled[arm] = read_list(list_file)
            else:
                chosen = set(before)
                pool = [p for p in dataset.train if p not in chosen]
                started = time.perf_counter()
                if arm == "random":
                    picked = pick_random(settings, seed, round_index, pool)
                else:
                    checkpoint = previous[arm].checkpoint
                    if not checkpoint:
                        raise BenchError(f"{previous[arm].name} has no checkpoint to rank {name} with")
                    picked = pick_entropy(settings, dataset, name, checkpoint, pool, core)
                training.select_s = round(time.perf_counter() - started, 1)
                training.picked = picked
                labelled[arm] = before + picked
                write_lists(settings, dataset, name, labelled[arm])
                state.save()
            data_yaml = settings.out / "data" / f"{name}.yaml"
            if not data_yaml.is_file():
                data_yaml = write_lists(settings, dataset, name, labelled[arm])
            run_step(state, training, lambda t=training, d=data_yaml: train(settings, t, d, core))
            previous[arm] = training


def run_step(state: State, training: Training, step: Any) -> None:
    """Runs one training step, recording a failure in the state before re-raising it."""
    try:
        step()
    except BenchError as err:
        training.status, training.error = "failed", str(err)
        state.save()
        raise
    state.save()


# -- results ----------------------------------------------------------------------------------
def summarise(state: State, settings: Settings) -> list[dict[str, Any]]:
    """Per round and arm: label count, mean, min, max and per-seed val mIoU of the done trainings."""
    rows = []
    for round_index in range(settings.rounds + 1):
        arms = (START,) if round_index == 0 else ARMS
        for arm in arms:
            done = sorted(
                (t for t in state.trainings.values() if t.round == round_index and t.arm == arm and t.miou),
                key=lambda t: t.seed,
            )
            values = [t.miou for t in done if t.miou is not None]
            rows.append(
                {
                    "round": round_index,
                    "arm": arm,
                    "labelled": settings.start + round_index * settings.add,
                    "seeds": {str(t.seed): t.miou for t in done},
                    "epochs": {str(t.seed): t.epochs for t in done},
                    "mean": round(sum(values) / len(values), 4) if values else None,
                    "min": min(values) if values else None,
                    "max": max(values) if values else None,
                }
            )
    return rows


def fmt(row: dict[str, Any] | None) -> tuple[str, str]:
    """(``mean (min..max)``, ``s0 x / s1 y``) cells of one arm's row."""
    if not row or row["mean"] is None:
        return "–", "–"
    spread = f"{row['mean']:.3f} ({row['min']:.3f}..{row['max']:.3f})"
    seeds = " / ".join(
        f"s{seed} {value:.3f} ({row['epochs'][seed]} ep)" for seed, value in row["seeds"].items()
    )
    return spread, seeds


def verdict(random_row: dict[str, Any] | None, entropy_row: dict[str, Any] | None) -> str:
    """Margin of entropy over random (means), against the wider of the two seed spreads."""
    if not random_row or not entropy_row or random_row["mean"] is None or entropy_row["mean"] is None:
        return "–"
    if min(len(random_row["seeds"]), len(entropy_row["seeds"])) < 2:
        return f"{entropy_row['mean'] - random_row['mean']:+.3f} (one seed: no spread)"
    margin = entropy_row["mean"] - random_row["mean"]
    spread = max(random_row["max"] - random_row["min"], entropy_row["max"] - entropy_row["min"])
    beats = "yes" if margin > spread else "no"
    return f"{margin:+.3f} vs {spread:.3f}: {beats}"


def shown(path: str) -> str:
    """``path`` relative to the repository when inside it."""
    return str(Path(path).relative_to(REPO)) if Path(path).is_relative_to(REPO) else path


def markdown(report: dict[str, Any]) -> str:
    rows = report["summary"]
    by_key = {(r["round"], r["arm"]): r for r in rows}
    m = report["machine"]
    s = report["settings"]
    lines = [
        f"Command: `{report['command']}`  ",
        f"Date: {report['started']} to {report.get('finished') or '(unfinished)'} (UTC), "
        f"wall {report.get('wall_min', '–')} min this session, "
        f"{sum(x['wall_min'] for x in report.get('sessions', [])):.1f} min over "
        f"{len(report.get('sessions', []))} session(s)  ",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), {m['memory_gb']} GB; "
        f"torch {m['torch']}, segflow {m['segflow']} ({m['commit']})  ",
        f"One-thread torch fp32 matmul peak: {report['peak_gflops_start']} GFLOP/s at start, "
        f"{report.get('peak_gflops_end', '–')} at end  ",
        f"Each training: {s['minutes']} min on one core (taskset, 1 thread, no loader workers), from "
        f"scratch, `{shown(s['config'])}`; "
        f"seeds {', '.join(map(str, s['seeds']))}; {len(report['val'])} val images",
        "",
        "| round | labelled | random: mean (min..max) | entropy: mean (min..max) | random per seed | "
        "entropy per seed | entropy − random vs seed spread: beats? |",
        "| ---: | ---: | --- | --- | --- | --- | --- |",
    ]
    for round_index in range(s["rounds"] + 1):
        if round_index == 0:
            start = by_key.get((0, START))
            cell, seeds = fmt(start)
            labelled = start["labelled"] if start else s["start"]
            lines.append(f"| 0 | {labelled} | {cell} | {cell} | {seeds} | (shared) | – |")
            continue
        rnd, ent = by_key.get((round_index, "random")), by_key.get((round_index, "entropy"))
        (rc, rs), (ec, es) = fmt(rnd), fmt(ent)
        labelled = s["start"] + round_index * s["add"]
        lines.append(f"| {round_index} | {labelled} | {rc} | {ec} | {rs} | {es} | {verdict(rnd, ent)} |")
    failed = [t for t in report["trainings"] if t["status"] == "failed"]
    lines += [f"\nfailed: {t['name']}: {t['error']}" for t in failed]
    return "\n".join(lines) + "\n"


def write_results(settings: Settings, state: State, dataset: Dataset, meta: dict[str, Any]) -> dict[str, Any]:
    report = {
        **meta,
        "val": dataset.val,
        "summary": summarise(state, settings),
        "trainings": [asdict(t) for t in sorted(state.trainings.values(), key=order)],
    }
    write_atomic(settings.out / "results.json", json.dumps(report, indent=1) + "\n")
    write_atomic(settings.out / "results.md", markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    try:
        dataset = load_dataset(settings)
        if not settings.config.is_file():
            raise BenchError(f"training config {settings.config} not found; pass --config")
        settings.out.mkdir(parents=True, exist_ok=True)
        started = datetime.now(UTC)
        peak_size = SMOKE_PEAK_SIZE if settings.smoke else PEAK_SIZE
        log("torch matmul peak (1 thread) ...")
        settings_json = {
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in asdict(settings).items()
        }
        meta: dict[str, Any] = {
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "started": started.strftime("%Y-%m-%d %H:%M"),
            "machine": machine(),
            "settings": settings_json,
            "peak_gflops_start": matmul_peak(peak_size),
        }
        state = State(settings.out / "state.json", meta)
        state.save()
        workers = min(settings.jobs, len(settings.seeds))
        cores = max(
            1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        )
        core_ids = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(cores))
        errors: list[str] = []

        def worker(index: int) -> None:
            core = core_ids[index % len(core_ids)]
            for seed in settings.seeds[index::workers]:
                try:
                    seed_chain(settings, dataset, state, seed, core)
                except BenchError as err:
                    errors.append(str(err))
                    log(f"seed {seed} stopped: {err}")

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        finished = datetime.now(UTC)
        meta["finished"] = finished.strftime("%Y-%m-%d %H:%M")
        meta["wall_min"] = round((finished - started).total_seconds() / 60, 1)
        log("torch matmul peak (1 thread) ...")
        meta["peak_gflops_end"] = matmul_peak(peak_size)
        session = {k: meta[k] for k in ("command", "started", "finished", "wall_min")}
        session.update(peak_gflops_start=meta["peak_gflops_start"], peak_gflops_end=meta["peak_gflops_end"])
        meta["sessions"] = [*state.meta.get("sessions", []), session]  # one per (resumed) invocation
        state.meta.update(meta)
        state.save()
        report = write_results(settings, state, dataset, state.meta)
        print(markdown(report))
        if errors:
            print(
                f"error: {len(errors)} seed chain(s) stopped; rerun the same command to resume: {errors[0]}"
            )
            return 1
        return 0
    except BenchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
