"""The MLflow model registry: register a run's best model, set aliases, list versions, and
fetch a version's checkpoint for the ``models:/`` MODEL scheme.

A registered version's source is the run's ``model/`` artefact folder, holding
:data:`CHECKPOINT_NAME` (the best checkpoint) and :data:`ONNX_NAME` (its ONNX export, made by
:func:`segflow.export.pipeline.export_model`), and it is tagged with :data:`TAG_VAL_MIOU` and
:data:`TAG_SEGFLOW_VERSION`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segflow.errors import CheckpointError, ConfigError
from segflow.tracking.server import check_server, mlflow_errors, redact_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

MODEL_FOLDER = "model"
"""The run artefact folder a registered version points at."""
CHECKPOINT_NAME = "model.ckpt"
ONNX_NAME = "model.onnx"
TAG_VAL_MIOU = "val_miou"
TAG_SEGFLOW_VERSION = "segflow_version"
TAG_ONNX = "onnx"
"""``model.onnx``, or why the version has no ONNX export (``none: ...``)."""
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".safetensors")
LATEST = "latest"
"""``models:/NAME/latest``: the highest version number."""
REGISTRY_CACHE = "registry"
"""Sub-folder of segflow's cache (``$SEGFLOW_CACHE``, else ``~/.cache/segflow``) for fetched checkpoints."""
NOT_FOUND_CODES = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class VersionRef:
    """A registered model version as written in ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.

    Attributes:
        name: Registered model name.
        alias: Alias (``champion``), or None.
        version: Version number or :data:`LATEST`, or None (when ``alias`` is given).
    """

    name: str
    alias: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else f"models:/{self.name}/{self.version}"


def client_for(uri: str) -> MlflowClient:
    """An MLflow client for ``uri`` (tracking and registry), after :func:`check_server` passed.

    Raises:
        ConfigError: The server does not answer (within seconds, not MLflow's minutes of retries).
    """
    check_server(uri)
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _missing(err: Exception) -> bool:
    return getattr(err, "error_code", None) in NOT_FOUND_CODES


def resolve_version(client: MlflowClient, ref: VersionRef, uri: str) -> ModelVersion:
    """The registered version ``ref`` names.

    Raises:
        CheckpointError: No such registered model, alias or version (one line saying what exists).
        ConfigError: The server refused the request.
    """
    from mlflow.exceptions import MlflowException

    with mlflow_errors(f"looking up {ref}", uri):
        try:
            registered = client.get_registered_model(ref.name)
        except MlflowException as err:
            if _missing(err):
                raise CheckpointError(
                    f"{ref}: the registry at {redact_uri(uri)} has no model named {ref.name!r}; "
                    "train with tracking.register_as to register one"
                ) from None
            raise
        number = ref.version
        if ref.alias is not None:
            number = (registered.aliases or {}).get(ref.alias)
        elif ref.version == LATEST:
            versions = list_versions(client, ref.name)
            number = versions[-1].version if versions else None
        try:
            if number is not None:
                return client.get_model_version(ref.name, str(number))
        except MlflowException as err:
            if not _missing(err):
                raise
        known = ", ".join(str(v.version) for v in list_versions(client, ref.name)) or "none"
        what = f"alias {ref.alias!r}" if ref.alias else f"version {ref.version}"
        hint = (
            f"set it with `segflow registry promote {ref.name} VERSION --alias {ref.alias}`"
            if ref.alias
            else "give one of them"
        )
        raise CheckpointError(
            f"{ref}: registered model {ref.name!r} has no {what} (versions: {known}); {hint}"
        )


def list_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """All versions of registered model ``name``, oldest first."""
    found = client.search_model_versions(f"name = '{name}'")
    return sorted(found, key=lambda v: int(v.version))


def register_model_version(
    client: MlflowClient,
    uri: str,
    name: str,
    run_id: str,
    artifact_uri: str,
    checkpoint: Path,
    tags: dict[str, str],
    export: Callable[[Path, Path], str] | None = None,
) -> ModelVersion:
    """Logs ``checkpoint`` (and its ONNX export) to the run's :data:`MODEL_FOLDER` and registers
    that folder as a new version of ``name`` (the registered model is created if missing).

    Args:
        client: Client of the tracking server.
        uri: The server, for messages.
        name: Registered model name.
        run_id: The run that trained the model.
        artifact_uri: The run's artefact root (``run.info.artifact_uri``).
        checkpoint: The best checkpoint.
        tags: Version tags (values are strings).
        export: ``(checkpoint, onnx_path) -> tag`` writes the ONNX model and returns the
            :data:`TAG_ONNX` value; None: no ONNX.

    Returns:
        The new, READY version.

    Raises:
        ConfigError: The server refused a request (one line).
    """
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="segflow-register-") as tmp:
        folder = Path(tmp) / MODEL_FOLDER
        folder.mkdir()
        _link_or_copy(checkpoint, folder / CHECKPOINT_NAME)
        onnx_tag = export(checkpoint, folder / ONNX_NAME) if export else "none: not asked for"
        with mlflow_errors(f"logging the model of run {run_id}", uri):
            client.log_artifacts(run_id, str(folder), MODEL_FOLDER)
    with mlflow_errors(f"registering model {name!r}", uri):
        try:
            client.create_registered_model(name, description="segmentation model trained by segflow")
        except MlflowException as err:
            if getattr(err, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
        return client.create_model_version(
            name,
            source=f"{artifact_uri.rstrip('/')}/{MODEL_FOLDER}",
            run_id=run_id,
            tags={**tags, TAG_ONNX: onnx_tag},
        )


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the filesystem allows (no second copy of a large checkpoint), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def promote(uri: str, name: str, version: str, alias: str) -> ModelVersion:
    """Points ``alias`` of registered model ``name`` at ``version``.

    Raises:
        CheckpointError: No such model or version.
        ConfigError: The server is unreachable or refused (e.g. an invalid alias).
    """
    client = client_for(uri)
    target = resolve_version(client, VersionRef(name, version=version), uri)
    with mlflow_errors(f"setting alias {alias!r} of {name!r}", uri):
        client.set_registered_model_alias(name, alias, str(target.version))
        return client.get_model_version(name, str(target.version))


def cache_root() -> Path:
    """Where fetched registry checkpoints are kept: ``<segflow cache>/registry``."""
    from segflow.data.readers.shapes import CACHE_ENV, DEFAULT_CACHE

    base = os.environ.get(CACHE_ENV)
    return (Path(base) if base else DEFAULT_CACHE.expanduser()) / REGISTRY_CACHE


def version_cache_dir(uri: str, version: ModelVersion) -> Path:
    """``<cache>/<name>/v<version>-<hash>``: the hash covers the server and the version's source,
    so a version of another server (or of a server started afresh) is never taken for this one."""
    digest = hashlib.sha256(f"{redact_uri(uri)}\0{version.source}".encode()).hexdigest()[:12]
    return cache_root() / _UNSAFE.sub("_", str(version.name)) / f"v{version.version}-{digest}"


def cached_version_label(path: Path) -> str | None:
    """``NAME_vVERSION`` of a checkpoint :func:`fetch_checkpoint` put in the cache
    (``<cache>/NAME/vVERSION-HASH/model.ckpt``), or None for any other path."""
    match = re.fullmatch(r"v(\d+)-[0-9a-f]+", path.parent.name)
    if match is None or path.parent.parent.parent.resolve() != cache_root().resolve():
        return None
    return f"{path.parent.parent.name}_v{match.group(1)}"


def fetch_checkpoint(uri: str, ref: VersionRef) -> Path:
    """The checkpoint of the registered version ``ref``, downloaded once into the cache.

    A cached file is reused; a download goes to a temporary folder beside it and is renamed
    into place, so a reader never sees half a checkpoint.

    Raises:
        ConfigError: The server is unreachable or refused a request.
        CheckpointError: No such model, alias or version, or the version holds no checkpoint.
    """
    client = client_for(uri)
    version = resolve_version(client, ref, uri)
    folder = version_cache_dir(uri, version)
    cached = sorted(p for p in folder.glob("*") if p.suffix in CHECKPOINT_SUFFIXES) if folder.is_dir() else []
    if cached:
        return cached[0]
    import mlflow.artifacts

    source = str(version.source).rstrip("/")
    with mlflow_errors(f"downloading {ref} (version {version.version})", uri):
        listed = mlflow.artifacts.list_artifacts(artifact_uri=source, tracking_uri=uri)
        name = _checkpoint_name(ref, [Path(str(f.path)).name for f in listed if not f.is_dir])
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".partial-", dir=folder) as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{source}/{name}", dst_path=tmp, tracking_uri=uri
            )
            os.replace(local, folder / name)
    logger.info("fetched %s (version %s) into %s", ref, version.version, folder)
    return folder / name


def read_version_run_file(uri: str, ref: VersionRef, name: str) -> str | None:
    """The text of file ``name`` (e.g. ``rounds.json``) of the run that trained version ``ref``.

    Read from the run's artefacts; when the run logged no such artefact, from the run folder its
    ``segflow.run_dir`` tag names, if that folder is on this machine. Nothing is cached: the file
    is small and read once per training run.

    Returns:
        The text (UTF-8), or None when the version has no run or neither place holds the file.

    Raises:
        ConfigError: The server is unreachable or refused a request.
        CheckpointError: No such model, alias or version.
    """
    from mlflow.exceptions import MlflowException

    from segflow.tracking.mlflow_run import TAG_RUN_DIR

    client = client_for(uri)
    version = resolve_version(client, ref, uri)
    if not version.run_id:
        return None
    with mlflow_errors(f"reading {name} of the run of {ref} (version {version.version})", uri):
        listed = {Path(str(f.path)).name for f in client.list_artifacts(version.run_id) if not f.is_dir}
        if name in listed:
            with tempfile.TemporaryDirectory(prefix="segflow-run-file-") as tmp:
                local = client.download_artifacts(version.run_id, name, tmp)
                return Path(local).read_text(encoding="utf-8")
        try:
            run = client.get_run(version.run_id)
        except MlflowException as err:
            if _missing(err):
                return None
            raise
    folder = run.data.tags.get(TAG_RUN_DIR)
    if not folder:
        return None
    try:
        return (Path(folder) / name).read_text(encoding="utf-8")
    except (OSError, ValueError):  # not on this machine, or not text
        return None


def _checkpoint_name(ref: VersionRef, files: list[str]) -> str:
    if CHECKPOINT_NAME in files:
        return CHECKPOINT_NAME
    found = [f for f in files if Path(f).suffix in CHECKPOINT_SUFFIXES]
    if len(found) == 1:
        return found[0]
    held = ", ".join(files) or "no file"
    raise CheckpointError(
        f"{ref}: the version's source holds {held}, not one segflow checkpoint "
        f"({'/'.join(CHECKPOINT_SUFFIXES)}); register it with tracking.register_as"
    )


def version_row(version: ModelVersion) -> dict[str, Any]:
    """One version for ``segflow registry list``: version, aliases, val mIoU, segflow version, run."""
    tags = dict(version.tags or {})
    return {
        "version": str(version.version),
        "aliases": ", ".join(version.aliases or []),
        TAG_VAL_MIOU: tags.get(TAG_VAL_MIOU, ""),
        TAG_SEGFLOW_VERSION: tags.get(TAG_SEGFLOW_VERSION, ""),
        "run_id": version.run_id or "",
        "created": str(version.creation_timestamp or ""),
    }


def list_model(uri: str, name: str) -> list[dict[str, Any]]:
    """The versions of ``name`` as rows (:func:`version_row`), oldest first.

    Raises:
        CheckpointError: No registered model of that name.
        ConfigError: The server is unreachable or refused.
    """
    from mlflow.exceptions import MlflowException

    client = client_for(uri)
    with mlflow_errors(f"listing registered model {name!r}", uri):
        try:
            registered = client.get_registered_model(name)
        except MlflowException as err:
            if _missing(err):
                raise CheckpointError(
                    f"the registry at {redact_uri(uri)} has no model named {name!r}"
                ) from None
            raise
        aliases: dict[str, list[str]] = {}
        for alias, number in (registered.aliases or {}).items():
            aliases.setdefault(str(number), []).append(alias)
        rows = []
        for version in list_versions(client, name):
            row = version_row(version)
            row["aliases"] = row["aliases"] or ", ".join(sorted(aliases.get(str(version.version), [])))
            rows.append(row)
        return rows


def parse_version_ref(rest: str, given: str) -> VersionRef:
    """``/NAME@ALIAS``, ``/NAME/VERSION`` or ``/NAME/latest`` (the text after ``models:``).

    Raises:
        ConfigError: Any other form (one line with the valid ones).
    """
    forms = "models:/NAME@ALIAS, models:/NAME/VERSION or models:/NAME/latest"
    body = rest[1:] if rest.startswith("/") else None
    if body is not None and "@" in body:
        name, alias = body.rsplit("@", 1)
        if name and alias and "/" not in name and "/" not in alias:
            return VersionRef(name, alias=alias)
    elif body is not None and "/" in body:
        name, version = body.rsplit("/", 1)
        if name and "/" not in name and (version.isdigit() or version == LATEST):
            return VersionRef(name, version=version)
    raise ConfigError(f"MODEL {given!r} is not a registry model; write {forms}")


__all__ = [
    "CHECKPOINT_NAME",
    "cached_version_label",
    "MODEL_FOLDER",
    "ONNX_NAME",
    "TAG_SEGFLOW_VERSION",
    "TAG_VAL_MIOU",
    "VersionRef",
    "fetch_checkpoint",
    "list_model",
    "parse_version_ref",
    "promote",
    "read_version_run_file",
    "register_model_version",
    "resolve_version",
]
