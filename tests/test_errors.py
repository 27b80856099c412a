"""Message helpers of segflow.errors."""

from __future__ import annotations

import json

import pytest

from segflow.errors import json_type_name


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("null", "null"),
        ('"hello"', "string"),
        ("[1, 2]", "array"),
        ("{}", "object"),
        ("7", "number"),
        ("1.5", "number"),
        ("true", "boolean"),
        ("false", "boolean"),
    ],
)
def test_json_type_name_uses_json_terms(text: str, name: str) -> None:
    """JSON's own names (RFC 8259), never Python's NoneType / str / list / dict / int / bool."""
    assert json_type_name(json.loads(text)) == name
