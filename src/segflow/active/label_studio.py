"""Label Studio round trip: push uncertain images with the model's guess, pull the corrected labels.

``segflow label push`` / ``segflow label pull`` talk to a Label Studio server over its REST API
(``Authorization: Token <key>``, the key read from :data:`API_KEY_ENV`, never logged). The brush
RLE, the labelling config and the export reader are :mod:`segflow.annotation.formats.label_studio`'s;
this module only moves tasks and files.

Push (:func:`push_ranking`, :func:`push_capture`):

- The project is found by its exact title, else created with a ``BrushLabels`` config of the
  model's classes and colours (:func:`~segflow.annotation.formats.label_studio.label_config`).
  The config's colours only show the brushes (labels are read back by name): a near-black class
  colour (brightest channel under :data:`DARK_CHANNEL`) is shown in a visible one instead
  (:func:`display_palette`); the model's palette travels in the task data (:data:`PALETTE_KEY`).
  An existing project whose labels differ from the model's classes is refused.
- Each image file is uploaded to the server (``POST /api/projects/<id>/import?commit_to_project=false``,
  multipart), so the server serves it, then one task per image is imported with the model's
  prediction as a pre-annotation: one ``brushlabels`` result per predicted class, ``model_version``
  set. The task data records where it came from: :data:`NAME_KEY`, :data:`SHA_KEY` (the file's
  SHA-256), :data:`MODEL_KEY`, :data:`PALETTE_KEY`; a ranking push adds :data:`SCORE_KEY`,
  :data:`RANK_KEY` and :data:`RANKING_KEY` (the ranking CSV's absolute path), a capture push
  :data:`CONFIDENCE_KEY` (the served prediction's confidence, when the capture records one),
  :data:`CAPTURE_ID_KEY` and :data:`CAPTURE_KEY` (the queue folder).
- Idempotent: an image whose SHA-256 is already in the project is skipped. Another file under
  a name the project already holds is refused (the pulled dataset names samples by file name).

Pull (:func:`pull`) exports the project's finished tasks (those with an annotation; Label
Studio's JSON export), downloads their images, writes them as a Label Studio export folder and
converts it with :func:`segflow.annotation.convert.convert` into a ``folder`` dataset
(``images/<split>/``, ``masks/<split>/`` index PNGs, ``data.yaml``) plus ``pull.json``. The whole
output is built in a hidden sibling folder and renamed into place. Pixels no brush covers are
not a class: with ``unlabelled="auto"`` (default) they become ``ignore_index``, except when class
0 is ``background`` (push leaves background unpainted, so there unpainted means background).

Cost bounds: at most :data:`MAX_TOP` images per push, :data:`MAX_IMAGE_MB` per image, uploads in
batches of at most :data:`UPLOAD_BATCH` files and :data:`UPLOAD_BATCH_MB`, a timeout on every request
(:data:`REQUEST_TIMEOUT_S`), answers of at most :data:`MAX_ANSWER_MB` (exports :data:`MAX_EXPORT_MB`,
downloaded images :data:`MAX_IMAGE_MB`), read as streams and cut off at the limit.

Trust: the server's answers are input. Every file name pull writes comes from a task's
``/data/upload/...`` reference and must be a relative path without ``..`` that stays inside the
export folder (:func:`upload_relative_path`); other task data (``segflow_name``, ...) is never
used as a path. Secrets: the key is checked to be a header-safe token (:func:`check_api_key`),
a URL with a user or password in it is refused (:func:`check_url`), and every message built from
an ``httpx`` error or a server answer has the key scrubbed out.
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
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

import httpx
import numpy as np

from segflow.annotation.formats.label_studio import (
    DATA_KEY,
    IGNORE_LABEL,
    LABEL_CONFIG_FILE,
    UPLOAD_PATH,
    build_task,
    label_config,
)
from segflow.annotation.shapes import BACKGROUND_LABEL
from segflow.constants import IGNORE_INDEX, default_palette
from segflow.errors import ConfigError, DataError, SegflowError
from segflow.io_utils import atomic_write, claim_output_dir

API_KEY_ENV = "LABEL_STUDIO_API_KEY"
TOOLS = ("label-studio",)
"""Annotation tools ``--to`` / ``--from`` name (one for now)."""
REQUEST_TIMEOUT_S = 120.0
"""Per request; an upload batch or an export of a large project is the slow one."""
MAX_TOP = 1000
"""Most images one push uploads (``--top``)."""
MAX_IMAGE_MB = 50.0
UPLOAD_BATCH = 10
UPLOAD_BATCH_MB = 100.0
"""Files and bytes per upload request (Label Studio caps one request at 250 MB; the files of a
batch are held in memory while it is sent)."""
MAX_EXPORT_MB = 512.0
MAX_ANSWER_MB = 64.0
"""Most bytes of any other JSON answer (a page of projects or tasks, an upload listing)."""
PAGE_SIZE = 100
MAX_PAGES = 1000
"""Most pages of projects or tasks read (100 000 tasks)."""
UPLOADABLE = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif")
"""Image suffixes Label Studio accepts as uploads (its ``SUPPORTED_EXTENSIONS``)."""
NAME_KEY = "segflow_name"
SHA_KEY = "segflow_sha256"
SCORE_KEY = "segflow_score"
RANK_KEY = "segflow_rank"
RANKING_KEY = "segflow_ranking"
MODEL_KEY = "segflow_model"
PALETTE_KEY = "segflow_palette"
"""The model's ``[[r, g, b], ...]`` (the labelling config may show other colours)."""
CONFIDENCE_KEY = "segflow_confidence"
CAPTURE_ID_KEY = "segflow_capture_id"
CAPTURE_KEY = "segflow_capture"
UNLABELLED_MODES = ("auto", "background", "ignore")
"""What pull writes for pixels no brush covers (:func:`pull`)."""
DARK_CHANNEL = 64
"""A class colour whose brightest channel is below this is near-black: invisible as a brush on
dark images, so the labelling config shows it in a :data:`VISIBLE_COLOURS` one."""
VISIBLE_COLOURS = ((255, 0, 255), (0, 255, 255), (255, 255, 0), (255, 128, 0), (128, 255, 0), (255, 128, 192))
"""Display colours for near-black classes, the first not already shown being taken."""
PULL_FILE = "pull.json"
EXPORT_FILE = "label_studio_export.json"
"""The raw export, kept in the pulled folder for audit."""
DEFAULT_SPLIT = "train"
"""Pulled labels are new training data."""
SHOWN_CHARS = 200
MB = 1024 * 1024
MAX_PORT = 65535
HIDDEN = "***"
"""Replaces the key in any message built from an error or an answer."""
KEY_HELP = "(Label Studio: Account & Settings > Access Token)"
_USERINFO = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@")
"""A URL whose authority holds ``user[:password]@`` (found before any parsing, so never echoed)."""
HTTPX_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError)
"""Every error an ``httpx`` request raises (``InvalidURL`` and ``StreamError`` are not ``HTTPError``)."""

Log = Callable[[str], None]
logger = logging.getLogger(__name__)


class LabelStudioError(SegflowError, RuntimeError):
    """Label Studio refused or failed a request, or cannot be reached (one line)."""


# -- inputs --------------------------------------------------------------------------------


def api_key_from_env() -> str:
    """The API key in :data:`API_KEY_ENV` (surrounding whitespace dropped), checked by
    :func:`check_api_key`.

    Raises:
        ConfigError: The variable is unset or blank, or not a header-safe token (the message
            never shows the key).
    """
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(f"{API_KEY_ENV} is not set; export your Label Studio access token in it {KEY_HELP}")
    return check_api_key(key)


def check_api_key(key: str) -> str:
    """Refuses a key that cannot be sent as ``Authorization: Token <key>``.

    A key is printable ASCII without whitespace (Label Studio's tokens are hex or JWT text): a
    newline, a control or a non-ASCII character would make ``httpx`` fail with the header, key
    included, in its message.

    Raises:
        ConfigError: Empty or not such a token; the message names :data:`API_KEY_ENV` and
            never the key or its characters.
    """
    if not key:
        raise ConfigError(f"{API_KEY_ENV} is not set; export your Label Studio access token in it {KEY_HELP}")
    if not all(0x21 <= ord(char) <= 0x7E for char in key):  # noqa: PLR2004 - printable ASCII
        raise ConfigError(
            f"{API_KEY_ENV} holds whitespace, a control or a non-ASCII character; set it to the access "
            f"token alone {KEY_HELP}"
        )
    return key


def check_tool(tool: str, option: str) -> None:
    """Refuses an annotation tool other than those of :data:`TOOLS`.

    Raises:
        ConfigError: Names ``option`` and the valid tools.
    """
    if tool not in TOOLS:
        raise ConfigError(
            f"{option} {tool!r} is not a supported annotation tool; choose one of {', '.join(TOOLS)}"
        )


def check_url(url: str) -> str:
    """A Label Studio base URL, without its trailing ``/``.

    Raises:
        ConfigError: A user or password in it (refused before parsing, and not echoed: the key
            goes in :data:`API_KEY_ENV`); not ``http://`` or ``https://`` with a host and nothing
            after the path; malformed (``http://[::1``); a port outside 1..65535; whitespace or
            control characters.
    """
    text = url.strip()
    if _USERINFO.match(text):
        raise ConfigError(
            "the Label Studio URL holds a user name or password (user:...@host); remove it and put the "
            f"access token in {API_KEY_ENV}"
        )
    example = "give its base URL, e.g. http://127.0.0.1:8080"
    shown = repr(url[:SHOWN_CHARS])
    if any(char.isspace() or not char.isprintable() for char in text):
        raise ConfigError(f"Label Studio URL {shown} holds whitespace or control characters; {example}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as err:  # an unclosed [IPv6 bracket, a port out of range or not a number
        raise ConfigError(f"Label Studio URL {shown} is malformed ({err}); {example}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"Label Studio URL {shown} is not an http(s) address; {example}")
    if port is not None and not 1 <= port <= MAX_PORT:
        raise ConfigError(f"Label Studio URL {shown} has port {port}, outside 1..{MAX_PORT}; {example}")
    return text.rstrip("/")


def upload_relative_path(reference: str, task: str) -> Path:
    """The relative file path pull saves a task's ``/data/upload/...`` image under.

    The path is the reference's path after :data:`UPLOAD_PATH`, percent-escapes decoded (where
    the export reader of :mod:`segflow.annotation.formats.label_studio` looks for it).

    Args:
        reference: The task's ``data.image``.
        task: Names the task in the message (``project 'p' task 7``).

    Raises:
        DataError: Not an upload reference, or its path is empty, absolute, has ``.``/``..`` or
            empty parts, backslashes or control characters (one line naming task and reference).
    """
    shown = repr(reference[:SHOWN_CHARS])
    path = unquote(urlsplit(reference).path) if reference.startswith(UPLOAD_PATH) else ""
    if not path.startswith(UPLOAD_PATH):
        raise DataError(
            f"{task}: image {shown} was not uploaded to Label Studio; pull handles uploaded images "
            "(segflow label push)"
        )
    relative = path[len(UPLOAD_PATH) :]
    parts = relative.split("/")
    if (
        not relative
        or any(part in ("", ".", "..") for part in parts)
        or "\\" in relative
        or any(not char.isprintable() for char in relative)
        or Path(relative).is_absolute()
    ):
        raise DataError(
            f"{task}: image reference {shown} is not a plain path under {UPLOAD_PATH} (empty, '..', "
            "absolute or control characters); refusing to write it, fix the task in Label Studio"
        )
    return Path(*parts)


def inside(folder: Path, relative: Path, task: str, reference: str) -> Path:
    """``folder / relative``, checked to resolve inside ``folder`` (symbolic links followed).

    Raises:
        DataError: It resolves outside ``folder`` (names the task and the reference).
    """
    target = folder / relative
    if not target.resolve().is_relative_to(folder.resolve()):
        raise DataError(
            f"{task}: image reference {reference[:SHOWN_CHARS]!r} would be written outside {folder}; "
            "refusing it, fix the task in Label Studio"
        )
    return target


def check_top(top: int | None, available: int, what: str) -> int:
    """How many images a push takes: ``top`` (1..MAX_TOP), or all when ``top`` is None.

    Raises:
        ConfigError: ``top`` out of range, or None while ``available`` exceeds :data:`MAX_TOP`.
    """
    if top is None:
        if available > MAX_TOP:
            raise ConfigError(
                f"{what} holds {available} images; pass --top K (at most {MAX_TOP}) to push a part"
            )
        return available
    if not 1 <= top <= MAX_TOP:
        raise ConfigError(f"--top {top} is out of range; push 1 to {MAX_TOP} images at a time")
    return min(top, available)


# -- the REST client -----------------------------------------------------------------------


class LabelStudioClient:
    """The few Label Studio REST calls push and pull need (a context manager).

    Args:
        url: Base URL of the server (``http://127.0.0.1:8080``).
        api_key: Access token, sent as ``Authorization: Token <key>`` and never logged.
        timeout: Seconds per request: ``httpx``'s connect/read/write timeout, and the most a
            whole answer may take to stream in.

    Every failure is a one-line :class:`LabelStudioError` (or ``ConfigError`` for a refused key)
    naming the URL and what to do.
    """

    def __init__(self, url: str, api_key: str, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.url = check_url(url)
        self._key = check_api_key(api_key)
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Token {api_key}"}, timeout=timeout
        )

    def _scrub(self, text: str) -> str:
        """``text`` with the key replaced by :data:`HIDDEN` (messages built from errors and answers)."""
        return text.replace(self._key, HIDDEN)

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._http.close()

    def request(
        self, method: str, path: str, limit_mb: float = MAX_ANSWER_MB, **kwargs: Any
    ) -> httpx.Response:
        """One request; a 2xx answer, else one line naming the call and the server's reason.

        The answer is read as a stream and refused past ``limit_mb``; the returned response
        holds the (decoded) body.

        Raises:
            ConfigError: 401/403: the key was refused.
            LabelStudioError: No connection, a timeout, an answer over ``limit_mb`` or any other
                non-2xx answer.
        """
        deadline = time.monotonic() + self._timeout
        try:
            sent = self._http.build_request(method, path, **kwargs)
            answer = self._http.send(sent, stream=True)
            try:
                body = bytearray()
                for chunk in answer.iter_bytes():
                    self._check_deadline(deadline, method, path)
                    body += chunk
                    if len(body) > limit_mb * MB:
                        raise LabelStudioError(
                            f"Label Studio at {self.url} answered {method} {path[:SHOWN_CHARS]} with over "
                            f"{limit_mb:.0f} MB; not read (not Label Studio? split large projects)"
                        )
            finally:
                answer.close()
        except HTTPX_ERRORS as err:
            raise self._unreachable(err, method, path) from None
        kept = [(k, v) for k, v in answer.headers.items() if k.lower() not in _BODY_HEADERS]
        answer = httpx.Response(answer.status_code, headers=kept, content=bytes(body), request=sent)
        if not answer.is_success:
            self._refuse(answer, method, path)
        return answer

    def _check_deadline(self, deadline: float, method: str, path: str) -> None:
        """Ends a request whose answer still streams after the timeout (``httpx``'s timeout is
        per read, so a server sending a byte at a time would never hit it)."""
        if time.monotonic() > deadline:
            raise LabelStudioError(
                f"Label Studio at {self.url} did not finish answering {method} {path[:SHOWN_CHARS]} within "
                f"{self._timeout:.0f} s; check the server, then retry"
            )

    def _unreachable(self, err: Exception, method: str, path: str) -> LabelStudioError:
        """The one-line error of a request that got no answer (timeout, no connection, a bad
        request), the key scrubbed out of ``httpx``'s message."""
        if isinstance(err, httpx.TimeoutException):
            return LabelStudioError(
                f"Label Studio at {self.url} did not answer {method} {path[:SHOWN_CHARS]} within "
                f"{self._http.timeout.read:.0f} s; check the server, then retry"
            )
        detail = self._scrub(" ".join(str(err).split()))[:SHOWN_CHARS]
        return LabelStudioError(
            f"cannot reach Label Studio at {self.url} ({type(err).__name__}: {detail}); start the server "
            "or check the URL"
        )

    def _refuse(self, answer: httpx.Response, method: str, path: str) -> NoReturn:
        """Raises the one-line error of a non-2xx answer (ConfigError for a refused key)."""
        if answer.status_code in (401, 403):  # noqa: PLR2004
            raise ConfigError(
                f"Label Studio at {self.url} refused the key in {API_KEY_ENV} ({answer.status_code}); set it "
                "to a valid access token (legacy tokens must be enabled on the server)"
            )
        detail = self._scrub(" ".join(answer.text.split()))[:SHOWN_CHARS]
        raise LabelStudioError(
            f"Label Studio at {self.url} answered {answer.status_code} to {method} {path[:SHOWN_CHARS]}: "
            f"{detail}"
        )

    def json(self, method: str, path: str, limit_mb: float = MAX_ANSWER_MB, **kwargs: Any) -> Any:
        """:meth:`request` and its JSON body.

        Raises:
            LabelStudioError: The answer is not JSON (not a Label Studio server?).
        """
        answer = self.request(method, path, limit_mb, **kwargs)
        try:
            return answer.json()
        except ValueError:
            raise LabelStudioError(
                f"{self.url}{path} answered with something other than JSON; is {self.url} a Label Studio "
                "server?"
            ) from None

    # -- projects
    def find_project(self, title: str) -> dict[str, Any] | None:
        """The project titled exactly ``title`` (None if there is none)."""
        page = 1
        while True:
            answer = self.json(
                "GET", "/api/projects", params={"title": title, "page": page, "page_size": PAGE_SIZE}
            )
            for row in self._rows(answer, "results", "GET /api/projects"):
                if row.get("title") == title:
                    _project_id(row, self.url)
                    return row
            if not isinstance(answer, dict) or not answer.get("next") or page >= MAX_PAGES:
                return None
            page += 1

    def create_project(self, title: str, config: str, description: str) -> dict[str, Any]:
        """Creates a project with a labelling config (XML text)."""
        body = {"title": title, "label_config": config, "description": description}
        answer = self.json("POST", "/api/projects", json=body)
        if not isinstance(answer, dict):
            raise self._unexpected("POST /api/projects")
        _project_id(answer, self.url)
        return answer

    def project_tasks(self, project_id: int) -> Iterator[dict[str, Any]]:
        """Every task of the project (data and id), page by page."""
        page = 1
        while True:
            params = {"project": project_id, "page": page, "page_size": PAGE_SIZE, "fields": "all"}
            try:
                answer = self.json("GET", "/api/tasks", params=params)
            except LabelStudioError as err:
                if " answered 404 " in str(err) and page > 1:  # past the last page
                    return
                raise
            rows = self._rows(answer, "tasks", "GET /api/tasks")
            yield from rows
            total = answer.get("total", 0) if isinstance(answer, dict) else 0
            if not rows or not isinstance(total, int) or page * PAGE_SIZE >= total or page >= MAX_PAGES:
                return
            page += 1

    def _rows(self, answer: Any, key: str, call: str) -> list[dict[str, Any]]:
        """The objects of a list answer, or of ``answer[key]`` (a paged answer).

        Raises:
            LabelStudioError: Not a list of objects (not a Label Studio server?).
        """
        rows = answer.get(key, []) if isinstance(answer, dict) else answer
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise self._unexpected(call)
        return rows

    def _unexpected(self, call: str) -> LabelStudioError:
        return LabelStudioError(
            f"Label Studio at {self.url} answered {call} with an unexpected body; is it a Label Studio "
            "server (version 1.x)?"
        )

    # -- files and tasks
    def upload_files(self, project_id: int, paths: Sequence[tuple[Path, str]]) -> list[str]:
        """Uploads image files without making tasks; returns their ``/data/upload/...`` references.

        Args:
            project_id: The project.
            paths: ``(file, name to upload it as)`` pairs.
        """
        files = [
            (f"file{i}", (name, path.read_bytes(), "application/octet-stream"))
            for i, (path, name) in enumerate(paths)
        ]  # one field per file: Label Studio reads one file per field name
        answer = self.json(
            "POST", f"/api/projects/{project_id}/import", params={"commit_to_project": "false"}, files=files
        )
        ids = answer.get("file_upload_ids") if isinstance(answer, dict) else None
        if not isinstance(ids, list) or not all(isinstance(upload_id, int) for upload_id in ids):
            raise self._unexpected(f"POST /api/projects/{project_id}/import")
        if len(ids) != len(paths):
            raise LabelStudioError(
                f"Label Studio at {self.url} stored {len(ids)} of {len(paths)} uploaded images; check its log"
            )
        listed = self.json(
            "GET", f"/api/projects/{project_id}/file-uploads", params={"ids": json.dumps(ids), "all": "true"}
        )
        call = f"GET /api/projects/{project_id}/file-uploads"
        by_id = {row.get("id"): row.get("file") for row in self._rows(listed, "results", call)}
        references = [by_id.get(upload_id) for upload_id in ids]
        if not all(isinstance(ref, str) for ref in references):
            raise LabelStudioError(
                f"Label Studio at {self.url} did not list the uploaded files; check its log"
            )
        return [_upload_reference(str(ref)) for ref in references]

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Imports tasks (with predictions); returns their ids."""
        answer = self.json(
            "POST", f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, json=tasks
        )
        ids = answer.get("task_ids", []) if isinstance(answer, dict) else None
        if not isinstance(ids, list) or not all(isinstance(task_id, int) for task_id in ids):
            raise self._unexpected(f"POST /api/projects/{project_id}/import")
        return ids

    def export(self, project_id: int) -> list[dict[str, Any]]:
        """The project's finished tasks (with an annotation), in Label Studio's JSON export
        (at most :data:`MAX_EXPORT_MB`)."""
        path = f"/api/projects/{project_id}/export"
        answer = self.request("GET", path, MAX_EXPORT_MB, params={"exportType": "JSON"})
        try:
            tasks = json.loads(answer.content)
        except ValueError:
            raise LabelStudioError(f"Label Studio at {self.url} exported something other than JSON") from None
        if not isinstance(tasks, list) or not all(isinstance(task, dict) for task in tasks):
            raise LabelStudioError(
                f"Label Studio at {self.url} exported something other than a list of tasks"
            )
        return tasks

    def download(self, reference: str, destination: Path) -> None:
        """Saves the file a task references (``/data/upload/...``) to ``destination`` (atomic),
        at most :data:`MAX_IMAGE_MB` within the request timeout."""
        deadline = time.monotonic() + self._timeout
        try:
            with self._http.stream("GET", reference) as answer:
                if not answer.is_success:
                    answer.read()
                    self._refuse(answer, "GET", reference)
                destination.parent.mkdir(parents=True, exist_ok=True)
                size = 0
                with atomic_write(destination) as tmp, open(tmp, "wb") as handle:
                    for chunk in answer.iter_bytes():
                        self._check_deadline(deadline, "GET", reference)
                        size += len(chunk)
                        if size > MAX_IMAGE_MB * MB:
                            raise LabelStudioError(
                                f"{reference[:SHOWN_CHARS]} is over {MAX_IMAGE_MB:.0f} MB; not downloaded"
                            )
                        handle.write(chunk)
        except HTTPX_ERRORS as err:
            raise self._unreachable(err, "GET", reference) from None


_BODY_HEADERS = ("content-encoding", "content-length", "transfer-encoding")
"""Headers of the streamed answer that no longer describe the decoded body kept in memory."""


def _project_id(project: dict[str, Any], url: str) -> int:
    """A project's integer ``id``.

    Raises:
        LabelStudioError: Missing or not an integer.
    """
    project_id = project.get("id")
    if not isinstance(project_id, int) or isinstance(project_id, bool):
        raise LabelStudioError(
            f"Label Studio at {url} gave project {str(project.get('title'))[:SHOWN_CHARS]!r} no integer "
            "id; is it a Label Studio server (version 1.x)?"
        )
    return project_id


def _upload_reference(file_field: str) -> str:
    """``/data/upload/3/ab12cd34-a.png`` from a file-upload's ``file`` (``upload/3/...`` or a URL)."""
    path = urlsplit(file_field).path
    if path.startswith(UPLOAD_PATH):
        return path
    return UPLOAD_PATH + path.lstrip("/").removeprefix("upload/")


# -- push ----------------------------------------------------------------------------------


@dataclass
class PushItem:
    """One image to push.

    Attributes:
        image: The image file (its bytes are uploaded as they are).
        labels: ``(H, W)`` predicted class indices (the pre-annotation), or None to predict it.
        score: Uncertainty score from the ranking, or None.
        rank: 1-based place in the ranking, or None.
        data: More task data of this image (a capture's confidence and id).
    """

    image: Path
    labels: np.ndarray | None = None
    score: float | None = None
    rank: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class PushResult:
    """What a push did.

    Attributes:
        project_id: The Label Studio project.
        created: The project was created by this push.
        pushed: Names of the images uploaded now.
        skipped: Names already in the project (same content), not uploaded again.
        task_ids: Ids of the new tasks.
    """

    project_id: int
    created: bool
    pushed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    task_ids: list[int] = field(default_factory=list)


def push_ranking(
    ranking: str | os.PathLike[str],
    model: str | os.PathLike[str],
    url: str,
    project: str,
    top: int,
    *,
    api_key: str | None = None,
    log: Log | None = None,
) -> PushResult:
    """Pushes the ``top`` most uncertain images of a ranking, each with the model's prediction.

    Args:
        ranking: ``ranking.csv`` of ``segflow rank`` (read by :func:`segflow.active.rank.read_ranking`).
        model: The model (checkpoint or export) that predicts the pre-annotations; its classes
            and palette make the project's labels.
        url: Label Studio base URL.
        project: Project title (found, else created).
        top: How many rows to push, from the top (1..:data:`MAX_TOP`).
        api_key: Access token; None reads :data:`API_KEY_ENV`.
        log: Receives one progress line per upload batch but the last (the caller sums up).

    Returns:
        What was pushed and skipped.

    Raises:
        ConfigError: No key, a bad URL or ``top``, a project whose labels differ from the model's classes.
        DataError: A bad ranking, a missing or unsupported image, a name clash in the project.
        CheckpointError: The model cannot be loaded.
        LabelStudioError: The server failed a request.
    """
    from segflow.active.rank import read_ranking

    key = api_key if api_key is not None else api_key_from_env()
    base = check_url(url)
    ranking_path = Path(ranking).resolve()
    rows = read_ranking(ranking_path)
    count = check_top(top, len(rows), f"ranking {ranking_path}")
    items = [PushItem(Path(row.image), None, float(row.score), int(row.rank)) for row in rows[:count]]
    _check_images(items)
    predictor = _load_predictor(model)
    meta = {RANKING_KEY: str(ranking_path)}
    return _push(
        items,
        predictor.classes,
        predictor.palette,
        model_version(model),
        base,
        key,
        project,
        meta,
        predictor,
        log,
    )


def push_capture(
    capture_dir: str | os.PathLike[str],
    url: str,
    project: str,
    top: int | None = None,
    *,
    model: str | os.PathLike[str] | None = None,
    api_key: str | None = None,
    log: Log | None = None,
    warn: Log | None = None,
) -> PushResult:
    """Pushes the serve capture queue: each captured image with its captured prediction.

    Each task's data carries the capture's :data:`CONFIDENCE_KEY` (when recorded) and
    :data:`CAPTURE_ID_KEY`, as a ranking push carries the score. A malformed entry
    (``confidence`` not a finite number, ``classes`` not a list of names, ``model`` not text, an
    unreadable mask, a mask whose size differs from its image or that holds a class index the
    classes do not name) is skipped with one warning line naming its JSON file; the others are
    pushed. The queue is written by a running service, so one bad
    entry does not block the rest.

    Args:
        capture_dir: The ``--capture`` folder of ``segflow serve``
            (:func:`segflow.serving.capture.read_capture_queue`).
        url: Label Studio base URL.
        project: Project title (found, else created).
        top: At most this many entries, lowest confidence first; None: all (at most :data:`MAX_TOP`).
        model: Optional model whose classes and palette name the project; default: the
            classes the captures record and the default palette.
        api_key: Access token; None reads :data:`API_KEY_ENV`.
        log: Receives one progress line per upload batch but the last (the caller sums up).
        warn: Receives one ``warning: ...`` line per skipped entry (None: the module's logger).

    Raises:
        ConfigError: As :func:`push_ranking`, and captures whose classes differ from each other
            or from ``model``.
        DataError: An empty queue, or no well-formed entry in it.
        LabelStudioError: The server failed a request.
    """
    from segflow.data.io import read_mask
    from segflow.serving.capture import read_capture_queue

    key = api_key if api_key is not None else api_key_from_env()
    base = check_url(url)
    folder = Path(capture_dir)
    entries = list(read_capture_queue(folder))
    if not entries:
        raise DataError(
            f"capture queue {folder} is empty; run 'segflow serve --capture {folder}' and send requests"
        )
    report = warn if warn is not None else logger.warning
    valid = []
    for entry in entries:
        problem = capture_meta_problem(entry.meta)
        if problem is None:
            valid.append(entry)
        else:
            report(f"warning: skipped capture entry {folder / (entry.id + '.json')}: {problem}")
    if not valid:
        raise DataError(
            f"capture queue {folder} holds no well-formed entry ({len(entries)} skipped); remove the bad "
            "entries and capture again"
        )
    valid.sort(key=lambda entry: float(entry.meta.get("confidence", 1.0)))  # least confident first
    count = check_top(top, len(valid), f"capture queue {folder}")
    chosen = valid[:count]
    classes_seen = {tuple(entry.meta.get("classes") or ()) for entry in chosen}
    if len(classes_seen) > 1:
        raise ConfigError(
            f"capture queue {folder} holds captures of models with different classes; push them to "
            "separate projects"
        )
    classes = list(classes_seen.pop())
    version = str(chosen[0].meta.get("model") or "capture")
    if model is not None:
        predictor = _load_predictor(model)
        if classes and list(predictor.classes) != classes:
            raise ConfigError(
                f"--model {model} has classes {predictor.classes} but the captures were made with {classes}; "
                "give the model that served them"
            )
        classes, palette, version = list(predictor.classes), list(predictor.palette), model_version(model)
    else:
        palette = default_palette(len(classes))
    if not classes:
        raise DataError(
            f"the captures in {folder} record no class names; pass --model MODEL that served them"
        )
    items = []
    for entry in chosen:
        try:
            labels = np.asarray(read_mask(entry.mask))
            problem = _capture_mask_problem(entry.image, labels, len(classes))
        except DataError as err:
            problem = " ".join(str(err).split())
        if problem is None:
            extra: dict[str, Any] = {CAPTURE_ID_KEY: str(entry.id)}
            confidence = entry.meta.get("confidence")
            if confidence is not None:  # a finite number (capture_meta_problem)
                extra[CONFIDENCE_KEY] = float(confidence)
            items.append(PushItem(entry.image, labels, data=extra))
        else:
            report(f"warning: skipped capture entry {folder / (entry.id + '.json')}: {problem}")
    if not items:
        raise DataError(f"capture queue {folder}: none of the {len(chosen)} chosen entries could be read")
    _check_images(items)
    meta = {CAPTURE_KEY: str(folder.resolve())}
    return _push(items, classes, palette, version, base, key, project, meta, None, log)


def capture_meta_problem(meta: dict[str, Any]) -> str | None:
    """Why a capture entry's JSON fields are unusable, or None.

    ``confidence`` (optional) must be a finite number, ``classes`` (optional) a list of
    non-empty names, ``model`` (optional) text.
    """
    confidence = meta.get("confidence")
    if confidence is not None and (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not math.isfinite(confidence)
    ):
        return f"confidence {str(confidence)[:SHOWN_CHARS]!r} is not a number"
    classes = meta.get("classes")
    if classes is not None and (
        not isinstance(classes, list) or not all(isinstance(name, str) and name for name in classes)
    ):
        return f"classes {str(classes)[:SHOWN_CHARS]!r} is not a list of class names"
    model = meta.get("model")
    if model is not None and not isinstance(model, str):
        return f"model {str(model)[:SHOWN_CHARS]!r} is not text"
    return None


def _capture_mask_problem(image: Path, labels: np.ndarray, classes: int) -> str | None:
    """Why a captured mask cannot be the pre-annotation of its image, or None."""
    from PIL import Image

    try:
        with Image.open(image) as opened:
            width, height = opened.size
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        return f"image {image} is unreadable ({' '.join(str(err).split())[:SHOWN_CHARS]})"
    if labels.ndim != 2 or labels.shape != (height, width):  # noqa: PLR2004
        return f"mask of shape {labels.shape} does not match its {height}x{width} image"
    values = np.unique(labels)
    bad = values[(values >= classes) & (values != IGNORE_INDEX)]
    if bad.size:
        return f"mask holds class index {int(bad[0])} but the captures name {classes} classes"
    return None


def _push(
    items: list[PushItem],
    classes: Sequence[str],
    palette: Sequence[tuple[int, int, int]],
    version: str,
    url: str,
    key: str,
    title: str,
    meta: dict[str, str],
    predictor: Any,
    log: Log | None,
) -> PushResult:
    """Finds or creates the project, then uploads the new images in batches with their predictions."""
    with LabelStudioClient(url, key) as client:
        project, created = _project_for(client, title, list(classes), list(palette))
        project_id = int(project["id"])
        known = {}  # name -> sha of the images already in the project
        for task in client.project_tasks(project_id):
            data = _task_data(task)
            if isinstance(data.get(NAME_KEY), str):
                known[data[NAME_KEY]] = data.get(SHA_KEY)
        result = PushResult(project_id, created)
        pending: list[tuple[PushItem, str, str]] = []
        for item in items:
            name, digest = item.image.name, _sha256(item.image)
            if known.get(name) == digest:
                result.skipped.append(name)
                continue
            if name in known:
                raise DataError(
                    f"image {item.image}: project {title!r} already holds another image named {name}; "
                    "rename the file (pulled samples are named by file name) or push to another project"
                )
            known[name] = digest
            pending.append((item, name, digest))
        batches = list(_batches(pending))
        for number, batch in enumerate(batches, 1):
            references = client.upload_files(project_id, [(item.image, name) for item, name, _ in batch])
            tasks = []
            for (item, name, digest), reference in zip(batch, references, strict=True):
                labels = item.labels if item.labels is not None else _predict(predictor, item.image)
                task = build_task(
                    reference, labels, list(classes), IGNORE_INDEX, as_prediction=True, model_version=version
                )
                task["data"].update({NAME_KEY: name, SHA_KEY: digest, MODEL_KEY: version, **meta})
                task["data"][PALETTE_KEY] = [[int(c) for c in colour] for colour in palette]
                task["data"].update(item.data)
                if item.score is not None:
                    task["data"][SCORE_KEY] = item.score
                if item.rank is not None:
                    task["data"][RANK_KEY] = item.rank
                tasks.append(task)
            result.task_ids += client.import_tasks(project_id, tasks)
            result.pushed += [name for _, name, _ in batch]
            if log is not None and number < len(batches):  # the last line is the caller's summary
                log(f"pushed {len(result.pushed)}/{len(pending)} images to project {title!r} ({url})")
        return result


def _batches(pending: list[tuple[PushItem, str, str]]) -> Iterator[list[tuple[PushItem, str, str]]]:
    """Upload batches: at most :data:`UPLOAD_BATCH` files and :data:`UPLOAD_BATCH_MB`."""
    batch: list[tuple[PushItem, str, str]] = []
    size = 0
    for entry in pending:
        file_size = entry[0].image.stat().st_size
        if batch and (len(batch) == UPLOAD_BATCH or size + file_size > UPLOAD_BATCH_MB * MB):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += file_size
    if batch:
        yield batch


def _project_for(
    client: LabelStudioClient, title: str, classes: list[str], palette: list[tuple[int, int, int]]
) -> tuple[dict[str, Any], bool]:
    """The project titled ``title`` (its labels checked against ``classes``), else a new one.

    Raises:
        ConfigError: The project's labels are not ``classes`` (in order).
    """
    project = client.find_project(title)
    if project is None:
        description = f"segflow active learning; classes: {', '.join(classes)}"
        config = label_config(classes, display_palette(palette))
        return client.create_project(title, config, description), True
    check_project_classes(title, str(project.get("label_config", "")), classes)
    return project, False


def display_palette(palette: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """The colours the labelling config shows: ``palette``, each near-black colour (brightest
    channel below :data:`DARK_CHANNEL`) replaced by the first :data:`VISIBLE_COLOURS` entry not
    shown yet (the last one when all are).

    Display only: pull reads labels by name, and the model's palette rides in :data:`PALETTE_KEY`.
    """
    shown = [(int(r), int(g), int(b)) for r, g, b in palette]
    for index, colour in enumerate(shown):
        if max(colour) < DARK_CHANNEL:
            unused = [c for c in VISIBLE_COLOURS if c not in shown]
            shown[index] = unused[0] if unused else VISIBLE_COLOURS[-1]
    return shown


def check_project_classes(title: str, config: str, classes: Sequence[str]) -> None:
    """Refuses a project whose labels (``ignore`` aside) are not ``classes``, in order.

    Args:
        title: The project's title, for the message.
        config: Its labelling config (XML text).
        classes: The model's class names.

    Raises:
        ConfigError: The labels differ (both lists named).
    """
    have = [name for name in config_label_names(config) if name != IGNORE_LABEL]
    wanted = [name for name in classes if name != IGNORE_LABEL]
    if have != wanted:
        raise ConfigError(
            f"Label Studio project {title!r} labels {have} but the model's classes are {wanted}; push to a "
            "new project (--project) or use the model the project was made for"
        )


def config_label_names(config: str) -> list[str]:
    """The ``<Label value=...>`` names of a labelling config's XML text, in order.

    Raises:
        LabelStudioError: Not XML (the project's config is broken).
    """
    try:
        root = ET.fromstring(config)
    except ET.ParseError as err:
        raise LabelStudioError(
            f"the project's labelling config is not valid XML ({err}); fix it in Label Studio"
        ) from None
    return [
        name for name in dict.fromkeys(element.get("value", "") for element in root.iter("Label")) if name
    ]


def _check_images(items: list[PushItem]) -> None:
    """Refuses, before any upload, a missing, unsupported, oversized or doubly named image."""
    seen: dict[str, Path] = {}
    for item in items:
        path = item.image
        if not path.is_file():
            raise DataError(f"image {path} does not exist; rank again or restore the file")
        if path.suffix.lower() not in UPLOADABLE:
            raise DataError(
                f"image {path}: Label Studio shows only {', '.join(UPLOADABLE)} uploads; convert it to PNG "
                "first"
            )
        size = path.stat().st_size
        if size > MAX_IMAGE_MB * MB:
            raise DataError(
                f"image {path} is {size / MB:.0f} MB, over the {MAX_IMAGE_MB:.0f} MB push limit; tile it"
            )
        if path.name in seen and seen[path.name] != path.resolve():
            raise DataError(
                f"images {seen[path.name]} and {path} share the name {path.name}; rename one (pulled "
                "samples are named by file name)"
            )
        seen[path.name] = path.resolve()


def _load_predictor(model: str | os.PathLike[str]) -> Any:
    """The predictor of a MODEL argument (one parser: :func:`segflow.models.source.parse_model_source`)."""
    from segflow.inference.loader import load_predictor
    from segflow.models.source import parse_model_source

    source = parse_model_source(str(model), accept=("file",), command="label push")
    return load_predictor(source.path or Path(str(model)))


def _predict(predictor: Any, image: Path) -> np.ndarray:
    """``(H, W)`` predicted class indices of an image file."""
    from segflow.data.io import read_image

    return np.asarray(predictor.predict(read_image(image), name=image.name).labels)


def model_version(model: str | os.PathLike[str]) -> str:
    """``<file name>@<first 12 hex of its SHA-256>`` (the file), else the MODEL text as given."""
    path = Path(str(model))
    return f"{path.name}@{_sha256(path)[:12]}" if path.is_file() else str(model)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(MB), b""):
            digest.update(block)
    return digest.hexdigest()


# -- pull ----------------------------------------------------------------------------------


def pull(
    url: str,
    project: str,
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    split: str = DEFAULT_SPLIT,
    unlabelled: str = "auto",
    api_key: str | None = None,
    log: Log | None = None,
) -> Path:
    """Exports a project's finished annotations into a ``folder`` dataset.

    ``out`` gets ``images/<split>/<name>``, ``masks/<split>/<stem>.png`` (index PNGs, exactly the
    annotated labels), ``data.yaml`` (format folder, classes, ignore_index), the raw export
    :data:`EXPORT_FILE` and :data:`PULL_FILE`: ``{"project", "url", "pulled": [image names],
    "ranking": the ranking CSV recorded at push (of the latest pushed task; None for captures),
    "rankings": every one, "classes", "palette" (the model's, from the tasks; else the config's
    colours), "unlabelled" (``background`` or ``ignore``: what unpainted pixels became), "created"}``.
    Only plain relative ``/data/upload/...`` image paths are written, each inside ``out``.

    Args:
        url: Label Studio base URL.
        project: Project title.
        out: Output folder; must be missing or empty unless ``overwrite``.
        overwrite: Replace what an earlier pull wrote in ``out``.
        split: The split the pulled images form (default ``train``).
        unlabelled: Pixels no brush covers: ``ignore`` writes ``ignore_index`` (255; they are
            not a class), ``background`` class 0, ``auto`` (default) ``background`` when class 0
            is named ``background`` (push leaves it unpainted), else ``ignore``.
        api_key: Access token; None reads :data:`API_KEY_ENV`.
        log: Receives progress lines.

    Returns:
        ``out/data.yaml``.

    Raises:
        ConfigError: No key, a bad URL, an unknown ``unlabelled``, no such project, a non-empty
            ``out`` without ``overwrite``.
        DataError: No finished task, or an annotation the reader refuses (named).
        LabelStudioError: The server failed a request.
    """
    from segflow.annotation.convert import convert
    from segflow.data.spec import load_data_spec

    key = api_key if api_key is not None else api_key_from_env()
    base = check_url(url)
    if not split or split in (".", "..") or "/" in split or "\\" in split:
        raise ConfigError(f"--split {split!r} is not a plain folder name; use e.g. train")
    if unlabelled not in UNLABELLED_MODES:
        raise ConfigError(f"--unlabelled {unlabelled!r} is not one of {', '.join(UNLABELLED_MODES)}")
    target = Path(out)
    if target.exists() and not overwrite:  # refuse before any request
        claim_output_dir(target, overwrite=False, owned=(), what="--out folder")
    with LabelStudioClient(base, key) as client:
        found = client.find_project(project)
        if found is None:
            raise ConfigError(f"Label Studio at {base} has no project titled {project!r}; check --project")
        project_id = int(found["id"])
        config = str(found.get("label_config", ""))
        classes = [name for name in config_label_names(config) if name != IGNORE_LABEL]
        fill = unlabelled_rule(unlabelled, classes)
        tasks = [task for task in client.export(project_id) if _finished(task)]
        if not tasks:
            raise DataError(
                f"project {project!r} has no finished task yet (submit annotations in Label Studio, "
                "then pull)"
            )
        destinations: list[tuple[str, Path]] = []
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            export_dir = staging / "export"
            export_dir.mkdir()
            for task in tasks:  # every path is checked before the first download
                name = f"project {project!r} task {str(task.get('id'))[:SHOWN_CHARS]}"
                reference = str(_task_data(task).get(DATA_KEY, ""))
                relative = upload_relative_path(reference, name)
                destinations.append((reference, inside(export_dir, relative, name, reference)))
            for reference, destination in destinations:
                client.download(reference, destination)
            if log is not None:
                log(f"downloaded {len(tasks)} annotated images from project {project!r}")
            with atomic_write(export_dir / EXPORT_FILE) as tmp:
                tmp.write_text(json.dumps(tasks), encoding="utf-8")
            with atomic_write(export_dir / LABEL_CONFIG_FILE) as tmp:
                tmp.write_text(config, encoding="utf-8")
            spec = load_data_spec(
                {
                    "format": "label-studio",
                    "root": str(export_dir),
                    "classes": classes,
                    "splits": {split: "."},
                    "unlabelled": fill,
                    "options": {"annotations": EXPORT_FILE, "label_config": LABEL_CONFIG_FILE},
                }
            )
            dataset = staging / "dataset"
            written = convert(spec, "folder", dataset, warn=_pull_warnings(log))
            pulled = sorted(path.name for path in (dataset / "images" / split).iterdir())
            shutil.move(str(export_dir / EXPORT_FILE), str(dataset / EXPORT_FILE))
            record = _pull_record(base, project, tasks, pulled, classes, config)
            record["unlabelled"] = fill
            with atomic_write(dataset / PULL_FILE) as tmp:
                tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
            _replace(dataset, target, overwrite)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if log is not None:
        log(f"pulled {len(pulled)} images into {target} ({written.name})")
    return target / written.name


def unlabelled_rule(mode: str, classes: Sequence[str]) -> str:
    """The reader's ``unlabelled:`` rule for pull's ``--unlabelled`` ``mode`` (see :func:`pull`)."""
    if mode == "auto":
        return "background" if classes and classes[0] == BACKGROUND_LABEL else "ignore"
    return mode


def _pull_warnings(log: Log | None) -> Log | None:
    """``log`` without the reader's advice to edit a data YAML about class 0 and unpainted
    pixels: pull's ``--unlabelled`` chose that rule already."""
    if log is None:
        return None

    def warn(line: str) -> None:
        if not (line.startswith("class 0 ") and "(unlabelled: background)" in line):
            log(line)

    return warn


def _task_data(task: dict[str, Any]) -> dict[str, Any]:
    """A task's ``data`` object ({} when missing or not an object)."""
    data = task.get("data")
    return data if isinstance(data, dict) else {}


def _finished(task: dict[str, Any]) -> bool:
    """Whether a task has an annotation that is not cancelled (predictions do not count)."""
    annotations = task.get("annotations")
    if not isinstance(annotations, list):
        return False
    return any(isinstance(item, dict) and not item.get("was_cancelled") for item in annotations)


def _pull_record(
    url: str, project: str, tasks: list[dict[str, Any]], pulled: list[str], classes: list[str], config: str
) -> dict[str, Any]:
    rankings = [(task.get("id"), _task_data(task).get(RANKING_KEY)) for task in tasks]
    known = [
        (task_id, path)
        for task_id, path in rankings
        if isinstance(task_id, int) and isinstance(path, str) and path.isprintable()
    ]
    return {
        "project": project,
        "url": url,
        "pulled": pulled,
        "ranking": max(known)[1] if known else None,
        "rankings": sorted({path for _, path in known}),
        "classes": classes,
        "palette": _task_palette(tasks, len(classes)) or _config_colours(config, classes),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _task_palette(tasks: list[dict[str, Any]], count: int) -> list[list[int]] | None:
    """The model palette (:data:`PALETTE_KEY`) of the latest task holding a valid one, or None."""
    numbered = [(task["id"], task) for task in tasks if _is_int(task.get("id"))]
    for _, task in sorted(numbered, key=lambda pair: pair[0], reverse=True):
        palette = _task_data(task).get(PALETTE_KEY)
        if isinstance(palette, list) and len(palette) == count and all(map(_is_rgb, palette)):
            return [[int(c) for c in colour] for colour in palette]
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_rgb(colour: Any) -> bool:
    """``[r, g, b]`` of integers in 0..255."""
    return (
        isinstance(colour, list)
        and len(colour) == 3  # noqa: PLR2004 - r, g, b
        and all(_is_int(c) and 0 <= c <= 255 for c in colour)  # noqa: PLR2004
    )


def _config_colours(config: str, classes: list[str]) -> list[list[int]]:
    """The ``background`` colour of each class's ``<Label>`` (grey where missing)."""
    colours = {
        element.get("value"): element.get("background", "#808080")
        for element in ET.fromstring(config).iter("Label")
    }
    result = []
    for name in classes:
        text = str(colours.get(name, "#808080")).lstrip("#")
        try:
            result.append([int(text[i : i + 2], 16) for i in (0, 2, 4)])
        except ValueError:
            result.append([128, 128, 128])
    return result


def _replace(dataset: Path, target: Path, overwrite: bool) -> None:
    """Moves the finished ``dataset`` folder to ``target`` (an earlier pull replaced with ``overwrite``)."""
    if target.exists() and any(target.iterdir()):
        claim_output_dir(
            target, overwrite=overwrite, owned=("images", "masks", "data.yaml", PULL_FILE, EXPORT_FILE)
        )
        for entry in sorted(dataset.iterdir()):
            shutil.move(str(entry), str(target / entry.name))
        return
    if target.exists():
        target.rmdir()
    os.rename(dataset, target)
