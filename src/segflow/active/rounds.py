"""``rounds.json``: the active-learning rounds behind a run.

A round is one rank -> push -> pull -> train cycle. ``segflow label pull`` writes
``pull.json`` beside the data YAML of the labels it pulled; a run whose data YAML lists
such folders in ``sources:`` records one round per source with a ``pull.json`` (in the
listed order)::

    {"rounds": [{"round": 1, "source": ".../round1/data.yaml", "ranking": ".../ranking.csv",
                 "pulled": ["img7.png", ...], "labelled_images": 80,
                 "run_dir": "/work/runs/round1", "checkpoint": "/work/runs/round1/checkpoints/best.ckpt",
                 "val": {"miou": 0.61, "per_class_iou": {"road": 0.9, ...}}}, ...]}

``labelled_images`` counts the union's ``train`` images once that round's labels are in
(a re-labelled image counts once). The last round is this run: its ``val`` is this run's
final val metrics. An earlier round's ``val``, ``run_dir`` and ``checkpoint`` come from the
``rounds.json`` of the run that ``init_from`` points into (the same source path), so the
history is carried from round to round; rounds of that history whose source this run no
longer lists are kept first. Without such history they are ``null``. For a checkpoint file
that run is its folder (``runs/x/checkpoints/best.ckpt`` -> ``runs/x``); for a registered
version (``models:/NAME@alias``) it is the MLflow run that trained the version: its
``rounds.json`` artefact, else the run folder its ``segflow.run_dir`` tag names (read through
:func:`segflow.tracking.registry.read_version_run_file`; the server is
``$MLFLOW_TRACKING_URI``, as for the checkpoint itself).

Every path (``source``, ``ranking``, ``run_dir``, ``checkpoint``) is absolute and resolved, so
the file reads the same from any folder; a relative ``ranking`` in ``pull.json`` is taken as
relative to that file's folder.

No ``sources:`` or no ``pull.json``: no ``rounds.json`` is written (and none is removed).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from segflow.io_utils import atomic_write

logger = logging.getLogger(__name__)

ROUNDS_FILE = "rounds.json"
PULL_FILE = "pull.json"
TRAIN_SPLIT = "train"


def record_rounds(config: Any, spec: Any, result: Any) -> Path | None:
    """Writes ``result.run_dir/rounds.json`` when the run's data came from pulled rounds.

    Args:
        config: The run's ``TrainConfig`` (``init_from``, ``base_dir``).
        spec: The run's ``DataSpec``.
        result: The ``TrainResult`` (``run_dir``, ``best_checkpoint``, ``metrics``).

    Returns:
        The written file, or None when the data has no pulled round.

    Raises:
        DataError: A ``pull.json`` that is not valid JSON (names the file).
    """
    rounds = current_rounds(spec)
    if not rounds:
        return None
    history = _history(config)
    by_source = {entry.get("source"): entry for entry in history}
    listed = {entry["source"] for entry in rounds}
    merged = [dict(entry) for entry in history if entry.get("source") not in listed]
    for entry in rounds[:-1]:
        earlier = by_source.get(entry["source"], {})
        merged.append({**entry, **{k: earlier.get(k) for k in ("run_dir", "checkpoint", "val")}})
    merged.append(
        {
            **rounds[-1],
            "run_dir": str(Path(result.run_dir).resolve()),
            "checkpoint": str(Path(result.best_checkpoint).resolve()),
            "val": val_summary(result.metrics),
        }
    )
    for number, entry in enumerate(merged, start=1):
        entry["round"] = number
    ordered = [{"round": e["round"], **{k: v for k, v in e.items() if k != "round"}} for e in merged]
    path = Path(result.run_dir) / ROUNDS_FILE
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({"rounds": ordered}, indent=2) + "\n", encoding="utf-8")
    return path


def current_rounds(spec: Any) -> list[dict[str, Any]]:
    """One entry per ``sources:`` folder that holds a ``pull.json`` (without ``run_dir``,
    ``checkpoint`` and ``val``), with the cumulative ``train`` image count."""
    from segflow.data.readers import create_reader
    from segflow.data.spec import SOURCES_FORMAT, load_data_spec

    if getattr(spec, "format", None) != SOURCES_FORMAT:
        return []
    rounds, names = [], set()
    for source in spec.sources:
        reader = create_reader(load_data_spec(source))
        if TRAIN_SPLIT in reader.split_names():
            names |= {sample.name for sample in reader.list_split(TRAIN_SPLIT).samples}
        pull = Path(source).parent / PULL_FILE
        if not pull.is_file():
            continue
        record = read_pull(pull)
        ranking = record.get("ranking")
        rounds.append(
            {
                "source": str(Path(source).resolve()),
                "ranking": None if not ranking else str((pull.parent / str(ranking)).resolve()),
                "pulled": [str(name) for name in record.get("pulled", [])],
                "labelled_images": len(names),
            }
        )
    return rounds


def read_pull(path: Path) -> dict[str, Any]:
    """A ``pull.json`` (``{"project", "url", "pulled", "ranking", "created"}``).

    Raises:
        DataError: Not a JSON object (names the file).
    """
    from segflow.errors import DataError

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path} is not a readable pull.json ({err}); pull the round again") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} is not a pull.json object; pull the round again")
    return value


def read_rounds(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rounds of a run folder's ``rounds.json`` ([] when it has none or it is unreadable)."""
    path = Path(run_dir) / ROUNDS_FILE
    if not path.is_file():
        return []
    try:
        return parse_rounds(path.read_text(encoding="utf-8"))
    except OSError:
        return []


def parse_rounds(text: str) -> list[dict[str, Any]]:
    """The rounds of a ``rounds.json`` text ([] when it is not one)."""
    try:
        value = json.loads(text)
    except ValueError:
        return []
    rounds = value.get("rounds") if isinstance(value, dict) else None
    return [entry for entry in rounds or [] if isinstance(entry, dict)]


def val_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """``{"miou", "per_class_iou": {class: iou}}`` of a run's final val metrics."""
    per_class = metrics.get("per_class") or {}
    return {
        "miou": metrics.get("miou"),
        "per_class_iou": {name: values.get("iou") for name, values in per_class.items()},
    }


def _history(config: Any) -> list[dict[str, Any]]:
    """The rounds of the run that ``init_from`` points into: the folder of its checkpoint, or,
    for a registered version, the MLflow run that trained it ([] when none is found)."""
    if not getattr(config, "init_from", None):
        return []
    from segflow.errors import SegflowError
    from segflow.tracking.scheme import SCHEME
    from segflow.training.init_from import resolve_init_from

    text = str(config.init_from)
    if text.startswith(f"{SCHEME}:"):
        return _registry_history(text)
    try:
        checkpoint = resolve_init_from(text, config.base_dir)
    except SegflowError:
        return []
    for folder in (checkpoint.parent, checkpoint.parent.parent):  # runs/x/checkpoints/best.ckpt
        rounds = read_rounds(folder)
        if rounds:
            return rounds
    return []


def _registry_history(text: str) -> list[dict[str, Any]]:
    """The rounds of the MLflow run behind registered version ``text`` (``models:/...``); a
    server that no longer answers costs the history (a warning), not the finished run."""
    from segflow.errors import SegflowError
    from segflow.tracking.registry import parse_version_ref, read_version_run_file
    from segflow.tracking.server import TRACKING_URI_ENV

    uri = os.environ.get(TRACKING_URI_ENV, "").strip()
    try:
        ref = parse_version_ref(text.partition(":")[2], text)
        found = read_version_run_file(uri, ref, ROUNDS_FILE) if uri else None
    except SegflowError as err:
        logger.warning("warning: %s: the earlier rounds of %s were not read: %s", ROUNDS_FILE, text, err)
        return []
    return parse_rounds(found) if found is not None else []
