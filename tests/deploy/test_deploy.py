"""Container and Kubernetes deployment: schema validity, lint, and agreement with the service.

No image can be built here (base images live on registries this machine cannot reach) and no
cluster runs, so: every manifest is validated against the Kubernetes API schema of a pinned
version in strict mode (``kubernetes-validate``, unknown fields refused), the Dockerfile is
linted with hadolint, and the values the manifests and the Dockerfile rely on are checked
against the service itself. The last test runs the image's entry point and healthcheck
command with the image's and the Deployment's environment against a real ``segflow serve``
on 127.0.0.1, and probes the Deployment's paths.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from segflow.errors import ConfigError
from segflow.serving.memory import BYTES_PER_MIB, default_memory_budget_mb
from segflow.serving.settings import ENV_PREFIX, ServeSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DOCKERFILE = REPO / "Dockerfile"
KUBERNETES_VERSION = "1.31.0"
"""Pinned API version the manifests are validated against (a version current clusters run)."""
HADOLINT = Path(sys.executable).parent / "hadolint"
SEGFLOW = Path(sys.executable).parent / "segflow"
API_KEY_ENV = f"{ENV_PREFIX}API_KEY"
QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")
UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
UNITS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})
SERVER_START_S = 90


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object in deploy/k8s by kind (the kustomization excluded)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _documents(path):
            if doc["kind"] != "Kustomization":
                assert doc["kind"] not in found, f"two {doc['kind']} objects"
                found[doc["kind"]] = doc
    return found


def _container(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (container,) = manifests["Deployment"]["spec"]["template"]["spec"]["containers"]
    return container


def _bytes(quantity: str) -> int:
    match = QUANTITY.match(str(quantity))
    assert match, f"unexpected quantity {quantity}"
    return int(float(match.group(1)) * UNITS[match.group(2)])


def _literal_env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container["env"] if "value" in item}


# --- the Dockerfile, parsed ----------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending:
            continue
        pending += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            if pending:
                joined.append(pending)
            pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in joined]


def _runtime_stage() -> list[tuple[str, str]]:
    instructions = _instructions()
    last_from = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


def _image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, args in _runtime_stage():
        if name == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(args)))
    return env


def _arg_default(stage: list[tuple[str, str]], arg: str) -> str:
    return next(args.split("=", 1)[1] for name, args in stage if name == "ARG" and args.startswith(f"{arg}="))


def _healthcheck_command() -> list[str]:
    (args,) = [args for name, args in _runtime_stage() if name == "HEALTHCHECK"]
    return list(json.loads(args.split(" CMD ", 1)[1]))


# --- schema and lint -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda p: p.name)
def test_manifests_validate_strictly_against_the_kubernetes_schema(path: Path) -> None:
    for doc in _documents(path):
        if doc["kind"] == "Kustomization":
            continue  # no API schema: an input of kustomize, checked below
        assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_strict_validation_refuses_an_unknown_field() -> None:
    deployment = _manifests()["Deployment"]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    (kustomization,) = _documents(K8S / "kustomization.yaml")
    resources = kustomization["resources"]
    assert all((K8S / name).is_file() for name in resources)
    expected = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert set(resources) == expected
    image = _container(_manifests())["image"].split(":")[0]
    assert [entry["name"] for entry in kustomization["images"]] == [image]


def test_dockerfile_passes_hadolint_and_each_ignored_rule_says_why() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--format", "json", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            above = number
            while above > 0 and lines[above - 1].startswith("#"):
                above -= 1
            reason = " ".join(lines[above:number])
            for rule in line.split("ignore=", 1)[1].split(","):
                assert f"{rule.strip()} (" in reason, f"line {number + 1}: no reason given for {rule}"


# --- the Dockerfile -------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_and_takes_the_torch_index() -> None:
    instructions = _instructions()
    assert sum(name == "FROM" for name, _ in instructions) == 2
    runtime = _runtime_stage()
    assert any(name == "COPY" and args.startswith("--from=builder /opt/venv") for name, args in runtime)
    assert not any(name == "RUN" and "pip install" in args for name, args in runtime)
    builder = instructions[: len(instructions) - len(runtime)]
    assert any(name == "ARG" and args.startswith("TORCH_INDEX_URL=") for name, args in builder)
    assert any(name == "RUN" and '"$TORCH_INDEX_URL"' in args for name, args in builder)
    (user,) = [args for name, args in runtime if name == "USER"]
    uid = _arg_default(runtime, "SEGFLOW_UID")
    assert user == "${SEGFLOW_UID}:${SEGFLOW_UID}" and int(uid) > 0
    assert ("ENTRYPOINT", '["segflow", "serve"]') in runtime
    assert _image_env()["SEGFLOW_HOST"] == "0.0.0.0"
    assert API_KEY_ENV not in _image_env()  # the key comes from the environment at run time


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip()[:1] not in ("", "#")
    ]

    def ignored(path: str) -> bool:  # Docker's rule: the last matching pattern wins
        verdict = False
        for pattern in patterns:
            negated = pattern.startswith("!")
            if fnmatch.fnmatch(path, pattern.lstrip("!")) or path.startswith(pattern.lstrip("!") + "/"):
                verdict = not negated
        return verdict

    copied = [
        source
        for name, args in _instructions()
        if name == "COPY" and not args.startswith("--from")
        for source in args.split()[:-1]
    ]
    assert copied == ["pyproject.toml", "README.md", "src"]
    assert not any(ignored(path) for path in [*copied, "src/segflow/__init__.py"])
    assert all(ignored(path) for path in [".venv", "runs", "tests", ".git"])


# --- manifests against the service ----------------------------------------------------------------


def test_ports_agree_everywhere() -> None:
    manifests = _manifests()
    container = _container(manifests)
    (port,) = container["ports"]
    image_port = _image_env()["SEGFLOW_PORT"]
    exposed = [args for name, args in _runtime_stage() if name == "EXPOSE"]
    annotations = manifests["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert port["containerPort"] == int(image_port) == int(_literal_env(container)["SEGFLOW_PORT"])
    assert exposed == [image_port] and annotations["prometheus.io/port"] == image_port
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
    (service_port,) = manifests["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"]


def test_selectors_and_targets_match_the_deployment() -> None:
    manifests = _manifests()
    deployment = manifests["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert manifests["Service"]["spec"]["selector"].items() <= labels.items()
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = manifests["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert (
        1
        <= manifests["PodDisruptionBudget"]["spec"]["minAvailable"]
        < hpa["minReplicas"]
        <= hpa["maxReplicas"]
    )


def test_memory_limit_holds_the_memory_budget() -> None:
    container = _container(_manifests())
    budget_mb = float(_literal_env(container)[f"{ENV_PREFIX}MAX_MEMORY_MB"])
    limit = _bytes(container["resources"]["limits"]["memory"])
    request = _bytes(container["resources"]["requests"]["memory"])
    assert limit >= budget_mb * BYTES_PER_MIB and request == limit
    # The explicit budget is the one the service would pick itself under this cgroup limit.
    assert budget_mb == default_memory_budget_mb(cgroup_limit=limit, ram=64 * limit)


def test_every_variable_is_a_serve_setting_and_the_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    container = _container(_manifests())
    env = {**_image_env(), **_literal_env(container)}
    names = [
        name for name in [*env, *(item["name"] for item in container["env"])] if name.startswith(ENV_PREFIX)
    ]
    assert {name.removeprefix(ENV_PREFIX).lower() for name in names} <= set(ServeSettings.model_fields)
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv(API_KEY_ENV, "k" * 32)
    settings = ServeSettings.load()
    assert settings.host == "0.0.0.0" and settings.workers == 1
    assert str(settings.model) == env["SEGFLOW_MODEL"] == "/models/model.onnx"
    assert settings.max_memory_mb == float(env["SEGFLOW_MAX_MEMORY_MB"])


def test_api_key_comes_from_the_secret_under_the_servers_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = _manifests()
    (item,) = [e for e in _container(manifests)["env"] if "valueFrom" in e]
    ref = item["valueFrom"]["secretKeyRef"]
    secret = manifests["Secret"]
    assert item["name"] == API_KEY_ENV == ENV_PREFIX + "api_key".upper()
    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert not ref.get("optional", False)  # no Secret, no pod: never served without the key
    assert secret["stringData"][ref["key"]] == ""  # the example holds no key...
    monkeypatch.setenv(API_KEY_ENV, secret["stringData"][ref["key"]])
    with pytest.raises(ConfigError, match="API key is empty"):  # ...and an empty one stops the server
        ServeSettings.load(model=Path("m.onnx"))


def test_security_context_is_non_root_with_the_images_user() -> None:
    pod = _manifests()["Deployment"]["spec"]["template"]["spec"]
    uid = int(_arg_default(_runtime_stage(), "SEGFLOW_UID"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == uid == pod["securityContext"]["runAsGroup"]
    context = _container(_manifests())["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"] for m in _container(_manifests())["volumeMounts"]}
    assert context["readOnlyRootFilesystem"] is True and "/tmp" in mounts


# --- the entry point, the healthcheck and the probes against a real server -------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tiny_onnx(path: Path) -> Path:
    import torch

    from segflow.export.onnx import export_onnx

    net = torch.nn.Conv2d(3, 2, 1).eval()
    meta = {
        "model": {"arch": "unet", "encoder": "resnet18", "in_channels": 3, "num_classes": 2},
        "classes": ["background", "object"],
        "input_policy": {"mode": "keep", "multiple": 8},
    }
    return export_onnx(net, meta, path)


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[dict[str, str], int]]:
    """``segflow serve`` started as the image's ENTRYPOINT with the image's and the Deployment's
    environment; loopback and a free port instead of 0.0.0.0:8000 (tests never expose a port)."""
    container = _container(_manifests())
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    image_env = {k: v for k, v in _image_env().items() if k not in ("PATH", "VIRTUAL_ENV")}
    port = _free_port()
    env.update({**image_env, **_literal_env(container), API_KEY_ENV: "test-key-" + "0" * 24})
    env.update({"SEGFLOW_HOST": "127.0.0.1", "SEGFLOW_PORT": str(port), "OMP_NUM_THREADS": "1"})
    env["SEGFLOW_MODEL"] = str(_tiny_onnx(tmp_path / "model.onnx"))
    (entrypoint,) = [json.loads(args) for name, args in _runtime_stage() if name == "ENTRYPOINT"]
    command = [str(SEGFLOW) if entrypoint[0] == "segflow" else entrypoint[0], *entrypoint[1:]]
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield env, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _healthcheck(env: dict[str, str]) -> int:
    command = _healthcheck_command()
    assert command[0] == "python"
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode


@pytest.mark.slow
def test_entrypoint_healthcheck_and_probes_against_a_real_server(
    server: tuple[dict[str, str], int], tmp_path: Path
) -> None:
    env, pid = server
    deadline = time.monotonic() + SERVER_START_S
    while _healthcheck(env) != 0:
        assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
        os.kill(pid, 0)  # still running
        time.sleep(0.5)
    base = f"http://127.0.0.1:{env['SEGFLOW_PORT']}"
    container = _container(_manifests())
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = container[probe]["httpGet"]["path"]
        while (status := _get(base + path)[0]) == 503 and time.monotonic() < deadline:
            time.sleep(0.2)  # /readyz: warming up
        assert status == 200, f"{probe} {path}: {status}"
    annotations = _manifests()["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    metrics = base + annotations["prometheus.io/path"]
    assert _get(metrics)[0] == 401  # the key is required, and it came from the environment
    status, text = _get(metrics, {"Authorization": f"Bearer {env[API_KEY_ENV]}"})
    assert status == 200 and "segflow_model_ready 1.0" in text
    os.kill(pid, 15)
    deadline = time.monotonic() + 30
    while _healthcheck(env) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.5)
