"""``segflow runs compare``: runs side by side.

For each run folder (what ``segflow train`` wrote) one column; the rows are:

- ``config.<dotted.key>``: only the flattened ``config.yaml`` keys whose values differ
  between the runs (a key one run lacks counts as differing, shown empty);
- ``val.miou`` and ``val.iou.<class>``: from ``metrics.json`` (the best checkpoint's final
  val metrics);
- ``train.images_per_s``: the median of the ``train/images_per_s`` column of ``metrics.csv``
  (one value per epoch, logged by ``ThroughputCallback``);
- ``model.parameters``: the trainable weights of the best checkpoint's network (its
  ``net.`` tensors, batch-norm statistics left out); ``model.size_mb``: that file's size in MB
  (10^6 bytes).

Written as ``compare.md``, ``compare.csv`` (``row,<run>...``) and ``compare.json``
(``{"runs": [...], "rows": {row: [value per run]}}``; strict JSON: a NaN or infinite value is
written as ``null``).

A run file of the wrong shape (``config.yaml`` or ``metrics.json`` not a mapping, ``miou`` or
an IoU that is not a number, ``per_class`` not a mapping of mappings, a ``metrics.csv``
throughput cell that is not a number) is refused with one :class:`~segflow.errors.DataError`
line naming the file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from segflow.errors import ConfigError, DataError
from segflow.io_utils import atomic_write

RUN_FILES = ("config.yaml", "metrics.json")
CHECKPOINTS = ("checkpoints/best.ckpt", "checkpoints/last.ckpt")
THROUGHPUT_COLUMN = "train/images_per_s"
"""The column ``ThroughputCallback`` logs to ``metrics.csv``."""
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
"""State-dict entries that are statistics, not trained weights."""
BYTES_PER_MB = 1_000_000


@dataclass
class RunSummary:
    """What one run folder says about itself.

    Attributes:
        folder: The run folder.
        config: Flattened ``config.yaml`` (dotted keys).
        metrics: ``val.miou`` and ``val.iou.<class>``.
        images_per_s: Median training images/s, None without a throughput column.
        parameters: Trained weights of the network (count).
        size_mb: Size of the checkpoint file (MB).
        checkpoint: The checkpoint measured (best, else last).
    """

    folder: Path
    config: dict[str, Any]
    metrics: dict[str, float | None] = field(default_factory=dict)
    images_per_s: float | None = None
    parameters: int = 0
    size_mb: float = 0.0
    checkpoint: Path | None = None


def read_run(folder: str | Path) -> RunSummary:
    """Reads one run folder.

    Raises:
        ConfigError: Not a run folder (names it and what is missing), or an unreadable file.
        DataError: A run file of the wrong shape (module docstring; names the file).
        CheckpointError: An unreadable checkpoint.
    """
    run = Path(folder)
    if not run.is_dir():
        raise ConfigError(
            f"{run} is not a run folder: it does not exist; give folders that `segflow train` wrote"
        )
    checkpoint = next((run / name for name in CHECKPOINTS if (run / name).is_file()), None)
    missing = [name for name in RUN_FILES if not (run / name).is_file()]
    if checkpoint is None:
        missing.append("checkpoints/best.ckpt")
    if missing or checkpoint is None:
        raise ConfigError(
            f"{run} is not a run folder: missing {', '.join(missing)}; "
            "give folders that `segflow train` wrote"
        )
    config = flatten(_read_yaml(run / "config.yaml"))
    metrics_path = run / "metrics.json"
    rows = val_rows(_read_json(metrics_path), metrics_path)
    throughput = median_throughput(run / "metrics.csv")
    parameters = count_parameters(checkpoint)  # last: the text files are checked before the weights load
    return RunSummary(
        run, config, rows, throughput, parameters, checkpoint.stat().st_size / BYTES_PER_MB, checkpoint
    )


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": leaf}`` (lists are leaves)."""
    if not isinstance(value, dict):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, dict) and item:
            flat.update(flatten(item, name))
        else:
            flat[name] = item
    return flat


def val_rows(metrics: dict[str, Any], path: Path | str = "metrics.json") -> dict[str, float | None]:
    """``{"val.miou": ..., "val.iou.<class>": ...}`` from a ``metrics.json``.

    Args:
        metrics: The parsed file.
        path: The file, for messages.

    Raises:
        DataError: ``miou`` or an ``iou`` that is not a number or null, or ``per_class`` that is
            not a mapping of class name -> mapping.
    """
    rows: dict[str, float | None] = {"val.miou": _number(metrics.get("miou"), path, "miou")}
    per_class = metrics.get("per_class") or {}
    if not isinstance(per_class, dict):
        raise DataError(
            f"{path}: 'per_class' must map class names to {{\"iou\": ...}}, got {type(per_class).__name__}; "
            "evaluate the run again"
        )
    for name, values in per_class.items():
        if values is not None and not isinstance(values, dict):
            raise DataError(
                f"{path}: per_class[{name!r}] must be a mapping with 'iou', got {type(values).__name__}; "
                "evaluate the run again"
            )
        iou = values.get("iou") if values is not None else None
        rows[f"val.iou.{name}"] = _number(iou, path, f"per_class[{name!r}].iou")
    return rows


def _number(value: Any, path: Path | str, key: str) -> float | None:
    """``value`` as a float (None stays None); NaN and infinities pass (written as null in JSON).

    Raises:
        DataError: Not a number (a bool counts as not one).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DataError(f"{path}: {key} must be a number, got {value!r}; evaluate the run again")
    return float(value)


def median_throughput(path: Path) -> float | None:
    """Median of the non-empty :data:`THROUGHPUT_COLUMN` cells of ``metrics.csv`` (None: none).

    Raises:
        ConfigError: The file cannot be read.
        DataError: A cell that is not a finite number (names the file, line and value).
    """
    if not path.is_file():
        return None
    values = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            for row in reader:
                cell = row.get(THROUGHPUT_COLUMN)
                if not isinstance(cell, str) or not cell.strip():
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    value = math.nan
                if not math.isfinite(value):
                    raise DataError(
                        f"{path} line {reader.line_num}: {THROUGHPUT_COLUMN} is {cell!r}, not a "
                        "finite number; fix or remove that cell"
                    )
                values.append(value)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError(
            f"{path} cannot be read ({' '.join(str(err).split())}); is it a run's metrics?"
        ) from None
    return float(statistics.median(values)) if values else None


def count_parameters(checkpoint: Path) -> int:
    """Elements of the checkpoint's ``net.`` tensors, batch-norm statistics left out."""
    from segflow.training.init_from import _net_weights

    weights = _net_weights(checkpoint)
    return int(sum(t.numel() for name, t in weights.items() if not name.endswith(BUFFER_SUFFIXES)))


def compare_runs(folders: list[str | Path]) -> tuple[list[str], dict[str, list[Any]]]:
    """The comparison table: run names and ``{row: [value per run]}`` (module docstring).

    Raises:
        ConfigError: Fewer than one folder, or a folder that is not a run.
    """
    if not folders:
        raise ConfigError("give at least one run folder, e.g. segflow runs compare runs/a runs/b")
    runs = [read_run(folder) for folder in folders]
    rows: dict[str, list[Any]] = {}
    keys = sorted({key for run in runs for key in run.config})
    for key in keys:
        values = [run.config.get(key) for run in runs]
        if any(v != values[0] or key not in run.config for v, run in zip(values, runs, strict=True)):
            rows[f"config.{key}"] = values
    metric_keys = list(dict.fromkeys(key for run in runs for key in run.metrics))
    for key in metric_keys:
        rows[key] = [run.metrics.get(key) for run in runs]
    rows["train.images_per_s"] = [run.images_per_s for run in runs]
    rows["model.parameters"] = [run.parameters for run in runs]
    rows["model.size_mb"] = [round(run.size_mb, 3) for run in runs]
    return [str(run.folder) for run in runs], rows


def shown(value: Any) -> str:
    """A cell: floats with 4 decimals, lists and dicts as compact JSON, None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def check_out(out: Path) -> None:
    """Refuses an ``--out`` that exists and is not a folder (checked before any run is read).

    Raises:
        ConfigError: ``out`` is a file (or another non-folder).
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"--out {out} is a file; give a folder for compare.md, compare.csv and compare.json"
        )


def write_comparison(out: Path, runs: list[str], rows: dict[str, list[Any]]) -> list[Path]:
    """Writes ``compare.md``, ``compare.csv`` and ``compare.json`` into ``out`` (atomically).

    Raises:
        ConfigError: ``out`` is a file, or cannot be created.
    """
    check_out(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(
            f"--out {out}: cannot create the folder ({err.strerror or err}); give another"
        ) from None
    md = ["| row | " + " | ".join(runs) + " |", "|---|" + "---:|" * len(runs)]
    md += [
        f"| {key} | " + " | ".join(shown(v).replace("|", "\\|") for v in values) + " |"
        for key, values in rows.items()
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", *runs])
    writer.writerows([key, *(shown(v) for v in values)] for key, values in rows.items())
    texts = {
        "compare.md": "# Runs compared\n\n" + "\n".join(md) + "\n",
        "compare.csv": buffer.getvalue(),
        "compare.json": json.dumps(
            finite_json({"runs": runs, "rows": rows}), indent=2, default=str, allow_nan=False
        )
        + "\n",
    }
    paths = []
    for name, text in texts.items():
        with atomic_write(out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
        paths.append(out / name)
    return paths


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float (in nested lists and dicts) replaced by None,
    so ``json.dumps(..., allow_nan=False)`` writes strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(item) for item in value]
    return value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        value = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(
            f"{path} cannot be read ({' '.join(str(err).split())}); is it a run's config?"
        ) from None
    if not isinstance(value, dict):
        raise DataError(
            f"{path} must be a mapping of config keys, got {type(value).__name__}; is it a run's config?"
        )
    return value


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path} cannot be read ({err}); evaluate the run again") from None
    if not isinstance(value, dict):
        raise DataError(
            f"{path} must be a JSON object of metrics, got {type(value).__name__}; evaluate the run again"
        )
    return value
