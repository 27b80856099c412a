"""Cached virtualenvs for converters whose stacks clash with segflow's own.

Some export converters (onnx2tf needs TensorFlow, which pins other numpy and protobuf
releases than segflow's stack) cannot live in segflow's environment. Each one runs as a
subprocess in its own virtualenv, built once from a pinned requirements file and kept in a
cache:

- Cache folder: ``$SEGFLOW_VENV_CACHE`` when set, else ``<repo root>/.cache/venvs`` for a
  source checkout (the folder holding ``pyproject.toml`` above the package), else
  ``~/.cache/segflow/venvs``.
- One venv per requirements content: ``<cache>/<name>-<hash>``, the hash taken over the
  file's bytes, the install mode and the interpreter's ``major.minor``, so editing the pins
  builds a new venv and never mutates a used one.
- Atomic: built in ``<name>-<hash>.partial-<pid>`` (``python -m venv`` + ``pip install -r``),
  then renamed; a venv without its completion marker is never used. Two processes building
  at once each build their own partial folder; the first rename wins, the other is dropped.

Console scripts (``bin/onnxsim``) and ``activate`` name the venv's own path, so before the
rename their ``partial`` path is rewritten to the final one; the venv then works as if it had
been built in place. :func:`run_converter` runs a converter with ``<venv>/bin`` first on
``PATH`` (onnx2tf calls the ``onnxsim`` tool by name), a timeout, and one error line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from segflow.errors import ConfigError, SegflowError

CACHE_ENV = "SEGFLOW_VENV_CACHE"
USER_CACHE = Path("~/.cache/segflow/venvs")
REPO_CACHE = Path(".cache") / "venvs"
MARKER = "segflow-venv.json"
"""Written last into a complete venv; a folder without it is a failed or foreign build."""
HASH_CHARS = 12
PIP_TIMEOUT_S = 1800.0
"""A cold build downloads a few hundred MB (TensorFlow); 30 minutes covers a slow mirror."""
TAIL_LINES = 4
TAIL_CHARS = 600
_MISSING_PACKAGE = re.compile(
    r"(?:No matching distribution found for|Could not find a version that satisfies the requirement)\s+(\S+)"
)
_FAILED_PACKAGE = re.compile(r"(?:Failed to build|Failed building wheel for)\s+(\S+)")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ERROR_LINE = re.compile(r"^(ERROR:|[A-Za-z_.]*(Error|Exception): )")

Log = Callable[[str], None]


class ConverterEnvError(SegflowError, RuntimeError):
    """A converter's virtualenv cannot be built (pip or venv failed)."""


class ConverterError(SegflowError, RuntimeError):
    """A converter subprocess failed or timed out."""


def repo_root(start: Path | None = None) -> Path | None:
    """The source checkout holding the package: the nearest folder with ``pyproject.toml``
    above ``segflow/`` (None for an installed package)."""
    package = (start or Path(__file__)).resolve().parents[1]  # .../segflow
    for folder in package.parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return None


def venv_cache_dir() -> Path:
    """Where converter venvs are kept (see the module docstring for the order)."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    root = repo_root()
    return root / REPO_CACHE if root is not None else USER_CACHE.expanduser()


def requirements_key(requirements_file: Path, no_deps: bool) -> str:
    """Hash of what defines a venv: the pins, the install mode and the interpreter version."""
    digest = hashlib.sha256(requirements_file.read_bytes())
    digest.update(f"no_deps={no_deps};python={sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:HASH_CHARS]


def venv_python(venv: Path) -> Path:
    """The interpreter of a venv (POSIX layout; Windows: ``Scripts/python.exe``)."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _tail(text: str) -> str:
    """The last lines of a tool's output on one line (ANSI colours and pip's index noise dropped)."""
    lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
    kept = [line for line in lines if line and "WARNING: Location" not in line]
    return " | ".join(kept[-TAIL_LINES:])[-TAIL_CHARS:]


def error_summary(text: str) -> str:
    """The lines of a converter's output that say what failed, on one line.

    Exception lines (``ValueError: ...``) and ``ERROR:`` lines are kept (first ones first, as
    converters print the cause before their advice); without any, the output's tail.
    """
    lines = [_ANSI.sub("", line).strip() for line in text.splitlines()]
    causes = [line for line in lines if _ERROR_LINE.match(line) and "trace log is below" not in line]
    return " | ".join(dict.fromkeys(causes[:TAIL_LINES]))[:TAIL_CHARS] if causes else _tail(text)


def _failed_package(output: str, requirements_file: Path) -> str:
    for pattern in (_MISSING_PACKAGE, _FAILED_PACKAGE):
        found = pattern.findall(output)
        if found:
            return found[-1]
    return f"the packages of {requirements_file}"


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def uv_binary() -> str | None:
    """uv (``pip install uv``, segflow's dev extra) beside this interpreter or on ``PATH``, else None."""
    beside = Path(sys.executable).parent / ("uv.exe" if os.name == "nt" else "uv")
    return str(beside) if beside.is_file() else shutil.which("uv")


def install_command(python: Path, requirements_file: Path, no_deps: bool, installer: str) -> list[str]:
    """The install command of a venv: ``uv pip install`` when asked and uv is there (it downloads
    in parallel: a 156-package lock in about 15 s where pip took minutes), else pip."""
    uv = uv_binary() if installer == "uv" else None
    if uv is not None:
        command = [uv, "pip", "install", "--no-cache", "--python", str(python), "-r", str(requirements_file)]
    else:
        command = [str(python), "-m", "pip", "install", "--no-input", "-r", str(requirements_file)]
    return command + (["--no-deps"] if no_deps else [])


def _build(
    partial: Path, name: str, requirements_file: Path, no_deps: bool, timeout: float, installer: str = "pip"
) -> None:
    """Creates the venv in ``partial`` and installs the pins into it (see :func:`install_command`).

    Raises:
        ConverterEnvError: ``venv`` or ``pip`` failed or timed out (one line with pip's tail).
    """
    try:
        made = _run([sys.executable, "-m", "venv", str(partial)], timeout)
        if made.returncode != 0:
            raise ConverterEnvError(
                f"could not create the {name} converter venv in {partial}: {_tail(made.stderr + made.stdout)}"
            )
        installed = _run(
            install_command(venv_python(partial), requirements_file, no_deps, installer), timeout
        )
    except subprocess.TimeoutExpired:
        raise ConverterEnvError(
            f"building the {name} converter venv took over {timeout:.0f} s (pip install -r "
            f"{requirements_file}); check the package index, then retry"
        ) from None
    if installed.returncode != 0:
        output = installed.stdout + installed.stderr
        raise ConverterEnvError(
            f"could not build the {name} converter venv: pip failed to install "
            f"{_failed_package(output, requirements_file)} from {requirements_file} "
            f"(exit {installed.returncode}): {_tail(output)}"
        )


def _retarget(partial: Path, final: Path) -> None:
    """Rewrites the partial folder's path to the final one in ``bin/`` scripts (shebangs, activate)."""
    old, new = str(partial).encode(), str(final).encode()
    for script in venv_python(partial).parent.iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        content = script.read_bytes()
        if old in content[:4096] and b"\0" not in content[:4096]:  # text scripts only, not binaries
            script.write_bytes(content.replace(old, new))


def converter_python(
    name: str,
    requirements_file: str | Path,
    no_deps: bool = True,
    log: Log | None = None,
    timeout: float = PIP_TIMEOUT_S,
    installer: str = "pip",
) -> Path:
    """The interpreter of the converter venv ``name``, built once from ``requirements_file``.

    Args:
        name: Short venv name (``onnx2tf``); the folder is ``<cache>/<name>-<hash>``.
        requirements_file: pip requirements file. With ``no_deps`` it must pin every package
            (a lock file): pip installs exactly those, so a converter whose own metadata pins
            clash (onnx2tf pins ``tensorflow``, we install ``tensorflow-cpu``) still installs.
        no_deps: Install with ``--no-deps`` (the file is a complete lock).
        log: Receives one line when a build starts and one when it ends (None: silent).
        timeout: Seconds allowed for ``venv`` and for ``pip install`` each.
        installer: ``pip``, or ``uv`` to install with ``uv pip install`` when uv is available
            (falls back to pip); the venv is the same.

    Returns:
        ``<venv>/bin/python``; run the converter with ``[python, "-m", module, ...]``.

    Raises:
        ConfigError: ``requirements_file`` does not exist.
        ConverterEnvError: The venv cannot be built: names the package pip could not install
            and the tail of its output. Nothing is left in the cache.
    """
    requirements = Path(requirements_file)
    if not requirements.is_file():
        raise ConfigError(f"converter requirements file {requirements} does not exist; reinstall segflow")
    cache = venv_cache_dir()
    final = cache / f"{name}-{requirements_key(requirements, no_deps)}"
    if (final / MARKER).is_file():
        return venv_python(final)
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"{final.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    if log is not None:
        tool = "uv pip" if installer == "uv" and uv_binary() else "pip"
        log(f"building the {name} converter venv in {final} (once; {tool} install -r {requirements.name})")
    started = time.perf_counter()
    try:
        _build(partial, name, requirements, no_deps, timeout, installer)
        _retarget(partial, final)
        record = {"requirements": str(requirements), "no_deps": no_deps, "python": sys.version.split()[0]}
        (partial / MARKER).write_text(json.dumps(record, indent=2))
        if final.exists() and not (final / MARKER).is_file():
            shutil.rmtree(final)  # an incomplete folder of that name (never used): replace it
        try:
            os.rename(partial, final)
        except OSError:  # another process finished first: use its venv
            if not (final / MARKER).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    if log is not None:
        log(f"built the {name} converter venv in {time.perf_counter() - started:.0f} s")
    return venv_python(final)


def run_converter(
    python: Path, args: list[str], cwd: Path, label: str, timeout: float
) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m <args>`` in ``cwd`` with the venv's ``bin`` first on ``PATH``.

    Args:
        python: A venv interpreter from :func:`converter_python`.
        args: Arguments after ``-m`` (module first).
        cwd: Working folder (converters write scratch files there).
        label: What is converted, for messages (``onnx2tf on model.onnx``).
        timeout: Seconds before the converter is killed.

    Returns:
        The finished process (exit status 0), stdout and stderr as text.

    Raises:
        ConverterError: Non-zero exit or timeout: one line with the converter's error lines.
    """
    env = {**os.environ, "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.update(PYTHONNOUSERSITE="1", TF_CPP_MIN_LOG_LEVEL="2", NO_COLOR="1")
    env.pop("PYTHONPATH", None)  # segflow's own packages must not shadow the converter's
    try:
        done = subprocess.run(
            [str(python), "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise ConverterError(f"{label} did not finish within {timeout:.0f} s; nothing was written") from None
    if done.returncode != 0:
        raise ConverterError(
            f"{label} failed (exit {done.returncode}): {error_summary(done.stdout + done.stderr)}; "
            "nothing was written"
        )
    return done
