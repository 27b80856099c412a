"""``predictions.json``: what a prediction run wrote into its output folder, and the folder rule.

Every prediction path (``segflow predict``, locally or through ``--server``, and any later
one) opens its output folder with :func:`open_prediction_dir`, which applies the one folder
rule of :func:`segflow.io_utils.claim_output_dir`:

- a missing or empty folder starts a new run;
- a non-empty folder is refused unless ``overwrite`` (the outputs segflow owns there are
  removed first: everything the old manifest lists, every file this run would write, and
  the manifest itself; the user's other files stay) or ``resume`` is given;
- ``resume`` checks that the model and the options equal the manifest's, then the caller
  skips the inputs :meth:`PredictionManifest.is_finished` reports as done.

The manifest lists the model (file, SHA-256, backend), the options as resolved for that model
(:meth:`segflow.inference.options.InferenceOptions.resolved`: ``tta`` is the views that ran,
never ``"checkpoint"``, so ``resume`` compares what the runs did, not how they were spelled;
:meth:`~segflow.inference.options.InferenceOptions.to_json`) and, for each finished input, its
path, its SHA-256 and the outputs written for it (names relative to the folder). It is written
atomically (:func:`segflow.io_utils.atomic_write`) after each finished input, at most once per
:data:`FLUSH_INTERVAL_S` and always when the run ends or fails, so a run killed at any moment
leaves a valid manifest and loses at most the last second of finished inputs, which
``resume`` recomputes.

A run that goes on past a failed input (``segflow predict --ray``) lists that input under
``failed`` with its error (:meth:`PredictionManifest.record_failure`); the key is absent when
nothing failed. A failed input is not finished, so ``resume`` predicts it again; a resumed run
drops the failure records of inputs it was not given (:meth:`PredictionManifest.keep_failures_of`).

Layout::

    {"format_version": 1, "segflow_version": "...",
     "model": {"path": "/abs/model.onnx", "sha256": "...", "backend": "onnx"},
     "options": {"tile": 512, "overlap": 0.25, ...},
     "inputs": [{"path": "/abs/a.png", "sha256": "...", "outputs": ["a.png", "a_overlay.png"]}],
     "failed": [{"path": "/abs/b.png", "sha256": "...", "error": "b.png is not a readable image"}]}
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from segflow.errors import ConfigError, InferenceError
from segflow.inference.options import InferenceOptions
from segflow.io_utils import atomic_write, claim_output_dir
from segflow.models.meta import TTA_FROM_CHECKPOINT

MANIFEST_NAME = "predictions.json"
FORMAT_VERSION = 1
FLUSH_INTERVAL_S = 1.0
"""Longest time a finished input waits before the manifest on disk lists it."""
HASH_CHUNK_BYTES = 1 << 20
OUTPUT_SUFFIXES = (
    ".png",
    ".tif",
    "_overlay.png",
    "_probs.npy",
    ".mp4",
    # domain inputs (segflow.domains): volumes, whole slides, rasters
    ".nii.gz",
    "_seg.dcm",
    "_summary.json",
    ".ome.tif",
    ".geojson",
    ".gpkg",
)
"""Names ``<stem><suffix>`` segflow predict writes for an input (see segflow.inference.streaming)."""
PARTIAL_MARK = ".partial-"
"""Part of the temporary names of :func:`segflow.io_utils.atomic_write` (left by a killed run)."""
URL_MARK = "://"
"""What tells an fsspec URL input (``s3://bucket/a.png``, ``file:///data/a.png``) from a path."""


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks (memory does not grow with the file)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def input_sha256(path: str | Path) -> str:
    """Hex SHA-256 of an input: a file's bytes, or for a folder (a DICOM series) the hash of
    its files' relative names and hashes, in name order."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for child in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{child.relative_to(path).as_posix()}\0{file_sha256(child)}\n".encode())
    return digest.hexdigest()


def input_key(path: str | Path) -> str:
    """How the manifest names an input: an fsspec URL (``s3://...``, given as a string) as it
    is, a local path resolved."""
    text = str(path)
    return text if URL_MARK in text else str(Path(path).resolve())


def input_stem(path: str | Path) -> str:
    """The name outputs of ``path`` start with: the file name without its suffix (both suffixes
    of ``.nii.gz``; a folder's whole name)."""
    path = Path(path)
    if path.name.lower().endswith(".nii.gz"):
        return path.name[: -len(".nii.gz")]
    if path.name.lower().endswith(".ome.tif"):
        return path.name[: -len(".ome.tif")]
    return path.name if path.is_dir() else path.stem


def model_record(model: str | Path, backend: str | None = None) -> dict[str, Any]:
    """What identifies the model of a run: a file by its SHA-256, anything else by its text.

    Args:
        model: Model file (checkpoint or export), or a model spec / server URL.
        backend: Backend name as given (None: chosen by the file suffix).

    Returns:
        ``{"path", "sha256", "backend"}`` for a file, ``{"spec", "backend"}`` otherwise. The
        hash covers the files the backend reads (``backends.model_files``): the file alone, or
        an OpenVINO IR's ``.xml`` and ``.bin``, or the INT8 sibling that ``*-int8`` backends
        run, so ``--resume`` notices a changed weights file or INT8 model too.
    """
    path = Path(model)
    if path.is_file():
        from segflow.inference.backends import backend_name_for, model_files

        chosen = backend or backend_name_for(path)
        return {
            "path": str(path.resolve()),
            "sha256": files_sha256(model_files(path, chosen)),
            "backend": chosen,
        }
    return {"spec": str(model), "backend": backend}


def files_sha256(paths: list[Path]) -> str:
    """One file's SHA-256; for several, the SHA-256 of their names and hashes in order (a file
    that does not exist counts as ``missing``, so its later appearance changes the hash)."""
    if len(paths) == 1 and paths[0].is_file():
        return file_sha256(paths[0])
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.name}:{file_sha256(path) if path.is_file() else 'missing'}\n".encode())
    return digest.hexdigest()


def _same_model(stored: dict[str, Any], current: dict[str, Any]) -> bool:
    if stored.get("backend") != current.get("backend"):
        return False
    if "sha256" in stored or "sha256" in current:
        return stored.get("sha256") == current.get("sha256")
    return stored.get("spec") == current.get("spec")


def _describe_model(record: dict[str, Any]) -> str:
    if "sha256" in record:
        return f"{record.get('path')} (sha256 {str(record['sha256'])[:12]}, backend {record.get('backend')})"
    return f"{record.get('spec')} (backend {record.get('backend')})"


class PredictionManifest:
    """The ``predictions.json`` of one output folder.

    Args:
        folder: The output folder.
        model: :func:`model_record` of the run's model.
        options: The run's inference options, resolved for its model (``tta`` not ``"checkpoint"``).
        inputs: Finished inputs by resolved path: ``{"path", "sha256", "outputs"}``.
        flush_interval_s: See :data:`FLUSH_INTERVAL_S` (0 writes after every input).
        failed: Failed inputs by resolved path: ``{"path", "sha256", "error"}``.
    """

    def __init__(
        self,
        folder: Path,
        model: dict[str, Any],
        options: InferenceOptions,
        inputs: dict[str, dict[str, Any]] | None = None,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        failed: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        if options.tta == TTA_FROM_CHECKPOINT:
            raise InferenceError(
                "internal: a predictions manifest records resolved options; call options.resolved(meta) first"
            )
        self.folder = Path(folder)
        self.model = dict(model)
        self.options = options
        self.inputs: dict[str, dict[str, Any]] = dict(inputs or {})
        self.failed: dict[str, dict[str, Any]] = dict(failed or {})
        self._writer_of = {
            str(name): key for key, entry in self.inputs.items() for name in entry.get("outputs", [])
        }
        self.flush_interval_s = flush_interval_s
        self._dirty = False
        self._last_flush = 0.0

    @property
    def path(self) -> Path:
        """``<folder>/predictions.json``."""
        return self.folder / MANIFEST_NAME

    @classmethod
    def load(cls, folder: Path) -> PredictionManifest | None:
        """The manifest stored in ``folder``, or None when there is none.

        Raises:
            ConfigError: The file is not a segflow predictions manifest (names it).
        """
        path = Path(folder) / MANIFEST_NAME
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(
                f"{path} is not a readable predictions manifest ({err}); use --overwrite"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
            raise ConfigError(
                f"{path} is not a segflow predictions manifest (no 'inputs' list); use --overwrite"
            )
        if not isinstance(data.get("model"), dict):
            raise ConfigError(f"{path} has no 'model' object; use --overwrite")
        try:
            options = InferenceOptions.from_json(data.get("options"), source=f"{path} options")
        except InferenceError as err:  # options of another segflow version
            raise ConfigError(f"{err}; use --overwrite") from None
        inputs = _by_path(data["inputs"])
        failed_items = data.get("failed")
        failed = _by_path(failed_items if isinstance(failed_items, list) else [])
        return cls(Path(folder), data["model"], options, inputs, failed=failed)

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON content."""
        from segflow import __version__

        content: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "segflow_version": __version__,
            "model": self.model,
            "options": self.options.to_json(),
            "inputs": list(self.inputs.values()),
        }
        if self.failed:
            content["failed"] = list(self.failed.values())
        return content

    def begin(self) -> None:
        """Writes the manifest at the start of the run (call it once the model has loaded).

        From then on the folder holds a manifest, so a run killed before its first finished
        input can still be resumed.
        """
        self.flush()

    def flush(self) -> None:
        """Writes the manifest now (atomically)."""
        with atomic_write(self.path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=1) + "\n", encoding="utf-8")
        self._dirty = False
        self._last_flush = time.monotonic()

    def close(self) -> None:
        """Writes any finished input not yet on disk; a run that finished nothing leaves no manifest.

        So a run that failed on its first input (a bad file, say) leaves the folder as it found
        it, and the corrected rerun needs no flag. A manifest holding failure records
        (:meth:`record_failure`) is kept: it is where the errors are.
        """
        if not self.inputs and not self.failed:
            self.path.unlink(missing_ok=True)
        elif self._dirty or not self.path.exists():
            self.flush()

    def is_finished(self, input_path: str | Path, sha256: str) -> bool:
        """True when ``input_path`` with these bytes is listed and all its outputs exist."""
        entry = self.inputs.get(input_key(input_path))
        if entry is None or entry.get("sha256") != sha256:
            return False
        return all((self.folder / name).is_file() for name in entry.get("outputs", []))

    def record(self, input_path: str | Path, sha256: str, outputs: Iterable[Path]) -> None:
        """Lists a finished input and its outputs; flushes at most once per ``flush_interval_s``.

        An earlier input whose outputs were just overwritten (another file with the same stem)
        is no longer finished, so it is dropped from the manifest.
        """
        names = []
        for output in outputs:
            output = Path(output)
            names.append(output.name if output.parent.resolve() == self.folder.resolve() else str(output))
        key = input_key(input_path)
        for name in names:
            earlier = self._writer_of.get(name)
            if earlier is not None and earlier != key:
                for stale in self.inputs.pop(earlier, {}).get("outputs", []):
                    self._writer_of.pop(str(stale), None)
            self._writer_of[name] = key
        self.inputs[key] = {"path": key, "sha256": sha256, "outputs": names}
        self.failed.pop(key, None)
        self._changed()

    def record_failure(self, input_path: str | Path, sha256: str, error: str) -> None:
        """Lists an input that failed, with its error (one line); flushes like :meth:`record`.

        A failed input is not finished (:meth:`is_finished`), so ``resume`` predicts it again; an
        earlier finished record of the same input is dropped (its outputs may be partial).
        """
        key = input_key(input_path)
        for stale in self.inputs.pop(key, {}).get("outputs", []):
            self._writer_of.pop(str(stale), None)
        self.failed[key] = {"path": key, "sha256": sha256, "error": " ".join(str(error).split())}
        self._changed()

    def keep_failures_of(self, inputs: Iterable[str | Path]) -> None:
        """Drops the failure records of inputs not among ``inputs`` (a resumed run given fewer
        inputs, say without a broken file): the manifest lists failures of this run's inputs only.
        Finished records stay (their outputs are still in the folder)."""
        keys = {input_key(path) for path in inputs}
        dropped = [key for key in self.failed if key not in keys]
        for key in dropped:
            del self.failed[key]
        if dropped:
            self._dirty = True

    def _changed(self) -> None:
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def output_names(self) -> set[str]:
        """Names (relative to the folder) of every output the manifest lists."""
        return {str(name) for entry in self.inputs.values() for name in entry.get("outputs", [])}

    def check_same_run(self, model: dict[str, Any], options: InferenceOptions) -> None:
        """Refuses to resume with another model or other options (one line naming each difference).

        Fields that change only speed or memory (``tile_batch``, ``batch``) may differ.

        Raises:
            ConfigError: The model or an option differs from the manifest's.
        """
        self.check_same_model(model)
        self.check_same_options(options)

    def check_same_model(self, model: dict[str, Any]) -> None:
        """Refuses to resume with another model (by SHA-256 for a file).

        Raises:
            ConfigError: The model differs from the manifest's.
        """
        if not _same_model(self.model, model):
            raise ConfigError(
                f"--resume: {self.path} was written with model {_describe_model(self.model)}, not "
                f"{_describe_model(model)}; resume with that model, or pass --overwrite to start again"
            )

    def check_same_options(self, options: InferenceOptions) -> None:
        """Refuses to resume with other resolved options (one line naming each difference).

        Raises:
            ConfigError: An option other than ``tile_batch``/``batch`` differs.
        """
        differences = self.options.differences(options)
        if differences:
            raise ConfigError(
                f"--resume: the options differ from those in {self.path} ({'; '.join(differences)}); "
                "resume with the same options, or pass --overwrite to start again"
            )


def _by_path(items: list[Any]) -> dict[str, dict[str, Any]]:
    """Manifest records keyed by their ``path`` (records without a string path are skipped)."""
    return {
        str(item["path"]): item
        for item in items
        if isinstance(item, dict) and isinstance(item.get("path"), str)
    }


def planned_outputs(inputs: Iterable[str | Path]) -> set[str]:
    """Names segflow predict may write in its folder for ``inputs`` (``<stem><suffix>``)."""
    return {f"{input_stem(path)}{suffix}" for path in inputs for suffix in OUTPUT_SUFFIXES}


def open_prediction_dir(
    out: Path,
    inputs: Sequence[str | Path],
    model: dict[str, Any],
    options: InferenceOptions,
    overwrite: bool = False,
    resume: bool = False,
    flush_interval_s: float = FLUSH_INTERVAL_S,
    resolve: Callable[[InferenceOptions], InferenceOptions] | None = None,
) -> PredictionManifest:
    """Applies the output-folder rule for a prediction run and returns its manifest.

    Call it before loading the model: every refusal about the folder comes before any work.

    Args:
        out: Output folder.
        inputs: Input files of the run (their outputs are ``<out>/<stem>...``); fsspec URLs
            as strings. On ``resume``, failure records of inputs not among them are dropped.
        model: :func:`model_record` of the run's model.
        options: The run's options.
        overwrite: Remove what segflow owns in ``out`` first (see the module docstring).
        resume: Continue the run recorded in ``out``.
        flush_interval_s: See :data:`FLUSH_INTERVAL_S`.
        resolve: Resolves ``options`` for the run's model
            (:meth:`~segflow.inference.options.InferenceOptions.resolved`, e.g. from its metadata),
            called once the folder rule and, on ``resume``, the model identity have passed; the
            manifest records, and ``resume`` compares, the resolved options. None: ``options``
            are already resolved.

    Returns:
        The manifest to :meth:`~PredictionManifest.record` finished inputs in; on ``resume`` it
        holds the earlier run's inputs.

    Raises:
        ConfigError: Both flags; ``out`` is a file; ``out`` is not empty without a flag; an
            input would be overwritten by an output; ``resume`` without a manifest or with
            another model or other options.
    """
    if overwrite and resume:
        raise ConfigError("--overwrite and --resume exclude each other; pass one of them")
    out = Path(out)
    planned = planned_outputs(inputs)
    _refuse_inputs_as_outputs(out, inputs, planned)
    try:
        previous = PredictionManifest.load(out) if out.is_dir() else None
    except ConfigError:
        if resume:
            raise
        previous = None  # --overwrite removes it (it is ours by name); no flag: refused below
    owned = planned | {MANIFEST_NAME} | (previous.output_names() if previous is not None else set())
    protected = {Path(path).resolve() for path in inputs}

    def is_owned(entry: Path) -> bool:
        return entry.resolve() not in protected and (entry.name in owned or PARTIAL_MARK in entry.name)

    non_empty = out.is_dir() and any(out.iterdir())
    claim_output_dir(
        out,
        overwrite=overwrite,
        resume=resume,
        owned=is_owned,
        what="--out folder",
        hint="pass --overwrite to replace the outputs segflow wrote there, --resume to finish an "
        "interrupted run, or choose another folder",
    )
    if resume and non_empty:
        if previous is None:
            raise ConfigError(
                f"--resume: --out folder {out} holds no {MANIFEST_NAME}, so there is no run to resume; "
                "pass --overwrite instead, or choose another folder"
            )
        previous.check_same_model(model)
        options = resolve(options) if resolve is not None else options
        previous.check_same_options(options)
        previous.model, previous.options = model, options  # performance fields as given now
        previous.keep_failures_of(inputs)
        previous.flush_interval_s = flush_interval_s
        return previous
    options = resolve(options) if resolve is not None else options
    return PredictionManifest(out, model, options, flush_interval_s=flush_interval_s)


def _refuse_inputs_as_outputs(out: Path, inputs: Sequence[str | Path], planned: set[str]) -> None:
    """An input inside ``out`` named like an output would be overwritten or removed: refuse."""
    if not out.is_dir():
        return
    folder = out.resolve()
    for path in inputs:
        resolved = Path(path).resolve()
        if resolved.parent == folder and resolved.name in planned:
            raise ConfigError(
                f"input {path} is inside --out {out} and has the name of a prediction output; "
                "write the predictions to another folder"
            )
