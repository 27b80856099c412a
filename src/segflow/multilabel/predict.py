"""``segflow predict ML_MODEL INPUT... --out DIR``: the ``multilabel`` prediction kind.

Per input ``<stem>``: ``<stem>/<class>.png`` (one binary PNG per class) and ``<stem>.npy`` (the
packed ``(H, W, C)`` bit mask), see :mod:`segflow.multilabel.files`; with ``--overlay`` also
``<stem>_overlay.png`` (each class's colour blended over its pixels, a legend of the classes
present). ``--param threshold=T`` replaces every class's stored threshold; ``--tile`` tiles
as for semantic models; ``--backend`` picks the runtime (an ``.onnx`` export runs without torch).
A non-empty ``--out`` is refused unless ``--overwrite`` (which removes only these outputs) or
``--resume`` (which skips inputs whose outputs are all there). Each image is predicted in
memory: with ``--tile`` its ``(K, H, W)`` float32 probabilities are assembled before the masks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from segflow.errors import ConfigError
from segflow.inference.kinds import KindRequest, PredictKind, register_kind

OVERLAY_ALPHA = 0.5
OVERLAY_SUFFIX = "_overlay.png"
PARAMS = ("threshold",)


def _threshold(params: dict[str, str]) -> float | None:
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ConfigError(f"--param {unknown[0]}: multilabel predictions take only {', '.join(PARAMS)}")
    if "threshold" not in params:
        return None
    try:
        value = float(params["threshold"])
    except ValueError:
        raise ConfigError(
            f"--param threshold={params['threshold']!r}: give a number in (0, 1), e.g. 0.5"
        ) from None
    if not 0.0 < value < 1.0:
        raise ConfigError(f"--param threshold={value}: must lie in (0, 1), e.g. 0.5")
    return value


def draw_overlay(
    image: np.ndarray, masks: np.ndarray, palette: list[tuple[int, int, int]], classes: list[str]
) -> np.ndarray:
    """RGB uint8: each class's colour blended (``OVERLAY_ALPHA``) over its pixels, in class order,
    with a legend of the classes present."""
    from segflow.viz import add_legend, to_rgb8

    rgb = to_rgb8(image).astype(np.float32)
    for k in range(masks.shape[-1]):
        colour = np.asarray(palette[k], dtype=np.float32)
        rgb[masks[..., k]] = (1.0 - OVERLAY_ALPHA) * rgb[masks[..., k]] + OVERLAY_ALPHA * colour
    present = [(classes[k], palette[k]) for k in range(masks.shape[-1]) if masks[..., k].any()]
    return add_legend(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), present)


def run(request: KindRequest) -> tuple[int, int]:
    """Writes the outputs of every input; returns ``(written, skipped)``."""
    from segflow.data.io import read_image
    from segflow.inference import InferenceOptions, Predictor
    from segflow.io_utils import claim_output_dir
    from segflow.multilabel.files import output_names, write_masks
    from segflow.viz import save_image_png

    threshold = _threshold(request.params)
    stems = [path.stem for path in request.inputs]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise ConfigError(
            f"two inputs share the name {repeated[0]!r}; their outputs would collide: rename one"
        )
    options = InferenceOptions(tile=request.options.get("tile"), threshold=threshold)
    predictor = Predictor.from_path(request.spec, options, backend=request.backend)
    if predictor.head is None:
        raise ConfigError(f"{request.spec} is not a multi-label model (task {predictor.meta.task})")
    classes = predictor.classes
    owned = {name.split("/")[0] for stem in stems for name in output_names(stem, classes)}
    owned |= {f"{stem}{OVERLAY_SUFFIX}" for stem in stems}
    out = claim_output_dir(
        request.out,
        overwrite=request.overwrite,
        resume=request.resume,
        owned=lambda entry: entry.name in owned,
        what="--out folder",
    )
    written = skipped = 0
    for path in request.inputs:
        expected = [out / name for name in output_names(path.stem, classes)]
        if request.overlay:
            expected.append(out / f"{path.stem}{OVERLAY_SUFFIX}")
        if request.resume and all(p.is_file() for p in expected):
            skipped += 1
            continue
        image = read_image(path)
        prediction = predictor.predict(image, name=path.name)
        masks: Any = prediction.masks
        write_masks(out, path.stem, masks, classes)
        if request.overlay:
            save_image_png(
                out / f"{path.stem}{OVERLAY_SUFFIX}", draw_overlay(image, masks, predictor.palette, classes)
            )
        written += 1
    return written, skipped


register_kind(
    PredictKind(
        "multilabel",
        "multi-label model: one binary PNG per class and a packed bit mask per input",
        run,
        options=("params", "overlay", "backend", "tile"),
    )
)
