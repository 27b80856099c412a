"""Bounds of the classical methods' parameters and the edge cases of their inputs.

Every numeric parameter has a finite maximum (so no value asks for a huge allocation or an
unbounded run), one-region images give a one-class map, duplicate stems, unknown class indices
and all-ignore labels are reported in one line, and GrabCut is reproducible.
"""

from __future__ import annotations

import logging
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import segflow.cli.predict  # noqa: F401  (registers the command)
from segflow.classical.crf import CRF_PARAMS, crf_params
from segflow.classical.methods import CLASSICAL_METHODS, create_classical, rag_merge
from segflow.cli.main import main
from segflow.errors import ConfigError

NUMERIC = [
    (name, key)
    for name in CLASSICAL_METHODS.names()
    for key, spec in CLASSICAL_METHODS.get(name).params.items()
    if isinstance(spec.default, int | float) and not isinstance(spec.default, bool)
]


def image_and_labels(size: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """A bright square on a dark noisy background, and labels with the square = 1."""
    rng = np.random.default_rng(0)
    truth = np.zeros((size, size), np.uint8)
    truth[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
    grey = np.where(truth == 1, 190.0, 60.0) + rng.normal(0, 6, truth.shape)
    return np.clip(grey, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2), truth


def one_line(err: str) -> str:
    assert err.strip().count("\n") == 0, err
    return " ".join(err.split())


@pytest.mark.parametrize(("name", "key"), NUMERIC)
def test_every_numeric_param_has_a_finite_maximum_and_refuses_beyond(name: str, key: str) -> None:
    spec = CLASSICAL_METHODS.get(name).params[key]
    assert spec.minimum is not None and spec.maximum is not None and math.isfinite(spec.maximum)
    above = spec.maximum * 10 + 2 if isinstance(spec.default, float) else int(spec.maximum) * 10 + 2
    with pytest.raises(ConfigError, match=rf"--param {key}='{above}' is above the maximum"):
        create_classical(name, {key: str(above)})
    for text in ("inf", "-inf", "nan", "1e400"):
        with pytest.raises(ConfigError, match=rf"--param {key}='{text}' is not"):
            create_classical(name, {key: text})


@pytest.mark.parametrize(("name", "key"), NUMERIC)
def test_each_param_at_its_maximum_runs_small_and_fast(name: str, key: str) -> None:
    """The largest allowed value of each parameter (the others at their defaults): either a result
    or one ConfigError line, with a peak allocation far below the sizes the bounds exist for."""
    spec = CLASSICAL_METHODS.get(name).params[key]
    assert spec.maximum is not None
    value = int(spec.maximum) if isinstance(spec.default, int) else spec.maximum
    if spec.odd and value % 2 == 0:
        value -= 1
    image, truth = image_and_labels()
    tracemalloc.start()
    try:
        result = create_classical(name, {key: str(value)}).segment(image, truth, ["bg", "square"])
        assert result.labels.shape == truth.shape
    except ConfigError as err:  # values that do not go together, or an image-dependent bound
        assert "\n" not in str(err)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{name} {key}={value}: peak {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("key", list(CRF_PARAMS))
def test_crf_params_are_bounded_and_named_with_their_prefix(key: str) -> None:
    spec = CRF_PARAMS[key]
    assert spec.maximum is not None and math.isfinite(spec.maximum)
    with pytest.raises(ConfigError) as caught:
        crf_params({key: "100000000"})
    message = str(caught.value)
    assert f"--param crf_{key}='100000000' is above the maximum" in message
    assert "valid params: crf_iters=5, crf_sxy=3.0," in message and " iters=" not in message


def test_crf_unknown_key_names_the_prefixed_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown --param crf_foo; valid params: crf_iters=5"):
        crf_params({"foo": "1"})


def test_adaptive_median_block_is_bounded_and_canny_thresholds_checked_at_creation() -> None:
    with pytest.raises(ConfigError, match="block_size=53 is above the maximum 51 of method=median"):
        create_classical("adaptive", {"method": "median", "block_size": "53"})
    assert create_classical("adaptive", {"method": "median", "block_size": "51"}).values["block_size"] == 51
    assert create_classical("adaptive", {"block_size": "255"}).values["block_size"] == 255
    with pytest.raises(ConfigError, match="low_threshold 0.5 > high_threshold 0.2; swap them"):
        create_classical("canny", {"low_threshold": "0.5", "high_threshold": "0.2"})


def test_watershed_min_distance_larger_than_the_image_is_one_line() -> None:
    image, _ = image_and_labels(size=16)
    with pytest.raises(ConfigError, match=r"min_distance=17 is larger than the image 16x16; give at most 16"):
        create_classical("watershed", {"min_distance": "17"}).segment(image)
    assert create_classical("watershed", {"min_distance": "16"}).segment(image).labels.shape == (16, 16)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("felzenszwalb", {}),
        ("felzenszwalb", {"merge": "hierarchical"}),
        ("felzenszwalb", {"scale": "1e6"}),
        ("felzenszwalb", {"min_size": "100000000"}),
        ("slic", {"n_segments": "1"}),
        ("slic", {"n_segments": "1", "merge": "hierarchical"}),
    ],
)
@pytest.mark.parametrize("size", [4, 8, 24])
def test_one_region_gives_a_one_class_map(name: str, params: dict[str, str], size: int) -> None:
    image = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    result = create_classical(name, params).segment(image)
    if name == "felzenszwalb" and params in ({}, {"merge": "hierarchical"}) and size == 24:
        assert result.labels.max() <= 255  # several regions possible: only no crash here
        return
    assert np.array_equal(result.labels, np.zeros((size, size), np.uint8))
    assert result.class_names == ["segment 0"]
    truth = np.ones((size, size), np.uint8)
    voted = create_classical(name, params).segment(image, truth, ["bg", "fg"])
    assert np.array_equal(voted.labels, truth) and voted.oracle_assisted


@pytest.mark.parametrize("how", ["cut", "hierarchical", "none"])
def test_rag_merge_keeps_a_single_region(how: str) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    for value in (0, 7):
        segments = np.full((6, 5), value, np.int64)
        assert np.array_equal(rag_merge(rgb, segments, how, 20.0), segments)


def test_grabcut_is_reproducible() -> None:
    import cv2

    rng = np.random.default_rng(3)
    truth = np.zeros((64, 64), np.uint8)
    truth[16:48, 20:44] = 1
    grey = np.where(truth == 1, 170.0, 90.0) + rng.normal(0, 30, truth.shape)
    image = np.clip(grey, 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    image[..., 1] = rng.integers(0, 256, truth.shape)  # a noisy colour channel: the GMMs' init matters
    method = create_classical("grabcut", {"margin": "8", "iters": "3"})
    first = method.segment(image, truth, ["bg", "box"]).labels
    cv2.setRNGSeed(12345)  # move OpenCV's RNG elsewhere between the runs
    cv2.randu(np.zeros((1000, 1), np.float32), np.zeros(1), np.ones(1))
    second = method.segment(image, truth, ["bg", "box"]).labels
    assert np.array_equal(first, second)


def test_grabcut_seeds_opencv_right_before_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GMMs' k-means++ init draws from OpenCV's RNG: it is seeded before every cv2.grabCut."""
    import cv2

    events: list[object] = []
    real_seed, real_grabcut = cv2.setRNGSeed, cv2.grabCut

    def seed(value: int) -> None:
        events.append(("seed", value))
        real_seed(value)

    def grabcut(*args: object) -> object:
        events.append("grabCut")
        return real_grabcut(*args)  # type: ignore[call-overload]

    monkeypatch.setattr(cv2, "setRNGSeed", seed)
    monkeypatch.setattr(cv2, "grabCut", grabcut)
    image, truth = image_and_labels(size=64)
    truth[2:10, 2:10] = 2  # a second object: two boxes, two calls
    create_classical("grabcut", {"margin": "4", "min_area": "16"}).segment(image, truth, ["a", "b", "c"])
    assert events == [("seed", 0), "grabCut", ("seed", 0), "grabCut"]


def test_grabcut_background_outside_the_classes_is_refused() -> None:
    image, truth = image_and_labels()
    with pytest.raises(ConfigError, match=r"background=2 is not a class of the labels \(they have 2: 0..1\)"):
        create_classical("grabcut", {"background": "2"}).segment(image, truth, ["bg", "square"])
    assert create_classical("grabcut", {"background": "1"}).segment(image, truth, ["bg", "square"])


def write_case(root: Path) -> tuple[Path, Path]:
    """``root/img/a.png``, ``root/other/a.png`` (same stem) and labels ``root/labels/a.png``."""
    image, truth = image_and_labels()
    for folder in ("img", "other", "labels"):
        (root / folder).mkdir(parents=True)
    Image.fromarray(image).save(root / "img" / "a.png")
    Image.fromarray(image).save(root / "other" / "a.png")
    Image.fromarray(truth).save(root / "labels" / "a.png")
    return root / "img" / "a.png", root / "labels"


def test_cli_refuses_inputs_with_the_same_stem_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, _ = write_case(tmp_path)
    out = tmp_path / "pred"
    code = main(
        ["predict", "classical:otsu", str(first), str(tmp_path / "other" / "a.png"), "--out", str(out)]
    )
    err = one_line(capsys.readouterr().err)
    assert code == 1
    assert "would both write outputs named a.*; predict them into different --out folders" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (
            ["--param", "background=99"],
            "--param background=99 is not a class of the labels (they have 2: 0..1)",
        ),
        (
            ["--param", "refine=crf", "--param", "crf_iters=100000000"],
            "--param crf_iters='100000000' is above the maximum 100; valid params: crf_iters=5, crf_sxy=3.0",
        ),
        (["--param", "margin=inf"], "--param margin='inf' is not an integer"),
        (["--param", "iters=nan"], "--param iters='nan' is not an integer"),
    ],
)
def test_cli_grabcut_errors_are_one_line_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], needle: str
) -> None:
    image, labels = write_case(tmp_path)
    out = tmp_path / "pred"
    code = main(
        ["predict", "classical:grabcut", str(image), "--out", str(out), "--param", f"labels={labels}", *extra]
    )
    err = one_line(capsys.readouterr().err)
    assert code == 1 and needle in err
    assert not out.exists()


def test_cli_warns_once_about_all_ignore_labels(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    image, labels = write_case(tmp_path)
    Image.fromarray(np.full((24, 24), 255, np.uint8)).save(labels / "a.png")
    with caplog.at_level(logging.WARNING, logger="segflow.classical.predict"):
        code = main(
            [
                "predict",
                "classical:kmeans",
                str(image),
                "--out",
                str(tmp_path / "p"),
                "--param",
                f"labels={labels}",
            ]
        )
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0]
    assert f"{labels / 'a.png'} is all ignore (255)" in warnings[0] and "gives a.png no vote" in warnings[0]
