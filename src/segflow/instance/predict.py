"""``segflow predict`` for instances: the ``instance`` prediction kind (``segflow.inference.kinds``).

Two sources, one set of outputs:

- an instance checkpoint (Mask R-CNN, ``task: instance``), through
  :class:`segflow.instance.predictor.InstancePredictor`; ``--param score_threshold=0.5``,
  ``--param mask_threshold=0.5`` override the checkpoint's;
- a semantic checkpoint with ``--instances components|watershed`` (``method=`` in the params):
  its labels and probabilities split into instances per thing class by
  :func:`segflow.instance.from_semantic.instances_from_labels` (``--param min_distance=5``,
  ``min_area=0``, ``h=1.0``, ``things=car,person``; default things: every class but class 0).

Per input ``<stem>``: ``<stem>.png`` (8-bit palette PNG of class indices, the instances pasted
by score), ``<stem>_instances.png`` (16-bit instance ids, 0 none; id ``i`` is the record with
``"id": i``), ``<stem>_overlay.png`` with ``--overlay`` (one colour per instance, class and
score, :func:`segflow.instance.overlay.draw_instances`), and one ``instances.json`` for the run
(COCO results with RLE masks, ``image_id`` = the stem; :mod:`segflow.instance.results`), which
``segflow evaluate --task instance --predictions DIR`` scores. Each record's RLE is exactly the
pixels of its id in ``<stem>_instances.png``.

``--overwrite`` replaces these outputs, ``--resume`` skips inputs whose ``_instances.png`` exists
and keeps their records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import ConfigError
from segflow.inference.kinds import KindRequest, PredictKind, register_kind

OWNED = ("*.png", "instances.json", ".*.partial-*")
"""What this kind writes into ``--out`` (``--overwrite`` clears these only)."""
MODEL_PARAMS = ("score_threshold", "mask_threshold")
SEMANTIC_PARAMS = ("method", "min_distance", "min_area", "h", "things")


def _number(params: dict[str, str], key: str, kind: type, default: Any) -> Any:
    if key not in params:
        return default
    try:
        return kind(params[key])
    except ValueError:
        raise ConfigError(
            f"--param {key}={params[key]!r} must be a{'n integer' if kind is int else ' number'}"
        ) from None


def _check_params(params: dict[str, str], allowed: tuple[str, ...], what: str) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            f"--param {', '.join(unknown)} does not apply to {what}; valid: {', '.join(allowed)}"
        )


class _Source:
    """Turns an image into ``(labels uint8 (H, W), records)`` (records with ``id`` 1..N)."""

    def __init__(self, request: KindRequest) -> None:
        from segflow.models.checkpoint import read_meta

        params = dict(request.params)
        path = Path(request.spec)
        meta = read_meta(path)  # CheckpointError for a missing or foreign file
        tile = request.options.get("tile")
        self.method = params.get("method")
        if meta.task == "instance":
            from segflow.instance.predictor import InstancePredictor

            if self.method is not None:
                raise ConfigError(
                    f"--instances {self.method}: {path} is an instance model already; leave it out"
                )
            if tile is not None:
                raise ConfigError(
                    f"--tile does not apply to instance (Mask R-CNN) model {path}; leave it out"
                )
            _check_params(params, MODEL_PARAMS, f"instance model {path}")
            self.predictor: Any = InstancePredictor.from_path(
                path,
                backend=request.backend,
                score_threshold=_number(params, "score_threshold", float, None),
                mask_threshold=_number(params, "mask_threshold", float, None),
            )
            self.things: list[int] = list(self.predictor.things)
        elif meta.task == "semantic":
            from segflow.inference.options import InferenceOptions
            from segflow.inference.predictor import Predictor

            if self.method is None:
                raise ConfigError(f"{path} is a semantic model: add --instances components|watershed")
            _check_params(params, SEMANTIC_PARAMS, f"--instances {self.method}")
            self.predictor = Predictor.from_path(path, InferenceOptions(tile=tile), backend=request.backend)
            self.things = _things(params.get("things"), meta.class_names)
            self.min_distance = _number(params, "min_distance", int, None)
            self.min_area = _number(params, "min_area", int, None)
            self.h = _number(params, "h", float, None)
            self._semantic_check()
        else:
            raise ConfigError(
                f"{path} is a model of task {meta.task}; the instance kind takes instance or semantic models"
            )
        self.classes: list[str] = list(self.predictor.classes)
        self.palette: list[tuple[int, int, int]] = list(self.predictor.palette)

    def _semantic_check(self) -> None:
        """Checks method and numbers once, on an empty map (one ConfigError before any image)."""
        self.split(np.zeros((2, 2), np.uint8), None)

    def split(self, labels: np.ndarray, probs: np.ndarray | None) -> list[dict[str, Any]]:
        from segflow.instance import from_semantic as fs

        return fs.instances_from_labels(
            labels,
            probs,
            self.things,
            method=str(self.method),
            min_distance=fs.DEFAULT_MIN_DISTANCE if self.min_distance is None else self.min_distance,
            min_area=fs.DEFAULT_MIN_AREA if self.min_area is None else self.min_area,
            h=fs.DEFAULT_H if self.h is None else self.h,
        )

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        if self.method is None:
            prediction = self.predictor.predict(image)
            return prediction.labels, list(prediction.instances or [])
        prediction = self.predictor.predict(image, return_probs=True)
        return prediction.labels, self.split(prediction.labels, prediction.probs)


def _things(names: str | None, classes: list[str]) -> list[int]:
    if names is None:
        return list(range(1, len(classes)))
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in classes]
    if unknown or not wanted:
        raise ConfigError(
            f"--param things={names!r}: name classes of the model, comma-separated; classes: {classes}"
        )
    return sorted(classes.index(name) for name in wanted)


def id_map(records: list[dict[str, Any]], shape: tuple[int, int]) -> np.ndarray:
    """uint16 ``(H, W)`` map of the records' ids (later records do not overwrite earlier ones)."""
    from segflow.instance.rle import decode_mask

    ids = np.zeros(shape, dtype=np.uint16)
    for record in reversed(records):
        ids[decode_mask(record["segmentation"])] = int(record["id"])
    return ids


def save_id_png(path: Path, ids: np.ndarray) -> None:
    """Writes a 16-bit grayscale PNG of instance ids, atomically."""
    from PIL import Image

    from segflow.io_utils import atomic_write

    with atomic_write(path) as tmp:
        Image.fromarray(ids.astype(np.uint16)).save(tmp, format="PNG")


def run(request: KindRequest) -> tuple[int, int]:
    """Writes the outputs of every input (module docstring); returns ``(written, skipped)``."""
    from segflow.data.io import read_image
    from segflow.inference.manifest import input_stem
    from segflow.instance.overlay import draw_instances
    from segflow.instance.results import RESULTS_FILE, read_coco_results, write_coco_results
    from segflow.io_utils import claim_output_dir
    from segflow.viz.png import save_image_png, save_label_png

    if request.resume and request.overwrite:
        raise ConfigError("--resume and --overwrite exclude each other; pass one of them")
    stems = [input_stem(path) for path in request.inputs]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise ConfigError(
            f"inputs {repeated[:3]} share a file name stem; their outputs would collide: rename them"
        )
    source = _Source(request)  # model and params checked before the folder is touched
    out = claim_output_dir(request.out, overwrite=request.overwrite, resume=request.resume, owned=OWNED)
    results_path = out / RESULTS_FILE
    done = {stem for stem in stems if request.resume and (out / f"{stem}_instances.png").is_file()}
    kept = (
        [r for r in read_coco_results(results_path) if r["image_id"] in done]
        if results_path.is_file()
        else []
    )
    results: list[dict[str, Any]] = kept
    written = 0
    for path, stem in zip(request.inputs, stems, strict=True):
        if stem in done:
            continue
        image = read_image(path)
        labels, records = source(image)
        results = [r for r in results if r["image_id"] != stem] + [{**r, "image_id": stem} for r in records]
        write_coco_results(results_path, results)  # before the PNGs: --resume trusts a finished PNG
        save_label_png(out / f"{stem}.png", labels, source.palette)
        if request.overlay:
            save_image_png(
                out / f"{stem}_overlay.png", draw_instances(image, records, source.classes, source.palette)
            )
        save_id_png(out / f"{stem}_instances.png", id_map(records, labels.shape[:2]))
        written += 1
    if not results_path.is_file():
        write_coco_results(results_path, results)
    return written, len(done)


INSTANCE_KIND = register_kind(
    PredictKind(
        "instance",
        "instances of an instance (Mask R-CNN) model, or of a semantic model with --instances",
        run=run,
        options=("params", "overlay", "backend"),
    )
)
