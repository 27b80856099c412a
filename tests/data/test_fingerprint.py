"""Dataset fingerprint: per-file SHA-256 keyed by relative path, one combined hash anyone can
recompute, generator parameters for ``shapes``; stored in checkpoints and used by ``evaluate``
to find evaluated images the model was trained on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from segflow.cli.main import main
from segflow.data import create_dataset, load_data_spec
from segflow.data.fingerprint import (
    CHUNK_BYTES,
    DatasetFingerprint,
    file_sha256,
    fingerprint,
    tracking_params,
    train_overlap,
)
from segflow.data.readers import create_reader
from segflow.data.readers.shapes import GENERATOR_VERSION, shapes_spec
from segflow.errors import DataError
from segflow.metrics.evaluate import evaluate_model
from segflow.models import CheckpointMeta, DataSummary, build_meta, create_model, save_model_checkpoint
from segflow.models.checkpoint import load_checkpoint, read_meta

CLASSES = ["bg", "a", "b"]
SIZE = 32


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def combined_by_hand(files: dict[str, bytes]) -> str:
    """The documented construction, written out independently of the module."""
    lines = sorted(f"{path}\t{sha(content)}\n" for path, content in files.items())
    return hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def write_png(path: Path, array: np.ndarray) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path.read_bytes()


def folder_dataset(root: Path, splits: dict[str, list[str]], seed: int = 0) -> dict[str, bytes]:
    """``images/<split>/<name>.png`` (noise named by ``name``) + masks; returns path -> bytes.

    An image's pixels depend only on its name, so a name used in two splits is the same content.
    """
    files = {}
    for split, names in splits.items():
        for name in names:
            base = name.split("@")[0]  # "a@copy" has a's pixels under another file name
            rng = np.random.default_rng([seed, sum(map(ord, base)), len(base)])
            image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            mask = rng.integers(0, len(CLASSES), (SIZE, SIZE), dtype=np.uint8)
            stem = name.replace("@", "_")
            files[f"images/{split}/{stem}.png"] = write_png(root / "images" / split / f"{stem}.png", image)
            files[f"masks/{split}/{stem}.png"] = write_png(root / "masks" / split / f"{stem}.png", mask)
    (root / "data.yaml").write_text(yaml.safe_dump({"format": "folder", "root": ".", "classes": CLASSES}))
    return files


def reader_of(root: Path) -> Any:
    return create_reader(load_data_spec(root / "data.yaml"))


# --- content fingerprint ------------------------------------------------------------------


def test_known_files_give_known_hashes(tmp_path: Path) -> None:
    files = folder_dataset(tmp_path, {"train": ["a", "b"], "val": ["c"]})
    result = fingerprint(reader_of(tmp_path))
    assert result.method == "content" and result.format == "folder"
    assert result.files == {path: sha(content) for path, content in files.items()}
    assert result.combined == combined_by_hand(files)
    train = {p: c for p, c in files.items() if "/train/" in p}
    assert result.splits["train"].combined == combined_by_hand(train)
    assert result.splits["val"].combined == combined_by_hand({p: c for p, c in files.items() if "/val/" in p})
    assert result.splits["train"].files == tuple(sorted(train))
    assert result.splits["train"].image_hashes == tuple(
        sorted(sha(files[f"images/train/{n}.png"]) for n in "ab")
    )
    assert result.splits["train"].num_images == 2


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="sha256sum not installed")
def test_documented_shell_recipe_gives_the_combined_hash(tmp_path: Path) -> None:
    files = folder_dataset(tmp_path, {"train": ["a", "b10", "b2"], "val": ["c"]})
    recipe = "sha256sum " + " ".join(files) + " | awk '{print $2 \"\\t\" $1}' | LC_ALL=C sort | sha256sum"
    out = subprocess.run(["bash", "-c", recipe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == fingerprint(reader_of(tmp_path)).combined


def test_renaming_a_file_changes_the_combined_hash_but_not_the_content_set(tmp_path: Path) -> None:
    folder_dataset(tmp_path, {"train": ["a", "b"], "val": ["c"]})
    before = fingerprint(reader_of(tmp_path))
    for kind in ("images", "masks"):
        os.rename(tmp_path / kind / "train" / "a.png", tmp_path / kind / "train" / "renamed.png")
    after = fingerprint(reader_of(tmp_path))
    assert after.combined != before.combined
    assert after.splits["train"].combined != before.splits["train"].combined
    assert after.splits["train"].image_hashes == before.splits["train"].image_hashes
    assert sorted(after.files.values()) == sorted(before.files.values())
    assert after.splits["val"].combined == before.splits["val"].combined


def test_one_changed_mask_changes_its_split_only(tmp_path: Path) -> None:
    folder_dataset(tmp_path, {"train": ["a", "b"], "val": ["c"]})
    before = fingerprint(reader_of(tmp_path))
    mask = tmp_path / "masks" / "val" / "c.png"
    new = write_png(mask, np.zeros((SIZE, SIZE), np.uint8))
    after = fingerprint(reader_of(tmp_path))
    assert after.files["masks/val/c.png"] == sha(new) != before.files["masks/val/c.png"]
    assert after.splits["val"].combined != before.splits["val"].combined
    assert after.splits["val"].image_hashes == before.splits["val"].image_hashes  # images untouched
    assert after.splits["train"].combined == before.splits["train"].combined
    assert after.combined != before.combined


def test_shared_annotation_files_count_in_every_split(tmp_path: Path) -> None:
    from segflow.data.readers.folder import FolderReader

    class WithLabelMap(FolderReader):  # like an export whose one JSON/XML names every label
        def annotation_files(self) -> list[Path]:
            return [self.root / "labels.json"]

    files = folder_dataset(tmp_path, {"train": ["a"], "val": ["c"]})
    (tmp_path / "labels.json").write_text('{"labels": ["bg", "a", "b"]}')
    files["labels.json"] = (tmp_path / "labels.json").read_bytes()
    result = fingerprint(WithLabelMap(load_data_spec(tmp_path / "data.yaml")))
    assert result.combined == combined_by_hand(files)
    for split in ("train", "val"):
        own = {p: c for p, c in files.items() if f"/{split}/" in p or p == "labels.json"}
        assert result.splits[split].combined == combined_by_hand(own)
        assert "labels.json" in result.splits[split].files


def test_chosen_splits_only(tmp_path: Path) -> None:
    files = folder_dataset(tmp_path, {"train": ["a"], "val": ["c"]})
    result = fingerprint(reader_of(tmp_path), splits=["val"])
    assert list(result.splits) == ["val"]
    assert result.combined == combined_by_hand({p: c for p, c in files.items() if "/val/" in p})


def test_large_file_is_streamed_and_cached_by_size_and_mtime(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = np.random.default_rng(0).integers(0, 256, 2 * CHUNK_BYTES + 123, dtype=np.uint8).tobytes()
    path.write_bytes(data)
    assert file_sha256(path) == sha(data)
    stat = path.stat()
    # same size and mtime: the process cache answers (the file is not read again)
    path.write_bytes(bytes(len(data)))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert file_sha256(path) == sha(data)
    # another mtime: read again
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert file_sha256(path) == sha(bytes(len(data)))


def test_unreadable_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        file_sha256(tmp_path / "gone.png")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'gone.png'}: cannot be read for the dataset fingerprint")


def test_fingerprint_json_is_complete(tmp_path: Path) -> None:
    from segflow.data.fingerprint import write_fingerprint

    files = folder_dataset(tmp_path / "ds", {"train": ["a"], "val": ["c"]})
    result = fingerprint(reader_of(tmp_path / "ds"))
    write_fingerprint(tmp_path / "fingerprint.json", result)
    stored = json.loads((tmp_path / "fingerprint.json").read_text())
    assert stored["combined"] == combined_by_hand(files)
    assert stored["files"] == {path: sha(content) for path, content in sorted(files.items())}
    assert stored["num_files"] == 4
    assert stored["splits"]["val"]["files"] == ["images/val/c.png", "masks/val/c.png"]
    assert stored["splits"]["val"]["image_sha256"] == [sha(files["images/val/c.png"])]
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*"))


# --- generated data (shapes) --------------------------------------------------------------


def shapes_fingerprint(cache: Path, **options: Any) -> DatasetFingerprint:
    counts = options.pop("num_images", {"train": 2, "val": 1, "test": 0})
    return fingerprint(
        create_reader(shapes_spec(cache, size=options.pop("size", 32), num_images=counts, **options))
    )


def test_shapes_is_fingerprinted_by_its_parameters(tmp_path: Path) -> None:
    result = shapes_fingerprint(tmp_path / "c1", seed=4)
    expected = {
        "format": "shapes",
        "generator_version": GENERATOR_VERSION,
        "size": 32,
        "seed": 4,
        "num_images": {"train": 2, "val": 1},
    }
    text = json.dumps(expected, sort_keys=True, separators=(",", ":"))
    assert result.method == "generator" and result.files == {}
    assert result.parameters == expected
    assert result.combined == sha(text.encode())
    train = {key: value for key, value in expected.items() if key != "num_images"}
    train.update(split="train", num_images=2)
    assert result.splits["train"].combined == sha(
        json.dumps(train, sort_keys=True, separators=(",", ":")).encode()
    )
    assert result.summary().files == 0 and len(result.summary().train_images or []) == 2


def test_same_shapes_parameters_same_fingerprint_other_seed_or_size_another(tmp_path: Path) -> None:
    first = shapes_fingerprint(tmp_path / "c1", seed=4)
    same = shapes_fingerprint(tmp_path / "c2", seed=4)  # another cache folder: not a parameter
    assert same.combined == first.combined and same.splits == first.splits
    assert shapes_fingerprint(tmp_path / "c1", seed=5).combined != first.combined
    assert shapes_fingerprint(tmp_path / "c1", seed=4, size=40).combined != first.combined
    more_val = shapes_fingerprint(tmp_path / "c1", seed=4, num_images={"train": 2, "val": 2, "test": 0})
    assert more_val.combined != first.combined
    assert more_val.splits["train"].combined == first.splits["train"].combined  # same train images
    assert more_val.splits["train"].image_hashes == first.splits["train"].image_hashes


# --- checkpoint metadata ------------------------------------------------------------------


def tiny_net() -> Any:
    torch.manual_seed(0)
    return create_model("unet", "resnet18", 3, len(CLASSES), encoder_depth=3, decoder_channels=(16, 8, 8))


def make_checkpoint(path: Path, data_root: Path | None) -> Path:
    """A random model for CLASSES; with ``data_root`` its meta stores that data's fingerprint."""
    summary = None if data_root is None else fingerprint(reader_of(data_root)).summary()
    meta = build_meta(
        tiny_net(),
        CLASSES,
        None,
        255,
        {"max_value": 255.0},
        {"mode": "keep"},
        None,
        {"name": "fp"},
        data=DataSummary.describe("folder", CLASSES, 255, 3, {}),
        data_fingerprint=summary,
    )
    return save_model_checkpoint(path, tiny_net(), meta)


def test_checkpoint_meta_round_trip(tmp_path: Path) -> None:
    files = folder_dataset(tmp_path / "ds", {"train": ["a", "b"], "val": ["c"]})
    ckpt = make_checkpoint(tmp_path / "m.ckpt", tmp_path / "ds")
    meta = read_meta(ckpt)
    stored = meta.data_fingerprint
    assert stored is not None
    assert stored.method == "content" and stored.files == 6
    assert stored.combined == combined_by_hand(files)
    assert set(stored.splits) == {"train", "val"}
    assert stored.train_images == sorted(sha(files[f"images/train/{n}.png"])[:16] for n in "ab")
    assert CheckpointMeta.from_json(meta.to_json(), "x") == meta
    assert tracking_params(stored) == {
        "data.fingerprint": stored.combined,
        "data.files": 6,
        "data.fingerprint.train": stored.splits["train"],
        "data.fingerprint.val": stored.splits["val"],
    }


def test_model_card_and_tracking_say_what_each_method_hashed() -> None:
    """Content: N files, each file's hash in fingerprint.json, ``data.files``. Generator: the
    parameters and seed, no file list, no ``data.files`` (nothing hashed from files)."""
    from segflow.models.meta import FingerprintSummary
    from segflow.training.report import fingerprint_lines

    content = FingerprintSummary(method="content", combined="c" * 64, splits={"val": "v" * 64}, files=6)
    generated = FingerprintSummary(method="generator", combined="g" * 64, splits={"val": "w" * 64})
    assert fingerprint_lines(content) == [
        f"- Fingerprint: `{'c' * 64}` (SHA-256 over 6 files; every file's hash in `fingerprint.json`)",
        f"  - val: `{'v' * 64}`",
    ]
    assert fingerprint_lines(generated) == [
        f"- Fingerprint: `{'g' * 64}` (SHA-256 of the generator parameters and seed, in `fingerprint.json`)",
        f"  - val: `{'w' * 64}`",
    ]
    assert fingerprint_lines(None) == []
    assert tracking_params(content) == {
        "data.fingerprint": "c" * 64,
        "data.files": 6,
        "data.fingerprint.val": "v" * 64,
    }
    assert tracking_params(generated) == {"data.fingerprint": "g" * 64, "data.fingerprint.val": "w" * 64}


@pytest.mark.parametrize("version", [1, 2])
def test_older_checkpoints_without_a_fingerprint_still_load(tmp_path: Path, version: int) -> None:
    ckpt = make_checkpoint(tmp_path / "new.ckpt", None)
    raw = torch.load(ckpt, weights_only=True)
    old = {k: v for k, v in raw["segflow"].items() if k not in ("data_fingerprint", "tta", "data")}
    old["format_version"] = version
    torch.save({"segflow": old, "state_dict": raw["state_dict"]}, tmp_path / "old.ckpt")
    net, meta = load_checkpoint(tmp_path / "old.ckpt")
    assert meta.data_fingerprint is None
    assert meta.format_version == 2 and meta.classes == CLASSES
    assert net.num_classes == len(CLASSES)


# --- evaluate: overlap with the training data ---------------------------------------------


@pytest.fixture
def overlap_data(tmp_path: Path) -> Path:
    """Train a, b, c, d; val holds copies of a and c under other names, and one new image."""
    folder_dataset(tmp_path / "ds", {"train": ["a", "b", "c", "d"], "val": ["a@copy", "c@again", "e"]})
    return tmp_path / "ds"


def test_evaluate_names_validation_images_that_were_trained_on(
    tmp_path: Path, overlap_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = make_checkpoint(tmp_path / "m.ckpt", overlap_data)
    out = tmp_path / "report"
    assert main(["evaluate", str(ckpt), "--data", str(overlap_data / "data.yaml"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err == (
        "warning: 2 of 3 evaluated images were in the checkpoint's training data (byte-identical files): "
        "images/val/a_copy.png, images/val/c_again.png\n"
    )
    assert json.loads((out / "metrics.json").read_text())["train_overlap"] == {
        "count": 2,
        "total": 3,
        "examples": ["images/val/a_copy.png", "images/val/c_again.png"],
    }
    # the report read later shows the leak too, paths escaped like the rest of metrics.md
    markdown = (out / "metrics.md").read_text().splitlines()
    assert (
        "Train overlap: 2 of 3 evaluated images were in the checkpoint's training data "
        r"(byte-identical files): images/val/a\_copy.png, images/val/c\_again.png"
    ) in markdown


def test_metrics_md_overlap_none_and_more(tmp_path: Path, overlap_data: Path) -> None:
    """No overlap: the line ends in "none"; past three examples: "and K more"."""
    ckpt = make_checkpoint(tmp_path / "m.ckpt", overlap_data)
    other = tmp_path / "other"
    folder_dataset(other, {"val": ["x", "y"]})
    evaluate_model(ckpt, load_data_spec(other / "data.yaml"), out_dir=tmp_path / "r0", warn=print)
    assert (
        "Train overlap: 0 of 2 evaluated images were in the checkpoint's training data "
        "(byte-identical files): none"
    ) in (tmp_path / "r0" / "metrics.md").read_text().splitlines()
    spec = load_data_spec(overlap_data / "data.yaml")
    evaluate_model(ckpt, spec, split="train", out_dir=tmp_path / "r4", warn=print)
    assert (
        "Train overlap: 4 of 4 evaluated images were in the checkpoint's training data "
        "(byte-identical files): images/train/a.png, images/train/b.png, images/train/c.png and 1 more"
    ) in (tmp_path / "r4" / "metrics.md").read_text().splitlines()


def test_resaved_image_with_same_pixels_is_not_detected(tmp_path: Path, overlap_data: Path) -> None:
    """The hashes are of file bytes: the same pixels written by another encoder are not found."""
    dataset = create_dataset(load_data_spec(overlap_data / "data.yaml"), "train")
    stored = fingerprint(dataset.reader).summary().train_images or []
    copy = tmp_path / "copy"
    shutil.copytree(overlap_data, copy)
    image = copy / "images" / "train" / "a.png"
    pixels = np.asarray(Image.open(image))
    Image.fromarray(pixels).save(image, compress_level=0)  # same pixels, other bytes
    assert np.array_equal(np.asarray(Image.open(image)), pixels)
    moved = create_dataset(load_data_spec(copy / "data.yaml"), "train")
    overlap = train_overlap(stored, moved.reader, moved.samples)
    assert (overlap.count, overlap.total) == (3, 4) and "images/train/a.png" not in overlap.examples


def test_overlap_count_examples_and_zero(tmp_path: Path, overlap_data: Path) -> None:
    ckpt = make_checkpoint(tmp_path / "m.ckpt", overlap_data)
    spec = load_data_spec(overlap_data / "data.yaml")
    lines: list[str] = []
    metrics = evaluate_model(ckpt, spec, split="train", warn=lines.append)  # scored on its own train split
    assert metrics["train_overlap"] == {
        "count": 4,
        "total": 4,
        "examples": [f"images/train/{n}.png" for n in "abc"],
    }
    assert lines == [
        "4 of 4 evaluated images were in the checkpoint's training data (byte-identical files): "
        "images/train/a.png, images/train/b.png, images/train/c.png and 1 more"
    ]
    other = tmp_path / "other"
    folder_dataset(other, {"val": ["x", "y"]})
    metrics = evaluate_model(ckpt, load_data_spec(other / "data.yaml"), warn=lines.append)
    assert metrics["train_overlap"] == {"count": 0, "total": 2, "examples": []}
    assert len(lines) == 1


def test_checkpoint_without_train_hashes_says_nothing(
    tmp_path: Path, overlap_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = make_checkpoint(tmp_path / "m.ckpt", None)
    out = tmp_path / "report"
    assert main(["evaluate", str(ckpt), "--data", str(overlap_data / "data.yaml"), "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["train_overlap"] is None
    assert "overlap" not in (out / "metrics.md").read_text().lower()


def test_overlap_is_found_in_a_renamed_copy_of_the_data(tmp_path: Path, overlap_data: Path) -> None:
    dataset = create_dataset(load_data_spec(overlap_data / "data.yaml"), "train")
    stored = fingerprint(dataset.reader).summary().train_images or []
    copy = tmp_path / "copy"
    shutil.copytree(overlap_data, copy)
    os.rename(copy / "images" / "train" / "b.png", copy / "images" / "train" / "zz.png")
    os.rename(copy / "masks" / "train" / "b.png", copy / "masks" / "train" / "zz.png")
    moved = create_dataset(load_data_spec(copy / "data.yaml"), "train")
    overlap = train_overlap(stored, moved.reader, moved.samples)
    assert (overlap.count, overlap.total) == (4, 4)


# --- training records it --------------------------------------------------------------------


def test_training_stores_the_fingerprint_everywhere(tiny_config: dict[str, Any]) -> None:
    from segflow.config import build_config
    from segflow.training import engine

    tiny_config["data"]["options"]["num_images"] = {"train": 8, "val": 2, "test": 1}
    tiny_config["trainer"].update(
        batch_size=4, val_batch_size=2, limit_train_batches=1, loggers=["csv", "tensorboard"]
    )
    config = build_config(tiny_config)
    result = engine.train(config)
    assert result is not None
    expected = fingerprint(create_reader(engine.load_spec(config)), ["train", "val"])
    run = result.run_dir
    assert json.loads((run / "fingerprint.json").read_text()) == json.loads(json.dumps(expected.to_dict()))
    meta = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)["segflow"]
    assert meta["data_fingerprint"] == expected.summary().model_dump(mode="json")
    assert meta["data_fingerprint"]["method"] == "generator"
    assert list(meta["data_fingerprint"]["splits"]) == ["train", "val"]  # test is not read by training
    assert len(meta["data_fingerprint"]["train_images"]) == 8
    card = (run / "model_card.md").read_text()
    assert (
        f"- Fingerprint: `{expected.combined}` (SHA-256 of the generator parameters and seed, in "
        "`fingerprint.json`)\n"
    ) in card
    assert "every file's hash" not in card and expected.files == {}  # no file to list
    assert f"  - val: `{expected.splits['val'].combined}`" in card
    for logged in (run / "hparams.yaml", run / "tensorboard" / "hparams.yaml"):
        hparams = yaml.safe_load(logged.read_text())
        assert hparams["data.fingerprint"] == expected.combined
        assert hparams["data.fingerprint.train"] == expected.splits["train"].combined
        assert "data.files" not in hparams  # generated: no file hashed (counts are parameters)
    assert json.loads((run / "metrics.json").read_text())["train_overlap"] == {
        "count": 0,
        "total": 2,
        "examples": [],
    }


def test_data_changed_while_the_run_started_is_refused(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from segflow.models.meta import FingerprintSummary
    from segflow.training.engine import record_fingerprint

    folder_dataset(tmp_path / "ds", {"train": ["a"], "val": ["c"]})
    stale = FingerprintSummary(method="content", combined="0" * 64)
    module: Any = SimpleNamespace(meta=SimpleNamespace(data_fingerprint=stale))
    trainer: Any = SimpleNamespace(loggers=[])
    with pytest.raises(
        DataError, match=r"^the dataset changed while the run started \(fingerprint 0{16} then"
    ):
        record_fingerprint(load_data_spec(tmp_path / "ds" / "data.yaml"), module, trainer, tmp_path)
    assert not (tmp_path / "fingerprint.json").exists()
