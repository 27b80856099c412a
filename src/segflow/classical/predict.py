"""``segflow predict classical:NAME INPUT... --out DIR [--param k=v ...] [--overlay]``.

Registers the ``classical`` prediction kind (:mod:`segflow.inference.kinds`). Outputs are those
of a model: ``<stem>.png`` (8-bit palette PNG of class indices, :func:`segflow.viz.save_label_png`),
``<stem>_overlay.png`` with ``--overlay`` and ``predictions.json``
(:mod:`segflow.inference.manifest`, same folder rule, ``--overwrite`` and ``--resume``). Its
``model`` record names the method, every parameter value, the label source and
``oracle_assisted`` (true when the labels were used for a vote, seeds or boxes), so
``segflow evaluate --predictions DIR --data D.yaml --split S`` scores the folder unchanged.

Parameters besides the method's own (:func:`segflow.classical.methods.create_classical`):

- ``labels=DIR``: ground truth as index PNGs ``DIR/<stem>.png`` (255 ignored), matched by stem;
- ``data=DATA.yaml`` with ``split=NAME`` (default ``val``): ground truth read through the dataset
  (its ``mask_values``/colour rules, class names, palette and ignore index), matched by stem;
- ``refine=crf``: dense-CRF refinement of the method's map (:mod:`segflow.classical.crf`), tuned
  by ``crf_<name>=value``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.classical.params import Param, describe_params, parse_params
from segflow.constants import IGNORE_INDEX
from segflow.errors import ConfigError, DataError
from segflow.inference.kinds import KindRequest, PredictKind, register_kind

logger = logging.getLogger(__name__)

OVERLAY_ALPHA = 0.5
"""Colour weight of ``<stem>_overlay.png`` (as segflow.inference.streaming's)."""
PREDICT_PARAMS: dict[str, Param] = {
    "labels": Param("", "folder of index-PNG label masks <stem>.png for the vote, seeds or boxes"),
    "data": Param("", "data YAML whose split gives the labels (and class names, palette)"),
    "split": Param("val", "split of data= whose samples are matched by stem"),
    "refine": Param("none", "dense-CRF refinement of the output", ("none", "crf")),
}
"""``--param`` keys of the classical kind itself (the method's own keys come on top)."""


@dataclass
class LabelSource:
    """Ground truth for the inputs of a run.

    Attributes:
        description: ``labels=DIR`` or ``data=YAML split=S`` (recorded in predictions.json).
        class_names: The classes (K = their number).
        palette: One colour per class.
        ignore_index: Label value that gives no seed and no vote.
        read: ``read(input path) -> (H, W) labels``.
        where: ``where(input path) -> text`` naming the labels of an input in messages.
    """

    description: str
    class_names: list[str]
    palette: list[tuple[int, int, int]]
    ignore_index: int
    read: Callable[[Path], np.ndarray]
    where: Callable[[Path], str]


def _folder_source(folder: Path, inputs: list[Path]) -> LabelSource:
    """Index PNGs ``folder/<stem>.png``; K = largest non-ignored value over them + 1."""
    from segflow.inference.manifest import input_stem
    from segflow.viz import read_label_png, resolve_palette

    if not folder.is_dir():
        raise DataError(f"--param labels={folder}: folder not found; give a folder of index PNGs <stem>.png")
    masks = {path: folder / f"{input_stem(path)}.png" for path in inputs}
    missing = [mask for mask in masks.values() if not mask.is_file()]
    if missing:
        raise DataError(
            f"--param labels={folder}: no label mask for {len(missing)} input(s), e.g. {missing[0].name}; "
            "labels are index PNGs named like the inputs"
        )
    read = {path: read_label_png(mask) for path, mask in masks.items()}
    largest = max(
        (int(m[m != IGNORE_INDEX].max()) for m in read.values() if (m != IGNORE_INDEX).any()), default=0
    )
    count = max(largest + 1, 2)
    return LabelSource(
        f"labels={folder.resolve()}",
        [f"class {i}" for i in range(count)],
        resolve_palette(count),
        IGNORE_INDEX,
        lambda path: read[path],
        lambda path: str(masks[path]),
    )


def _data_source(data: str, split: str, inputs: list[Path]) -> LabelSource:
    """The masks of a dataset split, matched to the inputs by stem (the sample's last name part)."""
    from segflow.data import create_dataset, load_data_spec
    from segflow.inference.manifest import input_stem

    dataset = create_dataset(load_data_spec(Path(data)), split)
    index = {Path(sample.name).name: i for i, sample in enumerate(dataset.samples)}
    index.update({sample.image_path.stem: i for i, sample in enumerate(dataset.samples)})
    missing = [path for path in inputs if input_stem(path) not in index]
    if missing:
        raise DataError(
            f"--param data={data} split={split}: {len(missing)} input(s) match no sample by name, e.g. "
            f"{missing[0].name}; give the split's images as inputs"
        )
    return LabelSource(
        f"data={Path(data).resolve()} split={split}",
        list(dataset.classes),
        list(dataset.palette),
        dataset.ignore_index,
        lambda path: dataset.load_mask(index[input_stem(path)]),
        lambda path: f"the mask of {dataset.samples[index[input_stem(path)]].name} ({data} split={split})",
    )


def split_params(given: dict[str, str]) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """``given`` -> (predict keys, CRF keys without ``crf_``, the method's keys)."""
    from segflow.classical.crf import CRF_PREFIX

    own = {k: v for k, v in given.items() if k in PREDICT_PARAMS}
    crf = {k.removeprefix(CRF_PREFIX): v for k, v in given.items() if k.startswith(CRF_PREFIX)}
    method = {k: v for k, v in given.items() if k not in own and not k.startswith(CRF_PREFIX)}
    return own, crf, method


def _label_source(options: dict[str, Any], inputs: list[Path]) -> LabelSource | None:
    if options["labels"] and options["data"]:
        raise ConfigError("--param labels= and --param data= both give labels; pass one of them")
    if options["labels"]:
        return _folder_source(Path(options["labels"]), inputs)
    if options["data"]:
        return _data_source(options["data"], options["split"], inputs)
    return None


def run(request: KindRequest) -> tuple[int, int]:
    """Segments every input not finished yet with the method and writes a model's outputs.

    Raises:
        ConfigError: Unknown method or parameter, bad value, labels needed but not given, or
            the ``--out`` folder rule.
        DataError: Missing labels for an input, or an unreadable image.
    """
    from segflow.classical.crf import crf_params, one_hot_probs, refine
    from segflow.classical.methods import create_classical
    from segflow.cli.predict import _check_stems
    from segflow.data.io import read_image
    from segflow.inference.manifest import input_sha256, input_stem, open_prediction_dir
    from segflow.inference.options import InferenceOptions
    from segflow.viz import overlay, resolve_palette, save_image_png, save_label_png

    _check_stems(request.inputs)  # two inputs named a.png would write one a.png
    own_given, crf_given, method_given = split_params(request.params)
    try:
        method = create_classical(request.spec, method_given)
    except ConfigError as err:
        if request.spec.lower() not in _method_names():
            raise
        raise ConfigError(f"{err}; predict also takes {describe_params(PREDICT_PARAMS)}, crf_*") from None
    options = parse_params("segflow predict classical", PREDICT_PARAMS, own_given)
    crf_values = crf_params(crf_given) if options["refine"] == "crf" else None
    if crf_given and crf_values is None:
        raise ConfigError("--param crf_* only applies with --param refine=crf; add it or drop them")
    method.check_labels(bool(options["labels"] or options["data"]))
    source = _label_source(options, request.inputs)
    if source is not None and method.label_use != "none":
        method.check_classes(len(source.class_names))
    oracle = source is not None and method.label_use != "none"
    record = {
        "spec": _spec_text(method.name, method.values, options, crf_values, source),
        "backend": None,
        "kind": "classical",
        "method": method.name,
        "params": method.values,
        "refine": options["refine"],
        "crf": crf_values,
        "labels": None if source is None else source.description,
        "oracle_assisted": oracle,
    }
    manifest = open_prediction_dir(
        request.out,
        request.inputs,
        record,
        InferenceOptions(overlay=request.overlay),
        overwrite=request.overwrite,
        resume=request.resume,
    )
    manifest.begin()
    written = 0
    try:
        for path in request.inputs:
            digest = input_sha256(path)
            if manifest.is_finished(path, digest):
                continue
            image = read_image(path)
            labels = None if source is None else source.read(path)
            if source is not None and labels is not None and not (labels != source.ignore_index).any():
                logger.warning(
                    "warning: %s is all ignore (%d): it gives %s no vote, seed or box, so its output is "
                    "all class 0; check the labels",
                    source.where(path),
                    source.ignore_index,
                    path.name,
                )
            result = method.segment(
                image,
                labels,
                None if source is None else source.class_names,
                IGNORE_INDEX if source is None else source.ignore_index,
            )
            names = result.class_names
            # the dataset's colours when its classes hold the output (always so for oracle outputs)
            fits = source is not None and len(names) <= len(source.palette)
            palette = source.palette[: len(names)] if fits and source else resolve_palette(len(names))
            classes = result.labels
            if crf_values is not None:
                probs = one_hot_probs(classes, max(len(names), 2), crf_values["confidence"])
                classes = refine(image, probs, crf_values)
            stem = input_stem(path)
            outputs = [request.out / f"{stem}.png"]
            ignore = IGNORE_INDEX if source is None else source.ignore_index
            save_label_png(outputs[0], classes, palette, ignore)
            if request.overlay:
                outputs.append(request.out / f"{stem}_overlay.png")
                save_image_png(
                    outputs[1], overlay(image, classes, palette, OVERLAY_ALPHA, names, ignore_index=ignore)
                )
            manifest.record(path, digest, outputs)
            written += 1
    finally:
        manifest.close()
    return written, len(request.inputs) - written


def _method_names() -> list[str]:
    from segflow.classical.methods import CLASSICAL_METHODS

    return CLASSICAL_METHODS.names()


def _spec_text(
    name: str,
    values: dict[str, Any],
    options: dict[str, Any],
    crf: dict[str, Any] | None,
    source: LabelSource | None,
) -> str:
    """What identifies the run for ``--resume``: method, every value, refinement and label source."""
    parts = {
        "params": values,
        "refine": options["refine"],
        "crf": crf,
        "labels": source and source.description,
    }
    return f"classical:{name} " + json.dumps(parts, sort_keys=True)


KIND = register_kind(
    PredictKind(
        "classical",
        "classical methods (Otsu, watershed, k-means, SLIC, GrabCut ...) with --param key=value; "
        "docs/classical.md",
        run,
        options=("params",),
    )
)
