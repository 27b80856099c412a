"""``segflow.yaml_io.read_yaml``: one reader for every YAML file, one error line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.errors import ConfigError
from segflow.yaml_io import read_yaml


def test_reads_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a: 1\nb: [x, y]\n")
    assert read_yaml(path) == {"a": 1, "b": ["x", "y"]}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "data spec {path} does not exist; check the path"),
        ("- a\n- b\n", "data spec {path} must be a YAML mapping of keys (key: value lines); it is a list"),
        (
            "just words\n",
            "data spec {path} must be a YAML mapping of keys (key: value lines); it is a string",
        ),
        ("", "data spec {path} must be a YAML mapping of keys (key: value lines); it is an empty file"),
        (
            "# only a comment\n",
            "data spec {path} must be a YAML mapping of keys (key: value lines); it is an empty file",
        ),
        ("a: [1\n", "data spec {path} is not valid YAML ("),
        (b"a: \xff\n", "data spec {path} is not valid YAML ("),
    ],
)
def test_problems_are_one_config_error(tmp_path: Path, content: str | bytes | None, message: str) -> None:
    path = tmp_path / "d.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as err:
        read_yaml(path, "data spec")
    assert str(err.value).startswith(message.format(path=path))
    assert "\n" not in str(err.value)


def test_a_folder_is_called_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        read_yaml(tmp_path, "serve config")
    assert str(err.value) == f"serve config {tmp_path} is a folder, not a YAML file; give the file's path"


def test_an_empty_file_is_an_empty_mapping_where_allowed(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set yet\n")
    assert read_yaml(path, allow_empty=True) == {}


def test_training_config_no_longer_owns_read_yaml() -> None:
    import segflow.config

    assert not hasattr(segflow.config, "read_yaml") or segflow.config.read_yaml is read_yaml
