"""Real CamVid and ISBI membrane data from ../shared/data (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segflow.data import check_dataset, create_dataset

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "data"

pytestmark = pytest.mark.shared_data


def test_camvid_val_reads_and_checks(shared_data: Path) -> None:
    spec = {"format": "camvid", "root": str(shared_data / "camvid"), "splits": {"val": "val"}}
    ds = create_dataset(spec, "val")
    assert len(ds) == 101 and ds.in_channels == 3
    item = ds[0]
    assert item["image"].shape == (360, 480, 3)
    assert set(np.unique(item["mask"]).tolist()) <= set(range(11)) | {255}
    report = check_dataset(spec)
    assert report.ok, report.errors
    assert sum(report.class_share["val"]) == pytest.approx(1.0)


def test_membrane_config(shared_data: Path) -> None:
    assert (CONFIGS / "membrane.yaml").is_file()
    spec_path = CONFIGS / "membrane.yaml"
    if (shared_data / "membrane").resolve() != (CONFIGS / "../../../shared/data/membrane").resolve():
        pytest.skip("SEGFLOW_SHARED_DATA points elsewhere than the config's root")
    val = create_dataset(spec_path, "val")
    assert [s.name for s in val.samples] == ["24", "25", "26", "27", "28", "29"]
    assert val.in_channels == 1 and val.classes == ["membrane", "cell"]
    share = check_dataset(spec_path, splits=["val"]).class_share["val"]
    assert 0.1 < share[0] < 0.35 and share[0] + share[1] == pytest.approx(1.0)  # membrane is the minority


def test_repo_configs_resolve_to_shared_data(shared_data: Path) -> None:
    from segflow.data import load_data_spec

    camvid = load_data_spec(CONFIGS / "camvid.yaml")
    assert (
        camvid.root is not None
        and camvid.root.resolve() == (CONFIGS / "../../../shared/data/camvid").resolve()
    )
    assert camvid.splits == {"train": "train", "val": "val"}
    shapes = load_data_spec(CONFIGS / "shapes.yaml")
    assert shapes.format == "shapes" and shapes.root is None and shapes.options["seed"] == 0
