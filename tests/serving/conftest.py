"""Serving tests run with no ``SEGFLOW_*`` variable of the machine: ``ServeSettings`` reads them."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True, scope="package")
def clean_segflow_environment() -> Iterator[None]:
    """Package-scoped, so it also precedes the module-scoped servers some test files share."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.upper().startswith("SEGFLOW_"):
                patch.delenv(name)
        yield
