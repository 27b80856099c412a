"""``segflow predict ... --ray``: batch inference over an archive on Ray Data.

The driver (the ``segflow predict`` process) expands the inputs and skips those its manifest
lists as finished, exactly as local prediction does (it hashes only the inputs the manifest
lists; the actors hash the others as they read them, so a fresh run over an archive does not
read every byte on the driver first). The rest become a Ray dataset of ``{"path"}`` rows, cut
into blocks of ``batch`` rows, mapped with
``Dataset.map_batches`` over a fixed pool of ``workers`` actors of :class:`PredictActor`:
each actor loads the model once (:class:`segflow.inference.predictor.Predictor`) and runs
:func:`segflow.inference.dispatch.predict_input`, the function local prediction runs, for
every path of a batch, writing the outputs itself into ``--out`` (large images go through the
streamed, tiled path inside the actor). Each row comes back with the outputs written or the
error of a failed input; the driver records it in ``predictions.json`` as it arrives, so a
killed job resumes with ``--resume``.

Failures: an input that raises (unreadable file, decode error, an option that cannot apply) is
returned as a failure row and the job goes on. An actor whose process dies is restarted by Ray
(:data:`ACTOR_RESTARTS`) and the batch it held is run again (:data:`TASK_RETRIES`); Ray Data
rebuilds the pool. Outputs are written atomically, so a rerun batch replaces any half-done work.

Inputs may also be fsspec URLs (``s3://bucket/tiles/*.png``, ``file:///data/a.png``) where
the filesystem's package (s3fs, gcsfs, ...) is installed on every node: the driver lists and
hashes them through fsspec and each actor copies its input to a local temporary file before
predicting it (the band readers need random access). The model file and ``--out`` must be at
the same path on every node (a shared filesystem); docs/ray.md describes a multi-node run.
``ray`` and ``fsspec`` are imported inside functions only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segflow.errors import ConfigError, DataError, InferenceError, SegflowError
from segflow.inference.manifest import HASH_CHUNK_BYTES, URL_MARK, input_key
from segflow.inference.options import InferenceOptions

ACTOR_CPUS = 1
"""Ray CPUs each actor reserves, and its intra-op threads: one single-threaded model per core
keeps actors from contending for threads, the usual best for many independent images on CPUs."""
ACTOR_RESTARTS = 3
"""Times Ray restarts an actor whose process died (``max_restarts``)."""
TASK_RETRIES = 3
"""Times Ray reruns a batch whose actor died while running it (``max_task_retries``). Finite, so
an input that kills its process every time ends the job instead of looping; the inputs
finished until then stay in the manifest."""
DEFAULT_RAY_BATCH = 1
"""Inputs per ``map_batches`` call: images differ in size, so each is its own forward pass;
a larger batch only amortises Ray's per-call overhead (scheduling, the result rows)."""
MAX_WORKERS = 4096
MAX_RAY_BATCH = 4096
LOCALHOST = "127.0.0.1"
_RAY_CLIENT_ADDRESS = re.compile(r"^ray://[^\s:/]+:\d+$")
_GCS_ADDRESS = re.compile(r"^[^\s:/]+:\d+$")
GLOB_CHARS = ("*", "?", "[")


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide a ``--ray`` prediction runs.

    Attributes:
        address: None starts a private local Ray on 127.0.0.1 (shut down at the end);
            ``"auto"`` joins the cluster this machine belongs to (``ray start``);
            ``"ray://host:port"`` connects through Ray Client; ``"host:port"`` is a GCS address.
        workers: Actors in the pool (each loads the model once and takes :data:`ACTOR_CPUS`).
        batch: Inputs per ``map_batches`` call.
    """

    address: str | None = None
    workers: int = 1
    batch: int = DEFAULT_RAY_BATCH

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ConfigError(f"--workers {self.workers} is outside [1, {MAX_WORKERS}]; give the actor count")
        if not 1 <= self.batch <= MAX_RAY_BATCH:
            raise ConfigError(
                f"--ray-batch {self.batch} is outside [1, {MAX_RAY_BATCH}]; give the inputs per Ray batch"
            )
        if self.address is not None and not _valid_address(self.address):
            raise ConfigError(
                f"--address {self.address!r} is not a Ray address; give auto, ray://HOST:PORT or HOST:PORT, "
                "or leave it out to start a local Ray"
            )


def _valid_address(address: str) -> bool:
    return address == "auto" or bool(_RAY_CLIENT_ADDRESS.match(address) or _GCS_ADDRESS.match(address))


@dataclass(frozen=True)
class RayResult:
    """The outcome of one input, as it streams back to the driver.

    Attributes:
        path: The input: a resolved local path, or an fsspec URL.
        sha256: Its SHA-256, as the actor read it (empty when it could not be read).
        outputs: The files written, labels first (empty when it failed).
        error: None, or the one-line error of a failed input.
    """

    path: str
    sha256: str
    outputs: list[Path]
    error: str | None


def is_url(item: str | Path) -> bool:
    """Whether an input is an fsspec URL (``s3://...``) rather than a local path."""
    return isinstance(item, str) and URL_MARK in item


def expand_url(item: str, suffixes: tuple[str, ...]) -> list[str]:
    """An fsspec URL of a file, a folder (its files, one level) or a glob -> file URLs, sorted.

    Args:
        item: The URL as given.
        suffixes: Lower-case name endings of the files to keep (a folder or glob keeps only these).

    Raises:
        ConfigError: No fsspec filesystem serves the URL's protocol (install its package).
        DataError: The URL does not exist, or matches no file with one of ``suffixes``.
    """
    import fsspec

    try:
        fs, root = fsspec.core.url_to_fs(item)
    except (ImportError, ValueError) as err:
        raise ConfigError(
            f"input {item}: no fsspec filesystem for it ({' '.join(str(err).split())}); install its "
            "package (s3fs, gcsfs, adlfs, ...)"
        ) from None
    if any(char in item for char in GLOB_CHARS):
        found = [path for path in fs.glob(root) if fs.isfile(path)]
    elif fs.isdir(root):
        found = [path for path in fs.ls(root, detail=False) if fs.isfile(path)]
    elif fs.isfile(root):
        found = [root]
    else:
        raise DataError(f"input {item} does not exist; give image files, folders or globs")
    files = sorted(fs.unstrip_protocol(path) for path in found if path.lower().endswith(suffixes))
    if not files:
        raise DataError(f"input {item} matches no image file ({', '.join(suffixes)})")
    return files


def url_sha256(url: str) -> str:
    """Hex SHA-256 of an fsspec URL's bytes, read in 1 MiB chunks.

    Raises:
        DataError: The URL cannot be read.
    """
    import fsspec

    digest = hashlib.sha256()
    try:
        with fsspec.open(url, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as err:
        raise DataError(f"input {url} cannot be read ({' '.join(str(err).split())})") from None
    return digest.hexdigest()


def _local_copy(url: str, folder: Path) -> Path:
    """Copies an fsspec URL into ``folder`` under its own file name (the outputs' stem)."""
    import fsspec

    target = folder / url.rstrip("/").rsplit("/", 1)[-1]
    with fsspec.open(url, "rb") as source, target.open("wb") as copy:
        shutil.copyfileobj(source, copy, HASH_CHUNK_BYTES)
    return target


class PredictActor:
    """The callable class of the actor pool: one Predictor per actor, the local per-input code.

    Args:
        model_path: Model file (the same path on every node).
        backend: Backend name, or None to choose by the file suffix.
        options: Resolved inference options (as the manifest records them).
        out: Output folder (the same path on every node).
        threads: Intra-op threads for ONNX Runtime (torch follows ``OMP_NUM_THREADS``, which
            Ray sets to the actor's CPUs).
    """

    def __init__(
        self, model_path: str, backend: str | None, options: InferenceOptions, out: str, threads: int
    ) -> None:
        from segflow.inference.backends import create_backend
        from segflow.inference.predictor import Predictor

        self.predictor = Predictor(create_backend(backend, Path(model_path), threads=threads), options)
        self.out = Path(out)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Hashes and predicts each path of ``batch`` (column ``path``) into the output folder.

        Returns:
            Columns ``path``, ``sha256`` (empty if unreadable), ``outputs`` (JSON list of the
            paths written) and ``error`` (empty, or the one-line error of that input).
        """
        digests, outputs, errors = [], [], []
        for path in batch["path"]:
            state = {"sha256": ""}
            try:
                written = self._predict(str(path), state)
            except Exception as err:  # one bad input must not end the job: the manifest records it
                outputs.append("[]")
                errors.append(error_line(err))
            else:
                outputs.append(json.dumps([str(p) for p in written]))
                errors.append("")
            digests.append(state["sha256"])
        return {
            "path": np.asarray(batch["path"], dtype=object),
            "sha256": np.asarray(digests, dtype=object),
            "outputs": np.asarray(outputs, dtype=object),
            "error": np.asarray(errors, dtype=object),
        }

    def _predict(self, path: str, state: dict[str, str]) -> list[Path]:
        """One input, hashed into ``state["sha256"]`` first: a local path as it is, a URL
        through a local temporary copy."""
        from segflow.inference.dispatch import predict_input
        from segflow.inference.manifest import input_sha256

        if not is_url(path):
            state["sha256"] = input_sha256(path)
            return predict_input(self.predictor, Path(path), self.out)
        with tempfile.TemporaryDirectory(prefix="segflow-ray-") as folder:
            local = _local_copy(path, Path(folder))
            state["sha256"] = input_sha256(local)
            try:
                return predict_input(self.predictor, local, self.out)
            except Exception as err:  # name the URL, not the temporary copy
                raise _InputFailed(error_line(err).replace(str(local), path)) from None


class _InputFailed(SegflowError):
    """An input's error, already one line."""


def error_line(err: BaseException) -> str:
    """One line for a failed input: a segflow error's message, else ``Type: message``."""
    message = " ".join(str(err).split())
    return message if isinstance(err, SegflowError) else f"{type(err).__name__}: {message}"


@contextmanager
def ray_session(options: RayOptions) -> Iterator[None]:
    """Ray for the job: the one already initialised in this process, a cluster at
    ``options.address``, or a private local one on 127.0.0.1 (shut down on exit).

    Everything it refuses is refused before the caller touches ``--out`` (enter it before
    :func:`segflow.inference.manifest.open_prediction_dir` clears anything with ``--overwrite``).

    Raises:
        ConfigError: ``workers`` exceeds this machine's CPUs (private local Ray); nothing listens
            at ``options.address`` (a TCP probe of :data:`PROBE_TIMEOUT_S`) or Ray cannot connect
            there; the cluster has fewer CPUs than ``workers * ACTOR_CPUS`` (the pool would wait
            forever).
    """
    import ray

    started = False
    if not ray.is_initialized():
        _start_or_connect(ray, options)
        started = True
    try:
        total = ray.cluster_resources().get("CPU", 0.0)
        if total < options.workers * ACTOR_CPUS:
            raise ConfigError(
                f"--workers {options.workers} needs {options.workers * ACTOR_CPUS} Ray CPUs but the "
                f"cluster has {total:g}; lower --workers or add nodes"
            )
        yield
    finally:
        if started:
            ray.shutdown()


PROBE_TIMEOUT_S = 5.0
"""Seconds the TCP probe of ``--address HOST:PORT`` / ``ray://HOST:PORT`` waits for a connection
(Ray itself retries for minutes when nothing listens there)."""
QUIET_LOGGERS = {
    # "Token authentication is enabled for this Ray cluster ..." on every start or connect
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
    # Ray Data's own notices and its "Full stack trace" dumps: the CLI prints one error line
    "ray.data": logging.ERROR,
    "ray.data.exceptions": logging.CRITICAL,
    "ray.data._internal.execution.operators.actor_pool_map_operator": logging.CRITICAL,
}
"""Loggers of Ray set to these levels in the driver (never on the cluster's processes)."""


def _quiet_ray_logs() -> None:
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)


def probe_address(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Refuses a ``HOST:PORT`` or ``ray://HOST:PORT`` address where nothing accepts a TCP
    connection within ``timeout_s`` (``auto`` is left to Ray).

    Raises:
        ConfigError: The connection is refused, times out or the host does not resolve.
    """
    import socket

    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as err:
        reason = (
            "timed out" if isinstance(err, TimeoutError) else " ".join(str(err).split()) or type(err).__name__
        )
        raise ConfigError(
            f"--address {address}: nothing accepts connections there ({reason}); start Ray with "
            "`ray start --head` (the GCS port, 6379 by default; Ray Client: ray://HOST:10001), "
            "or leave --address out to start a local Ray"
        ) from None


def _start_or_connect(ray: Any, options: RayOptions) -> None:
    _quiet_ray_logs()
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    if options.address is None:
        cpus = os.cpu_count() or 1
        if options.workers * ACTOR_CPUS > cpus:
            raise ConfigError(
                f"--workers {options.workers} is more than the {cpus} CPU(s) of this machine (each actor "
                f"takes {ACTOR_CPUS}); give --workers {cpus // ACTOR_CPUS} or fewer, or join a larger "
                "cluster with --address"
            )
        ray.init(address="local", num_cpus=cpus, _node_ip_address=LOCALHOST, include_dashboard=False, **quiet)
        return
    probe_address(options.address)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Ray Client connection timed out")
            ray.init(address=options.address, **quiet)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as err:
        raise ConfigError(
            f"--address {options.address}: cannot connect to Ray ({' '.join(str(err).split())[:200]}); "
            "start it with `ray start --head`, or leave --address out to start a local Ray"
        ) from None


class RayJobError(InferenceError):
    """The Ray job failed as a whole; ``reason`` is Ray's error in one line (the caller says
    where the inputs finished so far are)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the Ray job failed: {reason}")
        self.reason = reason


def predict_on_ray(
    model_path: Path,
    backend: str | None,
    options: InferenceOptions,
    inputs: list[str | Path],
    out: Path,
    ray_options: RayOptions,
) -> Iterator[RayResult]:
    """Predicts ``inputs`` on an actor pool and yields each input's result as it finishes.

    Call it inside :func:`ray_session`. Results arrive in completion order, not input order.

    Args:
        model_path: Model file, readable at this path on every node.
        backend: Backend name, or None to choose by suffix.
        options: Resolved inference options.
        inputs: Local paths or fsspec URLs of the inputs to predict.
        out: Output folder, writable at this path on every node.
        ray_options: Pool size and batch size.

    Raises:
        RayJobError: The job failed as a whole (every actor failed to load the model, or a
            batch still failed after :data:`TASK_RETRIES` reruns); names the Ray error.
    """
    import ray
    import ray.data

    if not inputs:
        return
    _quiet_ray_logs()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI shows its own; Ray Data's INFO lines are noise here
    context.print_on_execution_start = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled" notice
    rows = [{"path": input_key(path)} for path in inputs]
    blocks = math.ceil(len(rows) / ray_options.batch)
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    with warnings.catch_warnings():  # max_restarts/max_task_retries have no named parameter yet
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        predicted = dataset.map_batches(
            PredictActor,
            batch_size=ray_options.batch,
            batch_format="numpy",
            # no more actors than blocks: an actor without a block would only load the model
            compute=ray.data.ActorPoolStrategy(size=min(ray_options.workers, blocks)),
            num_cpus=ACTOR_CPUS,
            fn_constructor_kwargs={
                "model_path": str(Path(model_path).resolve()),
                "backend": backend,
                "options": options,
                "out": str(Path(out).resolve()),
                "threads": ACTOR_CPUS,
            },
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=TASK_RETRIES,
        )
    try:
        with warnings.catch_warnings():  # Ray Data's notice when the pool outnumbers the blocks
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")
            for row in predicted.iter_rows():
                yield _result(row)
    except ray.exceptions.RayError as err:
        raise RayJobError(_first_line(err)) from None


def _result(row: dict[str, Any]) -> RayResult:
    error = str(row["error"]) or None
    return RayResult(
        path=str(row["path"]),
        sha256=str(row["sha256"]),
        outputs=[Path(p) for p in json.loads(str(row["outputs"]))],
        error=error,
    )


def _first_line(err: BaseException) -> str:
    """The line of a Ray error that says what failed (its last); a segflow error (an actor's
    constructor raising CheckpointError, say) as its message alone, as :func:`error_line` gives it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    line = lines[-1] if lines else type(err).__name__
    if line.startswith("segflow.errors.") and ": " in line:
        line = line.split(": ", 1)[1]
    return line[:300].rstrip(".")


class _MetadataOnly:
    """A backend that carries only metadata, so a Predictor checks the options without weights."""

    def __init__(self, meta: Any) -> None:
        self.meta = meta

    def forward(self, x: np.ndarray) -> np.ndarray:
        from segflow.errors import InferenceError

        raise InferenceError("internal: the metadata-only backend cannot run")


def check_model_options(model_path: Path, backend: str | None, options: InferenceOptions) -> None:
    """Checks in the driver, before any Ray work, what each actor would refuse at load time:
    the backend name, the model's metadata and the options against it (tile against its stride,
    threshold on a binary model), reading only the metadata.

    Raises:
        ConfigError: Unknown backend (lists the valid names).
        CheckpointError: The model file is missing or not a segflow model.
        InferenceError: An option does not suit the model.
    """
    from segflow.inference.backends import BACKENDS, backend_name_for, read_model_meta
    from segflow.inference.predictor import Predictor

    BACKENDS.get(backend or backend_name_for(model_path))
    Predictor(_MetadataOnly(read_model_meta(model_path)), options)


def check_model_loads(model_path: Path, backend: str | None, options: InferenceOptions) -> None:
    """Loads the model once in the driver, as each actor will (the same backend and options),
    so that what an actor would refuse (a missing file, a backend the file does not suit, such
    as ``onnx-int8`` without its ``.int8.onnx``, an option the model refuses) is one line before
    any Ray work or any change to ``--out``.

    Raises:
        ConfigError: Unknown backend.
        CheckpointError: The model file is missing, not a segflow model, or lacks what the
            backend needs.
        InferenceError: An option does not suit the model.
    """
    from segflow.inference.predictor import Predictor

    check_model_options(model_path, backend, options)  # cheap checks first, by metadata only
    Predictor.from_path(model_path, options, backend=backend)
