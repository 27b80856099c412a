"""The inference package has no import cycle, and `tile` walks one way: CLI -> options -> cutter."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segflow.inference
from segflow.inference import InferenceOptions, Predictor
from segflow.inference.streaming import predict_file

PACKAGE = "segflow.inference"
FOLDER = Path(segflow.inference.__file__).parent


def _module_name(path: Path) -> str:
    return PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """Inference modules imported anywhere in ``path``: top level, functions, TYPE_CHECKING blocks."""
    found: set[str] = set()
    package_parts = PACKAGE.split(".")
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package_parts[: len(package_parts) - node.level + 1], base]).rstrip(".")
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the inference modules it imports (itself excluded)."""
    paths = sorted(FOLDER.glob("*.py"))
    modules = {_module_name(path) for path in paths}
    return {_module_name(p): _imported_modules(p, modules) - {_module_name(p)} for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None (depth-first search with colours)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_imports_inside_functions_and_type_checking(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from segflow.inference.predictor import Predictor\n"
        "def f():\n    from . import tiling\n"
    )
    modules = {f"{PACKAGE}.predictor", f"{PACKAGE}.tiling"}
    assert _imported_modules(source, modules) == modules


def test_no_import_cycle_among_inference_modules() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.predictor" in graph and f"{PACKAGE}.streaming" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_predictor_never_imports_streaming_and_streaming_never_reads_options() -> None:
    graph = import_graph()
    assert f"{PACKAGE}.streaming" not in graph[f"{PACKAGE}.predictor"]
    for name in ("streaming", "tiling", "bands", "video"):
        tree = ast.parse((FOLDER / f"{name}.py").read_text(encoding="utf-8"))
        reads = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "options"
        ]
        assert reads == [], f"{name}.py reads .options at lines {reads}"


def test_tile_walks_from_options_to_the_window_cutter(tmp_path: Path, make_backend) -> None:
    """``--tile 32`` -> InferenceOptions -> Predictor.tile_spec -> windows of 32 x 32 at the model."""
    options = InferenceOptions(tile=32, overlap=0.5, tile_batch=3)
    backend = make_backend()
    predictor = Predictor(backend, options)
    assert predictor.tile_spec is not None
    assert (predictor.tile_spec.tile, predictor.tile_spec.overlap, predictor.tile_spec.batch) == (32, 0.5, 3)
    image = np.random.default_rng(0).integers(0, 256, (40, 72, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    predict_file(predictor, tmp_path / "x.png", tmp_path / "out")
    # Windows start every 16 px: rows at 0 and 8 (shifted to end at 40), columns 0, 16, 32, 40.
    assert sum(shape[0] for shape in backend.calls) == 2 * 4
    assert {shape[1:] for shape in backend.calls} == {(3, 32, 32)}


@pytest.mark.parametrize("tile", [None, 64])
def test_streamed_images_use_the_predictors_spec(make_backend, tile: int | None) -> None:
    predictor = Predictor(make_backend(), InferenceOptions(tile=tile))
    assert predictor.streaming_tile_spec.tile == (tile or 512)
