"""GET /v1/model."""

from __future__ import annotations

from ..fakes import CLASSES, PALETTE, REFERENCE, serving


def test_model_info_lists_classes_palette_policy_backend_and_limits():
    with serving(max_pixels=1234) as client:
        info = client.get("/v1/model").json()
    assert info["classes"] == CLASSES
    assert info["palette"] == [list(colour) for colour in PALETTE]
    assert info["num_classes"] == 3
    assert info["input_policy"]["mode"] == "keep"
    assert info["backend"] == "torch"
    assert info["model_id"] == "fake-model"
    assert info["segflow_version"] == "test"
    assert info["class_distribution"] == REFERENCE
    assert info["limits"]["max_pixels"] == 1234
