"""``segflow train``: from a validated config to ``runs/<name>/`` with checkpoints, metrics,
curves, sample pictures and a model card."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_only

from segflow.config import TrainConfig, dump_config
from segflow.constants import default_palette
from segflow.data import check_dataset, class_pixel_stats, load_data_spec
from segflow.data.fingerprint import DatasetFingerprint, fingerprint, tracking_params, write_fingerprint
from segflow.data.spec import DataSpec
from segflow.distributed.launch import (
    detect_topology,
    gather_objects,
    state_digest,
    sync_buffers,
    trainer_layout,
)
from segflow.errors import ConfigError, DataError, TrainingError
from segflow.io_utils import atomic_write, claim_output_dir
from segflow.models import create_model
from segflow.models.checkpoint import build_meta, read_meta
from segflow.models.meta import DataSummary, FingerprintSummary
from segflow.tasks import SEMANTIC, Task, get_task, register_task
from segflow.training.callbacks import AtomicCheckpointIO, SampleGridCallback, ThroughputCallback
from segflow.training.datamodule import SegmentationDataModule
from segflow.training.losses import create_loss, median_frequency_weights
from segflow.training.module import SegmentationModule
from segflow.training.optim import TimeBudget, create_optimizer, create_scheduler

logger = logging.getLogger(__name__)

MONITOR = "val/miou"
RUN_OUTPUTS = (
    "checkpoints",
    "samples",
    "tensorboard",
    "mlruns",
    "config.yaml",
    "hparams.yaml",
    "metrics.csv",
    "metrics.json",
    "metrics.md",
    "confusion.png",
    "per_class_iou.png",
    "curves.png",
    "model_card.md",
    "fingerprint.json",
    "rounds.json",
    "tracking.json",
    "distributed",
    ".*.partial-*",
)
"""What a run writes into its run folder; ``--overwrite`` clears these and nothing else."""
TRAINING_SPLITS = ("train", "val")
"""The splits a run reads: checked before training and fingerprinted (the data the model saw)."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    images_per_second: float = 0.0
    data_fingerprint: FingerprintSummary | None = None
    num_nodes: int = 1
    devices: int = 1
    """Processes (devices) per node; ``num_nodes * devices`` trained the model."""


def resolve_precision(config: TrainConfig) -> str:
    """``auto`` means bf16 autocast where the hardware does bf16 natively, else fp32."""
    precision = config.trainer.precision
    if precision != "auto":
        return precision
    if config.trainer.accelerator in ("gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    from segflow.inference.backends import cpu_has_native_bf16  # the one owner of the CPU rule

    return "bf16-mixed" if cpu_has_native_bf16() else "32"


def load_spec(config: TrainConfig) -> DataSpec:
    """The dataset spec; relative paths resolve against the config file's folder."""
    base = Path(config.base_dir) if config.base_dir else Path.cwd()
    if isinstance(config.data, str):  # a data YAML: its own paths resolve against its own folder
        return load_data_spec(base / config.data)
    return load_data_spec(config.data, base_dir=base)


def check_before_training(spec: DataSpec) -> Any:
    """Runs ``data check`` on train and val; refuses to train on errors, logs its warnings
    (e.g. annotations skipped by ``skip_degenerate``)."""
    report = check_dataset(spec, splits=list(TRAINING_SPLITS))
    for warning in report.warnings:
        logger.warning("warning: %s", warning)
    if not report.ok:
        shown = "; ".join(report.errors[:5])
        more = f" (and {len(report.errors) - 5} more)" if len(report.errors) > 5 else ""
        raise DataError(
            f"the dataset has {len(report.errors)} problem(s): {shown}{more}. "
            "Run `segflow data check` on the data YAML for the full report"
        )
    return report


def class_weights_for(config: TrainConfig, datamodule: SegmentationDataModule) -> torch.Tensor | None:
    """CE class weights: none, an explicit list, or median-frequency balancing on the train split."""
    choice = config.loss.class_weights
    num_classes = len(datamodule.train_set.classes)
    if choice is None:
        return None
    if choice == "median_frequency":
        pixel_counts, image_pixel_counts = class_pixel_stats(datamodule.train_set)
        return median_frequency_weights(
            torch.as_tensor(pixel_counts), torch.as_tensor(image_pixel_counts)
        ).float()
    if len(choice) != num_classes:
        raise ConfigError(
            f"loss.class_weights has {len(choice)} values but the data has {num_classes} classes"
        )
    return torch.tensor(choice, dtype=torch.float32)


def training_steps(config: TrainConfig, train_images: int, world_size: int | None = None) -> tuple[int, int]:
    """Optimiser steps of a run as Lightning counts them (``estimated_stepping_batches``).

    Args:
        config: The training config (batch size, batch limit, accumulation, epochs).
        train_images: Images in the train split.
        world_size: Processes sharing the train split (None: all of the run's processes, on every
            node: from the launcher under ``torchrun``/``srun``, else ``trainer.devices``; see
            :func:`segflow.distributed.launch.trainer_layout`).

    Returns:
        ``(total_steps, steps_per_epoch)``, each at least 1.
    """
    t = config.trainer
    if world_size is None:
        world_size = math.prod(trainer_layout(t.devices, t.strategy))
    per_rank = math.ceil(train_images / world_size)  # DistributedSampler pads to equal shares
    drop_last = train_images > t.batch_size  # as SegmentationDataModule's train loader
    batches = per_rank // t.batch_size if drop_last else math.ceil(per_rank / t.batch_size)
    limit = t.limit_train_batches
    if isinstance(limit, float):  # a share of the batches (Lightning: int(n * share))
        batches = int(batches * limit)
    elif limit is not None:
        batches = min(batches, int(limit))
    per_epoch = max(1, math.ceil(max(1, batches) / t.accumulate_grad_batches))
    return per_epoch * t.max_epochs, per_epoch


def validate_optimisation(config: TrainConfig, train_images: int | None = None) -> None:
    """Builds the optimizer and scheduler on a dummy parameter so bad keys fail before training.

    Args:
        config: The training config.
        train_images: Images in the train split: the scheduler is then built for the run's
            real step count, so a warm-up not shorter than the run fails here, before anything
            is written (None: a nominal 100-step run, which checks the keys only).

    Raises:
        ConfigError: An unknown optimizer or scheduler, a bad option, a warm-up that is
            not shorter than the run, or ``scheduler.by: time`` without ``trainer.max_time_minutes``.
    """
    total, per_epoch = (100, 10) if train_images is None else training_steps(config, train_images)
    optimizer = create_optimizer(config.optimizer, torch.nn.Linear(1, 1))
    minutes = config.trainer.max_time_minutes  # scheduler.by: time refuses a run without it
    budget = TimeBudget(minutes * 60) if minutes else None
    create_scheduler(config.scheduler, optimizer, total_steps=total, steps_per_epoch=per_epoch, budget=budget)


def build_loggers(config: TrainConfig, run_dir: Path) -> list[Logger]:
    """CSV always; TensorBoard when ``trainer.loggers`` asks; the ``tracking:`` backend's logger."""
    loggers: list[Logger] = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    if "tensorboard" in config.trainer.loggers:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
    from segflow.tracking import create_tracking_logger

    tracker = create_tracking_logger(config, run_dir)  # tracking: has one owner, segflow.tracking
    if tracker is not None:
        loggers.append(tracker)
    return loggers


def build_callbacks(
    config: TrainConfig, run_dir: Path, palette: list[Any], classes: list[str], task: Task | None = None
) -> list[Any]:
    """Best/last checkpoints, sample pictures, throughput, weight EMA, early stopping, progress bar.

    With ``trainer.ema_decay`` the exponential moving average of the weights (and batch-norm
    statistics) is what validation scores and checkpoints hold under ``state_dict``; the raw
    weights travel under ``current_model_state`` so that ``--resume`` continues exactly.
    """
    task = task or get_task(config.task)
    monitor, mode = task.monitor, task.monitor_mode
    folder = run_dir / "checkpoints"
    # Two callbacks: since Lightning 2.6, save_last only writes when a top-k file is written,
    # which would leave last.ckpt behind whenever val mIoU does not improve.
    best = ModelCheckpoint(folder, "best", monitor, mode=mode, save_top_k=1, enable_version_counter=False)
    last = ModelCheckpoint(folder, "last", monitor=None, save_top_k=1, enable_version_counter=False)
    callbacks: list[Any] = [best, last, ThroughputCallback()]
    if task.sample_grid:
        callbacks.insert(2, SampleGridCallback(run_dir / "samples", palette, classes))
    if config.trainer.ema_decay:
        callbacks.append(EMAWeightAveraging(decay=config.trainer.ema_decay, use_buffers=True))
    if config.trainer.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor, mode=mode, patience=config.trainer.early_stopping_patience))
    if config.trainer.progress_bar:
        callbacks.append(RichProgressBar(leave=True))
    return callbacks


def build_trainer(config: TrainConfig, run_dir: Path, callbacks: list[Any]) -> pl.Trainer:
    """A Lightning trainer from ``config.trainer``.

    The node count and the devices per node come from the launcher (``torchrun``, ``srun``) when
    one started the process, else one node with ``trainer.devices`` (see
    :func:`segflow.distributed.launch.trainer_layout`); more than one process means DDP.
    """
    t = config.trainer
    max_time = timedelta(minutes=t.max_time_minutes) if t.max_time_minutes else None
    num_nodes, devices = trainer_layout(t.devices, t.strategy)
    strategy: Any = t.strategy
    if num_nodes * devices > 1 and t.strategy == "auto":
        strategy = "ddp"
    return pl.Trainer(
        accelerator=t.accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=resolve_precision(config),  # type: ignore[arg-type]
        max_epochs=t.max_epochs,
        max_time=max_time,
        accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        log_every_n_steps=t.log_every_n_steps,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches,
        logger=build_loggers(config, run_dir),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        deterministic=False,
    )


def build_module(
    config: TrainConfig, spec: DataSpec, class_share: list[float]
) -> tuple[SegmentationModule, SegmentationDataModule]:
    """Network, loss, metadata and data loaders for one run (with ``distill:``, its frozen
    teacher too: :func:`segflow.training.distill.load_teacher`)."""
    from segflow.data import create_dataset

    probe = create_dataset(spec, "train")
    classes = list(probe.classes)
    palette = [tuple(c) for c in (probe.palette or default_palette(len(classes)))]
    m = config.model
    in_channels = m.in_channels or probe.in_channels
    net = create_model(
        m.arch,
        encoder=m.encoder,
        in_channels=in_channels,
        num_classes=len(classes),
        encoder_weights=m.encoder_weights,
        mean=m.mean,
        std=m.std,
        **m.kwargs,
    )
    datamodule = SegmentationDataModule(spec, config, net.output_stride)
    loss = create_loss(
        config.loss.terms,
        len(classes),
        spec.ignore_index,
        class_weights_for(config, datamodule),
        config.loss.options,
    )
    distill = None
    if config.distill is not None:  # refused here, before anything is written, when it does not fit
        from segflow.training.distill import load_teacher

        distill = load_teacher(config, classes, in_channels, spec.ignore_index)
    policy = config.input_policy.model_dump()
    normalization = {
        "mean": net.mean.flatten().tolist(),
        "std": net.std.flatten().tolist(),
        "max_value": float(probe.max_value),
    }
    meta = build_meta(
        net,
        classes=classes,
        palette=[list(c) for c in palette],
        ignore_index=spec.ignore_index,
        normalization=normalization,
        input_policy=policy,
        class_distribution=class_share,
        config=config.model_dump(mode="json"),
        tta=config.evaluate.tta,
        data=DataSummary.from_spec(spec, classes, probe.in_channels),
        data_fingerprint=fingerprint(probe.reader, TRAINING_SPLITS).summary(),
    )
    module = SegmentationModule(
        net,
        loss,
        classes,
        spec.ignore_index,
        config.optimizer,
        config.scheduler,
        meta,
        sample_batch=datamodule.sample_batch(config.trainer.num_sample_images),
        channels_last=config.trainer.channels_last,
        log_every_n_steps=config.trainer.log_every_n_steps,
        distill=distill,
    )
    return module, datamodule


def claim_run_dir(
    config: TrainConfig, *, overwrite: bool = False, resume: bool = False, extra_outputs: tuple[str, ...] = ()
) -> Path:
    """The run folder, refused when non-empty unless ``overwrite`` or ``resume`` (see
    :func:`segflow.io_utils.claim_output_dir`); only the main process (global rank 0) checks.

    Under ``torchrun``/``srun`` every rank runs this at the same time, on every node; the run
    folder is rank 0's (checkpoints, logs, metrics, card). The other ranks write only their
    ``distributed/rank-<R>.json`` into it, after ``fit``, whose first collective waits for rank 0
    to pass this check: nodes that share the folder (one filesystem) never race its claim.

    Args:
        config: Validated training config (``output_dir``/``name`` give the folder).
        overwrite: ``--overwrite``: clear :data:`RUN_OUTPUTS` (and ``extra_outputs``) first.
        resume: ``--resume CKPT``: continue writing into the existing folder.
        extra_outputs: Further names the caller writes there (the demo's ``predictions``).

    Raises:
        ConfigError: The run folder is a file, or is non-empty without either flag.
    """
    run_dir = config.run_dir()
    if getattr(rank_zero_only, "rank", 0) != 0:  # Lightning reads the launcher's RANK / SLURM_PROCID
        return run_dir
    return claim_output_dir(
        run_dir, overwrite=overwrite, resume=resume, owned=RUN_OUTPUTS + extra_outputs, what="run folder"
    )


def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    overwrite: bool = False,
    extra_outputs: tuple[str, ...] = (),
) -> TrainResult | None:
    """Trains one run. Returns the result on the main process, None on other DDP ranks.

    Args:
        config: Validated training config.
        resume: ``last.ckpt`` of an earlier run: continues epoch, optimizer, scheduler and RNG.
        overwrite: Replace the outputs of an earlier run in a non-empty run folder; without
            it (and without ``resume``) a non-empty run folder is refused before any work.
        extra_outputs: Further names the caller writes into the run folder (cleared too).
    """
    if resume is not None and not Path(resume).is_file():
        raise ConfigError(f"--resume {resume}: checkpoint not found")
    if resume is not None and overwrite:
        raise ConfigError(
            f"--resume {resume} and --overwrite exclude each other: --resume continues the run in "
            f"{config.run_dir()}, --overwrite starts it afresh; pass one of them"
        )
    trainer_layout(config.trainer.devices, config.trainer.strategy)  # a contradicting launcher: refused now
    # Checked first, cleared last: a run that fails validation writes nothing into (and
    # clears nothing from) its folder, so neither a rerun nor the earlier run is harmed.
    keep = resume is not None or overwrite
    run_dir = config.run_dir()
    created = not run_dir.exists()
    claim_run_dir(config, overwrite=False, resume=keep, extra_outputs=extra_outputs)
    try:
        pl.seed_everything(config.seed, workers=True, verbose=False)
        spec = load_spec(config)
        validate_optimisation(config)
        report = check_before_training(spec)
        task = get_task(config.task)
        assert task.build is not None
        module, datamodule = task.build(config, spec, list(report.class_share.get("val", [])))
        module.max_time_minutes = config.trainer.max_time_minutes  # scheduler.by: time anneals to it
        if config.init_from and resume is None:
            from segflow.training.init_from import apply_init_from

            apply_init_from(module, config)
        validate_optimisation(config, len(datamodule.train_set))
        callbacks = build_callbacks(config, run_dir, module.meta.colors, module.meta.class_names, task)
        trainer = build_trainer(config, run_dir, callbacks)
    except BaseException:
        if created:  # a refused run leaves no empty run folder behind
            _remove_empty_folders(run_dir)
        raise
    if overwrite:
        claim_run_dir(config, overwrite=True, extra_outputs=extra_outputs)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is not None and trainer.is_global_zero:
        carry_metrics_history(trainer, run_dir / "metrics.csv", Path(resume))
    if trainer.is_global_zero:
        with atomic_write(run_dir / "config.yaml") as tmp:
            tmp.write_text(dump_config(config))
        record_fingerprint(spec, module, trainer, run_dir)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    seconds = time.perf_counter() - start
    if trainer.world_size > 1 and not trainer.interrupted:
        check_replicas(trainer, module, run_dir)
    if not trainer.is_global_zero:
        return None
    return finish_run(config, spec, run_dir, seconds, callbacks)


def check_replicas(trainer: pl.Trainer, module: pl.LightningModule, run_dir: Path) -> list[dict[str, Any]]:
    """After a DDP fit: every rank records its weights; all ranks must hold the same ones.

    Each rank writes ``run_dir/distributed/rank-<R>.json`` (:func:`replica_record`), the records
    are gathered over the process group (every rank must call this), and rank 0 writes them all
    to ``distributed/ranks.json`` with ``identical`` (weights and synced state equal on every
    rank) and ``buffers_identical`` (the ranks' own buffers were equal too), so one file tells
    the story also where the nodes do not share the run folder. Equal ``weights_sha256`` after
    the steps show that the gradient all-reduce kept the replicas in step.

    Buffers such as batch-norm running statistics are not all-reduced: each rank updates them
    from its own batches, and DDP copies rank 0's to the others at the start of each forward
    pass. Before ``state_sha256`` is taken they are copied from rank 0 in the same way, so it is
    the state rank 0 saves in its checkpoints.

    Returns:
        The records of all ranks, in rank order.

    Raises:
        TrainingError: The ranks' weights differ (on every rank, after the files are written).
    """
    own_buffers = state_digest(dict(module.named_buffers()))
    sync_buffers(module)
    record = replica_record(trainer, module, own_buffers)
    folder = run_dir / "distributed"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / f"rank-{trainer.global_rank}.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    records: list[dict[str, Any]] = gather_objects(record)
    identical = all(len({r[key] for r in records}) == 1 for key in ("weights_sha256", "state_sha256"))
    buffers_identical = len({r["buffers_sha256"] for r in records}) == 1
    if trainer.is_global_zero:
        summary = {"identical": identical, "buffers_identical": buffers_identical, "ranks": records}
        with atomic_write(folder / "ranks.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2) + "\n")
    if not identical:
        shown = ", ".join(f"rank {r['rank']} {r['weights_sha256'][:12]}" for r in records)
        raise TrainingError(
            f"the {len(records)} DDP ranks hold different weights after step {trainer.global_step} "
            f"({shown}); the gradient all-reduce did not keep them in step; see {folder}/ranks.json"
        )
    if trainer.is_global_zero:
        logger.info(
            "all %d ranks on %d node(s) hold identical weights (sha256 %s)%s",
            len(records),
            trainer.num_nodes,
            record["weights_sha256"][:16],
            ""
            if buffers_identical
            else "; their own buffers (batch-norm statistics) differed, rank 0's are kept",
        )
    return records


def replica_record(trainer: pl.Trainer, module: pl.LightningModule, own_buffers: str) -> dict[str, Any]:
    """One rank's ``distributed/rank-<R>.json``.

    Keys: ``rank``, ``node_rank``, ``local_rank``, ``world_size``, ``num_nodes``, ``launcher``,
    ``global_step``, ``tensors`` (entries of the ``state_dict``), and three SHA-256 digests
    (:func:`segflow.distributed.launch.state_digest`): ``weights_sha256`` of the parameters,
    ``buffers_sha256`` of this rank's own buffers (``own_buffers``, taken before they were synced),
    ``state_sha256`` of the whole ``state_dict`` (weights and buffers) as rank 0 saves it.
    """
    state = module.state_dict()
    return {
        "rank": trainer.global_rank,
        "node_rank": trainer.node_rank,
        "local_rank": trainer.local_rank,
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
        "launcher": detect_topology().launcher,
        "global_step": trainer.global_step,
        "tensors": len(state),
        "weights_sha256": state_digest(dict(module.named_parameters())),
        "buffers_sha256": own_buffers,
        "state_sha256": state_digest(state),
    }


def carry_metrics_history(trainer: pl.Trainer, path: Path, resume: Path) -> None:
    """``--resume``: keeps the earlier run's ``metrics.csv`` rows up to the checkpoint's epoch.

    Lightning's CSV logger deletes the file when it opens the run folder; the rows of the
    epochs the checkpoint holds are read first and written back through the logger, so the
    history (and ``curves.png``) spans the whole run. Rows of the epoch a crash interrupted are
    dropped: that epoch runs again.
    """
    if not path.is_file():
        return
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    epoch = int(torch.load(resume, map_location="cpu", weights_only=True, mmap=True).get("epoch", -1))
    kept = [row for row in rows if row.get("epoch", "") != "" and float(row["epoch"]) <= epoch]
    logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
    if logger is None or not kept:
        return
    writer = logger.experiment  # opening it deletes the old file
    writer.metrics = [{key: value for key, value in row.items() if value != ""} for row in kept]
    writer.save()


def _remove_empty_folders(folder: Path) -> None:
    """Removes ``folder`` and its sub-folders when no file is in them (never a file)."""
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        folder.rmdir()


def record_fingerprint(
    spec: DataSpec, module: SegmentationModule, trainer: pl.Trainer, run_dir: Path
) -> None:
    """Writes the full fingerprint of the training data (:data:`TRAINING_SPLITS`) to
    ``run_dir/fingerprint.json`` and logs it to the experiment loggers (``data.fingerprint``,
    ``data.fingerprint.<split>``, ``data.files``).

    The checkpoint's summary was computed when the module was built; this pass only stats the
    files (digests are cached per process) and must give the same hash.

    Raises:
        DataError: The dataset changed between the two passes.
    """
    from segflow.data.readers import create_reader

    stored = module.meta.data_fingerprint
    full: DatasetFingerprint = fingerprint(create_reader(spec), TRAINING_SPLITS)
    if stored is not None and stored.combined != full.combined:
        raise DataError(
            f"the dataset changed while the run started (fingerprint {stored.combined[:16]} then "
            f"{full.combined[:16]}); train again once the data is no longer being written"
        )
    write_fingerprint(run_dir / "fingerprint.json", full)
    params = tracking_params(full.summary())
    for tracker in trainer.loggers:
        tracker.log_hyperparams(params)


def final_metrics(best: Path, spec: DataSpec, tta: Any, run_dir: Path) -> dict[str, Any]:
    """Val metrics of the best checkpoint, written to ``run_dir``; with TTA the plain
    single-view mIoU is kept beside them as ``miou_without_tta``."""
    from segflow.metrics.evaluate import evaluate_model, write_report

    metrics = evaluate_model(best, spec, split="val", tta=tta)
    if metrics["tta"] is not None:
        metrics["miou_without_tta"] = evaluate_model(best, spec, split="val")["miou"]
    write_report(metrics, run_dir)
    return metrics


def finish_run(
    config: TrainConfig, spec: DataSpec, run_dir: Path, seconds: float, callbacks: list[Any]
) -> TrainResult:
    """Final evaluation of the best checkpoint, curves and model card."""
    from segflow.training.report import write_model_card
    from segflow.viz import plot_curves

    ckpt_dir = run_dir / "checkpoints"
    best = ckpt_dir / "best.ckpt"
    if not best.is_file():
        best = ckpt_dir / "last.ckpt"
    task = get_task(config.task)
    assert task.final_metrics is not None
    metrics = task.final_metrics(best, spec, config.evaluate.tta, run_dir)
    plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    throughput = next((c.history for c in callbacks if isinstance(c, ThroughputCallback)), [])
    rate = float(sorted(throughput)[len(throughput) // 2]) if throughput else 0.0
    stored = read_meta(best).data_fingerprint
    num_nodes, devices = trainer_layout(config.trainer.devices, config.trainer.strategy)
    result = TrainResult(
        run_dir, best, ckpt_dir / "last.ckpt", metrics, seconds, rate, stored, num_nodes, devices
    )
    from segflow.active.rounds import record_rounds
    from segflow.tracking import finish_tracking

    record_rounds(config, spec, result)  # rounds.json, read by the model card
    write_model_card(result, config, spec)
    finish_tracking(config, result)
    return result


register_task(
    Task(
        SEMANTIC,
        "one class per pixel (softmax over K classes)",
        build=build_module,
        final_metrics=final_metrics,
        monitor=MONITOR,
    )
)
