"""A real Label Studio server on 127.0.0.1, in its own virtualenv: for the tests and for users.

Label Studio (1.23.2) pins Django and friends that clash with segflow's stack, so it lives in
its own venv, built once from the lock :data:`LOCK_FILE` (a ``pip freeze`` of a working venv,
installed with ``--no-deps``: no resolver run, which took 35 minutes here) and cached by
:func:`segflow.export.converter_venv.converter_python` (``<cache>/label-studio-<hash>``).

Starting a fresh data folder runs the database migrations (about 70 s on a quiet 2-core
machine, 3 minutes under load); a restart of a migrated folder takes 10 to 20 s. So a migrated
*template* data folder is kept next to the venv (``<cache>/label-studio-<hash>.data``, built
once, atomically like the venv) and copied into each new data folder. The template holds one
local user and its API token (set on the first start, with legacy tokens enabled then: Label
Studio refuses a legacy token enabled later).

Every copy gets its own secrets before its first start (:func:`rotate_secrets`): a new Django
``SECRET_KEY`` in its ``.env`` (it signs sessions and JWT access tokens), a new 40-hex API token
(``authtoken_token.key``; the template's is refused from then on), a new password (a Django
``pbkdf2_sha256`` hash in ``htx_user.password``) and a new organisation invite token; any
session or JWT refresh token rows are deleted. The copy is made and rotated in a hidden sibling
folder and renamed into place, so a folder never holds the template's secrets. Its credentials
are in ``segflow-label-studio.json`` (mode 0600). They reach the server through
``LABEL_STUDIO_USERNAME`` / ``_PASSWORD`` / ``_USER_TOKEN``, not its arguments, so ``ps`` does
not show them.

Example:
    >>> with LabelStudioServer(tmp / "ls") as server:      # doctest: +SKIP
    ...     server.url, server.token                        # http://127.0.0.1:PORT, 40 hex chars

The server listens on 127.0.0.1 only (``--internal-host``; ``--host`` only sets the URLs it
writes) and is stopped with SIGTERM, then SIGKILL, of its whole process group.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import string
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx

from segflow.errors import SegflowError
from segflow.export.converter_venv import converter_python
from segflow.io_utils import atomic_write

LOCK_FILE = Path(__file__).with_name("label_studio_requirements.txt")
"""The label-studio 1.23.2 lock: every package pinned, installed with ``--no-deps``."""
VENV_NAME = "label-studio"
LOOPBACK = "127.0.0.1"
CREDENTIALS_FILE = "segflow-label-studio.json"
"""``{"username", "password", "token"}`` of the server's local user, in its data folder (mode 0600)."""
TEMPLATE_SUFFIX = ".data"
USERNAME = "admin@example.com"
TOKEN_BYTES = 20
"""A legacy Label Studio token is 40 hex characters."""
DATABASE_FILE = "label_studio.sqlite3"
ENV_FILE = ".env"
"""Label Studio's per-data-folder settings file; it holds ``SECRET_KEY=...``."""
SECRET_KEY_BYTES = 50
"""``secrets.token_urlsafe(50)``: 67 characters of ``[A-Za-z0-9_-]`` (no ``$``, which
django-environ would read as a reference)."""
PASSWORD_ITERATIONS = 1_000_000
"""Django 5.2's ``PBKDF2PasswordHasher.iterations`` (the hasher Label Studio uses)."""
SALT_CHARS = 22
"""Django's salt: 22 characters of ``[A-Za-z0-9]`` (128 bits)."""
INVITE_TOKEN_CHARS = 40
"""Label Studio's ``create_hash()``: the organisation's invite-link token."""
SECRET_TABLES = ("django_session", "token_blacklist_blacklistedtoken", "token_blacklist_outstandingtoken")
"""Rows that hold sessions or JWT refresh tokens of the template: deleted in each copy."""
FIRST_START_TIMEOUT_S = 600.0
"""Migrations of a fresh data folder: about 70 s idle, 3 minutes under load; 10 minutes is the cap."""
START_TIMEOUT_S = 180.0
"""A restart of a migrated folder takes 10 to 20 s; 3 minutes covers a loaded machine."""
STOP_TIMEOUT_S = 10.0
POLL_S = 0.5
LOG_TAIL_LINES = 5
LOG_TAIL_CHARS = 600
OFFLINE_ENV = {
    "LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
}
"""No calls home (offline), and legacy tokens on from the very first start."""

Log = Callable[[str], None]


class LabelStudioServerError(SegflowError, RuntimeError):
    """The Label Studio server could not be started (the message ends with its log's tail)."""


def label_studio_python(log: Log | None = None) -> Path:
    """The interpreter of the cached Label Studio venv, built once from :data:`LOCK_FILE`.

    Args:
        log: Receives one line when a build starts and one when it ends (a cold build
            downloads about 1 GB; a few minutes).

    Raises:
        segflow.export.converter_venv.ConverterEnvError: pip could not install the lock (one
            line naming the package).
    """
    return converter_python(VENV_NAME, LOCK_FILE, no_deps=True, log=log, installer="uv")


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def read_credentials(data_dir: Path) -> dict[str, str] | None:
    """The ``{"username", "password", "token"}`` recorded in a data folder, or None."""
    path = Path(data_dir) / CREDENTIALS_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    return {key: str(record[key]) for key in ("username", "password", "token")}


def _write_credentials(data_dir: Path, credentials: dict[str, str]) -> None:
    path = data_dir / CREDENTIALS_FILE
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(credentials), encoding="utf-8")
    path.chmod(0o600)  # after the write: atomic_write gives the default mode


def _is_migrated(data_dir: Path) -> bool:
    return (data_dir / DATABASE_FILE).is_file() and read_credentials(data_dir) is not None


def django_password_hash(
    password: str, salt: str | None = None, iterations: int = PASSWORD_ITERATIONS
) -> str:
    """``pbkdf2_sha256$<iterations>$<salt>$<base64 hash>``, as Django's ``make_password`` writes it.

    Args:
        password: The password (UTF-8).
        salt: 22 random alphanumerics when None.
        iterations: PBKDF2-SHA256 rounds (Django 5.2: 1 000 000; about 0.5 s).
    """
    if salt is None:
        alphabet = string.ascii_letters + string.digits
        salt = "".join(secrets.choice(alphabet) for _ in range(SALT_CHARS))
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode('ascii').strip()}"


def rotate_secrets(data_dir: Path) -> dict[str, str]:
    """Gives a copy of the template its own secrets; returns its new credentials (also written).

    Replaces the ``SECRET_KEY`` in ``data_dir/.env`` (other lines kept; mode 0600), the local
    user's password hash and API token, and every organisation's invite token in the SQLite
    database, deletes session and JWT refresh-token rows, then writes
    ``segflow-label-studio.json`` (mode 0600) last. Run it on a stopped folder only.

    Raises:
        LabelStudioServerError: The folder has no credentials file, or its database has no such
            user or token (the template is broken: delete it to rebuild it).
    """
    old = read_credentials(data_dir)
    if old is None:
        raise LabelStudioServerError(f"{data_dir} has no {CREDENTIALS_FILE}; it is not a segflow data folder")
    credentials = {
        "username": old["username"],
        "password": secrets.token_hex(16),
        "token": secrets.token_hex(TOKEN_BYTES),
    }
    _write_secret_key(data_dir / ENV_FILE, secrets.token_urlsafe(SECRET_KEY_BYTES))
    database = data_dir / DATABASE_FILE
    broken = f"the Label Studio template database {database} has no user {old['username']!r} with one token"
    connection = sqlite3.connect(database)
    try:
        with connection:
            users = connection.execute(
                "SELECT id FROM htx_user WHERE email = ?", (old["username"],)
            ).fetchall()
            if len(users) != 1:
                raise LabelStudioServerError(f"{broken}; delete the template folder to rebuild it")
            user_id = users[0][0]
            connection.execute(
                "UPDATE htx_user SET password = ? WHERE id = ?",
                (django_password_hash(credentials["password"]), user_id),
            )
            updated = connection.execute(
                "UPDATE authtoken_token SET key = ? WHERE user_id = ?", (credentials["token"], user_id)
            ).rowcount
            if updated != 1:
                raise LabelStudioServerError(f"{broken}; delete the template folder to rebuild it")
            for (org_id,) in connection.execute("SELECT id FROM organization").fetchall():
                connection.execute(
                    "UPDATE organization SET token = ? WHERE id = ?", (_invite_token(), org_id)
                )
            tables = {
                row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            for table in SECRET_TABLES:
                if table in tables:
                    connection.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
    except sqlite3.Error as err:
        raise LabelStudioServerError(
            f"cannot give {database} its own secrets ({err}); delete the template folder to rebuild it"
        ) from None
    finally:
        connection.close()
    _write_credentials(data_dir, credentials)
    return credentials


def _invite_token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(INVITE_TOKEN_CHARS))


def _write_secret_key(env_file: Path, key: str) -> None:
    """``env_file`` with its ``SECRET_KEY=`` line(s) replaced by one with ``key`` (mode 0600)."""
    lines = env_file.read_text(encoding="utf-8").splitlines() if env_file.is_file() else []
    kept = [line for line in lines if not line.strip().startswith("SECRET_KEY=")]
    with atomic_write(env_file) as tmp:
        tmp.write_text("\n".join([*kept, f"SECRET_KEY={key}", ""]), encoding="utf-8")
    env_file.chmod(0o600)


class LabelStudioServer:
    """A Label Studio server on 127.0.0.1 with its own SQLite database, as a context manager.

    Args:
        data_dir: Data folder (database, uploads). Empty or missing: filled from the cached
            migrated template (built on first use), so the start takes 10 to 20 s, not minutes. A
            folder this class made before is restarted as it is.
        port: TCP port; None picks a free one.
        python: Interpreter of a venv with label-studio; None: :func:`label_studio_python`.
        log_file: Where the server's output goes; default ``<data_dir>/server.log``.
        timeout: Seconds to wait for ``/health`` and the API to answer.
        log: Receives progress lines (the venv and template builds).

    Attributes:
        url: ``http://127.0.0.1:PORT`` once started.
        token: The API token of the local user (send it as ``Authorization: Token ...``).

    Raises:
        LabelStudioServerError: On start: the process exited or did not answer in time (the
            message ends with the tail of its log); or ``data_dir`` is a Label Studio folder
            not made by this class (no recorded credentials).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        python: Path | None = None,
        log_file: Path | None = None,
        timeout: float = START_TIMEOUT_S,
        log: Log | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.python = python
        self.log_file = Path(log_file) if log_file is not None else self.data_dir / "server.log"
        self.timeout = timeout
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.url = ""

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> LabelStudioServer:
        """Starts the server and waits until its API answers with the token (see the class)."""
        python = self.python or label_studio_python(self.log)
        self._prepare_data_dir(python)
        credentials = read_credentials(self.data_dir)
        if credentials is None:  # checked by _prepare_data_dir; keeps the types exact
            raise LabelStudioServerError(f"{self.data_dir} has no {CREDENTIALS_FILE}")
        self.port = self.port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.token = credentials["token"]
        self.process = _launch(python, self.data_dir, self.port, credentials, self.log_file)
        try:
            self.url = _wait_ready(self.process, self.url, self.token, self.timeout, self.log_file)
        except BaseException:
            self.stop()
            raise
        self.port = int(urlsplit(self.url).port or self.port)
        return self

    def stop(self) -> None:
        """Stops the server: SIGTERM to its process group, SIGKILL after 10 s. Idempotent."""
        if self.process is not None:
            _stop_group(self.process)
            self.process = None

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # -- data folder ----------------------------------------------------------------------
    def _prepare_data_dir(self, python: Path) -> None:
        """Fills an empty ``data_dir`` from the template, with its own secrets
        (:func:`rotate_secrets`); accepts one made before.

        The copy is made and rotated in a hidden sibling, then renamed into place: an
        interrupted copy never leaves a folder holding the template's secrets.
        """
        if _is_migrated(self.data_dir):
            if _shares_template_secrets(self.data_dir, python):  # copied before segflow rotated them
                rotate_secrets(self.data_dir)
            return
        if self.data_dir.is_dir() and any(self.data_dir.iterdir()):
            raise LabelStudioServerError(
                f"Label Studio data folder {self.data_dir} is not empty and was not made by segflow "
                f"(no {CREDENTIALS_FILE}); give an empty or new folder"
            )
        template = migrated_template(python, self.log)
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = self.data_dir.parent / f".{self.data_dir.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            shutil.copytree(template, staging)
            rotate_secrets(staging)
            if self.data_dir.is_dir():
                self.data_dir.rmdir()  # empty (checked above)
            os.rename(staging, self.data_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _template_path(python: Path) -> Path:
    """``<cache>/label-studio-<hash>.data``: the template folder of the venv of ``python``."""
    venv = python.parent.parent
    return venv.parent / f"{venv.name}{TEMPLATE_SUFFIX}"


def _shares_template_secrets(data_dir: Path, python: Path) -> bool:
    """Whether ``data_dir`` still holds the template's token (a copy made before rotation)."""
    template = _template_path(python)
    if template.resolve() == data_dir.resolve():
        return False
    ours, theirs = read_credentials(data_dir), read_credentials(template)
    return ours is not None and theirs is not None and ours["token"] == theirs["token"]


def migrated_template(python: Path, log: Log | None = None) -> Path:
    """The migrated template data folder of the venv of ``python``, built once.

    Built like the venv: in ``<template>.partial-<pid>`` (a first start with a fresh user and
    token, stopped once ``/health`` and the API answer), then renamed; a folder without its
    credentials file is never used.

    Args:
        python: The Label Studio venv's interpreter (``<cache>/label-studio-<hash>/bin/python``).
        log: Receives a line when the build starts and one when it ends.

    Raises:
        LabelStudioServerError: The first start failed (the log tail says why).
    """
    venv = python.parent.parent
    final = _template_path(python)
    if _is_migrated(final):
        return final
    partial = venv.parent / f"{final.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    credentials = {
        "username": USERNAME,
        "password": secrets.token_hex(16),
        "token": secrets.token_hex(TOKEN_BYTES),
    }
    _write_credentials(partial, credentials)
    if log is not None:
        log(f"migrating a fresh Label Studio database in {final} (once; a few minutes)")
    started = time.perf_counter()
    log_file = venv.parent / f"{final.name}.log"
    port = free_port()
    process = _launch(python, partial, port, credentials, log_file)
    try:
        _wait_ready(
            process, f"http://{LOOPBACK}:{port}", credentials["token"], FIRST_START_TIMEOUT_S, log_file
        )
    finally:
        _stop_group(process)
    try:
        if final.exists() and not _is_migrated(final):
            shutil.rmtree(final)
        try:
            os.rename(partial, final)
        except OSError:  # another process finished first: use its template
            if not _is_migrated(final):
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    if log is not None:
        log(f"migrated the Label Studio template in {time.perf_counter() - started:.0f} s")
    return final


# -- the process ---------------------------------------------------------------------------


def _launch(
    python: Path, data_dir: Path, port: int, credentials: dict[str, str], log_file: Path
) -> subprocess.Popen[bytes]:
    """Starts ``label-studio start`` in a new process group, output to ``log_file``."""
    env = {  # SECRET_KEY: the data folder's own .env key, never one from the caller's environment
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "LABEL_STUDIO_API_KEY", "SECRET_KEY")
    }
    env.update(OFFLINE_ENV)
    env.update(
        LABEL_STUDIO_BASE_DATA_DIR=str(data_dir),
        PYTHONNOUSERSITE="1",
        # the local user, by environment: arguments would show the password and token in `ps`
        LABEL_STUDIO_USERNAME=credentials["username"],
        LABEL_STUDIO_PASSWORD=credentials["password"],
        LABEL_STUDIO_USER_TOKEN=credentials["token"],
        PATH=f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    command = [
        str(python.parent / "label-studio"),
        "start",
        "--no-browser",
        "--internal-host",
        LOOPBACK,
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--enable-legacy-api-token",
    ]
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "wb") as output:  # one start per log: the serving line read back is this start's
        process = subprocess.Popen(
            command,
            cwd=data_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process


def _wait_ready(
    process: subprocess.Popen[bytes], url: str, token: str, timeout: float, log_file: Path
) -> str:
    """Waits until ``/health`` answers 200 and the token lists projects; returns the served URL.

    Label Studio moves to the next free port when the one asked for is taken, and says so only
    in its log (``Starting development server at http://127.0.0.1:PORT/``): the URL is taken
    from that line once it appears.

    Raises:
        LabelStudioServerError: The process exited, it serves on another host than 127.0.0.1,
            or ``timeout`` passed (each with the log tail).
    """
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Token {token}"}
    with httpx.Client(timeout=5.0) as client:
        while True:
            code = process.poll()
            if code is not None:
                raise LabelStudioServerError(
                    f"Label Studio exited with status {code} while starting ({log_file}): "
                    f"{log_tail(log_file)}"
                )
            served = _served_url(log_file)
            if served is not None:
                if urlsplit(served).hostname != LOOPBACK:
                    raise LabelStudioServerError(
                        f"Label Studio serves at {served}, not on {LOOPBACK}; stopped it"
                    )
                url = served
                if _answers(client, url, headers):
                    return url
            if time.monotonic() > deadline:
                raise LabelStudioServerError(
                    f"Label Studio did not answer at {url} within {timeout:.0f} s ({log_file}): "
                    f"{log_tail(log_file)}"
                )
            time.sleep(POLL_S)


def _answers(client: httpx.Client, url: str, headers: dict[str, str]) -> bool:
    """Whether ``/health`` is 200 and the token lists projects (False while not listening yet).

    Raises:
        LabelStudioServerError: The server refuses its own token.
    """
    try:
        if client.get(f"{url}/health").status_code != 200:  # noqa: PLR2004
            return False
        answer = client.get(f"{url}/api/projects", headers=headers)
    except httpx.HTTPError:
        return False
    if answer.status_code in (401, 403):  # noqa: PLR2004
        raise LabelStudioServerError(
            f"Label Studio at {url} refused its own token ({answer.status_code}); the data folder's user "
            "was made without legacy tokens: start from an empty folder"
        )
    return answer.status_code == 200  # noqa: PLR2004


def _served_url(log_file: Path) -> str | None:
    """``http://HOST:PORT`` of the log's ``Starting development server at ...`` line, or None."""
    try:
        text = log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    found = _SERVING.search(text)
    return found["url"] if found else None


_SERVING = re.compile(r"Starting development server at (?P<url>https?://[^/\s]+)")


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group, SIGKILL after :data:`STOP_TIMEOUT_S`; reaps the process."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT_S)
    except ProcessLookupError:
        process.wait(timeout=STOP_TIMEOUT_S)


def log_tail(log_file: Path) -> str:
    """The last lines of a server log on one line (empty if there is none)."""
    try:
        lines = log_file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    kept = [line.strip() for line in lines if line.strip()]
    return " | ".join(kept[-LOG_TAIL_LINES:])[-LOG_TAIL_CHARS:]
