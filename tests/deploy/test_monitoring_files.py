"""deploy/monitoring: the Grafana dashboard and Prometheus rules name only metrics the service
exports (a real app, canary and capture on, scraped in-process), and cover the key ones."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from segflow.serving.app import create_app
from segflow.serving.settings import ServeSettings

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
DASHBOARD = MONITORING / "grafana-dashboard.json"
ALERTS = MONITORING / "prometheus-alerts.yml"
METRIC = re.compile(r"\bsegflow_[a-zA-Z0-9_:]*")
CLASSES = ["a", "b", "c"]
KEY_FAMILIES = {
    "segflow_http_request_duration_seconds", "segflow_http_requests", "segflow_queue_depth",
    "segflow_queue_wait_seconds", "segflow_drift_score", "segflow_confidence_mean", "segflow_model_ready",
    "segflow_canary_miou", "segflow_canary_class_iou", "segflow_capture_saved", "segflow_capture_dropped",
    "segflow_capture_queue_bytes",
}  # fmt: skip
ALERTED = {"segflow_http_request_duration_seconds", "segflow_http_requests", "segflow_drift_score",
           "segflow_canary_miou", "segflow_model_ready", "segflow_queue_depth"}  # fmt: skip


def _expressions() -> dict[str, list[str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    rules = yaml.safe_load(ALERTS.read_text())
    return {
        "dashboard": [t["expr"] for p in dashboard["panels"] for t in p["targets"]],
        "alerts": [rule["expr"] for group in rules["groups"] for rule in group["rules"]],
    }


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Sample name -> metric family name of a real service's /metrics (canary and capture on)."""
    from segflow import models

    root = tmp_path_factory.mktemp("monitoring")
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            root / "images" / split / "x.png"
        )
        Image.fromarray(rng.integers(0, 3, (32, 32), dtype=np.uint8)).save(root / "masks" / split / "x.png")
    (root / "data.yaml").write_text("format: folder\nroot: .\nclasses: [a, b, c]\n")
    net = models.create_model("unet", "resnet18", 3, len(CLASSES), encoder_weights=None)
    policy = {"mode": "keep", "size": None, "multiple": net.output_stride, "scale": None}
    meta = models.build_meta(net, CLASSES, None, 255, None, policy, [0.4, 0.3, 0.3], {})
    checkpoint = models.save_model_checkpoint(root / "tiny.pt", net, meta)
    settings = ServeSettings(
        model=checkpoint,
        canary=root / "data.yaml",
        capture=root / "capture",
        capture_below=1.0,
        canary_every=3600,
    )
    buffer = root / "request.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buffer)
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 60
        while client.app.state.service.canary.last is None:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.post("/v1/segment", content=buffer.read_bytes()).status_code == 200
        text = client.get("/metrics").text
    return {s.name: f.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_metric_named_is_exported(exported: dict[str, str]) -> None:
    for where, expressions in _expressions().items():
        for expr in expressions:
            for name in METRIC.findall(expr):
                assert name in exported, f"{where}: {name} in {expr!r} is not exported by the service"


def test_files_cover_the_key_metrics(exported: dict[str, str]) -> None:
    used = {
        kind: {exported[n] for e in exprs for n in METRIC.findall(e)}
        for kind, exprs in _expressions().items()
    }
    assert used["dashboard"] >= KEY_FAMILIES, KEY_FAMILIES - used["dashboard"]
    assert used["alerts"] >= ALERTED, ALERTED - used["alerts"]


def test_dashboard_is_a_grafana_model_with_a_datasource_variable() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    )
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["targets"] and all(t["refId"] and t["expr"] for t in panel["targets"])


def test_alert_rules_are_valid_groups() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    names = []
    for group in rules["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
            assert rule["labels"]["severity"] in ("info", "warning", "critical")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            assert rule["expr"].count("(") == rule["expr"].count(")")
            names.append(rule["alert"])
    assert len(names) == len(set(names))
