"""``segflow rank``: ranking.csv / ranking.json / heat-maps, band-wise scores, mc-dropout,
--diverse, and each bad input as one line with exit code 1."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from segflow.active.rank import RankOptions, rank_images, read_ranking, summarise_image
from segflow.active.uncertainty import UncertaintySummary
from segflow.cli.main import main
from segflow.errors import DataError
from segflow.inference import InferenceOptions, Predictor

CLASSES = ["background", "road", "tree"]
PALETTE = [[0, 0, 0], [200, 30, 30], [30, 200, 30]]


def save_checkpoint(folder: Path, arch: str, **kwargs: object) -> Path:
    from segflow.models import create_model
    from segflow.models.checkpoint import build_meta, save_model_checkpoint

    torch.manual_seed(0)
    net = create_model(arch, "resnet18", in_channels=3, num_classes=3, **kwargs).eval()
    meta = build_meta(
        net,
        CLASSES,
        PALETTE,
        255,
        {"max_value": 255.0},
        {"mode": "keep", "size": None, "multiple": 32, "scale": None},
        None,
        {},
    )
    return save_model_checkpoint(folder / f"{arch}.ckpt", net, meta)


@pytest.fixture(scope="module")
def fpn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """FPN has Dropout2d(0.2) in its decoder: mc-dropout runs on it."""
    return save_checkpoint(
        tmp_path_factory.mktemp("fpn"), "fpn", decoder_pyramid_channels=32, decoder_segmentation_channels=32
    )


@pytest.fixture(scope="module")
def unet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Unet has no dropout: mc-dropout refuses it."""
    return save_checkpoint(tmp_path_factory.mktemp("unet"), "unet", decoder_channels=[16, 16, 8, 8, 8])


def image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((8, 8, 1), np.uint8))[:height, :width]


@pytest.fixture
def unlabelled(tmp_path: Path) -> Path:
    folder = tmp_path / "unlabelled"
    folder.mkdir()
    for index in range(5):
        Image.fromarray(image(48 + 8 * index, 64, index)).save(folder / f"img{index}.png")
    return folder


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_cli_writes_sorted_csv_json_and_heatmaps(tmp_path: Path, fpn: Path, unlabelled: Path) -> None:
    out = tmp_path / "rank"
    assert main(["rank", str(fpn), str(unlabelled), "--by", "margin", "--top", "3", "--out", str(out)]) == 0
    with (out / "ranking.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        table = list(reader)
    assert header == [
        "image",
        "score",
        "rank",
        *(f"{c}_share" for c in CLASSES),
        *(f"{c}_uncertain_area" for c in CLASSES),
    ]
    scores = [float(line[1]) for line in table]
    assert len(table) == 3 and scores == sorted(scores, reverse=True)
    assert [line[2] for line in table] == ["1", "2", "3"]
    predictor = Predictor.from_path(fpn)
    every = {p: summarise_image(predictor, p, "margin").score for p in sorted(unlabelled.iterdir())}
    assert scores == pytest.approx(sorted(every.values(), reverse=True)[:3], rel=1e-9)
    for line in table:
        path = Path(line[0])
        assert path.is_absolute() and path.parent == unlabelled.resolve()
        summary = summarise_image(predictor, path, "margin")
        assert float(line[1]) == pytest.approx(summary.score, rel=1e-9)
        assert [float(v) for v in line[3:6]] == pytest.approx(list(summary.shares))
        assert [float(v) for v in line[6:9]] == pytest.approx(list(summary.uncertain_area))
        heat = np.asarray(Image.open(out / "heatmaps" / f"{path.stem}.png"))
        assert heat.shape == (*np.asarray(Image.open(path)).shape[:2], 3)
    assert len(list((out / "heatmaps").iterdir())) == 3  # only the kept rows; no staging left
    assert sorted(p.name for p in out.iterdir()) == ["heatmaps", "ranking.csv", "ranking.json"]
    record = json.loads((out / "ranking.json").read_text())
    assert {k: record[k] for k in ("model", "by", "top", "diverse", "count", "ranked", "skipped")} == {
        "model": str(fpn),
        "by": "margin",
        "top": 3,
        "diverse": False,
        "count": 3,
        "ranked": 5,
        "skipped": [],
    }
    assert record["created"].endswith("+00:00")
    rows = read_ranking(out / "ranking.csv")
    assert [r.score for r in rows] == scores and rows[
        0
    ].heatmap == out / "heatmaps" / f"{rows[0].image.stem}.png"
    assert main(["rank", str(fpn), str(unlabelled), "--out", str(out)]) == 1  # a ranking is there
    assert main(["rank", str(fpn), str(unlabelled), "--out", str(out), "--overwrite"]) == 0
    assert len(read_ranking(out / "ranking.csv")) == 5 and len(list((out / "heatmaps").iterdir())) == 5


def test_tiled_bands_equal_the_whole_image_and_bound_memory(tmp_path: Path, fpn: Path) -> None:
    path = tmp_path / "tall.tif"
    tifffile.imwrite(path, image(3072, 128, 7), tile=(128, 128))
    tiled = Predictor.from_path(fpn, InferenceOptions(tile=128, tile_batch=1))
    tracemalloc.start()
    banded = summarise_image(tiled, path, "entropy", heatmap_max_side=512)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full_probs_bytes = 3 * 3072 * 128 * 4
    assert peak < full_probs_bytes / 2  # never the image's (K, H, W) probabilities
    probs = tiled.predict_tiled(tifffile.imread(path), return_probs=True).probs
    assert probs is not None
    whole = UncertaintySummary(3, 3072, 128, "entropy", max_side=512)
    whole.add(0, probs)
    assert banded.score == pytest.approx(whole.score, rel=1e-9)
    np.testing.assert_array_equal(banded.counts, whole.counts)
    np.testing.assert_array_equal(banded.uncertain, whole.uncertain)
    np.testing.assert_allclose(banded.heatmap(), whole.heatmap(), rtol=1e-6)
    assert banded.heatmap().shape == (512, 22)  # 3072 / 6, ceil(128 / 6)


def test_large_images_stream_with_the_automatic_tile(
    tmp_path: Path, fpn: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import segflow.inference.streaming as streaming

    path = tmp_path / "wide.png"
    Image.fromarray(image(96, 160, 3)).save(path)
    monkeypatch.setattr(streaming, "STREAM_MIN_PIXELS", 1000)
    predictor = Predictor.from_path(fpn)
    streamed = summarise_image(predictor, path)
    probs = (
        predictor.with_options(tile=predictor.auto_tile_spec().tile)
        .predict_tiled(np.asarray(Image.open(path)), return_probs=True)
        .probs
    )
    assert probs is not None
    whole = UncertaintySummary(3, 96, 160)
    whole.add(0, probs)
    assert streamed.score == pytest.approx(whole.score, rel=1e-6)


def test_mc_dropout_runs_on_fpn_and_is_refused_for_unet(
    tmp_path: Path, fpn: Path, unet: Path, unlabelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two = [unlabelled / "img0.png", unlabelled / "img1.png"]
    first = rank_images(fpn, two, "mc-dropout", options=RankOptions(mc_samples=3))
    again = rank_images(fpn, two[::-1], "mc-dropout", options=RankOptions(mc_samples=3))
    assert [r.score for r in first] == [r.score for r in again]  # seeded per image, not per order
    plain = rank_images(fpn, two, "entropy")
    assert all(0.0 <= r.score <= 1.0 for r in first)
    assert {r.image: r.score for r in first} != pytest.approx({r.image: r.score for r in plain}, rel=1e-6)
    code = main(["rank", str(unet), str(unlabelled), "--by", "mc-dropout", "--out", str(tmp_path / "o")])
    errors = error_lines(capsys)
    assert code == 1 and len(errors) == 1 and "unet/resnet18" in errors[0] and "has none" in errors[0]
    assert not (tmp_path / "o" / "ranking.csv").exists()


def test_diverse_skips_near_duplicates(tmp_path: Path, fpn: Path) -> None:
    folder = tmp_path / "dups"
    folder.mkdir()
    base = image(64, 64, 0)
    for index in range(4):  # four copies of one scene, each one pixel different
        copy = base.copy()
        copy[index, 0] = 255 - copy[index, 0]
        Image.fromarray(copy).save(folder / f"dup{index}.png")
    Image.fromarray(image(64, 64, 11) // 4).save(folder / "dark.png")
    Image.fromarray(255 - image(64, 64, 12) // 4).save(folder / "bright.png")
    plain = rank_images(fpn, [folder], top=3)
    diverse = rank_images(fpn, [folder], top=3, diverse=True, out=tmp_path / "d")
    plain_dups = sum(r.image.name.startswith("dup") for r in plain)
    diverse_dups = sum(r.image.name.startswith("dup") for r in diverse)
    assert diverse_dups == 1 and plain_dups >= 1
    assert [r.rank for r in diverse] == [1, 2, 3]
    assert [r.score for r in diverse] == sorted((r.score for r in diverse), reverse=True)
    record = json.loads((tmp_path / "d" / "ranking.json").read_text())
    assert record["diverse"] is True and record["pool"] == 6


def test_diverse_and_mc_dropout_refuse_an_export(
    tmp_path: Path, fpn: Path, unlabelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from segflow.export.onnx import export_onnx
    from segflow.models.checkpoint import load_checkpoint

    net, meta = load_checkpoint(fpn)
    onnx = export_onnx(net, meta, tmp_path / "fpn.onnx")
    for flags in (["--top", "2", "--diverse"], ["--by", "mc-dropout"]):
        code = main(["rank", str(onnx), str(unlabelled), "--out", str(tmp_path / "o"), *flags])
        errors = error_lines(capsys)
        assert code == 1 and len(errors) == 1 and "needs a checkpoint" in errors[0], errors
    assert main(["rank", str(onnx), str(unlabelled), "--out", str(tmp_path / "ok"), "--top", "2"]) == 0
    assert len(read_ranking(tmp_path / "ok" / "ranking.csv")) == 2


def test_unreadable_image_is_skipped_with_a_warning(
    tmp_path: Path, fpn: Path, unlabelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (unlabelled / "broken.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    assert main(["rank", str(fpn), str(unlabelled), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped" in err and "broken.tif is not a readable TIFF" in err
    assert "1 unreadable image(s) skipped" in err
    record = json.loads((out / "ranking.json").read_text())
    assert record["count"] == 5 and len(record["skipped"]) == 1
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "broken.tif").write_bytes(b"not a tiff")
    assert main(["rank", str(fpn), str(only_bad), "--out", str(tmp_path / "o2")]) == 1
    assert "none of the 1 input image(s) could be read" in error_lines(capsys)[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "variance"], "--by 'variance' is not an uncertainty measure"),
        (["--top", "0"], "--top 0: give a positive number"),
        (["--diverse"], "--diverse picks --top K images"),
        (["--top", "2", "--diverse", "--pool", "1"], "--pool 1"),
        (["--mc-samples", "1", "--by", "mc-dropout"], "--mc-samples 1 is outside"),
        (["--uncertain-above", "1.5"], "--uncertain-above 1.5 is outside [0, 1)"),
        (["--tile", "48"], "tile=48 is invalid"),
    ],
)
def test_bad_options_one_line_exit_1(
    tmp_path: Path, fpn: Path, unlabelled: Path, capsys: pytest.CaptureFixture[str], args, message
) -> None:
    out = tmp_path / "out"
    code = main(["rank", str(fpn), str(unlabelled), "--out", str(out), *args])
    errors = error_lines(capsys)
    assert code == 1 and len(errors) == 1 and message in errors[0], errors
    assert not (out / "ranking.csv").exists()


def test_bad_inputs_one_line_exit_1(tmp_path: Path, fpn: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = str(tmp_path / "out")
    assert main(["rank", str(fpn), str(empty), "--out", out]) == 1
    assert "matches no image" in error_lines(capsys)[0]
    twins = tmp_path / "twins"
    twins.mkdir()
    Image.fromarray(image(32, 32, 0)).save(twins / "a.png")
    Image.fromarray(image(32, 32, 1)).save(twins / "a.jpg")
    assert main(["rank", str(fpn), str(twins), "--out", out]) == 1
    assert "would both write heatmaps/a.png" in error_lines(capsys)[0]
    assert main(["rank", str(tmp_path / "nope.ckpt"), str(twins / "a.png"), "--out", out]) == 1
    assert "nope.ckpt does not exist" in error_lines(capsys)[0]
    assert main(["rank", "weird:thing", str(twins / "a.png"), "--out", out]) == 1
    assert "unknown model scheme" in error_lines(capsys)[0]


def test_read_ranking_validates(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="ranking file .*missing.csv does not exist"):
        read_ranking(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("image,rank\n/x.png,1\n")
    with pytest.raises(DataError, match="lacks column\\(s\\) score"):
        read_ranking(bad)
    bad.write_text("image,score,rank\n/x.png,high,1\n")
    with pytest.raises(DataError, match="line 2: score 'high' is not a number"):
        read_ranking(bad)
    good = tmp_path / "good.csv"
    good.write_text("image,score,rank,a_share,a_uncertain_area\nrel/x.png,0.5,1,1.0,0.25\n")
    (row,) = read_ranking(good)
    assert row.image == tmp_path / "rel" / "x.png" and row.score == 0.5 and row.rank == 1
    assert row.shares == {"a": 1.0} and row.uncertain_area == {"a": 0.25} and row.heatmap is None


def test_read_ranking_refuses_rows_with_too_many_or_too_few_cells(tmp_path: Path) -> None:
    bad = tmp_path / "cells.csv"
    bad.write_text("image,score,rank\n/a.png,0.5,1\n/b.png,0.4,2,EXTRA\n", encoding="utf-8")
    with pytest.raises(DataError, match="^ranking file .*cells.csv line 3 has 4 cells, not the header's 3;"):
        read_ranking(bad)
    bad.write_text("image,score,rank\n/a.png,0.5\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2 has 2 cells, not the header's 3"):
        read_ranking(bad)
    bad.write_text("image,score,rank,score\n/a.png,0.5,1,0.5\n", encoding="utf-8")
    with pytest.raises(DataError, match="names column\\(s\\) 'score' twice"):
        read_ranking(bad)
    bad.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="is empty"):
        read_ranking(bad)
    bad.write_bytes(b"image,score,rank\n/\xff.png,0.5,1\n")  # not UTF-8
    with pytest.raises(DataError, match="is unreadable"):
        read_ranking(bad)
    bad.write_text("image,score,rank\n\n/a.png,0.5,1\n\n/b.png,0.25,2\n", encoding="utf-8")  # blank lines
    rows = read_ranking(bad)
    assert [(r.image, r.score, r.rank) for r in rows] == [(Path("/a.png"), 0.5, 1), (Path("/b.png"), 0.25, 2)]


def test_skip_is_one_line_and_pillow_warnings_are_silenced(tmp_path: Path, fpn: Path) -> None:
    """In a real process (pytest would capture warnings and log records itself): one line per
    skipped image, no Pillow DecompressionBombWarning, no raw ``warnings.warn(`` lines."""
    folder = tmp_path / "big"
    folder.mkdir()
    Image.fromarray(image(48, 64, 0)).save(folder / "warned.png")  # 3072 px: a bomb *warning*
    Image.fromarray(image(96, 64, 1)).save(folder / "bomb.png")  # 6144 px > 2 * limit: a bomb *error*
    (folder / "broken.tif").write_bytes(b"not a tiff")
    code = (
        "import sys; from PIL import Image; Image.MAX_IMAGE_PIXELS = 2000; "
        "from segflow.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "rank", str(fpn), str(folder), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"},
        check=False,
    )
    err = done.stderr + done.stdout
    assert done.returncode == 0, err
    assert len([line for line in err.splitlines() if "broken.tif" in line]) == 1, err
    assert len([line for line in err.splitlines() if "bomb.png" in line]) == 1, err
    assert "DecompressionBombWarning" not in err and "warnings.warn" not in err, err
    assert "Traceback" not in err and "2 unreadable image(s) skipped" in err, err
    (row,) = read_ranking(tmp_path / "out" / "ranking.csv")
    assert row.image.name == "warned.png"


def test_a_failed_image_leaves_no_features_for_the_next_one(tmp_path: Path, fpn: Path) -> None:
    """--diverse: an image that fails after some bands were predicted must not add its encoder
    sums to the next image's pooled feature."""
    from segflow.active.rank import _score_all, load_rank_predictor

    bad = tmp_path / "a_bad.tif"
    tifffile.imwrite(bad, image(256, 64, 3))  # uncompressed, contiguous: read by seeking
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])  # the first bands read, a later one fails
    good = tmp_path / "b_good.png"
    Image.fromarray(image(64, 64, 4)).save(good)
    options = RankOptions(inference=InferenceOptions(tile=32, overlap=0.0))
    predictor, pool = load_rank_predictor(fpn, "entropy", True, options)
    assert pool is not None
    with pytest.raises(DataError, match="truncated or corrupt"):
        summarise_image(predictor, bad)
    assert pool.count > 0  # the failure came after the encoder had run on some windows
    pool.reset()
    scored, skipped = _score_all(predictor, [bad, good], "entropy", options, pool, None, None)
    assert [s["image"] for s in skipped] == [str(bad)] and [s.image for s in scored] == [good]
    alone, _ = _score_all(predictor, [good], "entropy", options, pool, None, None)
    assert scored[0].feature is not None and alone[0].feature is not None
    assert np.array_equal(scored[0].feature, alone[0].feature)


def test_refusals_draw_no_progress_bar(
    tmp_path: Path, fpn: Path, unlabelled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An --out that holds a ranking, a missing model, a bad option: the error line alone on stderr."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "ranking.csv").write_text("image,score,rank\n", encoding="utf-8")
    cases = [
        ([str(fpn), str(unlabelled), "--out", str(out)], f"error: --out {out} already holds a ranking"),
        ([str(tmp_path / "nope.ckpt"), str(unlabelled), "--out", str(tmp_path / "o2")], "nope.ckpt does not"),
        ([str(fpn), str(unlabelled), "--out", str(tmp_path / "o3"), "--top", "0"], "error: --top 0"),
    ]
    for args, message in cases:
        assert main(["rank", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err  # no bar line
