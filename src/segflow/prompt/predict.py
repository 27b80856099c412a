"""``segflow predict prompt:grabcut|prompt:sam:PATH|prompt:sam2:PATH INPUT... --prompts FILE --out DIR``:
batch prompting. Registers the ``prompt`` prediction kind (:mod:`segflow.inference.kinds`).

``--prompts`` is either

- a list of entries ``{"image": NAME, "points": [[x, y, label], ...], "box": [x0, y0, x1, y1],
  "mask": COCO RLE, "class": NAME_OR_INDEX}`` (pixels of the image; ``image`` is an INPUT's
  file name or stem; each of points/box/mask optional but not all), or
- a COCO instances JSON (``images``, ``annotations``, ``categories``): each annotation's
  ``bbox`` ``[x, y, w, h]`` becomes the box ``[x, y, x + w, y + h]`` of its image (matched by
  ``file_name``), its category its class (boxes from a detector or a COCO file).

Classes: ``--param classes=background,cat,dog`` names them (index 0 is the background, which
a prompt may use to erase); otherwise ``background`` then the class names of the entries in
order of first appearance (a COCO file: its categories by increasing id), or ``background,
object`` when no entry names one. An entry without ``class`` gets class 1. Other parameters:
``--param device=cuda`` (SAM / SAM 2), ``--param multimask=true`` (keep SAM's best-scored of its
3 masks instead of its single-mask answer).

Outputs, as a model's: ``<stem>.png`` (palette PNG of class indices: each input's masks in
entry order, later over earlier; an input without entries is all background),
``<stem>_overlay.png`` with ``--overlay``, ``predictions.json`` (the folder rule, ``--overwrite``
and ``--resume``; the model record holds the backend spec, the parameters and the prompts
file's SHA-256), and ``annotations.coco.json`` for all inputs (:func:`segflow.prompt.export.
coco_json`, with each mask's score), rewritten at the end of every run (a resumed run keeps
the finished inputs' annotations from the earlier file). Every problem in the prompts file is
found before any output is written: one line naming the entry index and the field. Inputs must
have distinct file stems (``a.png`` and ``dup/a.png`` would write the same outputs and make
``"image": "a.png"`` ambiguous): such a pair is refused before any work.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import ConfigError, InferenceError
from segflow.inference.kinds import KindRequest, PredictKind, register_kind
from segflow.prompt.base import DEFAULT_CACHE_BYTES, Prompt

COCO_NAME = "annotations.coco.json"
OVERLAY_ALPHA = 0.5
PARAMS = ("classes", "device", "multimask")
BACKGROUND = "background"
DEFAULT_OBJECT = "object"


@dataclass(frozen=True)
class Entry:
    """One checked prompt: its input, prompt and class index."""

    index: int
    input: Path
    prompt: Prompt
    class_id: int


def run(request: KindRequest) -> tuple[int, int]:
    """Prompts every input not finished yet and writes a model's outputs plus COCO JSON.

    Raises:
        ConfigError: No ``--prompts``, a bad prompts file (entry index and field), an unknown
            parameter, or the ``--out`` folder rule.
        CheckpointError: The SAM / SAM 2 checkpoint is missing or not one.
    """
    from segflow.cli.predict import _check_stems
    from segflow.data.io import read_image
    from segflow.inference.manifest import input_sha256, input_stem, open_prediction_dir
    from segflow.inference.options import InferenceOptions
    from segflow.io_utils import atomic_write
    from segflow.prompt.base import create_prompt_backend
    from segflow.prompt.export import coco_json, index_labels, merge_coco
    from segflow.viz import overlay, resolve_palette, save_image_png, save_label_png

    params = _params(request.params)
    _check_stems(request.inputs)  # one output name per input, and an unambiguous 'image' field
    if request.prompts is None:
        raise ConfigError(
            "prompt: models need --prompts prompts.json (a list of {image, points, box, class})"
        )
    entries, classes = read_prompts(request.prompts, request.inputs, params["classes"])
    record = {
        "spec": f"prompt:{request.spec} "
        + json.dumps({**params, "prompts_sha256": _sha256(request.prompts)}, sort_keys=True),
        "backend": None,
        "kind": "prompt",
    }
    manifest = open_prediction_dir(
        request.out,
        request.inputs,
        record,
        InferenceOptions(overlay=request.overlay),
        overwrite=request.overwrite,
        resume=request.resume,
    )
    previous = _previous_coco(request.out / COCO_NAME) if request.resume else {}
    backend = create_prompt_backend(request.spec, cache_bytes=DEFAULT_CACHE_BYTES, device=params["device"])
    palette = resolve_palette(len(classes))
    documents: list[dict[str, Any]] = []
    manifest.begin()
    written = 0
    try:
        for path in request.inputs:
            digest = input_sha256(path)
            if manifest.is_finished(path, digest):
                documents.append(previous.get(path.name) or coco_json(path.name, (1, 1), [], [], classes))
                continue
            image = read_image(path)
            mine = [entry for entry in entries if entry.input == path]
            masks, ids, scores = _segment(backend, image, mine, params["multimask"])
            shape = image.shape[:2]
            labels = index_labels(masks, ids, shape)
            stem = input_stem(path)
            outputs = [request.out / f"{stem}.png"]
            save_label_png(outputs[0], labels, palette)
            if request.overlay:
                outputs.append(request.out / f"{stem}_overlay.png")
                save_image_png(outputs[1], overlay(image, labels, palette, OVERLAY_ALPHA, classes))
            documents.append(coco_json(path.name, shape, masks, ids, classes, scores=scores))
            manifest.record(path, digest, outputs)
            written += 1
    finally:
        manifest.close()
        if documents:
            with atomic_write(request.out / COCO_NAME) as tmp:
                tmp.write_text(json.dumps(merge_coco(documents)), encoding="utf-8")
    return written, len(request.inputs) - written


def _segment(
    backend: Any, image: np.ndarray, entries: list[Entry], multimask: bool
) -> tuple[np.ndarray, list[int], list[float]]:
    """``(masks (M, H, W) bool, class ids, scores)`` of an image's entries, in entry order."""
    if not entries:
        return np.zeros((0, *image.shape[:2]), bool), [], []
    if image.dtype != np.uint8:  # 16-bit inputs: the backends take 8-bit RGB
        image = (image // 257).astype(np.uint8)
    key = backend.set_image(image)
    masks, ids, scores = [], [], []
    for entry in entries:
        result = backend.predict(key, entry.prompt, multimask=multimask)
        best = int(np.argmax(result.scores))
        masks.append(result.masks[best])
        ids.append(entry.class_id)
        scores.append(float(result.scores[best]))
    return np.stack(masks), ids, scores


def _params(given: dict[str, str]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(PARAMS))
    if unknown:
        raise ConfigError(f"--param {unknown[0]} is not a prompt parameter; use {', '.join(PARAMS)}")
    multimask = given.get("multimask", "false").lower()
    if multimask not in ("true", "false"):
        raise ConfigError(f"--param multimask={given['multimask']!r}: use true or false")
    names = [name.strip() for name in given["classes"].split(",")] if given.get("classes") else None
    if names is not None and (len(names) < 2 or not all(names) or len(set(names)) != len(names)):
        raise ConfigError(
            f"--param classes={given['classes']!r}: give distinct names, background first "
            "(for example classes=background,cell)"
        )
    return {"classes": names, "device": given.get("device", "cpu"), "multimask": multimask == "true"}


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_prompts(path: Path, inputs: list[Path], classes: list[str] | None) -> tuple[list[Entry], list[str]]:
    """The checked entries of a prompts file and the class names (module docstring).

    Each entry's coordinates are checked against its image's size (read from the file header).

    Raises:
        ConfigError: The file is missing or not JSON, or an entry is bad: ``PATH entry I:
            field 'F' ...``.
    """
    from segflow.data.io import displayed_size
    from segflow.inference.manifest import input_stem

    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--prompts {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(
            f"--prompts {path} is not JSON ({err}); give a list of {{image, box, points, class}}"
        ) from None
    if isinstance(document, dict) and "annotations" in document and "images" in document:
        raw, classes = _from_coco(path, document, classes)
    elif isinstance(document, list):
        raw = document
    else:
        raise ConfigError(f"--prompts {path}: expected a list of entries or a COCO instances object")
    by_name: dict[str, Path] = {}
    for given in inputs:
        by_name.setdefault(given.name, given)
        by_name.setdefault(input_stem(given), given)
    if classes is None:
        values = [e.get("class") for e in raw if isinstance(e, dict)]
        named = [str(v) for v in values if isinstance(v, str) and v != BACKGROUND]
        numbered = [int(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]
        classes = [BACKGROUND, *dict.fromkeys(named)]
        if len(classes) == 1:
            top = max([1, *numbered])
            classes = (
                [BACKGROUND, DEFAULT_OBJECT]
                if top == 1
                else [BACKGROUND, *(f"class {i}" for i in range(1, top + 1))]
            )
    sizes: dict[Path, tuple[int, int]] = {}
    entries: list[Entry] = []
    for index, item in enumerate(raw):
        where = f"--prompts {path} entry {index}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected an object {{image, points, box, class}}")
        name = item.get("image")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}: field 'image' is missing; give an INPUT's file name or stem")
        found = by_name.get(Path(name).name) or by_name.get(Path(name).stem)
        if found is None:
            raise ConfigError(f"{where}: field 'image' {name!r} matches no INPUT file name or stem")
        class_id = _class_index(item.get("class", 1), classes, where)
        try:
            if found not in sizes:
                width, height = displayed_size(found)
                sizes[found] = (height, width)
            prompt = Prompt.from_json(item, where=where, shape=sizes[found])
            prompt.check(*sizes[found])
        except InferenceError as err:
            message = str(err)
            if not message.startswith(where):  # "prompt box ..." from Prompt.check
                message = f"{where}: {message.removeprefix('prompt ')}"
            raise ConfigError(message) from None
        except (OSError, ValueError) as err:
            raise ConfigError(f"{where}: image {found} is not readable ({err})") from None
        entries.append(Entry(index, found, prompt, class_id))
    return entries, classes


def _class_index(value: Any, classes: list[str], where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: field 'class' must be a class name or index, got {value!r}")
    if isinstance(value, str):
        if value not in classes:
            raise ConfigError(f"{where}: field 'class' {value!r} is not a class; known: {', '.join(classes)}")
        return classes.index(value)
    if not 0 <= value < len(classes):
        raise ConfigError(f"{where}: field 'class' {value} is out of range; use 0..{len(classes) - 1}")
    return value


def _from_coco(
    path: Path, document: dict[str, Any], classes: list[str] | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """COCO instances -> entries ``{image, box, class}`` and the class names."""
    where = f"--prompts {path}"
    try:
        categories = {int(c["id"]): str(c["name"]) for c in document.get("categories") or []}
        images = {int(i["id"]): str(i["file_name"]) for i in document["images"]}
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{where}: COCO 'images'/'categories' need id and file_name/name ({err})") from None
    ordered = sorted(categories)
    names = classes or [BACKGROUND, *(categories[c] for c in ordered)]
    entries = []
    for index, annotation in enumerate(document["annotations"]):
        at = f"{where} annotation {index}"
        if not isinstance(annotation, dict):
            raise ConfigError(f"{at}: expected an object")
        bbox = annotation.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ConfigError(f"{at}: field 'bbox' must be [x, y, w, h], got {bbox!r}")
        if annotation.get("image_id") not in images:
            raise ConfigError(f"{at}: field 'image_id' {annotation.get('image_id')!r} is not in 'images'")
        category = annotation.get("category_id")
        if category not in categories:
            raise ConfigError(f"{at}: field 'category_id' {category!r} is not in 'categories'")
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            raise ConfigError(f"{at}: field 'bbox' must hold numbers, got {bbox!r}") from None
        entries.append({"image": images[annotation["image_id"]], "box": [x, y, x + w, y + h],
                        "class": categories[category]})  # fmt: skip
    return entries, names


def _previous_coco(path: Path) -> dict[str, dict[str, Any]]:
    """A resumed run's earlier ``annotations.coco.json`` split into one document per file name."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        images = {image["id"]: image for image in document["images"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    split: dict[str, dict[str, Any]] = {}
    for image_id, image in images.items():
        split[image["file_name"]] = {
            "images": [{**image, "id": 1}],
            "annotations": [
                {**a, "image_id": 1} for a in document.get("annotations", []) if a.get("image_id") == image_id
            ],
            "categories": document.get("categories", []),
        }
    return split


KIND = register_kind(
    PredictKind(
        "prompt",
        "promptable segmentation (grabcut, sam:PATH, sam2:PATH) from --prompts prompts.json; docs/prompt.md",
        run,
        options=("prompts", "params"),
    )
)
