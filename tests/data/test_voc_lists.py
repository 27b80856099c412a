"""VOC list files are read as utf-8-sig with ids stripped: a byte-order mark or Windows line
ends never hide an image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from data_builders import save_png
from PIL import Image

from segflow.data import check_dataset, create_dataset
from segflow.data.io import read_list_file
from segflow.errors import DataError

IDS = ("2007_000032", "2007_000039", "2007_000063")


def voc_root(tmp_path: Path, list_bytes: bytes) -> Path:
    lists = tmp_path / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "val.txt").write_bytes(list_bytes)
    (tmp_path / "JPEGImages").mkdir()
    for image_id in IDS:
        Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / "JPEGImages" / f"{image_id}.jpg")
        save_png(tmp_path / "SegmentationClass" / f"{image_id}.png", np.ones((4, 6), np.uint8), palette=True)
    return tmp_path


LIST_FILES = {
    "plain": "\n".join(IDS).encode() + b"\n",
    "bom": b"\xef\xbb\xbf" + "\n".join(IDS).encode() + b"\n",
    "bom_crlf": b"\xef\xbb\xbf" + "\r\n".join(IDS).encode() + b"\r\n",
    "padded": b"\xef\xbb\xbf  " + "  \n\t".join(IDS).encode() + b" \n\n",
    "utf16_bom": "\n".join(IDS).encode("utf-16"),  # Notepad's "Unicode": BOM + UTF-16-LE
    "concatenated_bom": b"\xef\xbb\xbf" + IDS[0].encode() + b"\n\xef\xbb\xbf" + "\n".join(IDS[1:]).encode(),
}


@pytest.mark.parametrize("case", sorted(LIST_FILES))
def test_every_listed_image_is_found(tmp_path: Path, case: str) -> None:
    root = voc_root(tmp_path, LIST_FILES[case])
    spec = {"format": "voc", "root": str(root)}
    report = check_dataset(spec)
    assert report.ok, report.errors
    assert report.splits["val"].num_samples == 3
    names = [sample.name for sample in create_dataset(spec, "val").samples]
    assert names == list(IDS)


def test_bom_first_id_is_not_reported_missing(tmp_path: Path) -> None:
    """The issue's case: val.txt saved with a UTF-8 BOM."""
    root = voc_root(tmp_path, LIST_FILES["bom"])
    report = check_dataset({"format": "voc", "root": str(root)})
    assert not any("missing image" in error for error in report.errors)
    assert report.errors == []


def test_read_list_file_strips_ids(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_bytes(b"\xef\xbb\xbf a 1\r\n\r\n\tb\n c \n")
    assert read_list_file(path, "list") == ["a", "b", "c"]


def test_list_file_that_is_not_text_is_a_data_error(tmp_path: Path) -> None:
    root = voc_root(tmp_path, b"\xff\xfe" + b"\x00\xd8")  # UTF-16 BOM, then a lone surrogate
    with pytest.raises(DataError, match=r"VOC split list .*val\.txt is not UTF-16 text"):
        create_dataset({"format": "voc", "root": str(root)}, "val")
    report = check_dataset({"format": "voc", "root": str(root)})
    assert len(report.errors) == 1 and "is not UTF-16 text" in report.errors[0]
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.txt is not UTF-8 text \(byte 3"):
        read_list_file(latin1, "VOC split list")


@pytest.mark.parametrize(
    ("list_bytes", "lines"),
    [
        (b"2007_000032\n2007_000039\n2007_000032\n", "lines 1 and 3"),
        (b"2007_000032\n\n  2007_000032 \r\n2007_000063\n", "lines 1 and 3"),  # padded, CRLF
        (b"\xef\xbb\xbf2007_000032\n\xef\xbb\xbf2007_000032\n", "lines 1 and 2"),  # concatenated with BOMs
    ],
)
def test_duplicate_ids_are_an_error_naming_the_id_and_list_file(
    tmp_path: Path, list_bytes: bytes, lines: str
) -> None:
    root = voc_root(tmp_path, list_bytes)
    list_file = root / "ImageSets" / "Segmentation" / "val.txt"
    message = (
        f"VOC split list {list_file}: id '2007_000032' is listed twice ({lines}); "
        "each image may be listed once: remove the repeated line(s)"
    )
    assert check_dataset({"format": "voc", "root": str(root)}).errors == [f"split 'val': {message}"]
    with pytest.raises(DataError) as info:
        create_dataset({"format": "voc", "root": str(root)}, "val")  # what train and evaluate load
    assert str(info.value) == message


def test_every_repeat_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("a\nb\na\nb\na\n")
    with pytest.raises(
        DataError, match=r"id 'a' is listed twice \(lines 1 and 3\) \(and 2 more repeated line\(s\)\)"
    ):
        read_list_file(path, "list")
