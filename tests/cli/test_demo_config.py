"""configs/shapes.yaml is the demo's config, so `segflow train configs/shapes.yaml` reproduces it."""

from pathlib import Path

from segflow.cli.demo import DEMO_SETTINGS
from segflow.config import load_config

REPO = Path(__file__).resolve().parents[2]


def test_shapes_config_matches_demo() -> None:
    cfg = load_config(REPO / "configs" / "shapes.yaml").model_dump(mode="json")
    for key, value in DEMO_SETTINGS.items():
        got = cfg[key]
        if key == "loss":
            got = got["terms"]
        elif isinstance(value, dict):
            got = {k: got[k] for k in value}
        if key == "model":
            got["kwargs"] = dict(got["kwargs"])
        assert got == value, key
