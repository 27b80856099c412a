"""The MLflow tracking server a command talks to: its URI, a fast reachability check, and
MLflow's own errors turned into one-line segflow errors.

Light on purpose: nothing here imports mlflow at module level, so the MODEL parser can name
this module without paying for mlflow (it is imported only when a server is really used).
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

from segflow.errors import ConfigError, SegflowError

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
"""Where the tracking server is when neither ``tracking.uri`` nor ``--tracking-uri`` says."""
HEALTH_PATH = "/health"
"""The MLflow server's unauthenticated liveness endpoint (answers ``OK``)."""
HEALTH_TIMEOUT_S = 5.0
"""Seconds the reachability check waits: MLflow's own client retries for minutes instead."""
SERVER_SCHEMES = ("http", "https")
"""URIs that name a server (checked for reachability); others (``file:``, ``sqlite:``) are local stores."""
EXAMPLE_URI = "http://127.0.0.1:5000"
TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
"""Where MLflow's client takes credentials from (never the URI's query)."""


def resolve_tracking_uri(given: str | None, where: str) -> str:
    """The tracking server's URI: ``given``, else ``$MLFLOW_TRACKING_URI``.

    Args:
        given: The URI from the config (``tracking.uri``) or the command line, or None.
        where: Where a URI could have been given, for the message (``tracking.uri``).

    Raises:
        ConfigError: Neither gives one.
    """
    uri = (given or os.environ.get(TRACKING_URI_ENV, "")).strip()
    if not uri:
        raise ConfigError(
            f"no MLflow tracking server: set {where} (e.g. {EXAMPLE_URI}) or the environment "
            f"variable {TRACKING_URI_ENV}"
        )
    check_uri(uri, where if given else TRACKING_URI_ENV)
    return uri


def check_uri(uri: str, where: str) -> None:
    """Refuses a tracking URI that cannot be parsed, or a server URI without a host or with a
    query string or fragment (MLflow appends ``/api/...`` to the URI, after any query).

    The message never shows the URI itself (it may hold a token), only :func:`redact_uri`'s form.

    Raises:
        ConfigError: Unparsable (e.g. ``http://[::1``), a bad port, or ``http(s)`` without a
            host or with ``?...``/``#...``.
    """
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018 (parsing the port raises on a bad one)
    except ValueError as err:
        raise ConfigError(
            f"{where} {redact_uri(uri)} is not a valid URI ({err}); give e.g. {EXAMPLE_URI}"
        ) from None
    if parts.scheme.lower() not in SERVER_SCHEMES:
        return
    if not parts.hostname:
        raise ConfigError(f"{where} {redact_uri(uri)} names no host; give e.g. {EXAMPLE_URI}")
    if parts.query or parts.fragment:
        raise ConfigError(
            f"{where} {redact_uri(uri)} has a query or fragment, which MLflow would break (it appends "
            f"its API paths to the URI); drop it and pass a token in {TOKEN_ENV} (or "
            f"{USERNAME_ENV}/{PASSWORD_ENV})"
        )


def redact_uri(uri: str) -> str:
    """``uri`` as shown in messages, logs, ``tracking.json`` and params: without its secrets.

    The user-info (``user:password@``, or a token as the user name) becomes ``***@``, each
    query value ``***`` (keys kept: ``?token=***``) and a fragment ``#***``. Never raises: an
    unparsable URI shows only its scheme (``http://<unparsable>``).
    """
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        scheme, sep, _ = uri.partition("://")
        return f"{scheme}://<unparsable>" if sep and scheme.isalnum() else "<unparsable URI>"
    base, _, fragment = uri.partition("#")
    base, _, query = base.partition("?")
    if "@" in parts.netloc:
        base = base.replace(parts.netloc, "***@" + parts.netloc.rsplit("@", 1)[1], 1)
    if query:
        hidden = (f"{item.partition('=')[0]}=***" if "=" in item else "***" for item in query.split("&"))
        base += "?" + "&".join(hidden)
    return base + ("#***" if fragment else "")


def scrub(text: str, uri: str) -> str:
    """``text`` (e.g. an MLflow or socket error message) with ``uri``'s secrets replaced by
    ``***``: the whole URI, its user-info, password and each query value."""
    secrets = [uri]
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        parts = None
    if parts is not None:
        if "@" in parts.netloc:
            secrets.append(parts.netloc.rsplit("@", 1)[0])
        secrets += [parts.password or "", parts.username or "", parts.query, parts.fragment]
        secrets += [value for _, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
        secrets += [item.partition("=")[2] for item in parts.query.split("&")]
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):  # longest first
        text = text.replace(secret, redact_uri(uri) if secret == uri else "***")
    return text


def health_url(uri: str) -> str:
    """The ``/health`` URL of a server URI: scheme, host and port and the path with
    :data:`HEALTH_PATH` appended; user-info, query and fragment are dropped (``/health``
    needs no credentials, and urllib cannot send them from the URL).

    Raises:
        ValueError: An unparsable URI (:func:`check_uri` refuses those first).
    """
    parts = urllib.parse.urlsplit(uri)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    path = parts.path.rstrip("/") + HEALTH_PATH
    return urllib.parse.urlunsplit((parts.scheme, netloc, path, "", ""))


def check_server(uri: str) -> None:
    """Refuses, within :data:`HEALTH_TIMEOUT_S`, a tracking server that does not answer.

    Only ``http(s)`` URIs are checked (``GET <uri>/health``); a local store (``file:``,
    ``sqlite:``) has nothing to reach.

    Raises:
        ConfigError: An invalid URI, no answer, or an answer other than 200 (one line naming
            the URI without its secrets).
    """
    check_uri(uri, "tracking URI")
    if urllib.parse.urlsplit(uri).scheme.lower() not in SERVER_SCHEMES:
        return
    url = health_url(uri)
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_S) as response:  # noqa: S310 (http(s) only)
            status = int(response.status)
    except urllib.error.HTTPError as err:
        status = err.code
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = scrub(str(getattr(err, "reason", err)), uri)
        raise ConfigError(
            f"MLflow tracking server {redact_uri(uri)} is not reachable ({reason}); start it "
            f"(mlflow server --host 127.0.0.1 --port 5000) or fix tracking.uri / {TRACKING_URI_ENV}"
        ) from None
    if status != 200:
        raise ConfigError(
            f"{redact_uri(uri)} answered {HEALTH_PATH} with HTTP {status}: it is not an MLflow tracking "
            f"server; fix tracking.uri / {TRACKING_URI_ENV}"
        )


@contextlib.contextmanager
def mlflow_errors(what: str, uri: str) -> Iterator[None]:
    """Turns MLflow's exceptions inside the block into one :class:`ConfigError` line.

    Args:
        what: What was being done, for the message (``registering model 'roads'``).
        uri: The tracking server (shown without its secrets, :func:`redact_uri`; they are also
            scrubbed from MLflow's message).

    Raises:
        ConfigError: ``<what> on <uri> failed: <MLflow's first line>``.
    """
    from mlflow.exceptions import MlflowException

    try:
        yield
    except SegflowError:
        raise
    except MlflowException as err:
        raise ConfigError(
            f"{what} on {redact_uri(uri)} failed: {scrub(first_line(err.message), uri)}"
        ) from None


def first_line(text: object) -> str:
    """The first non-empty line of ``text`` (MLflow messages can carry a whole response body)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else str(text)
