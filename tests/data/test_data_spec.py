"""load_data_spec: path resolution and one clear ConfigError per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.data import load_data_spec
from segflow.errors import ConfigError


def write_yaml(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_relative_root_resolves_against_yaml_folder(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "cfg" / "data.yaml", "format: folder\nroot: ../my_data\nclasses: [a, b]\n")
    spec = load_data_spec(path)
    assert spec.root == tmp_path / "my_data"
    assert spec.classes == ["a", "b"] and spec.ignore_index == 255 and spec.splits == {}


def test_dict_source_resolves_against_base_dir(tmp_path: Path) -> None:
    spec = load_data_spec({"format": "camvid", "root": "cv", "mask_values": {"3": 1}}, base_dir=tmp_path)
    assert spec.root == tmp_path / "cv"
    assert spec.mask_values == {3: 1}


def test_unknown_key_names_key_and_allowed(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "d.yaml", "format: folder\nroot: x\nclases: [a]\n")
    with pytest.raises(
        ConfigError,
        match=r"d\.yaml: unknown key 'clases' \(check the spelling; allowed keys: format, root, classes",
    ):
        load_data_spec(path)


def test_wrong_type_names_key_and_value() -> None:
    with pytest.raises(ConfigError, match=r"'ignore_index': Input should be a valid integer.*\(got 'none'\)"):
        load_data_spec({"format": "folder", "ignore_index": "none"})


def test_unknown_format_lists_formats() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown dataset format 'kitti'; valid formats: camvid, cityscapes, coco"
    ):
        load_data_spec({"format": "kitti"})


def test_mask_values_outside_classes() -> None:
    with pytest.raises(ConfigError, match=r"mask_values \{255: 2\} map to class indices outside 0..1"):
        load_data_spec({"format": "folder", "classes": ["a", "b"], "mask_values": {0: 0, 255: 2}})


def test_missing_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere\.yaml does not exist"):
        load_data_spec(tmp_path / "nothere.yaml")
    with pytest.raises(ConfigError, match=r"must be a YAML mapping"):
        load_data_spec(write_yaml(tmp_path / "list.yaml", "- a\n- b\n"))


def test_duplicate_class_names() -> None:
    with pytest.raises(ConfigError, match=r"'classes'.*repeated: \['a'\]"):
        load_data_spec({"format": "folder", "classes": ["a", "b", "a"]})
