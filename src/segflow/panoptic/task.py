"""``task: panoptic``: stuff and things in one map, trained with Mask2Former
(:mod:`segflow.panoptic.universal`), scored with PQ (:mod:`segflow.panoptic.pq`).

Registers :data:`PANOPTIC_TASK` in :data:`segflow.tasks.TASKS` on import. The model side
(build, final metrics, predictor) lives in :mod:`segflow.panoptic.universal` and is imported
only when used; ``segflow evaluate --task panoptic --predictions DIR`` needs only NumPy, Pillow
and the data readers (:func:`segflow.panoptic.evaluate.evaluate_panoptic_predictions`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from segflow.panoptic.evaluate import evaluate_panoptic_predictions, summary
from segflow.tasks import PANOPTIC, Task, register_task


def build(config: Any, spec: Any, class_share: list[float]) -> tuple[Any, Any]:
    """``Task.build``: :func:`segflow.panoptic.universal.build_universal`."""
    from segflow.panoptic.universal import build_universal

    return build_universal(config, spec, class_share)  # type: ignore[no-any-return]


def final_metrics(best: Path, spec: Any, tta: Any, run_dir: Path) -> dict[str, Any]:
    """``Task.final_metrics``: :func:`segflow.panoptic.universal.final_metrics_universal`."""
    from segflow.panoptic.universal import final_metrics_universal

    return final_metrics_universal(best, spec, tta, run_dir)  # type: ignore[no-any-return]


def load_predictor(path: Path, options: Any = None, backend: str | None = None) -> Any:
    """``Task.load_predictor``: :func:`segflow.panoptic.universal.load_universal_predictor`."""
    from segflow.panoptic.universal import load_universal_predictor

    return load_universal_predictor(path, options, backend)


def evaluate_model(model_path: Path, spec: Any, split: str, out_dir: Path) -> dict[str, Any]:
    """``Task.evaluate_model``: :func:`segflow.panoptic.universal.evaluate_universal`."""
    from segflow.panoptic.universal import evaluate_universal

    return evaluate_universal(model_path, spec, split, out_dir)  # type: ignore[no-any-return]


def panoptic_markdown(metrics: dict[str, Any]) -> str:
    """The model card's table: PQ / SQ / RQ overall, things, stuff, and per class."""
    from segflow.metrics.report import markdown_escape

    def fmt(value: Any) -> str:
        return "n/a" if value is None else f"{float(value):.4f}"

    lines = ["## Summary", "", "| metric | all | things | stuff |", "|---|---|---|---|"]
    for name in ("pq", "sq", "rq"):
        lines.append(
            f"| {name.upper()} | {fmt(metrics.get(name))} | {fmt(metrics.get(name + '_things'))} | "
            f"{fmt(metrics.get(name + '_stuff'))} |"
        )
    if metrics.get("miou") is not None:
        lines.append(f"| semantic mIoU | {fmt(metrics['miou'])} | | |")
    lines += ["", "## Per class", "", "| class | PQ | SQ | RQ |", "|---|---|---|---|"]
    for name, row in (metrics.get("per_class") or {}).items():
        cells = " | ".join(fmt((row or {}).get(key)) for key in ("pq", "sq", "rq"))
        lines.append(f"| {markdown_escape(name)} | {cells} |")
    return "\n".join(lines) + "\n"


PANOPTIC_TASK = register_task(
    Task(
        PANOPTIC,
        "stuff and things in one map (Mask2Former; PQ as the COCO panoptic API)",
        build=build,
        final_metrics=final_metrics,
        monitor="val/pq",
        monitor_mode="max",
        sample_grid=False,
        evaluate_model=evaluate_model,
        evaluate_predictions=evaluate_panoptic_predictions,
        summary=summary,
        load_predictor=load_predictor,
        markdown=panoptic_markdown,
    )
)
